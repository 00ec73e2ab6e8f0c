//! `wxhub signing-key …`: publishing and activating the login gateway's ID-token signing keys.

use store::Store;

use crate::config::Config;

/// `wxhub signing-key rotate`: publishes the next ID-token signing key of each algorithm.
pub async fn signing_key_rotate(config: &Config) -> anyhow::Result<String> {
    let vault = crate::unseal::open_vault(config)?;
    let store = Store::connect(&config.database_url).await?;
    let now = wechat::Clock::now_ms(&wechat::SystemClock);
    let published = gateway::keys::rotate_signing_keys(&store, &vault, now).await;
    store.close().await;
    let mut out = String::new();
    for key in published? {
        out.push_str(&format!(
            "published signing key {} ({}) in the JWKS\n",
            key.kid, key.alg
        ));
    }
    out.push_str(
        "activate them with `wxhub signing-key activate` in 24 hours, when relying parties \
         have refreshed their copy\n",
    );
    Ok(out)
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
    let outcomes = gateway::keys::activate_next_signing_keys(&store, now, delay).await;
    store.close().await;
    let mut out = String::new();
    let mut activated = 0;
    for (alg, outcome) in outcomes? {
        match outcome {
            KeyActivation::Activated { kid } => {
                activated += 1;
                out.push_str(&format!("signing key {kid} ({alg}) now signs ID tokens\n"));
            }
            KeyActivation::NotYet { kid, ready_at } => anyhow::bail!(
                "signing key {kid} ({alg}) has been published for less than 24 hours; activate \
                 it in {} minutes, or pass --now if the current key must go at once",
                (ready_at - now + 59_999) / 60_000
            ),
            KeyActivation::NoNextKey => {}
        }
    }
    if activated == 0 {
        anyhow::bail!("no key is waiting: run `wxhub signing-key rotate` first")
    }
    Ok(out)
}
