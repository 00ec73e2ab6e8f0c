//! Login-gateway benchmark (`cargo bench -p gateway --bench login`).
//!
//! Measures, in one run and on one machine:
//! - a plain HTTP request to wxhub (the discovery document) — the unit of comparison;
//! - complete follow-required logins: relying party (the `openidconnect` crate) → wxhub
//!   authorize → simulator's authorize page → wxhub callback (code exchange and `user/info`
//!   with the scheduler stand-in's core token) → token endpoint (ES256 ID token, verified by
//!   the RP) → userinfo; on SQLite, and on PostgreSQL when `WXHUB_TEST_POSTGRES_URL` is set;
//! - safe-mode push acknowledgements (signature, msg_signature, AES decrypt, dedup insert)
//!   per second and their p99 latency;
//! - logins and pushes per second with statistics on (counting, and flushing every few
//!   seconds) ÷ off, the two gateways taking turns in rounds.
//!
//! Writes its figures to `docs/performance.md` (its own section, replaced on each run).

#[path = "../tests/gateway/common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use store::oidc::LoginMode;
use wechat::crypto::{EncodingAesKey, MsgCrypt};
use wechat::push as sig;
use wechat_sim::FollowOptions;

const BASELINE_REQUESTS: usize = 400;
const LOGINS: usize = 100;
const PUSHES: usize = 400;

/// The HTTP requests one follow-required login is made of, every one of them counted:
/// browser → wxhub `/authorize`; browser → simulator authorize page; browser → wxhub
/// `/wechat/callback`, during which wxhub → simulator `/sns/oauth2/access_token` and
/// wxhub → simulator `/cgi-bin/user/info`; RP → wxhub `/token`; RP → wxhub `/userinfo`.
/// (The RP fetched discovery and the JWKS once, before the measured logins, as a real RP
/// caches them; the browser's final hop to the RP's own callback is the RP's page, not part of
/// the login protocol, and the bench hands the code to the RP directly.)
const REQUESTS_PER_LOGIN: usize = 7;
/// Of those, the simulator's (counted by the simulator itself and checked).
const SIM_REQUESTS_PER_LOGIN: u64 = 3;

/// Where one login's time goes (wall time from the RP's/browser's side).
#[derive(Default, Clone, Copy)]
struct Steps {
    authorize: Duration,
    wechat_page: Duration,
    callback: Duration,
    token: Duration,
    verify: Duration,
    userinfo: Duration,
}

impl Steps {
    fn total(&self) -> Duration {
        self.authorize + self.wechat_page + self.callback + self.token + self.verify + self.userinfo
    }

    fn add(&mut self, o: &Steps) {
        self.authorize += o.authorize;
        self.wechat_page += o.wechat_page;
        self.callback += o.callback;
        self.token += o.token;
        self.verify += o.verify;
        self.userinfo += o.userinfo;
    }

    fn div(&self, n: u32) -> Steps {
        Steps {
            authorize: self.authorize / n,
            wechat_page: self.wechat_page / n,
            callback: self.callback / n,
            token: self.token / n,
            verify: self.verify / n,
            userinfo: self.userinfo / n,
        }
    }
}

struct Figures {
    db: &'static str,
    /// A plain request to wxhub (discovery document), browser connection.
    baseline: Duration,
    /// A complete login (wall time of the measured loop / logins).
    login: Duration,
    steps: Steps,
    /// The simulator's share: its two API calls made directly (code exchange + user/info).
    sim_api: Duration,
    /// The same login for a client with ES256 ID tokens, and its token step.
    login_es256: Duration,
    token_es256: Duration,
}

/// A plain request to wxhub: the discovery document over the kept-alive connection of the
/// same client the browser uses.
async fn plain_request_time(env: &Env) -> Duration {
    let url = format!("{}/.well-known/openid-configuration", env.issuer(APPID));
    for _ in 0..20 {
        env.get(&url).await;
    }
    let start = Instant::now();
    for _ in 0..BASELINE_REQUESTS {
        assert_eq!(env.get(&url).await.status(), 200);
    }
    start.elapsed() / BASELINE_REQUESTS as u32
}

fn sim_calls(env: &Env) -> u64 {
    env.sim()
        .counters(Some(APPID), None)
        .iter()
        .map(|r| r.counter.calls)
        .sum()
}

/// One login, timed step by step; the same calls as `Rp::finish` plus `browse_to_callback`.
async fn one_login(env: &Env, rp: &Rp) -> Steps {
    use openidconnect::core::{CoreGenderClaim, CoreIdTokenClaims};
    use openidconnect::{AuthorizationCode, OAuth2TokenResponse, TokenResponse};
    let mut steps = Steps::default();
    let attempt = rp.start();
    let t = Instant::now();
    let to_wechat = env.get(&attempt.url).await;
    assert_eq!(to_wechat.status(), 302);
    steps.authorize = t.elapsed();
    let t = Instant::now();
    let back = env
        .get(&as_user(&location(&to_wechat), "bob", "allow"))
        .await;
    assert_eq!(back.status(), 302);
    steps.wechat_page = t.elapsed();
    let t = Instant::now();
    let to_rp = env.get(&location(&back)).await;
    assert_eq!(to_rp.status(), 302);
    steps.callback = t.elapsed();
    let callback = location(&to_rp);
    assert_eq!(
        query_param(&callback, "state").as_deref(),
        Some(attempt.state.secret().as_str())
    );
    let code = query_param(&callback, "code").expect("code");
    let t = Instant::now();
    let response = rp
        .client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(attempt.verifier)
        .request_async(&rp_http)
        .await
        .unwrap();
    steps.token = t.elapsed();
    let t = Instant::now();
    let verifier = rp
        .client
        .id_token_verifier()
        .set_allowed_algs(rp.allowed_algs.clone());
    let claims: &CoreIdTokenClaims = response
        .id_token()
        .unwrap()
        .claims(&verifier, &attempt.nonce)
        .unwrap();
    steps.verify = t.elapsed();
    let t = Instant::now();
    let info = rp
        .client
        .user_info(
            response.access_token().clone(),
            Some(claims.subject().clone()),
        )
        .unwrap()
        .request_async::<WxClaims, _, CoreGenderClaim>(&rp_http)
        .await
        .unwrap();
    steps.userinfo = t.elapsed();
    assert!(info.additional_claims().follows_account);
    steps
}

/// Logins of a follow-required client whose ID tokens are signed with `alg`.
async fn login_time(env: &Env, alg: store::oidc::SigningAlg) -> (Duration, Steps) {
    use openidconnect::core::CoreJwsSigningAlgorithm;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let client = env.store().find_oidc_client(&id).await.unwrap().unwrap();
    let edit = store::oidc::ClientEdit {
        id_token_signed_response_alg: alg,
        ..store::oidc::ClientEdit::from(&client)
    };
    env.store()
        .update_oidc_client(
            &client.account_id,
            &client.id,
            &edit,
            env.now(),
            &store::audit::AuditRecord::new("bench", "website.update"),
        )
        .await
        .unwrap()
        .unwrap();
    // Discovery and JWKS are fetched once, as a real RP caches them.
    let mut rp = Rp::discover(env, APPID, &id, secret).await;
    rp.allowed_algs = vec![match alg {
        store::oidc::SigningAlg::Rs256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        store::oidc::SigningAlg::Es256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    }];
    for _ in 0..10 {
        one_login(env, &rp).await;
    }
    let sim_before = sim_calls(env);
    let mut sum = Steps::default();
    let start = Instant::now();
    for _ in 0..LOGINS {
        sum.add(&one_login(env, &rp).await);
    }
    let elapsed = start.elapsed();
    // Every request the simulator served in the measured loop was a login's (no token
    // fetch, no push): exactly three per login.
    assert_eq!(
        sim_calls(env) - sim_before,
        SIM_REQUESTS_PER_LOGIN * LOGINS as u64,
        "the simulator served requests that are not the logins'"
    );
    (elapsed / LOGINS as u32, sum.div(LOGINS as u32))
}

/// The simulator's part of the callback, measured directly with the gateway's kind of client:
/// a code exchange (after getting a code from the authorize page) and a `user/info`.
async fn sim_api_time(env: &Env) -> Duration {
    use wechat::{AppSecret, Lang, Scope};
    let mut config = wechat::ClientConfig::for_base(env.running.base_url());
    config.timeout = Duration::from_secs(5);
    let client = wechat::Client::new(config).unwrap();
    let account_id = env.account_id(APPID).await;
    let core = gateway::CoreTokens::current(&*env.tokens, &account_id)
        .await
        .unwrap();
    let secret = AppSecret::new(secret_of(APPID));
    let mut total = Duration::ZERO;
    for i in 0..(LOGINS + 10) {
        let url = client
            .authorize_url(APPID, "http://127.0.0.1/cb", Scope::SnsapiBase, "s", false)
            .unwrap();
        let back = env.get(&as_user(&url, "bob", "allow")).await;
        let code = query_param(&location(&back), "code").unwrap();
        let t = Instant::now();
        let token = client.exchange_code(APPID, &secret, &code).await.unwrap();
        client
            .user_info(&core, &token.openid, Lang::ZhCn)
            .await
            .unwrap();
        if i >= 10 {
            total += t.elapsed();
        }
    }
    total / LOGINS as u32
}

/// Safe-mode text pushes with distinct MsgIds: returns (per-second, p99).
async fn push_acks(env: &Env) -> (f64, Duration) {
    push_acks_from(env, 0, PUSHES).await
}

/// `count` pushes whose nonces and MsgIds start at `first` (each one new: no duplicates).
async fn push_acks_from(env: &Env, first: usize, count: usize) -> (f64, Duration) {
    let crypt = MsgCrypt::new(EncodingAesKey::parse(AES_KEY).unwrap(), APPID);
    let url = format!("{}/wechat/push", env.issuer(APPID));
    let mut latencies = Vec::with_capacity(count);
    let start = Instant::now();
    for i in first..first + count {
        let ts = env.now_secs().to_string();
        let nonce = format!("bench{i}");
        let message = format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[o_bench]]></FromUserName>\
             <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
             <Content><![CDATA[hello {i}]]></Content><MsgId>{}</MsgId></xml>",
            original_id_of(APPID),
            1_000_000_000_000_000u64 + i as u64
        );
        let encrypt = crypt.encrypt(&message);
        let body = format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
            original_id_of(APPID)
        );
        let t = Instant::now();
        let r = env
            .browser
            .post(&url)
            .query(&[
                ("signature", sig::signature(PUSH_TOKEN, &ts, &nonce)),
                ("timestamp", ts.clone()),
                ("nonce", nonce.clone()),
                ("encrypt_type", "aes".to_owned()),
                (
                    "msg_signature",
                    sig::msg_signature(PUSH_TOKEN, &ts, &nonce, &encrypt),
                ),
            ])
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "success");
        latencies.push(t.elapsed());
    }
    let total = start.elapsed();
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    (count as f64 / total.as_secs_f64(), p99)
}

/// Rounds of the statistics comparison, and logins and pushes per gateway and round.
const STATS_ROUNDS: usize = 7;
const STATS_LOGINS: usize = 30;
const STATS_PUSHES: usize = 150;

/// Logins and pushes per second with statistics on ÷ off: per round, the median, and the
/// smallest and largest.
struct StatsRatio {
    db: &'static str,
    logins: (f64, f64, f64),
    pushes: (f64, f64, f64),
    counted_logins: i64,
}

fn spread(mut ratios: Vec<f64>) -> (f64, f64, f64) {
    ratios.sort_by(f64::total_cmp);
    (
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
    )
}

/// A gateway with statistics (and its flusher running, as the hub runs it) and one without,
/// over their own databases and simulators, taking turns: each round runs both, the order
/// swapped every round, so drift on the machine falls on both.
async fn stats_on_off(kind: DbKind, pg: Option<String>, db: &'static str) -> StatsRatio {
    let on = Env::start_with(kind, 1, pg.clone(), unlimited()).await;
    let _flusher = on.hubs[0].stats.spawn_flusher();
    let off = Env::without_stats(kind, pg, unlimited()).await;
    let mut rps = Vec::new();
    for env in [&on, &off] {
        env.sim()
            .follow(APPID, "bob", FollowOptions::default())
            .await
            .unwrap();
        let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
        let rp = Rp::discover(env, APPID, &id, secret).await;
        for _ in 0..10 {
            one_login(env, &rp).await;
        }
        rps.push(rp);
    }
    let (mut logins, mut pushes) = (Vec::new(), Vec::new());
    for round in 0..STATS_ROUNDS {
        let mut rate = [0.0; 2];
        let mut push_rate = [0.0; 2];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let env = [&on, &off][i];
            let start = Instant::now();
            for _ in 0..STATS_LOGINS {
                one_login(env, &rps[i]).await;
            }
            rate[i] = STATS_LOGINS as f64 / start.elapsed().as_secs_f64();
            push_rate[i] = push_acks_from(env, round * STATS_PUSHES, STATS_PUSHES)
                .await
                .0;
        }
        logins.push(rate[0] / rate[1]);
        pushes.push(push_rate[0] / push_rate[1]);
    }
    // The gateway with statistics did count: every login it completed is in its rows.
    on.hubs[0].stats.flush().await.unwrap();
    let account = on.account_id(APPID).await;
    let counted_logins = on
        .store()
        .account_totals(&account, 0, i64::MAX, &[])
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.metric == "login.completed")
        .map(|t| t.value)
        .sum();
    assert_eq!(
        counted_logins,
        (10 + STATS_ROUNDS * STATS_LOGINS) as i64,
        "every login counted"
    );
    StatsRatio {
        db,
        logins: spread(logins),
        pushes: spread(pushes),
        counted_logins,
    }
}

fn ratio_row(r: &StatsRatio) -> String {
    format!(
        "| {} | **{:.3}×** ({:.3}–{:.3}) | **{:.3}×** ({:.3}–{:.3}) | {} |\n",
        r.db,
        r.logins.0,
        r.logins.1,
        r.logins.2,
        r.pushes.0,
        r.pushes.1,
        r.pushes.2,
        r.counted_logins
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn write_section(section: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/performance.md");
    let _ = std::fs::create_dir_all(path.parent().unwrap());
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Performance\n".to_owned());
    const BEGIN: &str = "<!-- gateway-bench:begin -->";
    const END: &str = "<!-- gateway-bench:end -->";
    let block = format!("{BEGIN}\n{section}{END}\n");
    let updated = match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!(
                "{}{block}{}",
                &existing[..b],
                &existing[e + END.len()..].trim_start_matches('\n')
            )
        }
        _ => format!(
            "{}\n{block}",
            existing.trim_end_matches('\n').to_owned() + "\n"
        ),
    };
    std::fs::write(&path, updated).unwrap();
    println!("figures written to {}", path.display());
}

fn row(f: &Figures) -> String {
    let n = REQUESTS_PER_LOGIN as f64;
    format!(
        "| {} | {} | {} | {:.0} | {:.1}× | **{:.2}×** |\n",
        f.db,
        ms(f.baseline),
        ms(f.login),
        1.0 / f.login.as_secs_f64(),
        f.login.as_secs_f64() / f.baseline.as_secs_f64(),
        f.login.as_secs_f64() / (n * f.baseline.as_secs_f64()),
    )
}

/// RS256 (the default for new clients) against ES256, same run.
fn alg_row(f: &Figures) -> String {
    let n = REQUESTS_PER_LOGIN as f64;
    format!(
        "| {} | {} ({:.2}×) | {} ({:.2}×) | {} | {} | +{} |\n",
        f.db,
        ms(f.login),
        f.login.as_secs_f64() / (n * f.baseline.as_secs_f64()),
        ms(f.login_es256),
        f.login_es256.as_secs_f64() / (n * f.baseline.as_secs_f64()),
        ms(f.steps.token),
        ms(f.token_es256),
        ms(f.steps.token.saturating_sub(f.token_es256)),
    )
}

fn steps_row(f: &Figures) -> String {
    let s = &f.steps;
    format!(
        "| {} | {} | {} | {} (of which simulator ≈ {}) | {} | {} | {} |\n",
        f.db,
        ms(s.authorize),
        ms(s.wechat_page),
        ms(s.callback),
        ms(f.sim_api),
        ms(s.token),
        ms(s.verify),
        ms(s.userinfo),
    )
}

async fn measure(env: &Env, db: &'static str) -> Figures {
    let baseline = plain_request_time(env).await;
    env.sim()
        .follow(APPID, "bob", FollowOptions::default())
        .await
        .unwrap();
    let (login, steps) = login_time(env, store::oidc::SigningAlg::Rs256).await;
    let (login_es256, steps_es256) = login_time(env, store::oidc::SigningAlg::Es256).await;
    let sim_api = sim_api_time(env).await;
    let f = Figures {
        db,
        baseline,
        login,
        steps,
        sim_api,
        login_es256,
        token_es256: steps_es256.token,
    };
    eprint!("{}{}", row(&f), steps_row(&f));
    eprintln!("  (sum of steps {})", ms(f.steps.total()));
    f
}

/// Every login here comes from one address: the per-address and per-account limits on login
/// starts and token requests would measure themselves, not the flow.
fn unlimited() -> gateway::limits::GatewayLimits {
    let open = gateway::limits::Rate {
        burst: 1_000_000,
        every: Duration::from_micros(1),
    };
    gateway::limits::GatewayLimits {
        authorize_per_ip: open,
        authorize_per_account: open,
        public_token_per_ip: open,
        public_token_per_account: open,
        ..Default::default()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut figures = Vec::new();
        let env = Env::start_with(DbKind::Sqlite, 1, None, unlimited()).await;
        figures.push(measure(&env, "SQLite").await);
        let (pushes_per_sec, push_p99) = push_acks(&env).await;
        drop(env);
        let mut ratios = vec![stats_on_off(DbKind::Sqlite, None, "SQLite").await];
        if let Some(url) = testkit::postgres_admin_url() {
            let env = Env::start_with(DbKind::Postgres, 1, Some(url.clone()), unlimited()).await;
            figures.push(measure(&env, "PostgreSQL").await);
            drop(env);
            ratios.push(stats_on_off(DbKind::Postgres, Some(url), "PostgreSQL").await);
        }
        let mut section = format!(
            "## Login gateway\n\n\
             `cargo bench -p gateway --bench login`: one process, sequential requests over loopback \
             (wxhub, the WeChat simulator and the relying party share the machine's 2 cores), \
             every client keeping its connections alive. A login is the whole follow-required \
             flow: browser → wxhub `/authorize` → simulator authorize page → wxhub callback \
             (which calls the simulator's `/sns/oauth2/access_token` and `/cgi-bin/user/info`) → \
             RP → wxhub `/token` (RS256 ID token, verified by the RP) → RP → wxhub `/userinfo`: \
             **{REQUESTS_PER_LOGIN} HTTP requests** (4 to wxhub, 3 to the simulator, which the \
             bench checks with the simulator's counters). The RP (the `openidconnect` crate) \
             fetched discovery and the JWKS once, before the measured logins. A plain request \
             is `GET /.well-known/openid-configuration` to wxhub (one account lookup) over the \
             browser's kept-alive connection, measured in the same run. The goal is a login \
             costing at most 2× the {REQUESTS_PER_LOGIN} plain requests it is made of.\n\n\
             | database | plain request to wxhub | complete login | logins/s | login ÷ plain request | login ÷ ({REQUESTS_PER_LOGIN} × plain request) |\n\
             |---|---|---|---|---|---|\n",
        );
        for f in &figures {
            section.push_str(&row(f));
        }
        if figures.len() == 1 {
            section.push_str("\nPostgreSQL: not measured in this run (`WXHUB_TEST_POSTGRES_URL` unset).\n");
        }
        section.push_str(
            "\nWhere a login's time goes (mean per login, measured around each request in the bench; \
             the simulator's share of the callback is its two API calls timed directly):\n\n\
             | database | authorize | simulator page | callback | token | RP verifies ID token | userinfo |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for f in &figures {
            section.push_str(&steps_row(f));
        }
        section.push_str(
            "\nThe ID token's algorithm, same run: the login above is a client with RS256 tokens \
             (the default for new clients, which every relying-party library accepts without \
             configuration); the same login for a client with ES256 tokens (clients registered \
             before RS256 existed, or switched to it). An RSA-2048 signature (ring) is the \
             difference:\n\n\
             | database | login, RS256 (÷ 7 plain) | login, ES256 (÷ 7 plain) | token step, RS256 | token step, ES256 | RS256 costs |\n\
             |---|---|---|---|---|---|\n",
        );
        for f in &figures {
            section.push_str(&alg_row(f));
        }
        section.push_str(&format!(
            "\nSafe-mode push acknowledgements (SQLite; signature + msg_signature checks, AES \
             decrypt, hardened parse, nonce and dedup inserts, `success`): **{pushes_per_sec:.0}/s**, \
             p99 **{}** ({PUSHES} sequential pushes) — far inside WeChat's 5 s.\n\n",
            ms(push_p99)
        ));
        section.push_str(&format!(
            "Statistics on ÷ off, same run: a gateway counting every login and push (and \
             flushing its counts to the database every few seconds, as the hub does) and one \
             counting nothing, each over its own database and simulator, taking turns in \
             {STATS_ROUNDS} rounds of {STATS_LOGINS} logins and {STATS_PUSHES} safe-mode pushes \
             each (the order swapped every round). Throughput on ÷ off, median of the rounds \
             (smallest–largest); the last column is the logins the counting gateway's rows hold, \
             checked against the logins it completed:\n\n\
             | database | logins/s, on ÷ off | pushes/s, on ÷ off | logins counted |\n\
             |---|---|---|---|\n"
        ));
        for r in &ratios {
            section.push_str(&ratio_row(r));
        }
        section.push('\n');
        print!("{section}");
        if std::env::var_os("GATEWAY_BENCH_NO_WRITE").is_none() {
            write_section(&section);
        }
    });
}
