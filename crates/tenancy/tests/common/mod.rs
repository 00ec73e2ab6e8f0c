//! What the tenancy layer's tests share: a simulator on a loopback port and the layer over a
//! fresh database with a fresh keyring, talking to that simulator (or to `api_base`).

use std::sync::Arc;

use accounts::VaultHandle;
use store::Store;
use tenancy::{Tenancy, TenancyConfig};
use testkit::TestDatabase;
use vault::{KeyId, Keyring, Vault};
use wechat::SystemClock;
use wechat_sim::{RunningSim, SimConfig, Simulator};

pub async fn tenancy_with_sim(
    db: &TestDatabase,
    api_base: Option<url::Url>,
) -> (Tenancy, RunningSim) {
    let sim = wechat_sim::spawn(
        Simulator::new(SimConfig::default()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let store = Store::connect(db.url()).await.unwrap();
    let vault = Arc::new(VaultHandle::fixed(Vault::new(Keyring::generate(
        KeyId::new("k1").unwrap(),
    ))));
    let mut config = wechat::ClientConfig::for_base(api_base.unwrap_or_else(|| sim.base_url()));
    config.timeout = std::time::Duration::from_secs(2);
    let wechat = wechat::Client::new(config).unwrap();
    let tenancy = Tenancy::new(
        store,
        vault,
        wechat,
        Arc::new(SystemClock),
        TenancyConfig::new(url::Url::parse("https://hub.example").unwrap()),
    );
    (tenancy, sim)
}
