//! Canary secrets for the test suite, and the scanner that proves none of them leaked.
//!
//! Every secret the fixtures hand out carries [`MARKER`], twelve lowercase hex digits, while
//! staying valid in its own format (an AppSecret is still 32 hex digits, an EncodingAESKey 43
//! base64 characters, a master key 32 bytes). After the suite, `.ci/canary-check` runs
//! [`scan`] over everything the suite left behind — the test output, the logs and databases
//! kept under [`ARTIFACTS_VAR`], PostgreSQL's data directory and WAL — looking for the marker
//! raw and in the encodings a leak takes (base64 at every byte alignment, once and twice,
//! percent-encoding, hex, a `Debug`-printed byte list).
//!
//! Tokens someone else mints carry no marker, so they are recorded instead: the simulator
//! writes every token and code it issues to the directory named by [`SIM_RECORD_VAR`] (a
//! test-only hook of the simulator, off by default), and tests pass what the hub issued to
//! them (API keys, client secrets, access and ID tokens, session cookies) to [`issued`],
//! which writes it under [`ARTIFACTS_VAR`]. The hub itself has no such switch. The scanner
//! looks for each recorded token raw and in the same encodings.
//!
//! Sealed values (AES-GCM ciphertext) do not match: only plaintext does.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Twelve lowercase hex digits ("canary canary") embedded in every canary secret. Also
/// alphanumeric and base64, so it fits every secret format.
pub const MARKER: &str = "ca9a27ca9a27";

/// When set, tests keep what they leave behind under this directory for the canary check:
/// temporary directories (SQLite files, the e2e processes' logs and data) are not removed,
/// tracing output is written to `logs/`, and tokens passed to [`issued`] to `issued/`.
pub const ARTIFACTS_VAR: &str = "WXHUB_TEST_ARTIFACTS";

/// The simulator's hook: when set, it appends every token and code it issues to a file in
/// this directory (see `wechat_sim::issued`). Not a `WXHUB_` name, so the end-to-end
/// processes, whose environment is cleaned of `WXHUB_*`, still get it.
pub const SIM_RECORD_VAR: &str = "WECHAT_SIM_RECORD_ISSUED";

/// The directory [`ARTIFACTS_VAR`] names, if set and not blank.
pub fn artifacts_dir() -> Option<PathBuf> {
    match std::env::var_os(ARTIFACTS_VAR) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => None,
    }
}

/// A canary AppSecret for suites that need a constant (`app_secret(0xa001)`).
pub const APP_SECRET: &str = "ca9a27ca9a270000000000000000a001";
/// A second canary AppSecret, for a rotation or a wrong secret (`app_secret(0xb002)`).
pub const OTHER_APP_SECRET: &str = "ca9a27ca9a270000000000000000b002";
/// A canary push Token constant (`push_token(1)`).
pub const PUSH_TOKEN: &str = "ca9a27ca9a27tok1";
/// A canary EncodingAESKey constant (`encoding_aes_key(1)`).
pub const ENCODING_AES_KEY: &str = "ca9a27ca9a27000000000000000000000000000001A";
/// A second canary EncodingAESKey constant (`encoding_aes_key(2)`).
pub const OTHER_ENCODING_AES_KEY: &str = "ca9a27ca9a27000000000000000000000000000002A";
/// A canary password constant (`password(1)`).
pub const PASSWORD: &str = "ca9a27ca9a27-Pass-phrase-1";

/// A canary AppSecret derived from an appid (the marker, then the appid's last 20
/// characters, zero-padded): suites that register many accounts in the simulator and in wxhub
/// compute the same secret on both sides.
pub fn app_secret_for(appid: &str) -> String {
    let tail = appid.get(2..).unwrap_or_default();
    let tail = tail
        .get(tail.len().saturating_sub(20)..)
        .unwrap_or_default();
    format!("{MARKER}{tail:0>20}")
}

/// A canary AppSecret: 32 lowercase hex digits, the marker then `n`.
pub fn app_secret(n: u64) -> String {
    format!("{MARKER}{n:020x}")
}

/// A canary push Token: WeChat's 3–32 letters and digits, the marker then `n`.
pub fn push_token(n: u64) -> String {
    format!("{MARKER}tok{n}")
}

/// A canary EncodingAESKey: 43 base64 characters (decoding to 32 bytes), the marker then `n`,
/// ending in `A` so the padding bits are zero.
pub fn encoding_aes_key(n: u64) -> String {
    format!("{MARKER}{n:030}A")
}

/// A canary password (long and unusual enough for any password policy).
pub fn password(n: u64) -> String {
    format!("{MARKER}-Pass-phrase-{n}")
}

/// Any other canary secret (an API key or client secret a test makes up, a database
/// password): the marker, then `label`.
pub fn secret(label: &str) -> String {
    format!("{MARKER}-{label}")
}

/// A canary master key: 32 bytes, the marker's ASCII then `n`.
pub fn master_key_bytes(n: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..MARKER.len()].copy_from_slice(MARKER.as_bytes());
    key[MARKER.len()..MARKER.len() + 8].copy_from_slice(&n.to_be_bytes());
    key
}

/// A keyring file's TOML with one canary master key `id` (`n` tells keys apart).
pub fn keyring_toml(id: &str, n: u64) -> String {
    // The keyring wants padded base64.
    let mut key = base64(&master_key_bytes(n), STANDARD);
    while !key.len().is_multiple_of(4) {
        key.push('=');
    }
    format!("active = \"{id}\"\n\n[[keys]]\nid = \"{id}\"\nkey = \"{key}\"\n")
}

/// Records a secret the hub issued to a test (an API key, a client secret, an access or ID
/// token, a session cookie), so the canary check looks for it. Does nothing unless
/// [`ARTIFACTS_VAR`] is set.
pub fn issued(token: &str) {
    static FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let dir = artifacts_dir()?.join("issued");
        std::fs::create_dir_all(&dir).ok()?;
        let path = dir.join(format!("hub-{}.txt", std::process::id()));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(Mutex::new)
    });
    if let Some(file) = file
        && !token.is_empty()
    {
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(file, "{token}");
    }
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 without padding (enough for needles: padding is never inside a match).
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The base64 characters that depend on `bytes` alone when they sit `shift` bytes into a
/// longer encoded value (`shift` 0, 1 or 2): what any base64 text containing `bytes` contains.
fn base64_core(bytes: &[u8], shift: usize, alphabet: &[u8; 64]) -> String {
    let mut padded = vec![0u8; shift];
    padded.extend_from_slice(bytes);
    let encoded = base64(&padded, alphabet);
    let first = (8 * shift).div_ceil(6);
    let end = (8 * (shift + bytes.len())) / 6;
    encoded.get(first..end).unwrap_or_default().to_owned()
}

/// Percent-encoding of everything but unreserved characters (what form and query encoders
/// do to `+`, `/`, `=`).
fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a needle stands for, printed instead of the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle {
    /// `canary marker` or `issued token N (from FILE)`.
    pub what: String,
    /// How it is encoded: `raw`, `base64`, `base64 of base64`, `percent-encoded`, `hex`…
    pub encoding: String,
}

/// Needles shorter than this are not searched for (they would match by chance).
const MIN_NEEDLE: usize = 12;

/// The needles of one secret: raw, its base64 at every alignment (once, and for the marker
/// twice: a keyring in an environment variable is base64 of TOML holding base64 keys), their
/// percent-encodings, and hex. Case-insensitive needles (hex digits) go to `nocase`.
fn needles_of(
    value: &str,
    what: &str,
    twice: bool,
    cased: &mut BTreeMap<String, Needle>,
    nocase: &mut BTreeMap<String, Needle>,
) {
    let add = |map: &mut BTreeMap<String, Needle>, pattern: String, encoding: &str| {
        if pattern.len() >= MIN_NEEDLE {
            map.entry(pattern).or_insert_with(|| Needle {
                what: what.to_owned(),
                encoding: encoding.to_owned(),
            });
        }
    };
    let is_hex = value.bytes().all(|b| b.is_ascii_hexdigit());
    add(
        if is_hex { &mut *nocase } else { &mut *cased },
        value.to_owned(),
        "raw",
    );
    if percent(value) != value {
        add(cased, percent(value), "percent-encoded");
    }
    add(nocase, hex(value.as_bytes()), "hex of its bytes");
    let mut once = Vec::new();
    for alphabet in [STANDARD, URL_SAFE] {
        for shift in 0..3 {
            let core = base64_core(value.as_bytes(), shift, alphabet);
            add(cased, core.clone(), "base64");
            add(cased, percent(&core), "base64, percent-encoded");
            once.push(core);
        }
    }
    if twice {
        for core in once {
            for shift in 0..3 {
                add(
                    cased,
                    base64_core(core.as_bytes(), shift, STANDARD),
                    "base64 of base64",
                );
            }
        }
    }
}

/// What [`scan`] searches for.
pub struct Needles {
    cased: (Option<AhoCorasick>, Vec<Needle>),
    nocase: (Option<AhoCorasick>, Vec<Needle>),
    /// How many issued tokens were loaded.
    pub tokens: usize,
}

impl Needles {
    /// The marker's needles and those of every token in `issued` (one per line).
    pub fn new<'a>(issued: impl IntoIterator<Item = (&'a str, String)>) -> Needles {
        let mut cased = BTreeMap::new();
        let mut nocase = BTreeMap::new();
        needles_of(MARKER, "canary marker", true, &mut cased, &mut nocase);
        let marker_bytes: Vec<String> = MARKER.bytes().map(|b| b.to_string()).collect();
        for separator in [", ", ","] {
            cased.insert(
                marker_bytes.join(separator),
                Needle {
                    what: "canary marker".to_owned(),
                    encoding: "a printed byte list".to_owned(),
                },
            );
        }
        let mut tokens = 0;
        for (source, token) in issued {
            let token = token.trim();
            if token.len() < MIN_NEEDLE || token.contains(MARKER) {
                continue;
            }
            tokens += 1;
            let what = format!("issued token {tokens} (recorded in {source})");
            needles_of(token, &what, false, &mut cased, &mut nocase);
        }
        let build = |map: BTreeMap<String, Needle>, case_insensitive: bool| {
            let (patterns, needles): (Vec<String>, Vec<Needle>) = map.into_iter().unzip();
            let automaton = (!patterns.is_empty()).then(|| {
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(case_insensitive)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .expect("the needles build an automaton")
            });
            (automaton, needles)
        };
        Needles {
            cased: build(cased, false),
            nocase: build(nocase, true),
            tokens,
        }
    }

    /// The tokens recorded in every file of `dirs` (missing directories hold none).
    pub fn from_record_dirs(dirs: &[PathBuf]) -> std::io::Result<Needles> {
        let mut tokens = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path)?;
                tokens.extend(text.lines().map(|l| (name.clone(), l.to_owned())));
            }
        }
        let borrowed: Vec<(&str, String)> = tokens
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        Ok(Needles::new(borrowed))
    }

    /// Every needle found in `data`: its offset and what it stands for.
    pub fn find_in(&self, data: &[u8]) -> Vec<(usize, &Needle)> {
        let mut found = Vec::new();
        for (automaton, needles) in [&self.cased, &self.nocase] {
            if let Some(automaton) = automaton {
                for m in automaton.find_iter(data) {
                    found.push((m.start(), &needles[m.pattern().as_usize()]));
                }
            }
        }
        found.sort_by_key(|(at, _)| *at);
        found
    }
}

/// One needle found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub offset: usize,
    pub needle: Needle,
}

/// Scans every regular file under `roots` (recursively, not following symbolic links),
/// skipping anything under `skip` (the token records themselves). Returns what was found and
/// how many files and bytes were read.
pub fn scan(
    needles: &Needles,
    roots: &[PathBuf],
    skip: &[PathBuf],
) -> std::io::Result<(Vec<Finding>, u64, u64)> {
    let skip: Vec<PathBuf> = skip
        .iter()
        .map(|s| s.canonicalize().unwrap_or_else(|_| s.clone()))
        .collect();
    let mut findings = Vec::new();
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(path) = stack.pop() {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        if skip.iter().any(|s| canonical.starts_with(s)) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        } else if meta.is_file() {
            // A file may go between listing and reading (a test still running its cleanup).
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            files += 1;
            bytes += data.len() as u64;
            for (offset, needle) in needles.find_in(&data) {
                findings.push(Finding {
                    file: path.clone(),
                    offset,
                    needle: needle.clone(),
                });
            }
        }
    }
    findings.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
    Ok((findings, files, bytes))
}

/// Plants canaries and recorded tokens in `dir` in every encoding the scanner knows, and
/// checks it finds each of them and nothing in a clean file: proof the check can fail.
pub fn self_test(dir: &Path) -> Result<usize, String> {
    let io = |e: std::io::Error| e.to_string();
    let token = "86_Qx9-Tz7_SIMULATED_ACCESS_TOKEN_0123456789abcdefghij";
    let records = dir.join("issued");
    std::fs::create_dir_all(&records).map_err(io)?;
    std::fs::write(records.join("sim-1.txt"), format!("{token}\n")).map_err(io)?;
    let planted = dir.join("planted");
    std::fs::create_dir_all(&planted).map_err(io)?;
    let keyring = keyring_toml("k1", 7);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "raw-appsecret.log",
            format!("x appsecret={} y", app_secret(3)).into_bytes(),
        ),
        ("upper-hex.txt", app_secret(4).to_uppercase().into_bytes()),
        (
            "aes-key-in-wal",
            [b"\0\x01".as_slice(), encoding_aes_key(5).as_bytes()].concat(),
        ),
        (
            "basic-header.txt",
            format!(
                "Basic {}",
                base64(format!("c1:{}", secret("s")).as_bytes(), STANDARD)
            )
            .into_bytes(),
        ),
        (
            "keyring-env.txt",
            base64(keyring.as_bytes(), STANDARD).into_bytes(),
        ),
        ("keyring.toml", keyring.into_bytes()),
        ("master-key.bin", master_key_bytes(9).to_vec()),
        (
            "debug-bytes.txt",
            format!("{:?}", app_secret(6).as_bytes()).into_bytes(),
        ),
        (
            "token-raw.log",
            format!("GET /cgi-bin/x?access_token={token}").into_bytes(),
        ),
        (
            "token-b64.txt",
            base64(format!("::{token}").as_bytes(), URL_SAFE).into_bytes(),
        ),
        ("token-hex.txt", hex(token.as_bytes()).into_bytes()),
    ];
    for (name, data) in &cases {
        std::fs::write(planted.join(name), data).map_err(io)?;
    }
    std::fs::write(
        planted.join("clean.txt"),
        "nothing secret here, ca9a27 alone is not a canary",
    )
    .map_err(io)?;
    let needles = Needles::from_record_dirs(std::slice::from_ref(&records)).map_err(io)?;
    if needles.tokens != 1 {
        return Err(format!("loaded {} recorded tokens, not 1", needles.tokens));
    }
    let (findings, _, _) =
        scan(&needles, &[dir.to_owned()], std::slice::from_ref(&records)).map_err(io)?;
    for (name, _) in &cases {
        if !findings.iter().any(|f| f.file.ends_with(name)) {
            return Err(format!("the planted canary in {name} was not found"));
        }
    }
    if let Some(f) = findings
        .iter()
        .find(|f| f.file.ends_with("clean.txt") || f.file.starts_with(&records))
    {
        return Err(format!(
            "found something where nothing is: {}",
            f.file.display()
        ));
    }
    Ok(cases.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_are_valid_in_their_formats() {
        let app = app_secret(u64::MAX);
        assert_eq!(app.len(), 32);
        assert!(
            app.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let token = push_token(12345);
        assert!(
            (3..=32).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric())
        );
        let key = encoding_aes_key(u64::MAX);
        assert_eq!(key.len(), 43);
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(key.ends_with('A'));
        for value in [
            app,
            token,
            key,
            password(1),
            secret("x"),
            keyring_toml("k1", 1),
        ] {
            assert!(
                !Needles::new([]).find_in(value.as_bytes()).is_empty(),
                "{value}"
            );
        }
    }

    #[test]
    fn the_constants_are_the_constructors_values() {
        assert_eq!(APP_SECRET, app_secret(0xa001));
        assert_eq!(OTHER_APP_SECRET, app_secret(0xb002));
        assert_eq!(PUSH_TOKEN, push_token(1));
        assert_eq!(ENCODING_AES_KEY, encoding_aes_key(1));
        assert_eq!(OTHER_ENCODING_AES_KEY, encoding_aes_key(2));
        assert_eq!(PASSWORD, password(1));
        let secret = app_secret_for("wx00000000000000a1");
        assert_eq!(secret, "ca9a27ca9a27000000000000000000a1");
        assert_eq!(secret.len(), 32);
        assert_ne!(
            app_secret_for("wx00000000000000a1"),
            app_secret_for("wx00000000000000a2")
        );
    }

    #[test]
    fn base64_matches_a_reference_encoding() {
        assert_eq!(base64(b"", STANDARD), "");
        assert_eq!(base64(b"f", STANDARD), "Zg");
        assert_eq!(base64(b"fo", STANDARD), "Zm8");
        assert_eq!(base64(b"foo", STANDARD), "Zm9v");
        assert_eq!(base64(b"foob", STANDARD), "Zm9vYg");
        assert_eq!(base64(&[0xfb, 0xff], STANDARD), "+/8");
        assert_eq!(base64(&[0xfb, 0xff], URL_SAFE), "-_8");
    }

    #[test]
    fn the_marker_is_found_in_base64_at_every_alignment() {
        let needles = Needles::new([]);
        for prefix in ["", "a", "ab", "abc", "abcd"] {
            let text = format!("{prefix}{}", app_secret(1));
            for alphabet in [STANDARD, URL_SAFE] {
                let encoded = base64(text.as_bytes(), alphabet);
                let found = needles.find_in(encoded.as_bytes());
                assert!(!found.is_empty(), "prefix {prefix:?}: {encoded}");
                assert_eq!(found[0].1.encoding, "base64");
                assert!(!needles.find_in(percent(&encoded).as_bytes()).is_empty());
            }
        }
    }

    #[test]
    fn recorded_tokens_are_found_and_reported_without_their_value() {
        let token = "86_abcdefghijklmnopqrstuvwxyz-_ABCDEFG0123456789";
        let needles = Needles::new([("sim-1.txt", token.to_owned())]);
        assert_eq!(needles.tokens, 1);
        let text = format!("log line access_token={} done", percent(token));
        let found = needles.find_in(text.as_bytes());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "log line access_token=".len());
        assert!(!found[0].1.what.contains(token) && !found[0].1.encoding.contains(token));
        assert!(needles.find_in(b"an unrelated 86_ line").is_empty());
    }

    #[test]
    fn the_self_test_plants_and_finds_every_encoding() {
        // Not a testkit::TempDir: under the canary check that would be kept, and its planted
        // leaks found by the real scan.
        struct Plants(PathBuf);
        impl Drop for Plants {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir =
            Plants(std::env::temp_dir().join(format!("wxhub-canary-{}", uuid::Uuid::now_v7())));
        let dir = &dir.0;
        std::fs::create_dir_all(dir).unwrap();
        assert_eq!(self_test(dir), Ok(11));
        // And a scan of the plants without the records misses the token, so the check
        // depends on them: the self-test would fail if recording stopped working.
        let needles = Needles::new([]);
        let (findings, _, _) = scan(&needles, &[dir.join("planted")], &[]).unwrap();
        assert!(!findings.iter().any(|f| f.file.ends_with("token-raw.log")));
    }
}
