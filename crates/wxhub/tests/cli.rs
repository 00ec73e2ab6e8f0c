//! The `wxhub` binary as an operator runs it: configuration, `migrate`, `vault …` and the
//! errors a mistake gets. Each test works in its own data directory with an SQLite database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use accounts::AccountInput;
use store::Store;
use store::accounts::{AccountKind, TokenMode};
use vault::{Keyring, SecretString, Vault};

/// A data directory of its own (removed on drop).
struct Dir(testkit::TempDir);

impl Dir {
    fn new() -> Self {
        Self(testkit::TempDir::new())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn db_url(&self) -> String {
        format!("sqlite://{}/wxhub.db?mode=rwc", self.path().display())
    }

    fn keyring(&self) -> PathBuf {
        self.path().join("keyring.toml")
    }
}

/// Runs the binary with a clean `WXHUB_*` environment and the data directory's defaults.
fn wxhub(dir: &Dir, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxhub"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WXHUB_") {
            command.env_remove(name);
        }
    }
    command
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .output()
        .expect("run wxhub")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Registers one account directly through the library, with the keyring at `keyring`.
async fn register_one(dir: &Dir, keyring: &Path, secret: &str) -> String {
    let store = Store::connect(&dir.db_url()).await.unwrap();
    let owner = testkit::fixtures::owner(&store, 0).await;
    let vault = Vault::new(Keyring::load(keyring).unwrap());
    let account = accounts::register_account(
        &store,
        &vault,
        &AccountInput {
            owner_user_id: owner.id,
            appid: "wx0123456789abcdef".into(),
            name: "CLI test".into(),
            kind: AccountKind::Service,
            verified: true,
            token_mode: TokenMode::Token,
            appsecret: SecretString::new(secret.to_owned()),
            push_token: None,
            encoding_aes_key: None,
        },
        0,
    )
    .await
    .unwrap();
    store.close().await;
    account.id
}

#[test]
fn help_explains_every_command() {
    let dir = Dir::new();
    let out = wxhub(&dir, &["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for word in [
        "serve",
        "migrate",
        "vault",
        "sim",
        "demo",
        "--database-url",
        "--keyring-file",
        "--public-url",
        "WXHUB_DATA_DIR",
    ] {
        assert!(
            text.contains(word),
            "--help does not mention {word}:\n{text}"
        );
    }
    let vault_help = stdout(&wxhub(&dir, &["vault", "--help"]));
    for word in ["init", "status", "rotate", "activate", "rewrap", "drop-key"] {
        assert!(vault_help.contains(word), "{vault_help}");
    }
}

#[test]
fn migrate_applies_once_then_reports_up_to_date() {
    let dir = Dir::new();
    let first = wxhub(&dir, &["migrate"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("applied migrations"),
        "{}",
        stdout(&first)
    );
    let second = wxhub(&dir, &["migrate"]);
    assert!(
        stdout(&second).contains("up to date"),
        "{}",
        stdout(&second)
    );
    let check = wxhub(&dir, &["migrate", "--check"]);
    assert!(stdout(&check).contains("up to date"));
}

#[test]
fn logs_written_to_a_file_or_pipe_carry_no_colour_codes() {
    let dir = Dir::new();
    // Standard error is a pipe here, as when it is redirected to a file or a journal.
    let output = wxhub(&dir, &["migrate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(log.contains("applied database migrations"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in {log:?}");
}

#[test]
fn unreachable_database_fails_with_a_clear_error_and_no_password() {
    let dir = Dir::new();
    // Port 1 on loopback: nothing listens there, so the connection is refused.
    let out = wxhub(
        &dir,
        &[
            "--database-url",
            "postgres://wx:hunter2secret@127.0.0.1:1/wxhub",
            "migrate",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot connect to the database"), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2secret"), "the password leaked: {err}");
}

#[test]
fn bad_database_url_is_rejected_before_anything_runs() {
    let dir = Dir::new();
    let out = wxhub(&dir, &["--database-url", "mysql://x@y/z", "migrate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("sqlite:, postgres://"),
        "{}",
        stderr(&out)
    );
}

#[cfg(unix)]
#[test]
fn vault_init_creates_a_private_keyring_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let out = wxhub(&dir, &["vault", "init", "--key-id", "prod-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(dir.keyring())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(dir.keyring()).unwrap();
    let again = wxhub(&dir, &["vault", "init"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(dir.keyring()).unwrap(), before);
}

#[test]
fn serve_without_a_keyring_says_how_to_get_one() {
    let dir = Dir::new();
    let out = wxhub(&dir, &["--listen", "127.0.0.1:0", "serve"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no keyring at"), "{err}");
    assert!(err.contains("wxhub vault init"), "{err}");
    assert!(err.contains("--dev-keyring"), "{err}");
}

#[cfg(unix)]
#[test]
fn malformed_keyring_file_is_named_with_the_problem() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    std::fs::write(
        dir.keyring(),
        "active = \"k1\"\n[[keys]]\nid = \"k1\"\nkey = \"c2VjcmV0\"\n",
    )
    .unwrap();
    std::fs::set_permissions(dir.keyring(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = wxhub(&dir, &["vault", "status"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("keyring.toml"), "{err}");
    assert!(err.contains("decodes to 6 bytes, expected 32"), "{err}");
    assert!(
        !err.contains("c2VjcmV0"),
        "key material in the error: {err}"
    );
}

#[tokio::test]
async fn serve_refuses_a_keyring_that_lacks_the_databases_key() {
    let dir = Dir::new();
    assert!(
        wxhub(&dir, &["vault", "init", "--key-id", "original"])
            .status
            .success()
    );
    register_one(&dir, &dir.keyring(), "0123456789abcdef0123456789abcdef").await;
    let stranger = dir.path().join("stranger.toml");
    let out = wxhub(
        &dir,
        &[
            "--keyring-file",
            stranger.to_str().unwrap(),
            "vault",
            "init",
            "--key-id",
            "stranger",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = wxhub(
        &dir,
        &[
            "--keyring-file",
            stranger.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "serve",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("`original` (1 account(s))"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    // The status command reports the same mismatch.
    let status = wxhub(
        &dir,
        &[
            "--keyring-file",
            stranger.to_str().unwrap(),
            "vault",
            "status",
        ],
    );
    assert!(!status.status.success());
    assert!(stderr(&status).contains("MISSING from the keyring"));
}

#[tokio::test]
async fn rotate_rewraps_then_the_old_key_can_be_dropped() {
    let dir = Dir::new();
    assert!(
        wxhub(&dir, &["vault", "init", "--key-id", "k1"])
            .status
            .success()
    );
    let secret = "fedcba9876543210fedcba9876543210";
    let id = register_one(&dir, &dir.keyring(), secret).await;

    let refused = wxhub(&dir, &["vault", "drop-key", "k1"]);
    assert!(
        !refused.status.success(),
        "dropping the only, active key must fail"
    );

    let out = wxhub(&dir, &["vault", "rotate", "--key-id", "k2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("re-wrapped 1 data key(s)"),
        "{}",
        stdout(&out)
    );
    let status = stdout(&wxhub(&dir, &["vault", "status"]));
    assert!(
        status.contains("every data key is wrapped under the active key"),
        "{status}"
    );

    let out = wxhub(&dir, &["vault", "drop-key", "k1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keyring = Keyring::load(dir.keyring()).unwrap();
    assert_eq!(
        keyring.key_ids().map(|k| k.to_string()).collect::<Vec<_>>(),
        vec!["k2"]
    );
    // The secret still reads with only the new key.
    let store = Store::connect(&dir.db_url()).await.unwrap();
    let secrets = accounts::read_secrets(&store, &Vault::new(keyring), &id)
        .await
        .unwrap();
    assert_eq!(secrets.appsecret.expose(), secret);
}

#[tokio::test]
async fn rotate_without_rewrap_leaves_work_for_rewrap() {
    let dir = Dir::new();
    assert!(
        wxhub(&dir, &["vault", "init", "--key-id", "k1"])
            .status
            .success()
    );
    register_one(&dir, &dir.keyring(), "00112233445566778899aabbccddeeff").await;
    let out = wxhub(&dir, &["vault", "rotate", "--key-id", "k2", "--no-rewrap"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = stdout(&wxhub(&dir, &["vault", "status"]));
    assert!(
        status.contains("1 data key(s) are not yet under the active key"),
        "{status}"
    );
    let out = wxhub(&dir, &["vault", "rewrap"]);
    assert!(
        stdout(&out).contains("re-wrapped 1 data key(s)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn signing_key_rotation_publishes_first_and_activates_after_the_wait() {
    let dir = Dir::new();
    let run = |args: &[&str]| {
        let mut all = vec!["--dev-keyring"];
        all.extend_from_slice(args);
        wxhub(&dir, &all)
    };
    let none = run(&["signing-key", "activate"]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("no key is waiting"),
        "{}",
        stderr(&none)
    );

    let rotated = run(&["signing-key", "rotate"]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(stdout(&rotated).contains("published signing key"));

    let early = run(&["signing-key", "activate"]);
    assert!(!early.status.success());
    assert!(
        stderr(&early).contains("less than 24 hours"),
        "{}",
        stderr(&early)
    );

    let forced = run(&["signing-key", "activate", "--now"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(stdout(&forced).contains("now signs ID tokens"));
}

#[test]
fn operator_create_prints_a_one_time_setup_link_and_no_password() {
    let dir = Dir::new();
    assert!(wxhub(&dir, &["vault", "init"]).status.success());
    let first = wxhub(&dir, &["operator", "create", "ops@hub.example"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let text = stdout(&first);
    assert!(text.contains("operator ops@hub.example"), "{text}");
    assert!(text.contains("within 1 hour"), "{text}");
    let link = |text: &str| {
        text.split_whitespace()
            .find(|w| w.contains("/dashboard/setup/"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no setup link in {text}"))
    };
    // Asking again (the link was lost) gives a new link.
    let second = wxhub(&dir, &["operator", "create", "OPS@hub.example"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_ne!(link(&text), link(&stdout(&second)));
    let bad = wxhub(&dir, &["operator", "create", "not-an-email"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("not an email address"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn serve_prints_the_first_operators_setup_link_on_a_new_hub() {
    use std::io::{BufRead, BufReader};
    let dir = Dir::new();
    assert!(wxhub(&dir, &["vault", "init"]).status.success());
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxhub"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WXHUB_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "serve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start wxhub serve");
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keeps reading after the test stopped listening (a closed pipe would end the hub).
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let first = receive.recv_timeout(std::time::Duration::from_secs(30));
    let link = receive.recv_timeout(std::time::Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    let first = first.expect("serve prints a line");
    assert!(first.contains("No operator exists yet"), "{first}");
    assert!(first.contains("within 1 hour"), "{first}");
    let link = link.expect("and the link");
    assert!(link.trim().contains("/dashboard/setup/"), "{link}");
}
