//! The operator commands: `wxhub migrate`, `wxhub vault …` and `wxhub healthcheck`. Each returns the report to
//! print, so tests run them in-process exactly as the CLI does.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use store::Store;
use store::sealed::DekHolder;
use vault::{KEYRING_ENV_VAR, KeyId, Keyring, Vault};
use wechat::{Clock, SystemClock};

use accounts::rotation;

use crate::config::{Config, KeyringSource};

/// The `/readyz` URL of the server this configuration describes, on loopback when it
/// listens on every interface (as in a container).
pub fn readyz_url(config: &Config) -> url::Url {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    url::Url::parse(&format!("http://{addr}/readyz")).expect("a socket address is a valid host")
}

/// `wxhub healthcheck`: asks a server's `/readyz` and fails unless it answers 200 within a few
/// seconds. For container health checks: the runtime image has no HTTP client of its own.
pub async fn healthcheck(config: &Config, url: Option<url::Url>) -> anyhow::Result<String> {
    let url = url.unwrap_or_else(|| readyz_url(config));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("{url} does not answer"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    // The first line is enough to say why (`ready`, `database unavailable`, …).
    let body: String = body
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    if !status.is_success() {
        bail!("{url} answered {status}: {body}");
    }
    Ok(format!("{url}: {body}"))
}

/// `wxhub migrate`: applies pending migrations (or, with `check`, only reports them).
pub async fn migrate(config: &Config, check: bool) -> anyhow::Result<String> {
    let store = Store::connect_unmigrated(&config.database_url).await?;
    let status = store.schema_status().await?;
    let pending = status.pending();
    let report = if check {
        if pending.is_empty() {
            format!("schema is up to date (version {})", latest(&status.applied))
        } else {
            format!("pending migrations: {pending:?}")
        }
    } else {
        let applied = store.migrate().await?;
        if applied.is_empty() {
            format!("schema is up to date (version {})", latest(&status.applied))
        } else {
            format!("applied migrations {applied:?}")
        }
    };
    store.close().await;
    Ok(report)
}

fn latest(versions: &[i64]) -> i64 {
    versions.iter().copied().max().unwrap_or(0)
}

/// The keyring file the vault commands edit; a keyring held in the environment cannot be
/// edited in place.
fn keyring_file(config: &Config) -> anyhow::Result<PathBuf> {
    match &config.keyring {
        KeyringSource::File { path, .. } => Ok(path.clone()),
        KeyringSource::Env => bail!(
            "the keyring comes from {KEYRING_ENV_VAR}, which this command cannot edit: unset it, \
             write its decoded value to a file (mode 0600) and pass --keyring-file; afterwards \
             put the new file's base64 (`base64 -w0 FILE`) back into {KEYRING_ENV_VAR}"
        ),
    }
}

/// A fresh key id: `k` and the Unix time, unique for keys created a second apart.
fn new_key_id(requested: Option<String>) -> anyhow::Result<KeyId> {
    let id = requested.unwrap_or_else(|| format!("k{}", SystemClock.now_secs()));
    Ok(KeyId::new(id)?)
}

/// `wxhub vault init`: creates a keyring file with one fresh key; never replaces one.
pub fn vault_init(config: &Config, key_id: Option<String>) -> anyhow::Result<String> {
    let path = keyring_file(config)?;
    let keyring = Keyring::generate(new_key_id(key_id)?);
    keyring.create_new(&path)?;
    Ok(format!(
        "created keyring {} with master key `{}` (mode 0600).\n\
         Back it up apart from the database: without it the stored secrets cannot be read.",
        path.display(),
        keyring.active_id()
    ))
}

async fn open_store_and_keyring(config: &Config) -> anyhow::Result<(Store, Keyring)> {
    let keyring = crate::unseal::load_keyring(config)?;
    let store = Store::connect(&config.database_url).await?;
    Ok((store, keyring))
}

/// `wxhub vault status`: the keyring's keys and how many data keys of each kind (accounts,
/// signing keys, …) each one wraps.
pub async fn vault_status(config: &Config) -> anyhow::Result<String> {
    let (store, keyring) = open_store_and_keyring(config).await?;
    let status = rotation::status(&store, &keyring).await?;
    store.close().await;
    let mut out = String::new();
    write!(out, "{:<34}", "master key")?;
    for holder in DekHolder::ALL {
        write!(out, " {:>12}", holder.plural())?;
    }
    writeln!(out, "  state")?;
    let mut row = |key: &rotation::KeyUse, state: &str| -> std::fmt::Result {
        write!(out, "{:<34}", key.kek_id)?;
        for holder in DekHolder::ALL {
            write!(out, " {:>12}", key.count(holder))?;
        }
        writeln!(out, "  {state}")
    };
    for key in &status.keys {
        row(
            key,
            if key.kek_id == status.active {
                "active"
            } else {
                ""
            },
        )?;
    }
    for key in &status.missing {
        row(key, "MISSING from the keyring")?;
    }
    match status.pending_rewrap() {
        0 => writeln!(out, "every data key is wrapped under the active key")?,
        n => writeln!(
            out,
            "{n} data key(s) are not yet under the active key: run `wxhub vault rewrap`"
        )?,
    }
    if !status.missing.is_empty() {
        return Err(rotation::RotationError::MissingKeys {
            missing: status.missing,
        })
        .context(out);
    }
    Ok(out)
}

/// `wxhub vault rotate`: adds a fresh master key, makes it active, and (unless `no_rewrap`)
/// re-wraps every data key — accounts' and signing keys' — under it.
///
/// The order is the rule of `docs/operations.md` (rotating the master key): the new key is in
/// the keyring file (one atomic write) before anything is wrapped under it, so a server reading
/// the same file that meets a data key under the new key adds it from the file at once
/// (`VaultHandle::for_kek`) instead of failing until its next periodic reload; and the old key
/// stays in the file until `drop-key` finds nothing under it.
pub async fn vault_rotate(
    config: &Config,
    key_id: Option<String>,
    no_rewrap: bool,
    batch: u32,
) -> anyhow::Result<String> {
    let path = keyring_file(config)?;
    let (store, keyring) = open_store_and_keyring(config).await?;
    // Refuse before writing anything if the keyring does not belong to this database.
    rotation::check_keyring_matches(&store, &keyring).await?;
    let rotated = keyring.add_key(new_key_id(key_id)?)?;
    rotated.save(&path)?;
    let out = format!(
        "added master key `{}` to {} and made it active\n",
        rotated.active_id(),
        path.display()
    );
    finish_activation(store, rotated, no_rewrap, batch, out).await
}

/// `wxhub vault rotate --no-activate`: adds a fresh master key without making it active, for
/// replicas with their own copies of the keyring: once every copy holds the key, activating it
/// anywhere ([`vault_activate`]) wraps under a key every replica can already read.
pub async fn vault_add_inactive_key(
    config: &Config,
    key_id: Option<String>,
) -> anyhow::Result<String> {
    let path = keyring_file(config)?;
    let (store, keyring) = open_store_and_keyring(config).await?;
    let checked = rotation::check_keyring_matches(&store, &keyring).await;
    store.close().await;
    checked?;
    let staged = keyring
        .add_key(new_key_id(key_id)?)?
        .with_active(keyring.active_id())?;
    let added = staged.key_ids().last().expect("the key just added").clone();
    staged.save(&path)?;
    Ok(format!(
        "added master key `{added}` to {} (not active; `{}` stays active).\n\
         Copy this keyring file to every replica, then run `wxhub vault activate {added}`\n",
        path.display(),
        staged.active_id()
    ))
}

/// `wxhub vault activate`: makes a key of the keyring the active one and (unless
/// `no_rewrap`) re-wraps every data key under it.
pub async fn vault_activate(
    config: &Config,
    key_id: &str,
    no_rewrap: bool,
    batch: u32,
) -> anyhow::Result<String> {
    let path = keyring_file(config)?;
    let (store, keyring) = open_store_and_keyring(config).await?;
    rotation::check_keyring_matches(&store, &keyring).await?;
    let activated = keyring.with_active(&KeyId::new(key_id)?)?;
    activated.save(&path)?;
    let out = format!("made master key `{key_id}` active in {}\n", path.display());
    finish_activation(store, activated, no_rewrap, batch, out).await
}

/// After a new active key is saved: the re-wrap under it, or the reminder to run it.
async fn finish_activation(
    store: Store,
    keyring: Keyring,
    no_rewrap: bool,
    batch: u32,
    mut out: String,
) -> anyhow::Result<String> {
    if no_rewrap {
        out.push_str(
            "data keys were not re-wrapped: run `wxhub vault rewrap` when every replica has \
             the new keyring\n",
        );
    } else {
        let report = rotation::rewrap_all(&store, &Vault::new(keyring), &SystemClock, batch).await;
        out.push_str(&describe_rewrap(&report?));
    }
    store.close().await;
    Ok(out)
}

/// `wxhub vault rewrap`: re-wraps every data key not yet under the active key. Resumable.
pub async fn vault_rewrap(config: &Config, batch: u32) -> anyhow::Result<String> {
    let (store, keyring) = open_store_and_keyring(config).await?;
    let report = rotation::rewrap_all(&store, &Vault::new(keyring), &SystemClock, batch).await?;
    store.close().await;
    Ok(describe_rewrap(&report))
}

fn describe_rewrap(report: &rotation::RewrapReport) -> String {
    let mut out = format!("re-wrapped {} data key(s)", report.rewrapped);
    if !report.rewrapped_by_holder.is_empty() {
        let parts: Vec<String> = report
            .rewrapped_by_holder
            .iter()
            .map(|(holder, n)| format!("{n} {}(s)", holder.noun()))
            .collect();
        let _ = write!(out, " ({})", parts.join(", "));
    }
    if report.raced > 0 {
        let _ = write!(
            out,
            "; {} changed underneath and were retried",
            report.raced
        );
    }
    if report.remaining > 0 {
        let _ = write!(
            out,
            "\n{} data key(s) are still under an older key: some server is creating accounts \
             or signing keys with an old keyring; give every replica the new keyring and run \
             `wxhub vault rewrap` again",
            report.remaining
        );
    }
    out.push('\n');
    out
}

/// `wxhub vault drop-key`: removes a master key that no data key of any kind uses any more.
pub async fn vault_drop_key(config: &Config, key_id: &str) -> anyhow::Result<String> {
    let path = keyring_file(config)?;
    let (store, keyring) = open_store_and_keyring(config).await?;
    let status = rotation::status(&store, &keyring).await;
    store.close().await;
    let status = status?;
    if !status.missing.is_empty() {
        // The keyring does not belong to this database: editing it would only hide that.
        return Err(rotation::RotationError::MissingKeys {
            missing: status.missing,
        }
        .into());
    }
    if let Some(key) = status.in_use().find(|key| key.kek_id == key_id) {
        bail!(
            "master key `{key_id}` still wraps {}; nothing was removed. Run `wxhub vault \
             rewrap` first, which re-wraps them under the active key `{}`",
            key.describe_counts(),
            status.active
        );
    }
    let in_use: Vec<KeyId> = status
        .in_use()
        .map(|key| KeyId::new(key.kek_id.clone()))
        .collect::<Result<_, _>>()?;
    let smaller = keyring.remove_key(&KeyId::new(key_id)?, &in_use)?;
    smaller.save(&path)?;
    Ok(format!(
        "removed master key `{key_id}` from {}; destroy any backup copies of it too\n",
        path.display()
    ))
}
