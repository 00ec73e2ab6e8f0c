//! `wxhub client create`: registers an OIDC client (a tenant website) for an account until
//! the dashboard can. The client secret is printed once and stored only as a hash.

use store::Store;
use store::oidc::LoginMode;

use crate::config::Config;

/// Registers a client and returns what to show the operator (client_id, secret once, issuer).
pub async fn create(
    config: &Config,
    appid: &str,
    name: &str,
    redirect_uris: Vec<String>,
    mode: LoginMode,
    public: bool,
) -> anyhow::Result<String> {
    let store = Store::connect(&config.database_url).await?;
    let now = wechat::Clock::now_ms(&wechat::SystemClock);
    let created = gateway::clients::create_client(
        &store,
        &gateway::clients::NewClient {
            appid: appid.to_owned(),
            name: name.to_owned(),
            redirect_uris,
            login_mode: mode,
            public,
        },
        now,
    )
    .await;
    store.close().await;
    let (client, secret) = created?;
    let issuer = format!(
        "{}/t/{appid}",
        config.public_url.as_str().trim_end_matches('/')
    );
    let mut out = format!(
        "client_id:     {}\nissuer:        {issuer}\nlogin mode:    {}\nredirect URIs: {}\n",
        client.client_id,
        client.login_mode,
        client.redirect_uris.join(" ")
    );
    match secret {
        Some(secret) => out.push_str(&format!(
            "client_secret: {secret}\n\nThe secret is shown only this once; store it in the website's configuration now.\n"
        )),
        None => out.push_str("public client: no secret; the website must use PKCE (S256).\n"),
    }
    Ok(out)
}

/// `wxhub signing-key rotate`: publishes the next ID-token signing key.
pub async fn signing_key_rotate(config: &Config) -> anyhow::Result<String> {
    let vault = crate::unseal::open_vault(config)?;
    let store = Store::connect(&config.database_url).await?;
    let now = wechat::Clock::now_ms(&wechat::SystemClock);
    let kid = gateway::keys::rotate_signing_key(&store, &vault, now).await;
    store.close().await;
    Ok(format!(
        "published signing key {} in the JWKS; activate it with `wxhub signing-key activate` \
         in 24 hours, when relying parties have refreshed their copy\n",
        kid?
    ))
}

/// `wxhub signing-key activate`: makes the published key sign.
pub async fn signing_key_activate(config: &Config, at_once: bool) -> anyhow::Result<String> {
    use gateway::keys::{DEFAULT_NEXT_KEY_DELAY, KeyActivation};
    let store = Store::connect(&config.database_url).await?;
    let now = wechat::Clock::now_ms(&wechat::SystemClock);
    let delay = if at_once {
        std::time::Duration::ZERO
    } else {
        DEFAULT_NEXT_KEY_DELAY
    };
    let outcome = gateway::keys::activate_next_signing_key(&store, now, delay).await;
    store.close().await;
    Ok(match outcome? {
        KeyActivation::Activated { kid } => format!("signing key {kid} now signs ID tokens\n"),
        KeyActivation::NotYet { kid, ready_at } => anyhow::bail!(
            "signing key {kid} has been published for less than 24 hours; activate it in {} \
             minutes, or pass --now if the current key must go at once",
            (ready_at - now + 59_999) / 60_000
        ),
        KeyActivation::NoNextKey => {
            anyhow::bail!("no key is waiting: run `wxhub signing-key rotate` first")
        }
    })
}
