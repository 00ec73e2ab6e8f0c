//! Scans files for the test suite's canary secrets and the tokens recorded as issued
//! (see `testkit::canary`); prints where each was found, never the secret, and exits 1 if
//! anything was.
//!
//! ```text
//! canary-scan [--records DIR]... PATH...   # scan PATHs (files or directories)
//! canary-scan --self-test DIR              # plant canaries in DIR and check they are found
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use testkit::canary::{Needles, scan, self_test};

/// Findings printed per file before the rest are only counted.
const SHOWN_PER_FILE: usize = 5;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let mut records = Vec::new();
    let mut roots = Vec::new();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--records") => records.push(PathBuf::from(args.next().expect("--records DIR"))),
            Some("--self-test") => {
                let dir = PathBuf::from(args.next().expect("--self-test DIR"));
                return match self_test(&dir) {
                    Ok(n) => {
                        println!("canary self-test: all {n} planted leaks were found");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("canary self-test failed: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            _ => roots.push(PathBuf::from(arg)),
        }
    }
    let needles = match Needles::from_record_dirs(&records) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("canary-scan: cannot read the token records: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (findings, files, bytes) = match scan(&needles, &roots, &records) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("canary-scan: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "canary-scan: {files} files, {} MiB, the canary marker and {} recorded tokens",
        bytes / (1024 * 1024),
        needles.tokens
    );
    let mut last: Option<&std::path::Path> = None;
    let mut shown = 0;
    let mut hidden = 0;
    for f in &findings {
        if last != Some(f.file.as_path()) {
            if hidden > 0 {
                println!("    … and {hidden} more in that file");
            }
            last = Some(&f.file);
            shown = 0;
            hidden = 0;
        }
        if shown < SHOWN_PER_FILE {
            println!(
                "LEAK {} at offset {}: {} ({})",
                f.file.display(),
                f.offset,
                f.needle.what,
                f.needle.encoding
            );
            shown += 1;
        } else {
            hidden += 1;
        }
    }
    if hidden > 0 {
        println!("    … and {hidden} more in that file");
    }
    if findings.is_empty() {
        println!("canary-scan: no canary and no issued token found");
        ExitCode::SUCCESS
    } else {
        println!("canary-scan: {} findings", findings.len());
        ExitCode::FAILURE
    }
}
