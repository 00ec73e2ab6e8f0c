//! `wxhub signing-key …`: publishing and activating the login gateway's ID-token signing keys.

use store::Store;

use crate::config::Config;

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
