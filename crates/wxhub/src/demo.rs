//! `wxhub sim` and `wxhub demo`: everything on one machine, for a look around.
//!
//! The sample data is the same in both: three service accounts (one unverified, to show what
//! WeChat refuses) and three WeChat users, one of whom follows the first account. Nothing here
//! reaches the real WeChat; the hub's WeChat API base points at the simulator.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use store::accounts::{AccountKind, TokenMode};
use store::oidc::LoginMode;
use store::people::Role;
use tenancy::Principal;
use tenancy::settings::{PushMode as GatewayPushMode, SettingsChange};
use tenancy::tenants::{LiveCheck, NewOwner, Registration};
use tenancy::websites::NewWebsite;
use vault::SecretString;
use wechat::{Scope, SystemClock};
use wechat_sim::{AccountSpec, FollowOptions, PushMode, SimConfig, Simulator, UserSpec};

use crate::config::Config;
use crate::sample_site::{self, SampleSite, SiteClient};
use crate::server::{self, AppState};

/// A sample account as both the simulator and the hub know it.
struct Sample {
    appid: &'static str,
    secret: &'static str,
    name: &'static str,
    verified: bool,
    push_token: &'static str,
    aes_key: &'static str,
    mode: PushMode,
}

// Demo credentials, valid only inside the simulator.
const SAMPLES: &[Sample] = &[
    Sample {
        appid: "wx5a1e0d3c0ffee001",
        secret: "0d1e2a3d4b5e6e7f8a9b0c1d2e3f4a5b",
        name: "Demo Coffee 示例咖啡",
        verified: true,
        push_token: "democoffee",
        aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        mode: PushMode::Safe,
    },
    Sample {
        appid: "wx5a1e0d3cb00c5002",
        secret: "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",
        name: "Demo Books 示例书店",
        verified: true,
        push_token: "demobooks",
        aes_key: "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut",
        mode: PushMode::Plain,
    },
    Sample {
        appid: "wx5a1e0d3c0de00003",
        secret: "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
        name: "Unverified Demo 未认证示例",
        verified: false,
        push_token: "demounverified",
        aes_key: "0123456789abcdefghijABCDEFGHIJklmnopqrstUVW",
        mode: PushMode::Plain,
    },
];

const USERS: &[(&str, &str)] = &[
    ("alice", "Alice 爱丽丝"),
    ("bob", "Bob 鲍勃"),
    ("carol", "Carol 卡罗尔"),
];

const DEMO_OWNER: &str = "demo@wxhub.localhost";
/// The demo's operator, who sees every account.
const DEMO_OPERATOR: &str = "operator@wxhub.localhost";
/// The name the sample site's OIDC clients are registered under.
const SAMPLE_SITE: &str = "Sample site";

/// Fills a simulator with the sample accounts and users; alice follows the first account.
/// With a hub, each account pushes to the hub's callback and its OAuth domain is the hub's
/// host; alone, redirects land on the simulator's own page.
pub async fn seed_simulator(sim: &Simulator, hub: Option<&url::Url>) -> anyhow::Result<()> {
    for sample in SAMPLES {
        let mut spec = AccountSpec::new(sample.appid, sample.secret);
        spec.verified = sample.verified;
        spec.push_token = sample.push_token.to_owned();
        spec.encoding_aes_key = Some(sample.aes_key.to_owned());
        spec.push_mode = sample.mode;
        spec.oauth_domain = Some(
            hub.and_then(|h| h.host_str())
                .unwrap_or("127.0.0.1")
                .to_owned(),
        );
        spec.push_url = hub.map(|h| push_url(h, sample.appid));
        sim.create_account(spec)
            .with_context(|| format!("creating sample account {}", sample.appid))?;
    }
    for (id, nickname) in USERS {
        sim.create_user(UserSpec::new(*id, *nickname))?;
    }
    Ok(())
}

fn push_url(hub: &url::Url, appid: &str) -> String {
    format!(
        "{}/t/{appid}/wechat/push",
        hub.as_str().trim_end_matches('/')
    )
}

/// The authorize URL a person can open to click through the simulator's consent page.
fn sample_authorize_url(sim_base: &url::Url) -> anyhow::Result<String> {
    let client = wechat::Client::new(wechat::ClientConfig::for_base(sim_base.clone()))?;
    let landing = sim_base.join("__sim/callback")?;
    Ok(client.authorize_url(
        SAMPLES[0].appid,
        landing.as_str(),
        Scope::SnsapiUserinfo,
        "demo",
        false,
    )?)
}

/// `wxhub sim`: the simulator alone, until SIGINT/SIGTERM.
/// How `wxhub sim` runs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub listen: SocketAddr,
    /// Start with the sample accounts and users.
    pub sample: bool,
    /// A clock that stands still until the control API moves it.
    pub manual_clock: bool,
    /// The hub the sample accounts push to and whose host their OAuth redirects may name.
    pub hub_url: Option<url::Url>,
}

/// `wxhub sim`: the simulator alone until SIGINT/SIGTERM.
pub async fn run_sim(options: SimOptions) -> anyhow::Result<()> {
    let config = if options.manual_clock {
        // Starts at the real time so tokens and quota days look ordinary, then moves only
        // when a client asks (`/__sim/clock/advance`, `/__sim/clock/set`).
        SimConfig::with_manual_clock(wechat::ManualClock::starting_now())
    } else {
        SimConfig::default()
    };
    let sim = Simulator::new(config);
    if options.sample {
        seed_simulator(&sim, options.hub_url.as_ref()).await?;
    }
    let listen = options.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let base = url::Url::parse(&format!("http://{}/", listener.local_addr()?))?;
    println!("WeChat simulator at {base}");
    println!("  control API: {base}__sim/accounts (see crates/wechat-sim/README.md)");
    if options.manual_clock {
        println!(
            "  manual clock at {} ms: POST {base}__sim/clock/advance {{\"secs\": N}} moves it",
            sim.now_ms()
        );
    }
    if options.sample && options.hub_url.is_none() {
        println!(
            "  click through an authorization: {}",
            sample_authorize_url(&base)?
        );
    }
    let serving = tokio::spawn(wechat_sim::serve_with_shutdown(
        listener,
        sim.clone(),
        server::shutdown_signal(),
    ));
    if options.sample {
        // With a hub, alice's subscribe push goes to it: it may start after the simulator,
        // so a failed delivery only leaves alice following without the hub knowing yet.
        if let Err(error) = sim
            .follow(SAMPLES[0].appid, "alice", FollowOptions::default())
            .await
        {
            tracing::warn!(%error, "alice could not follow the first sample account");
        }
    }
    serving
        .await
        .context("simulator task failed")?
        .context("simulator failed")
}

/// Registers the sample accounts in the hub (once; a second start finds them), sets their
/// gateway settings, and registers the sample site as an OIDC client of the first two
/// (afresh at every start: a client secret is shown only when created).
/// The first sample account's reply route to the sample site's bot, so texts and menu clicks
/// sent from the simulated phone are answered by the owner's server through wxhub.
async fn seed_bot_route(
    tenancy: &tenancy::Tenancy,
    appid: &str,
    site_base: &url::Url,
) -> anyhow::Result<()> {
    let cli = Principal::cli();
    let url = format!("{}wechat", site_base);
    for old in tenancy.list_push_routes(&cli, appid).await? {
        if !old.relay {
            tenancy.delete_push_route(&cli, appid, &old.id).await?;
        }
    }
    tenancy
        .create_push_route(
            &cli,
            appid,
            tenancy::push_routes::NewRoute {
                target_url: url,
                match_msg_type: None,
                match_event: None,
                match_event_key_prefix: None,
                delivery: store::push_routes::Delivery::Reply,
                push_mode: Some(GatewayPushMode::Plain),
                credentials: tenancy::push_routes::RouteCredentials {
                    token: SecretString::new(sample_site::BOT_TOKEN.to_owned()),
                    encoding_aes_key: None,
                },
                position: None,
                enabled: true,
            },
        )
        .await?;
    Ok(())
}

async fn seed_hub(
    state: &AppState,
    sim: &Simulator,
    site_base: &url::Url,
) -> anyhow::Result<Vec<SiteClient>> {
    let tenancy = &state.tenancy;
    let cli = Principal::cli();
    let mut site_clients = Vec::new();
    for (index, sample) in SAMPLES.iter().enumerate() {
        if state
            .store
            .find_account_by_appid(sample.appid)
            .await?
            .is_none()
        {
            // Checked with the simulator like any registration.
            let registration = Registration {
                appid: sample.appid.to_owned(),
                name: sample.name.to_owned(),
                kind: AccountKind::Service,
                verified: sample.verified,
                token_mode: TokenMode::Token,
                appsecret: SecretString::new(sample.secret.to_owned()),
                push_token: Some(SecretString::new(sample.push_token.to_owned())),
                encoding_aes_key: Some(SecretString::new(sample.aes_key.to_owned())),
                // Created without a password, so the demo owner cannot sign in until one is
                // set.
                owner: NewOwner::Email(DEMO_OWNER.to_owned()),
                check: LiveCheck::Check,
            };
            tenancy.register_account(&cli, registration).await?;
        }
        let original_id = sim
            .account(sample.appid)
            .map(|spec| spec.original_id())
            .context("the simulator lacks a sample account")?;
        tenancy
            .update_gateway_settings(
                &cli,
                sample.appid,
                SettingsChange {
                    original_id: Some(Some(original_id)),
                    push_mode: Some(Some(match sample.mode {
                        PushMode::Plain => GatewayPushMode::Plain,
                        PushMode::Compatible => GatewayPushMode::Compatible,
                        PushMode::Safe => GatewayPushMode::Safe,
                    })),
                    ..SettingsChange::default()
                },
            )
            .await?;
        if index == 0 {
            seed_bot_route(tenancy, sample.appid, site_base).await?;
        }
        if index > 1 {
            continue;
        }
        for old in tenancy.list_websites(&cli, sample.appid).await? {
            if old.name == SAMPLE_SITE {
                tenancy
                    .delete_website(&cli, sample.appid, &old.client_id)
                    .await?;
            }
        }
        let mode = if index == 0 {
            LoginMode::FollowRequired
        } else {
            LoginMode::Userinfo
        };
        let created = tenancy
            .create_website(
                &cli,
                sample.appid,
                &NewWebsite {
                    name: SAMPLE_SITE.to_owned(),
                    redirect_uris: vec![SampleSite::callback_url(site_base)],
                    login_mode: mode,
                    public: false,
                },
            )
            .await?;
        site_clients.push(SiteClient {
            label: format!("用微信登录 Log in with WeChat: {} ({})", sample.name, mode),
            issuer: created.issuer,
            client_id: created.client.client_id,
            client_secret: created
                .secret
                .context("a confidential client has a secret")?
                .expose()
                .to_owned(),
        });
    }
    Ok(site_clients)
}

/// What the demo prints for its owner and its operator: a one-time link to choose a password
/// (each start makes a new one), or, once they have one, where to sign in.
async fn dashboard_people(state: &AppState) -> anyhow::Result<Vec<String>> {
    let hub = state.config.public_url.as_str().trim_end_matches('/');
    let mut lines = Vec::new();
    for (email, role, who) in [
        (DEMO_OWNER, Role::Owner, "owner of the sample accounts"),
        (
            DEMO_OPERATOR,
            Role::Operator,
            "operator, who sees every account",
        ),
    ] {
        match state
            .tenancy
            .invite_person(&Principal::cli(), email, role)
            .await
        {
            Ok(invitation) => lines.push(format!(
                "  dashboard as the {who} ({email}), one-time link to choose a password: {}",
                dashboard::link_url(
                    &state.config.public_url,
                    invitation.link.purpose,
                    invitation.link.token.expose()
                )
            )),
            // A later start: the password was chosen already.
            Err(tenancy::TenancyError::Invalid { field: "email", .. }) => lines.push(format!(
                "  dashboard as the {who}: sign in as {email} at {hub}/dashboard/"
            )),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(lines)
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<(tokio::net::TcpListener, url::Url)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what}"))?;
    let base = url::Url::parse(&format!("http://{}/", listener.local_addr()?))?;
    Ok((listener, base))
}

/// `wxhub demo`: the simulator with sample data, the hub pointed at it and a sample tenant
/// website, until SIGINT/SIGTERM.
pub async fn run_demo(
    mut config: Config,
    sim_listen: SocketAddr,
    site_listen: SocketAddr,
) -> anyhow::Result<()> {
    let (sim_listener, sim_base) = bind(sim_listen, "the simulator").await?;
    let (site_listener, site_base) = bind(site_listen, "the sample site").await?;
    let (hub_listener, hub_bound) = bind(config.listen, "the hub").await?;
    if config.public_url.port() == Some(0) {
        // `--listen 127.0.0.1:0` (tests, or a busy machine): the public URL is where the
        // hub actually listens.
        config.public_url = hub_bound;
    }
    config.wechat_api_url = sim_base.clone();
    config.wechat_open_url = sim_base.clone();
    config.wechat_mp_url = wechat::ClientConfig::for_base(sim_base.clone()).mp_base;
    // Everything of the demo runs on this machine: push routes may reach it.
    for host in ["127.0.0.1", "localhost"] {
        if !config.push_allow_hosts.iter().any(|h| h == host) {
            config.push_allow_hosts.push(host.to_owned());
        }
    }

    let sim = Simulator::new(SimConfig::default());
    seed_simulator(&sim, Some(&config.public_url)).await?;
    // The simulator serves before the hub registers the sample accounts: registration checks
    // the credentials with it.
    let sim_task = tokio::spawn(wechat_sim::serve_with_shutdown(
        sim_listener,
        sim.clone(),
        server::shutdown_signal(),
    ));
    let state = AppState::open(config, Arc::new(SystemClock)).await?;
    let site_clients = seed_hub(&state, &sim, &site_base).await?;
    let people = dashboard_people(&state).await?;
    let hub_base = state.config.public_url.clone();

    println!(
        "wxhub demo (SQLite at {}, development keyring; nothing here talks to the real WeChat)",
        state.store.redacted_url()
    );
    println!("  1. sample website, start here:  {site_base}");
    println!(
        "  2. simulated WeChat app (follow/unfollow as alice, bob or carol; chat with {}, whose \
         owner's bot answers through wxhub): {sim_base}__sim/phone",
        SAMPLES[0].name
    );
    println!(
        "  hub:        {hub_base} (health: {hub_base}healthz, token API: {hub_base}api/v1/openapi.json)"
    );
    println!("  simulator:  {sim_base} (control API: {sim_base}__sim/accounts)");
    for line in &people {
        println!("{line}");
    }
    println!(
        "  sample accounts: {}",
        SAMPLES
            .iter()
            .map(|s| s.appid)
            .collect::<Vec<_>>()
            .join(", ")
    );

    let site = SampleSite::new(site_base, site_clients)?;
    let site_task = tokio::spawn(async move {
        axum::serve(site_listener, sample_site::router(site))
            .with_graceful_shutdown(server::shutdown_signal())
            .await
    });
    // Alice follows the first account once the hub answers pushes, so she is pre-registered
    // by the subscribe push; bob and carol follow nothing yet.
    let follow_task = tokio::spawn(async move {
        let outcome = sim
            .follow(SAMPLES[0].appid, "alice", FollowOptions::default())
            .await;
        let delivered = outcome
            .as_ref()
            .ok()
            .and_then(|o| o.delivery.as_ref())
            .is_some_and(|d| d.attempts.iter().any(|a| a.status == Some(200)));
        if delivered {
            println!(
                "  alice now follows {} (the hub has her subscribe push)",
                SAMPLES[0].name
            );
        } else {
            tracing::warn!(outcome = ?outcome.map(|o| o.delivery.map(|d| d.attempts.len())), "the sample follow did not reach the hub");
        }
    });
    let served = server::serve_on(hub_listener, state, server::shutdown_signal()).await;
    sim_task.abort();
    site_task.abort();
    follow_task.abort();
    served
}
