//! A test-only record of the secrets the simulator issues (access and refresh tokens, OAuth
//! codes), for the test suite's canary check: with [`RECORD_VAR`] naming a directory, each
//! one is appended to `sim-<pid>.txt` there, so the check can look for them in everything
//! the suite left behind. Off unless the variable is set; wxhub itself has no such record.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// The directory to record issued secrets in (also `testkit::canary::SIM_RECORD_VAR`).
pub const RECORD_VAR: &str = "WECHAT_SIM_RECORD_ISSUED";

/// Appends `secret` to the record, if there is one.
pub(crate) fn record(secret: &str) {
    static FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let dir = std::env::var_os(RECORD_VAR).filter(|d| !d.is_empty())?;
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("sim-{}.txt", std::process::id())))
            .ok()
            .map(Mutex::new)
    });
    if let Some(file) = file {
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(file, "{secret}");
    }
}
