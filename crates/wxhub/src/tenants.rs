//! `wxhub account …` and `wxhub apikey …`: registering accounts and managing their API keys
//! from the command line, until the dashboard exists.
//!
//! Secrets never come from argv (it is visible in `ps` and shell history): `account add`
//! reads the AppSecret — and optionally the push Token and EncodingAESKey — from stdin, one per
//! line. `apikey create` prints the new key once; only its SHA-256 is stored, so it cannot be
//! shown again. Each function returns the report to print, so tests run them in-process with
//! the same code path as the CLI.

use std::fmt::Write as _;
use std::io::BufRead;

use accounts::AccountInput;
use anyhow::{Context, bail};
use store::Store;
use store::accounts::{Account, AccountKind, TokenMode};
use store::people::{NewUser, Role};
use vault::SecretString;
use wechat::{Clock, SystemClock};

use crate::config::Config;

/// What `wxhub account add` registers (everything but the secrets, which come from stdin).
#[derive(Debug, Clone)]
pub struct NewAccountArgs {
    pub appid: String,
    pub name: String,
    /// Email of the owning dashboard user; created (without a password) if missing.
    pub owner_email: String,
    pub kind: AccountKind,
    pub verified: bool,
    pub token_mode: TokenMode,
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if config.database_url.starts_with("sqlite:") {
        crate::server::create_data_dir(&config.data_dir)?;
    }
    Ok(Store::connect(&config.database_url).await?)
}

async fn account_by_appid(store: &Store, appid: &str) -> anyhow::Result<Account> {
    store
        .find_account_by_appid(appid)
        .await?
        .with_context(|| format!("no account with appid {appid} is registered"))
}

/// Reads one line of `input` as a secret; `None` for an absent or empty line.
fn read_secret_line(input: &mut dyn BufRead) -> anyhow::Result<Option<SecretString>> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("reading secrets from stdin")?;
    let value = line.trim().to_owned();
    // Wipe the buffer's copy; the value lives on in a zeroizing SecretString.
    line.clear();
    Ok((!value.is_empty()).then(|| SecretString::new(value)))
}

/// `wxhub account add`: registers an account with its secrets from `secrets` (stdin): line 1
/// the AppSecret, optional line 2 the push Token, optional line 3 the EncodingAESKey. The
/// running scheduler fetches its first token within seconds.
pub async fn account_add(
    config: &Config,
    args: &NewAccountArgs,
    secrets: &mut dyn BufRead,
) -> anyhow::Result<String> {
    let appsecret = read_secret_line(secrets)?.context(
        "no AppSecret on stdin: pipe it in, e.g. `wxhub account add … < secret.txt`, or type it \
         and press Enter",
    )?;
    let push_token = read_secret_line(secrets)?;
    let encoding_aes_key = read_secret_line(secrets)?;
    let vault = crate::unseal::open_vault(config)?;
    let store = open_store(config).await?;
    let now = SystemClock.now_ms();
    let owner = match store.find_user_by_email(&args.owner_email).await? {
        Some(user) => user,
        None => {
            store
                .create_user(
                    &NewUser {
                        id: store::new_id(),
                        email: args.owner_email.clone(),
                        // Not a PHC string: no password verifies until the owner sets one.
                        password_hash: "!".to_owned(),
                        role: Role::Owner,
                    },
                    now,
                )
                .await?
        }
    };
    let input = AccountInput {
        owner_user_id: owner.id,
        appid: args.appid.clone(),
        name: args.name.clone(),
        kind: args.kind,
        verified: args.verified,
        token_mode: args.token_mode,
        appsecret,
        push_token,
        encoding_aes_key,
    };
    let account = accounts::register_account(&store, &vault, &input, now).await?;
    store.close().await;
    Ok(format!(
        "registered account {} ({}) with id {}, token mode {}.\n\
         The scheduler fetches its first access_token within seconds. Create an API key for its \
         backends with `wxhub apikey create {}`.",
        account.appid, account.name, account.id, account.token_mode, account.appid
    ))
}

/// `wxhub account list`: every account with its token state.
pub async fn account_list(config: &Config) -> anyhow::Result<String> {
    let store = open_store(config).await?;
    let mut out = String::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_accounts_page(after.as_deref(), 1000).await?;
        for account in &page {
            let token = store.get_core_token(&account.id).await?;
            let (state, reason) = token
                .map(|t| (t.state.to_string(), t.last_error_message))
                .unwrap_or_else(|| ("pending".to_owned(), None));
            let _ = writeln!(
                out,
                "{}  {}  mode={}  {}  token={}{}",
                account.appid,
                account.name,
                account.token_mode,
                account.state,
                state,
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            );
        }
        if page.len() < 1000 {
            break;
        }
        after = page.last().map(|a| a.id.clone());
    }
    store.close().await;
    if out.is_empty() {
        out.push_str("no accounts registered; add one with `wxhub account add`\n");
    }
    Ok(out)
}

/// `wxhub apikey create`: a new API key for the account's backends, printed once.
pub async fn apikey_create(config: &Config, appid: &str, label: &str) -> anyhow::Result<String> {
    let store = open_store(config).await?;
    let account = account_by_appid(&store, appid).await?;
    let key = scheduler::apikey::generate_api_key()
        .map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
    let record = store
        .create_api_key(
            &store::new_id(),
            &account.id,
            &key.hash,
            label,
            SystemClock.now_ms(),
        )
        .await?;
    store.close().await;
    Ok(format!(
        "{}\n\nThis is API key {} for {} — shown once, store it now (only its hash is kept).\n\
         Use it as `Authorization: Bearer <key>` on /api/v1/accounts/{}/…",
        key.key.expose(),
        record.id,
        appid,
        appid
    ))
}

/// `wxhub apikey list`: an account's keys (ids, labels, use), never the keys.
pub async fn apikey_list(config: &Config, appid: &str) -> anyhow::Result<String> {
    let store = open_store(config).await?;
    let account = account_by_appid(&store, appid).await?;
    let keys = store.list_api_keys(&account.id).await?;
    store.close().await;
    let mut out = String::new();
    for key in &keys {
        let _ = writeln!(
            out,
            "{}  {}  created={}  last_used={}  {}",
            key.id,
            key.label,
            key.created_at,
            key.last_used_at
                .map_or_else(|| "never".to_owned(), |t| t.to_string()),
            if key.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            }
        );
    }
    if out.is_empty() {
        out = format!("{appid} has no API keys; create one with `wxhub apikey create {appid}`\n");
    }
    Ok(out)
}

/// `wxhub apikey revoke`: revokes a key. Running servers stop accepting it within 10 s.
pub async fn apikey_revoke(config: &Config, appid: &str, key_id: &str) -> anyhow::Result<String> {
    let store = open_store(config).await?;
    let account = account_by_appid(&store, appid).await?;
    let revoked = store
        .revoke_api_key(&account.id, key_id, SystemClock.now_ms())
        .await?;
    store.close().await;
    if !revoked {
        bail!("{appid} has no active API key with id {key_id} (see `wxhub apikey list {appid}`)");
    }
    Ok(format!(
        "revoked API key {key_id} of {appid}; running servers refuse it within 10 s"
    ))
}

/// What `wxhub account configure` changes: `None` keeps a value, `Some("")` clears it.
#[derive(Debug, Clone, Default)]
pub struct SettingsChange {
    pub original_id: Option<String>,
    pub push_mode: Option<String>,
    pub push_relay_url: Option<String>,
    pub follow_qr_url: Option<String>,
    pub follow_link: Option<String>,
}

fn apply(target: &mut Option<String>, change: Option<String>) {
    if let Some(value) = change {
        *target = (!value.trim().is_empty()).then(|| value.trim().to_owned());
    }
}

/// `wxhub account configure`: updates the account's login-gateway settings and prints them.
pub async fn account_configure(
    config: &Config,
    appid: &str,
    change: SettingsChange,
) -> anyhow::Result<String> {
    use gateway::settings::PushMode;
    let store = open_store(config).await?;
    let account = account_by_appid(&store, appid).await?;
    let mut settings = store.gateway_settings(&account.id).await?;
    apply(&mut settings.original_id, change.original_id);
    apply(&mut settings.push_relay_url, change.push_relay_url);
    apply(&mut settings.follow_qr_url, change.follow_qr_url);
    apply(&mut settings.follow_link, change.follow_link);
    if let Some(mode) = change.push_mode {
        settings.push_mode = match mode.as_str() {
            "plain" => Some(PushMode::Plain),
            "compatible" => Some(PushMode::Compatible),
            "safe" => Some(PushMode::Safe),
            "" => None,
            other => bail!("push mode {other:?} is not plain, compatible or safe"),
        };
    }
    gateway::settings::update(&store, &account.id, &settings, SystemClock.now_ms()).await?;
    store.close().await;
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not set)".to_owned());
    Ok(format!(
        "{appid} login gateway settings:\n  original id:    {}\n  push mode:      {}\n  \
         push relay URL: {}\n  follow QR URL:  {}\n  follow link:    {}\n  push URL to enter in \
         WeChat's console: {}/t/{appid}/wechat/push\n",
        show(&settings.original_id),
        settings.push_mode.map_or(
            "(by key: safe when an EncodingAESKey is set)".to_owned(),
            |m| m.to_string()
        ),
        show(&settings.push_relay_url),
        show(&settings.follow_qr_url),
        show(&settings.follow_link),
        config.public_url.as_str().trim_end_matches('/'),
    ))
}
