//! What the tenancy layer's tests share: a simulator on a loopback port and the layer over a
//! fresh database with a fresh keyring, talking to that simulator (or to `api_base`).

use std::sync::Arc;

use store::Store;
use tenancy::{Tenancy, TenancyConfig};
use testkit::TestDatabase;
use wechat::SystemClock;
use wechat_sim::{RunningSim, SimConfig};

pub async fn tenancy_with_sim(
    db: &TestDatabase,
    api_base: Option<url::Url>,
) -> (Tenancy, RunningSim) {
    let sim = testkit::fixtures::simulator(SimConfig::default()).await;
    let store = Store::connect(db.url()).await.unwrap();
    let vault = testkit::fixtures::vault();
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
