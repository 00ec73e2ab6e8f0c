//! `wxhub account …`, `wxhub apikey …`, `wxhub client …` and `wxhub audit`: the command line
//! as a thin adapter over the tenancy layer, acting as [`Principal::cli`].
//!
//! Secrets never come from argv (it is visible in `ps` and shell history): they are read from
//! stdin, one per line. Credentials that wxhub creates (API keys, client secrets, generated
//! push credentials) are printed once; only hashes (or vault ciphertext, for what wxhub must
//! use itself) are kept. Each function returns the report to print, so tests run them
//! in-process with the same code path as the CLI.

use std::fmt::Write as _;
use std::io::BufRead;
use std::sync::Arc;

use anyhow::Context;
use store::Store;
use store::accounts::{AccountKind, TokenMode};
use store::api_keys::{ApiKey, KeyScopes};
use store::oidc::{LoginMode, LoginSurface, OidcClient};
use tenancy::keys::KeyRequest;
use tenancy::people::AuditQuery;
use tenancy::settings::{PushMode, SettingsChange};
use tenancy::tenants::{AccountQuery, AccountView, LiveCheck, NewOwner, Registration};
use tenancy::websites::{NewWebsite, WebsiteChanges};
use tenancy::{Principal, Tenancy, TenancyConfig, TenancyError};
use vault::SecretString;
use wechat::SystemClock;

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
    /// Store without asking WeChat first.
    pub skip_check: bool,
}

/// Opens the store (creating the data directory for SQLite) without starting anything.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if config.database_url.starts_with("sqlite:") {
        crate::server::create_data_dir(&config.data_dir)?;
    }
    Ok(Store::connect(&config.database_url).await?)
}

/// The tenancy layer as the CLI uses it: the configured database and keyring, WeChat at the
/// configured URLs.
pub async fn open_tenancy(config: &Config) -> anyhow::Result<Tenancy> {
    let vault = crate::unseal::open_vault(config)?;
    let store = open_store(config).await?;
    Ok(Tenancy::new(
        store,
        Arc::new(accounts::VaultHandle::fixed(vault)),
        crate::server::wechat_client(config)?,
        Arc::new(SystemClock),
        TenancyConfig::new(config.public_url.clone()),
    ))
}

/// A tenancy error as the terminal shows it: the message, and for a failed credential check
/// the fix in both languages.
fn explain(error: TenancyError) -> anyhow::Error {
    match &error {
        TenancyError::CredentialCheck(failure) => {
            let fix = failure.fix();
            anyhow::anyhow!(
                "WeChat refused the credentials; nothing was stored.\n  {}\n  {}",
                fix.en,
                fix.zh
            )
        }
        _ => anyhow::Error::new(error),
    }
}

/// Runs `f` on a freshly opened tenancy layer and closes the store afterwards.
pub(crate) async fn with_tenancy<T>(
    config: &Config,
    f: impl AsyncFnOnce(&Tenancy, &Principal) -> Result<T, TenancyError>,
) -> anyhow::Result<T> {
    let tenancy = open_tenancy(config).await?;
    let result = f(&tenancy, &Principal::cli()).await;
    tenancy.store().close().await;
    result.map_err(explain)
}

/// `wxhub operator create EMAIL`: the operator (created without a password when new) and
/// their one-time setup link.
pub async fn operator_create(config: &Config, email: &str) -> anyhow::Result<String> {
    let invitation = with_tenancy(config, async |tenancy, cli| {
        tenancy
            .invite_person(cli, email, store::people::Role::Operator)
            .await
    })
    .await?;
    let link = dashboard::link_url(
        &config.public_url,
        invitation.link.purpose,
        invitation.link.token.expose(),
    );
    Ok(format!(
        "operator {}: open this link within 1 hour to choose a password (it works once):\n  {link}\n",
        invitation.person.email
    ))
}

/// Reads one line of `input` as a secret; `None` for an absent or empty line.
pub(crate) fn read_secret_line(input: &mut dyn BufRead) -> anyhow::Result<Option<SecretString>> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("reading secrets from stdin")?;
    let value = line.trim().to_owned();
    // Wipe the buffer's copy; the value lives on in a zeroizing SecretString.
    line.clear();
    Ok((!value.is_empty()).then(|| SecretString::new(value)))
}

pub(crate) fn time(ms: i64) -> String {
    // Seconds since the epoch in UTC, ISO-like, without a date library.
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn describe_account(view: &AccountView) -> String {
    let a = &view.account;
    let h = &view.health;
    let mut line = format!(
        "{}  {}  mode={}  {}  token={}  fetches today={}/{}",
        a.appid, a.name, a.token_mode, a.state, h.state, h.fetches_today, h.daily_budget
    );
    if let Some(expires) = h.expires_at {
        let _ = write!(line, "  expires={}", time(expires));
    }
    match (&h.fix, &h.last_error) {
        // The scheduler's reason is the English fix; show both languages once.
        (Some(fix), _) => {
            let _ = write!(line, "\n    fix: {}\n    处理：{}", fix.en, fix.zh);
        }
        (None, Some(error)) => {
            let _ = write!(line, "\n    last error: {error}");
        }
        (None, None) => {}
    }
    line
}

/// `wxhub account add`: registers an account with its secrets from `secrets` (stdin): line 1
/// the AppSecret, optional line 2 the push Token, optional line 3 the EncodingAESKey. The
/// credentials are checked with WeChat first (without invalidating any token) unless
/// `--skip-check`; the running scheduler fetches the first token within seconds.
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
    let registration = Registration {
        appid: args.appid.clone(),
        name: args.name.clone(),
        kind: args.kind,
        verified: args.verified,
        token_mode: args.token_mode,
        appsecret,
        push_token,
        encoding_aes_key,
        owner: NewOwner::Email(args.owner_email.clone()),
        check: if args.skip_check {
            LiveCheck::Skip
        } else {
            LiveCheck::Check
        },
    };
    let view = with_tenancy(config, async |t, p| {
        t.register_account(p, registration).await
    })
    .await?;
    let account = &view.account;
    Ok(format!(
        "registered account {} ({}) with id {}, token mode {}{}.\n\
         The scheduler fetches its first access_token within seconds. Create an API key for its \
         backends with `wxhub apikey create {}`.",
        account.appid,
        account.name,
        account.id,
        account.token_mode,
        if args.skip_check {
            "; the credentials were NOT checked with WeChat"
        } else {
            "; WeChat accepted the credentials"
        },
        account.appid
    ))
}

/// `wxhub account import`: registers every account listed on `input`, one a line —
/// `APPID<TAB>NAME<TAB>APPSECRET`, or the same as CSV (a spreadsheet's export, with or without
/// an `appid,name,appsecret` header) — under one owner, in one process (a migration from another
/// platform, or a test's thousand accounts). Blank lines and lines starting with `#` are
/// skipped.
///
/// With `--skip-check` it is the bulk path ([`Tenancy::import_accounts`]): every line is
/// checked first and, if any is wrong, each is named and nothing is stored; then the accounts
/// are written 10,000 a transaction with the progress on stderr. Otherwise each line is asked
/// of WeChat and registered in turn, stopping at the first that fails (naming it; the
/// accounts before it stay registered, so the rest can be fed again).
pub async fn account_import(
    config: &Config,
    args: &NewAccountArgs,
    input: &mut dyn BufRead,
) -> anyhow::Result<String> {
    if args.skip_check {
        return account_bulk_import(config, args, input).await;
    }
    account_import_checked(config, args, input).await
}

/// One line of an import: its number and fields, the secret already in a zeroizing string.
struct RawLine {
    number: u64,
    appid: String,
    name: String,
    secret: SecretString,
}

/// Reads `input`'s account lines; a line without its three fields is an error naming it.
fn read_lines(
    input: &mut dyn BufRead,
    mut each: impl FnMut(RawLine) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut number = 0;
    let mut raw = String::new();
    // Whether a line with fields was read: only the first may be a header.
    let mut seen_data = false;
    loop {
        raw.clear();
        if input.read_line(&mut raw).context("reading stdin")? == 0 {
            return Ok(());
        }
        number += 1;
        // The line holds a secret: only a zeroizing copy outlives this step.
        let line = SecretString::new(raw.trim().to_owned());
        raw.clear();
        let line = line.expose();
        let line = line.strip_prefix('\u{feff}').unwrap_or(line); // a spreadsheet's BOM
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some([appid, name, secret]) = split_fields(line) else {
            anyhow::bail!(
                "line {number}: expected APPID<TAB>NAME<TAB>APPSECRET or APPID,NAME,APPSECRET \
                 (a CSV field with a comma or quote in double quotes, a quote doubled)"
            );
        };
        if !seen_data && appid.expose().trim().eq_ignore_ascii_case("appid") {
            // A spreadsheet's header row.
            seen_data = true;
            continue;
        }
        seen_data = true;
        each(RawLine {
            number,
            appid: appid.expose().trim().to_owned(),
            name: name.expose().trim().to_owned(),
            secret: SecretString::new(secret.expose().trim().to_owned()),
        })?;
    }
}

/// A line's three fields: tab-separated when it holds a tab, otherwise CSV (RFC 4180 within
/// one line: fields separated by commas, a field in double quotes may hold commas, and `""`
/// inside it is a quote). `None` unless there are exactly three fields (a name may hold a tab
/// or comma only in the form that allows it). The secret is returned in a zeroizing string.
fn split_fields(line: &str) -> Option<[SecretString; 3]> {
    let fields: Vec<SecretString> = if line.contains('\t') {
        line.split('\t')
            .map(|f| SecretString::new(f.to_owned()))
            .collect()
    } else {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars().peekable();
        let mut quoted = false;
        let mut at_start = true;
        while let Some(c) = chars.next() {
            match c {
                '"' if at_start => quoted = true,
                '"' if quoted => {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        quoted = false;
                        // Only a separator may follow a closing quote.
                        if chars.peek().is_some_and(|&n| n != ',') {
                            return None;
                        }
                    }
                }
                ',' if !quoted => {
                    fields.push(SecretString::new(std::mem::take(&mut field)));
                    at_start = true;
                    continue;
                }
                _ => field.push(c),
            }
            at_start = false;
        }
        if quoted {
            return None;
        }
        fields.push(SecretString::new(field));
        fields
    };
    <[SecretString; 3]>::try_from(fields).ok()
}

async fn account_bulk_import(
    config: &Config,
    args: &NewAccountArgs,
    input: &mut dyn BufRead,
) -> anyhow::Result<String> {
    let mut lines = Vec::new();
    read_lines(input, |line| {
        lines.push(tenancy::tenants::ImportLine {
            line: line.number,
            appid: line.appid,
            name: line.name,
            kind: args.kind,
            verified: args.verified,
            token_mode: args.token_mode,
            appsecret: line.secret,
            push_token: None,
            encoding_aes_key: None,
        });
        Ok(())
    })
    .with_context(|| "nothing was stored".to_owned())?;
    let total = lines.len();
    let tenancy = open_tenancy(config).await?;
    let mut progress = |stored: usize| eprintln!("stored {stored} of {total} accounts");
    let result = tenancy
        .import_accounts(&Principal::cli(), &args.owner_email, lines, &mut progress)
        .await;
    tenancy.store().close().await;
    let stored = match result {
        Ok(stored) => stored,
        Err(TenancyError::Import { errors }) => {
            let mut text = format!(
                "{} line(s) cannot be imported; nothing was stored. Fix them and import the \
                 file again:",
                errors.len()
            );
            for error in errors.iter().take(100) {
                let _ = write!(text, "\n  {error}");
            }
            if errors.len() > 100 {
                let _ = write!(text, "\n  … and {} more", errors.len() - 100);
            }
            anyhow::bail!(text);
        }
        Err(error) => return Err(explain(error)),
    };
    Ok(format!(
        "registered {stored} accounts; their credentials were NOT checked with WeChat. The \
         scheduler fetches their first access_tokens within seconds, spread over its schedule."
    ))
}

async fn account_import_checked(
    config: &Config,
    args: &NewAccountArgs,
    input: &mut dyn BufRead,
) -> anyhow::Result<String> {
    let tenancy = open_tenancy(config).await?;
    let result = import_lines(&tenancy, args, input).await;
    tenancy.store().close().await;
    let registered = result?;
    Ok(format!(
        "registered {registered} accounts; WeChat accepted every account's credentials. The \
         scheduler fetches their first access_tokens within seconds."
    ))
}

async fn import_lines(
    tenancy: &Tenancy,
    args: &NewAccountArgs,
    input: &mut dyn BufRead,
) -> anyhow::Result<usize> {
    let mut lines = Vec::new();
    read_lines(input, |line| {
        lines.push(line);
        Ok(())
    })
    .context("nothing was registered")?;
    let mut registered = 0;
    for line in lines {
        let registration = Registration {
            appid: line.appid.clone(),
            name: line.name,
            kind: args.kind,
            verified: args.verified,
            token_mode: args.token_mode,
            appsecret: line.secret,
            push_token: None,
            encoding_aes_key: None,
            owner: NewOwner::Email(args.owner_email.clone()),
            check: LiveCheck::Check,
        };
        tenancy
            .register_account(&Principal::cli(), registration)
            .await
            .map_err(explain)
            .with_context(|| {
                format!(
                    "line {} ({}): not registered; the {registered} accounts before it are",
                    line.number, line.appid
                )
            })?;
        registered += 1;
    }
    Ok(registered)
}

/// `wxhub account list`: every account with its token health.
pub async fn account_list(config: &Config) -> anyhow::Result<String> {
    let views = with_tenancy(config, async |t, p| {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = t
                .list_accounts(p, &AccountQuery::default(), after.as_deref(), 1000)
                .await?;
            let done = page.len() < 1000;
            after = page.last().map(|v| v.account.id.clone());
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    })
    .await?;
    if views.is_empty() {
        return Ok("no accounts registered; add one with `wxhub account add`\n".to_owned());
    }
    let mut out = String::new();
    for view in &views {
        let _ = writeln!(out, "{}", describe_account(view));
    }
    Ok(out)
}

/// `wxhub account show`: one account with its health and gateway settings.
pub async fn account_show(config: &Config, appid: &str) -> anyhow::Result<String> {
    let (view, settings) = with_tenancy(config, async |t, p| {
        Ok((
            t.account(p, appid).await?,
            t.gateway_settings(p, appid).await?,
        ))
    })
    .await?;
    Ok(format!(
        "{}\n  id:       {}\n  owner:    {}\n  created:  {}\n{}",
        describe_account(&view),
        view.account.id,
        view.account.owner_user_id,
        time(view.account.created_at),
        describe_settings(appid, &settings)
    ))
}

/// `wxhub account rename`.
pub async fn account_rename(config: &Config, appid: &str, name: &str) -> anyhow::Result<String> {
    let account = with_tenancy(config, async |t, p| t.rename_account(p, appid, name).await).await?;
    Ok(format!("renamed {} to {:?}\n", account.appid, account.name))
}

/// `wxhub account set-secret`: replaces the AppSecret (line 1 of stdin) after the live check.
pub async fn account_set_secret(
    config: &Config,
    appid: &str,
    skip_check: bool,
    input: &mut dyn BufRead,
) -> anyhow::Result<String> {
    let secret = read_secret_line(input)?
        .context("no AppSecret on stdin: pipe the new AppSecret in, one line")?;
    let check = if skip_check {
        LiveCheck::Skip
    } else {
        LiveCheck::Check
    };
    with_tenancy(config, async |t, p| {
        t.replace_appsecret(p, appid, secret, check).await
    })
    .await?;
    Ok(format!(
        "replaced the AppSecret of {appid}{}; a token refresh that was failing is retried at once\n",
        if skip_check {
            " (NOT checked with WeChat)"
        } else {
            " (WeChat accepted it)"
        }
    ))
}

/// `wxhub account push-credentials`: sets the push Token and EncodingAESKey from stdin (line
/// 1 and 2; an empty line clears), or with `generate` makes strong ones and prints them once.
pub async fn account_push_credentials(
    config: &Config,
    appid: &str,
    generate: bool,
    input: &mut dyn BufRead,
) -> anyhow::Result<String> {
    if generate {
        let creds = with_tenancy(config, async |t, p| {
            t.rotate_push_credentials(p, appid).await
        })
        .await?;
        return Ok(format!(
            "Token:          {}\nEncodingAESKey: {}\n\nShown only this once. Enter both in the WeChat \
             console (设置与开发 → 基本配置 → 服务器配置) for {appid}, with the push URL from \
             `wxhub account show {appid}`; wxhub accepts pushes signed with them from now on.\n",
            creds.token.expose(),
            creds.encoding_aes_key.expose()
        ));
    }
    let token = read_secret_line(input)?;
    let key = read_secret_line(input)?;
    let (has_token, has_key) = (token.is_some(), key.is_some());
    with_tenancy(config, async |t, p| {
        t.set_push_credentials(p, appid, token, key).await
    })
    .await?;
    Ok(format!(
        "push credentials of {appid}: Token {}, EncodingAESKey {}\n",
        if has_token { "set" } else { "cleared" },
        if has_key { "set" } else { "cleared" }
    ))
}

/// `wxhub account disable` / `enable`.
pub async fn account_set_enabled(
    config: &Config,
    appid: &str,
    enabled: bool,
) -> anyhow::Result<String> {
    let account = with_tenancy(config, async |t, p| {
        if enabled {
            t.enable_account(p, appid).await
        } else {
            t.disable_account(p, appid).await
        }
    })
    .await?;
    Ok(if enabled {
        format!(
            "{} is active again; its token is refreshed and served\n",
            account.appid
        )
    } else {
        format!(
            "{} is disabled: no refreshes, the token API answers 403 and logins are refused, on \
             every server within a second\n",
            account.appid
        )
    })
}

/// `wxhub account delete`: deletes the account after `confirm` repeats its appid.
pub async fn account_delete(config: &Config, appid: &str, confirm: &str) -> anyhow::Result<String> {
    if confirm != appid {
        anyhow::bail!(
            "deleting {appid} destroys its secrets, tokens, keys, websites and end users for good; \
             repeat the appid with --confirm {appid} to go ahead"
        );
    }
    with_tenancy(config, async |t, p| t.delete_account(p, appid).await).await?;
    Ok(format!(
        "deleted {appid}; its data key is gone, so its secrets can never be decrypted again\n"
    ))
}

/// `wxhub account refresh`: a new core token now.
pub async fn account_refresh(config: &Config, appid: &str) -> anyhow::Result<String> {
    with_tenancy(config, async |t, p| t.refresh_now(p, appid).await).await?;
    Ok(format!(
        "asked for a new access_token for {appid}; a running server fetches it within seconds \
         (the previous token keeps working for 5 minutes)\n"
    ))
}

/// `wxhub account clear-quota`.
pub async fn account_clear_quota(config: &Config, appid: &str) -> anyhow::Result<String> {
    with_tenancy(config, async |t, p| t.clear_quota(p, appid).await).await?;
    Ok(format!(
        "WeChat reset the daily API quotas of {appid} (one of its 10 resets this month)\n"
    ))
}

/// What `wxhub account configure` changes: `None` keeps a value, `Some("")` clears it.
#[derive(Debug, Clone, Default)]
pub struct SettingsArgs {
    pub original_id: Option<String>,
    pub push_mode: Option<String>,
    pub push_relay_url: Option<String>,
    pub follow_qr_url: Option<String>,
    pub follow_link: Option<String>,
}

fn clearable(value: Option<String>) -> Option<Option<String>> {
    value.map(|v| (!v.trim().is_empty()).then_some(v))
}

fn describe_settings(appid: &str, view: &tenancy::settings::SettingsView) -> String {
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not set)".to_owned());
    let s = &view.settings;
    format!(
        "{appid} login gateway settings:\n  original id:    {}\n  push mode:      {}\n  \
         push relay URL: {}\n  follow QR URL:  {}\n  follow link:    {}\n  push URL to enter in \
         WeChat's console: {}\n",
        show(&s.original_id),
        s.push_mode.map_or(
            "(by key: safe when an EncodingAESKey is set)".to_owned(),
            |m| m.to_string()
        ),
        show(&s.push_relay_url),
        show(&s.follow_qr_url),
        show(&s.follow_link),
        view.push_url,
    )
}

/// `wxhub account configure`: updates the account's login-gateway settings and prints them.
pub async fn account_configure(
    config: &Config,
    appid: &str,
    args: SettingsArgs,
) -> anyhow::Result<String> {
    let push_mode = match args.push_mode.as_deref() {
        None => None,
        Some("") => Some(None),
        Some("plain") => Some(Some(PushMode::Plain)),
        Some("compatible") => Some(Some(PushMode::Compatible)),
        Some("safe") => Some(Some(PushMode::Safe)),
        Some(other) => anyhow::bail!("push mode {other:?} is not plain, compatible or safe"),
    };
    let change = SettingsChange {
        original_id: clearable(args.original_id),
        push_mode,
        push_relay_url: clearable(args.push_relay_url),
        follow_qr_url: clearable(args.follow_qr_url),
        follow_link: clearable(args.follow_link),
    };
    let view = with_tenancy(config, async |t, p| {
        t.update_gateway_settings(p, appid, change).await
    })
    .await?;
    Ok(describe_settings(appid, &view))
}

/// `wxhub apikey create`: a new API key for the account's backends, printed once.
pub async fn apikey_create(
    config: &Config,
    appid: &str,
    label: &str,
    scopes: &str,
    proxy_paths: Vec<String>,
) -> anyhow::Result<String> {
    let scopes = KeyScopes::parse(scopes).with_context(|| {
        format!("scopes {scopes:?}: list token, report and/or proxy, separated by commas")
    })?;
    let request = KeyRequest {
        label: label.to_owned(),
        scopes,
        proxy_paths: (!proxy_paths.is_empty()).then_some(proxy_paths),
    };
    let created = with_tenancy(config, async |t, p| {
        t.create_api_key(p, appid, &request).await
    })
    .await?;
    Ok(format!(
        "{}\n\nThis is API key {} for {} (scopes {}) — shown once, store it now (only its hash \
         is kept).\nUse it as `Authorization: Bearer <key>` on /api/v1/accounts/{}/…",
        created.key.expose(),
        created.record.id,
        appid,
        created.record.scopes.to_db(),
        appid
    ))
}

fn describe_key(key: &ApiKey) -> String {
    format!(
        "{}  {}  scopes={}{}  created={}  last_used={}  {}",
        key.id,
        if key.label.is_empty() {
            "(no label)"
        } else {
            &key.label
        },
        key.scopes.to_db(),
        key.proxy_paths
            .as_ref()
            .map(|p| format!(" paths={}", p.join(",")))
            .unwrap_or_default(),
        time(key.created_at),
        key.last_used_at.map_or_else(|| "never".to_owned(), time),
        if key.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        }
    )
}

/// `wxhub apikey list`: an account's keys (ids, labels, scopes, use), never the keys.
pub async fn apikey_list(config: &Config, appid: &str) -> anyhow::Result<String> {
    let keys = with_tenancy(config, async |t, p| t.list_api_keys(p, appid).await).await?;
    if keys.is_empty() {
        return Ok(format!(
            "{appid} has no API keys; create one with `wxhub apikey create {appid}`\n"
        ));
    }
    Ok(keys.iter().map(|k| describe_key(k) + "\n").collect())
}

/// `wxhub apikey revoke`: revokes a key; every running server refuses it within a second.
pub async fn apikey_revoke(config: &Config, appid: &str, key_id: &str) -> anyhow::Result<String> {
    with_tenancy(config, async |t, p| {
        t.revoke_api_key(p, appid, key_id).await
    })
    .await
    .with_context(|| format!("see `wxhub apikey list {appid}` for the key ids"))?;
    Ok(format!(
        "revoked API key {key_id} of {appid}; running servers refuse it within a second\n"
    ))
}

fn describe_client(client: &OidcClient, issuer: &str) -> String {
    format!(
        "client_id:     {}\nname:          {}\nissuer:        {issuer}\nlogin mode:    {}\n\
         redirect URIs: {}\nclient type:   {}\nID tokens:     {}\nlogins:        {}\n\
         scan confirm:  {}\ncreated:       {}\n",
        client.client_id,
        client.name,
        client.login_mode,
        client.redirect_uris.join(" "),
        if client.client_secret_hash.is_some() {
            "confidential (client_secret_basic or client_secret_post)"
        } else {
            "public (PKCE only)"
        },
        client.id_token_signed_response_alg,
        match client.login_surface {
            LoginSurface::Auto => "auto (WeChat's page inside WeChat, the scan page elsewhere)",
            LoginSurface::Wechat => "wechat (always WeChat's authorize page)",
            LoginSurface::Scan => "scan (always the scan page)",
        },
        match client.scan_confirmation {
            Some(true) => "on",
            Some(false) => "off",
            None => "default (on while pushes are in plain mode)",
        },
        time(client.created_at)
    )
}

/// Parses `on` / `off` / `default` for `--scan-confirmation`.
pub fn scan_confirmation(text: &str) -> anyhow::Result<Option<bool>> {
    match text {
        "on" => Ok(Some(true)),
        "off" => Ok(Some(false)),
        "default" => Ok(None),
        other => anyhow::bail!("scan confirmation {other:?} is not on, off or default"),
    }
}

/// Parses `follow-required` / `userinfo`.
pub fn login_mode(text: &str) -> anyhow::Result<LoginMode> {
    match text {
        "follow-required" => Ok(LoginMode::FollowRequired),
        "userinfo" => Ok(LoginMode::Userinfo),
        other => anyhow::bail!("login mode {other:?} is not follow-required or userinfo"),
    }
}

/// `wxhub client create`: registers a website; prints the client_id, the issuer URL and, for
/// a confidential client, the secret (only once).
pub async fn client_create(
    config: &Config,
    appid: &str,
    name: &str,
    redirect_uris: Vec<String>,
    mode: LoginMode,
    public: bool,
) -> anyhow::Result<String> {
    let new = NewWebsite {
        name: name.to_owned(),
        redirect_uris,
        login_mode: mode,
        public,
    };
    let created = with_tenancy(config, async |t, p| t.create_website(p, appid, &new).await).await?;
    let mut out = describe_client(&created.client, &created.issuer);
    match created.secret {
        Some(secret) => {
            let _ = write!(
                out,
                "client_secret: {}\n\nThe secret is shown only this once; store it in the \
                 website's configuration now.\n",
                secret.expose()
            );
        }
        None => out.push_str("public client: no secret; the website must use PKCE (S256).\n"),
    }
    Ok(out)
}

/// `wxhub client list`.
pub async fn client_list(config: &Config, appid: &str) -> anyhow::Result<String> {
    let clients = with_tenancy(config, async |t, p| t.list_websites(p, appid).await).await?;
    if clients.is_empty() {
        return Ok(format!(
            "{appid} has no websites; register one with `wxhub client create --appid {appid} …`\n"
        ));
    }
    Ok(clients
        .iter()
        .map(|c| {
            format!(
                "{}  {}  {}  {}\n",
                c.client_id,
                c.name,
                c.login_mode,
                c.redirect_uris.join(" ")
            )
        })
        .collect())
}

/// `wxhub client show`.
pub async fn client_show(config: &Config, appid: &str, client_id: &str) -> anyhow::Result<String> {
    let website = with_tenancy(config, async |t, p| t.website(p, appid, client_id).await).await?;
    Ok(describe_client(&website.client, &website.issuer))
}

/// `wxhub client edit`.
pub async fn client_edit(
    config: &Config,
    appid: &str,
    client_id: &str,
    changes: &WebsiteChanges,
) -> anyhow::Result<String> {
    let client = with_tenancy(config, async |t, p| {
        t.edit_website(p, appid, client_id, changes).await
    })
    .await?;
    let issuer = format!(
        "{}/t/{appid}",
        config.public_url.as_str().trim_end_matches('/')
    );
    Ok(describe_client(&client, &issuer))
}

/// `wxhub client rotate-secret`: prints the new secret once; the old one stops working.
pub async fn client_rotate_secret(
    config: &Config,
    appid: &str,
    client_id: &str,
) -> anyhow::Result<String> {
    let secret = with_tenancy(config, async |t, p| {
        t.rotate_website_secret(p, appid, client_id).await
    })
    .await?;
    Ok(format!(
        "client_secret: {}\n\nThe new secret is shown only this once and the old one no longer \
         works: update the website's configuration now.\n",
        secret.expose()
    ))
}

/// `wxhub client delete`.
pub async fn client_delete(
    config: &Config,
    appid: &str,
    client_id: &str,
) -> anyhow::Result<String> {
    with_tenancy(config, async |t, p| {
        t.delete_website(p, appid, client_id).await
    })
    .await?;
    Ok(format!(
        "deleted website {client_id} of {appid} with its pending logins, codes and tokens\n"
    ))
}

/// `wxhub audit`: the audit log, newest first.
pub async fn audit_list(config: &Config, query: AuditQuery, limit: u32) -> anyhow::Result<String> {
    let entries = with_tenancy(config, async |t, p| {
        t.list_audit(p, &query, None, limit).await
    })
    .await?;
    if entries.is_empty() {
        return Ok("no audit entries match\n".to_owned());
    }
    Ok(entries
        .iter()
        .map(|e| {
            format!(
                "{}  {:<28} actor={} {}{}{}\n",
                time(e.at),
                e.action,
                e.actor,
                e.account_id
                    .as_deref()
                    .map(|a| format!("account={a} "))
                    .unwrap_or_default(),
                e.target
                    .as_deref()
                    .map(|t| format!("target={t} "))
                    .unwrap_or_default(),
                e.details
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Option<[String; 3]> {
        split_fields(line).map(|f| f.map(|f| f.expose().to_owned()))
    }

    #[test]
    fn import_lines_are_tab_separated_or_csv() {
        let three = |a: &str, b: &str, c: &str| Some([a.to_owned(), b.to_owned(), c.to_owned()]);
        assert_eq!(
            fields("wx1\t茶馆, 北京\ts3cr3t"),
            three("wx1", "茶馆, 北京", "s3cr3t")
        );
        assert_eq!(fields("wx1,Tea,s3cr3t"), three("wx1", "Tea", "s3cr3t"));
        assert_eq!(
            fields(r#"wx1,"Tea, ""best"" in town","a,b""#),
            three("wx1", r#"Tea, "best" in town"#, "a,b")
        );
        assert_eq!(fields("wx1,,s"), three("wx1", "", "s"));
        // Not three fields, an unclosed quote, text after a closing quote.
        assert_eq!(fields("wx1,Tea"), None);
        assert_eq!(fields("wx1,Tea,s,extra"), None);
        assert_eq!(fields(r#"wx1,"Tea,s"#), None);
        assert_eq!(fields(r#"wx1,"Tea"x,s"#), None);
        assert_eq!(fields("wx1\tTea"), None);
    }

    #[test]
    fn an_import_skips_a_header_and_a_bom_and_names_a_bad_line() {
        let mut input: &[u8] =
            "\u{feff}AppID,Name,AppSecret\n# comment\nwx1,Tea,s1\n\nwx2\tMilk\ts2\n".as_bytes();
        let mut got = Vec::new();
        read_lines(&mut input, |l| {
            got.push((l.number, l.appid, l.name, l.secret.expose().to_owned()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            [
                (3, "wx1".to_owned(), "Tea".to_owned(), "s1".to_owned()),
                (5, "wx2".to_owned(), "Milk".to_owned(), "s2".to_owned())
            ]
        );
        let mut input: &[u8] = b"wx1,Tea,s1\nwx2,Milk\n";
        let error = read_lines(&mut input, |_| Ok(())).unwrap_err().to_string();
        assert!(error.starts_with("line 2: expected"), "{error}");
        // Only the first line may be a header.
        let mut input: &[u8] = b"wx1,Tea,s1\nappid,name,secret\n";
        let mut appids = Vec::new();
        read_lines(&mut input, |l| {
            appids.push(l.appid);
            Ok(())
        })
        .unwrap();
        assert_eq!(appids, ["wx1", "appid"]);
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00Z");
        assert_eq!(time(1_795_000_000_000), "2026-11-18 11:06:40Z");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00Z");
    }
}
