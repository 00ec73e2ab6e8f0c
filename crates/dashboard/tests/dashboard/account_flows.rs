//! The account pages end to end: adding an account against the simulator (the whitelist's
//! fix in place first, then success), running it from its page as its owner, what an
//! operator sees of it, and the operator's audit log with its CSV export.

use reqwest::StatusCode;
use store::people::Role;
use tenancy::Principal;
use testkit::TestDatabase;
use wechat_sim::{AccountSpec, SimConfig, Simulator, WhitelistMode};

use crate::common::{APPID_A, APPID_B, Env, OPERATOR, OWNER_A, Page};

const NEW_APPID: &str = "wx00000000000000c1";
const SECRET: &str = testkit::canary::APP_SECRET;

pub async fn an_owner_adds_an_account_after_fixing_the_whitelist(db: TestDatabase) {
    let sim = wechat_sim::spawn(
        Simulator::new(SimConfig::default()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut walled = AccountSpec::new(NEW_APPID, SECRET);
    walled.whitelist_mode = WhitelistMode::Enforce;
    sim.sim.create_account(walled).unwrap();
    let env = Env::start_with_wechat(db, sim.base_url(), |_| {}).await;
    env.person(OWNER_A, Role::Owner).await;
    let mut owner = env.signed_in(OWNER_A).await;
    let form = owner.get("/dashboard/accounts/new").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(
        form.body.contains("name=\"appsecret\" type=\"password\""),
        "{}",
        form.body
    );
    let fields = [
        ("appid", NEW_APPID),
        ("name", "Tea shop"),
        ("appsecret", SECRET),
        ("service", "on"),
        ("verified", "on"),
    ];

    // WeChat refuses the caller's IP: the fix names it, beside the AppSecret, in Chinese.
    let refused = owner.post("/dashboard/accounts/new", &fields).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fix = refused
        .between("id=\"appsecret-error\" role=\"alert\">", "</p>")
        .expect("the fix beside the AppSecret");
    assert!(
        fix.contains("127.0.0.1") && fix.contains("IP白名单"),
        "{fix}"
    );
    // What was typed stays, except the secret.
    assert!(refused.body.contains(&format!("value=\"{NEW_APPID}\"")));
    assert!(refused.body.contains("value=\"Tea shop\""));
    assert!(!refused.body.contains(SECRET));
    // The same in English for an English visitor.
    owner.extra = vec![("accept-language".into(), "en".into())];
    let refused = owner.post("/dashboard/accounts/new", &fields).await;
    assert!(
        refused.body.contains("add 127.0.0.1 to the IP whitelist"),
        "{}",
        refused.body
    );
    owner.extra.clear();
    assert!(
        env.tenancy
            .store()
            .find_account_by_appid(NEW_APPID)
            .await
            .unwrap()
            .is_none(),
        "nothing stored after a refusal"
    );

    // The owner adds the IP in the console; now the check passes.
    sim.sim
        .modify_account(NEW_APPID, |spec| {
            spec.ip_whitelist = vec!["127.0.0.1".to_owned()];
        })
        .unwrap();
    let added = owner.post("/dashboard/accounts/new", &fields).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    assert_eq!(
        added.location(),
        format!("/dashboard/accounts/{NEW_APPID}/console?flash=account_added")
    );
    // Next comes what to enter in WeChat's console, each value with its copy button.
    let page = owner.get(added.location()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("公众号已添加") && page.body.contains("Tea shop"));
    assert!(!page.body.contains(SECRET));
    let push_url = format!("{}/t/{NEW_APPID}/wechat/push", env.base);
    assert!(
        page.body.contains(&format!("value=\"{push_url}\"")),
        "{}",
        page.body
    );
    assert!(page.body.contains("data-copy=\"console-url\""));
    let host = env.base.trim_start_matches("http://");
    assert!(page.body.contains(&format!(
        "id=\"console-domain\" class=\"copy\" value=\"{host}\""
    )));
    // Of the AppSecret, only its last four characters, ever.
    assert!(
        page.body
            .contains(&format!("…{}", &SECRET[SECRET.len() - 4..]))
    );
    assert!(page.body.contains("只有 wxhub 获取 access_token"));
    assert!(page.body.contains("/api/v1/accounts/"));
    // The push credentials, generated on request, are shown once beside where they go.
    let made = owner
        .post(
            &format!("/dashboard/accounts/{NEW_APPID}/console/push-credentials"),
            &[],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK);
    let token = once(&made, "push-token");
    assert_eq!(token.len(), 32, "{token}");
    let shown = owner
        .get(&format!("/dashboard/accounts/{NEW_APPID}/console"))
        .await;
    assert!(!shown.body.contains(&token));
    assert!(
        shown.body.contains("<dt>Token</dt><dd>已保存</dd>"),
        "{}",
        shown.body
    );
    // No token kept yet (no scheduler here): the probe says so in place.
    let probe = owner
        .post(
            &format!("/dashboard/accounts/{NEW_APPID}/console/probe"),
            &[],
        )
        .await;
    assert_eq!(probe.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        probe.body.contains("还没有可用的 access_token"),
        "{}",
        probe.body
    );
    // Taken now: the AppID's field says so.
    let again = owner.post("/dashboard/accounts/new", &fields).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("已在本 wxhub 注册"), "{}", again.body);
    env.finish().await;
}

/// The text of the once-shown value with this id.
fn once(page: &Page, id: &str) -> String {
    page.between(
        &format!("id=\"{id}\" class=\"copy\" rows=\""),
        "</textarea>",
    )
    .and_then(|rest| rest.split_once("readonly>").map(|(_, v)| v.to_owned()))
    .unwrap_or_else(|| panic!("{id} is not on the page: {}", page.body))
}

pub async fn an_owner_runs_an_account_from_its_page(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut owner = env.signed_in(OWNER_A).await;
    let base = format!("/dashboard/accounts/{APPID_A}");
    let page = owner.get(&base).await;
    assert_eq!(page.status, StatusCode::OK);
    for form in [
        "/refresh\"",
        "/clear-quota\"",
        "/appsecret\"",
        "/push-credentials\"",
        "/keys\"",
        "/websites\"",
        "/settings\"",
        "/end-users\"",
        "/disable\"",
        "/delete\"",
    ] {
        assert!(page.body.contains(&format!("{base}{form}")), "{form}");
    }
    assert!(page.body.contains("每月只允许 10 次"));
    assert!(page.body.contains("加密粉碎"));
    // The example request names the token API's real route (scheduler::router).
    assert!(
        page.body
            .contains(&format!("/api/v1/accounts/{APPID_A}/access_token")),
        "the example token request"
    );

    // An API key: shown once, then listed without it.
    let made = owner
        .post(
            &format!("{base}/keys"),
            &[("label", "billing"), ("token", "on")],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK);
    let key = once(&made, "api-key");
    assert!(key.starts_with("wxk_"), "{key}");
    assert!(made.body.contains("data-copy=\"api-key\""));
    let page = owner.get(&base).await;
    assert!(page.body.contains("billing") && !page.body.contains(&key));
    assert!(page.body.contains("最近使用 从未"), "never used yet");
    let no_scope = owner
        .post(&format!("{base}/keys"), &[("label", "none")])
        .await;
    assert_eq!(no_scope.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(no_scope.body.contains("请至少选择一项权限"));
    assert!(no_scope.body.contains("value=\"none\""));
    // A proxy key limited to some WeChat paths; a path that is not one is said beside the
    // field, with what was typed kept.
    let bad_path = owner
        .post(
            &format!("{base}/keys"),
            &[
                ("label", "bot"),
                ("proxy", "on"),
                ("proxy_paths", "/sns/../cgi-bin/x"),
            ],
        )
        .await;
    assert_eq!(bad_path.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad_path.body.contains("id=\"key-proxy-paths-error\""),
        "{}",
        bad_path.body
    );
    assert!(bad_path.body.contains("/sns/../cgi-bin/x</textarea>"));
    let limited = owner
        .post(
            &format!("{base}/keys"),
            &[
                ("label", "bot"),
                ("proxy", "on"),
                (
                    "proxy_paths",
                    "/cgi-bin/message/custom/send\r\n\r\n/cgi-bin/menu/get\n",
                ),
            ],
        )
        .await;
    assert_eq!(limited.status, StatusCode::OK, "{}", limited.body);
    assert!(
        limited
            .body
            .contains("<code>/cgi-bin/message/custom/send · /cgi-bin/menu/get</code>")
    );

    // A website: secret once, the issuer and a snippet for an OIDC library.
    let made = owner
        .post(
            &format!("{base}/websites"),
            &[
                ("name", "Shop"),
                (
                    "redirect_uris",
                    "https://shop.example/cb\n\nhttps://shop.example/cb2\n",
                ),
                ("mode", "userinfo"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let secret = once(&made, "website-secret");
    let client_id = once(&made, "website-client-id");
    let issuer = once(&made, "website-issuer");
    assert_eq!(issuer, format!("{}/t/{APPID_A}", env.base));
    assert_eq!(secret.len(), 43);
    let page = owner.get(&base).await;
    assert!(!page.body.contains(&secret));
    let snippet = once(&page, &format!("snippet-{client_id}"));
    assert!(snippet.contains(&format!("issuer: {issuer}")), "{snippet}");
    assert!(snippet.contains(&format!("client_id: {client_id}")));
    assert!(snippet.contains("redirect_uri: https://shop.example/cb\n"));
    assert!(snippet.contains("scope: openid profile"));
    let bad = owner
        .post(
            &format!("{base}/websites"),
            &[("name", "Bad"), ("redirect_uris", "http://shop.example/cb")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.body.contains("id=\"website-uris-error\""),
        "{}",
        bad.body
    );
    assert!(bad.body.contains("http://shop.example/cb</textarea>"));
    let edited = owner
        .post(
            &format!("{base}/websites/{client_id}/edit"),
            &[
                ("name", "Shop two"),
                ("redirect_uris", "https://shop.example/new"),
                ("mode", "follow_required"),
            ],
        )
        .await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER);
    let site = env
        .tenancy
        .website(&Principal::cli(), APPID_A, &client_id)
        .await
        .unwrap()
        .client;
    assert_eq!(site.name, "Shop two");
    assert_eq!(
        site.redirect_uris,
        vec!["https://shop.example/new".to_owned()]
    );
    // The page shows what is set (RS256, by browser, confirmation by push mode)...
    let page = owner.get(&base).await;
    for checked in [
        r#"name="alg" value="RS256" checked"#,
        r#"name="surface" value="auto" checked"#,
        r#"name="confirmation" value="default" checked"#,
    ] {
        assert!(page.body.contains(checked), "{checked}");
    }
    // ...and the same form changes them.
    let form = |alg, surface, confirmation| {
        [
            ("name", "Shop two"),
            ("redirect_uris", "https://shop.example/new"),
            ("mode", "follow_required"),
            ("alg", alg),
            ("surface", surface),
            ("confirmation", confirmation),
        ]
    };
    let edited = owner
        .post(
            &format!("{base}/websites/{client_id}/edit"),
            &form("ES256", "scan", "on"),
        )
        .await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER);
    let site = env
        .tenancy
        .website(&Principal::cli(), APPID_A, &client_id)
        .await
        .unwrap()
        .client;
    assert_eq!(
        site.id_token_signed_response_alg,
        store::oidc::SigningAlg::Es256
    );
    assert_eq!(site.login_surface, store::oidc::LoginSurface::Scan);
    assert_eq!(site.scan_confirmation, Some(true));
    let page = owner.get(&base).await;
    for checked in [
        r#"name="alg" value="ES256" checked"#,
        r#"name="surface" value="scan" checked"#,
        r#"name="confirmation" value="on" checked"#,
    ] {
        assert!(page.body.contains(checked), "{checked}");
    }
    // A value no radio offers is refused in place and changes nothing.
    let bad = owner
        .post(
            &format!("{base}/websites/{client_id}/edit"),
            &form("HS256", "scan", "off"),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("HS256"), "{}", bad.body);
    let site = env
        .tenancy
        .website(&Principal::cli(), APPID_A, &client_id)
        .await
        .unwrap()
        .client;
    assert_eq!(site.scan_confirmation, Some(true));
    let rotated = owner
        .post(&format!("{base}/websites/{client_id}/rotate"), &[])
        .await;
    let new_secret = once(&rotated, "website-secret");
    assert_ne!(new_secret, secret);

    // Settings: an error in place, then saved.
    let bad = owner
        .post(
            &format!("{base}/settings"),
            &[("original_id", "gh_short"), ("push_mode", "safe")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("id=\"original-id-error\""));
    let saved = owner
        .post(
            &format!("{base}/settings"),
            &[
                ("original_id", "gh_0123456789ab"),
                ("push_mode", "safe"),
                ("push_relay_url", "https://backend.example/wx"),
            ],
        )
        .await;
    assert_eq!(saved.location(), format!("{base}?flash=settings_saved"));
    let page = owner.get(saved.location()).await;
    assert!(page.body.contains("value=\"gh_0123456789ab\""));
    assert!(page.body.contains("<option value=\"safe\" selected>"));

    // Push credentials with the push URL, shown once.
    let push = owner.post(&format!("{base}/push-credentials"), &[]).await;
    assert_eq!(
        once(&push, "push-url"),
        format!("{}/t/{APPID_A}/wechat/push", env.base)
    );
    assert_eq!(once(&push, "push-token").len(), 32);
    assert_eq!(once(&push, "push-aes-key").len(), 43);

    // What the operator sees: read-only but for revoking keys and disabling.
    let mut operator = env.signed_in(OPERATOR).await;
    let seen = operator.get(&base).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.body.contains("billing") && seen.body.contains("Shop two"));
    assert!(seen.body.contains("gh_0123456789ab"));
    assert!(seen.body.contains("/revoke\""));
    assert!(seen.body.contains(&format!("{base}/disable\"")));
    for hidden in [
        "/keys\"",
        "/websites\"",
        "/settings\"",
        "/delete\"",
        "/appsecret\"",
        "/refresh\"",
        "/clear-quota\"",
        "/end-users\"",
        "/push-credentials\"",
    ] {
        assert!(
            !seen.body.contains(&format!("{base}{hidden}")),
            "{hidden} shown to the operator"
        );
    }
    let key_id = seen
        .between(&format!("{base}/keys/"), "/revoke")
        .expect("a revoke form");
    let revoked = operator
        .post(&format!("{base}/keys/{key_id}/revoke"), &[])
        .await;
    assert_eq!(revoked.location(), format!("{base}?flash=key_revoked"));
    assert!(owner.get(&base).await.body.contains("已吊销"));
    // The operator's forms are refused by the tenancy layer all the same.
    let refused = operator
        .post(&format!("{base}/keys"), &[("label", "x"), ("token", "on")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // End users: none yet, and the search is there.
    let users = owner.get(&format!("{base}/end-users?q=nobody")).await;
    assert_eq!(users.status, StatusCode::OK);
    assert!(users.body.contains("没有匹配的用户"));

    // Clear quota and delete want the AppID typed.
    let wrong = owner
        .post(&format!("{base}/clear-quota"), &[("confirm", APPID_B)])
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.body.contains("id=\"clear-error\""));
    assert!(wrong.body.contains("<details class=\"danger-zone\" open>"));
    let disabled = owner.post(&format!("{base}/disable"), &[]).await;
    assert_eq!(
        disabled.location(),
        format!("{base}?flash=account_disabled")
    );
    assert!(
        owner
            .get(&base)
            .await
            .body
            .contains(&format!("{base}/enable\""))
    );
    let wrong = owner
        .post(&format!("{base}/delete"), &[("confirm", "")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    let deleted = owner
        .post(&format!("{base}/delete"), &[("confirm", APPID_A)])
        .await;
    assert_eq!(
        deleted.location(),
        "/dashboard/accounts?flash=account_deleted"
    );
    assert_eq!(owner.get(&base).await.status, StatusCode::NOT_FOUND);

    // Everything above is in the audit log.
    let log = operator
        .get("/dashboard/operator/audit?action=account.delete")
        .await;
    assert!(
        log.body
            .contains("<code class=\"action\">account.delete</code>"),
        "{}",
        log.body
    );
    env.finish().await;
}

pub async fn operators_filter_the_audit_log_and_export_it_streamed(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    // More renames than one export page holds (500), so the export pages through the log.
    // A millisecond apart: entry ids (UUIDv7) then sort as the renames happened.
    for n in 0..510 {
        env.advance(std::time::Duration::from_millis(1));
        env.tenancy
            .rename_account(&Principal::cli(), APPID_A, &format!("Name {n}"))
            .await
            .unwrap();
    }
    env.tenancy
        .disable_account(&Principal::cli(), APPID_B)
        .await
        .unwrap();
    let mut operator = env.signed_in(OPERATOR).await;
    let page = operator
        .get("/dashboard/operator/audit?action=account.rename")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let renames = |page: &Page| {
        page.body
            .matches("<code class=\"action\">account.rename</code>")
            .count()
    };
    assert_eq!(renames(&page), 50);
    // Renames 509 to 460, newest first (each says its name before and after).
    assert!(page.body.contains("Name 509") && !page.body.contains("Name 458"));
    let pages = page.between("<nav class=\"pages\"", "</nav>").unwrap();
    let next = pages
        .split_once("<a href=\"")
        .and_then(|(_, rest)| rest.split_once("\">下一页</a>"))
        .map(|(href, _)| href.replace("&#38;", "&"))
        .expect("a next page");
    let second = operator
        .get(&format!("/dashboard/operator/audit{next}"))
        .await;
    assert_eq!(renames(&second), 50);
    assert!(second.body.contains("Name 458") && !second.body.contains("Name 509"));

    // Filters: account, time; a bad one is said beside its field.
    let b = operator
        .get(&format!("/dashboard/operator/audit?appid={APPID_B}"))
        .await;
    assert!(b.body.contains("account.disable</code>") && renames(&b) == 0);
    let future = operator
        .get("/dashboard/operator/audit?from=2030-01-01")
        .await;
    assert!(future.body.contains("没有匹配的记录"));
    let bad = operator.get("/dashboard/operator/audit?until=soon").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("id=\"until-error\""));
    let unknown = operator
        .get("/dashboard/operator/audit?appid=wx00000000000000ff")
        .await;
    assert!(unknown.body.contains("id=\"appid-error\""));

    // The export: every entry the filters select, over more than one database page.
    let csv = operator
        .get("/dashboard/operator/audit.csv?action=account.rename&from=2026-01-01")
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
    assert!(csv.header("content-disposition").contains("attachment"));
    // Streamed: no length known in advance.
    assert!(csv.headers.get("content-length").is_none());
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines[0],
        "id,at,actor,actor_email,action,account_id,appid,target,details"
    );
    assert_eq!(lines.len(), 511);
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains(",cli,,account.rename,"))
    );
    assert!(lines[1].contains("Name 509") && lines[510].contains("Name 0\""));
    let all = operator.get("/dashboard/operator/audit.csv").await;
    assert!(all.body.contains("account.disable") && all.body.contains("account.register"));
    let only_b = operator
        .get(&format!("/dashboard/operator/audit.csv?appid={APPID_B}"))
        .await;
    assert!(only_b.body.contains("account.disable") && !only_b.body.contains("account.rename"));
    // Owners have no platform log.
    let mut owner = env.signed_in(OWNER_A).await;
    assert_eq!(
        owner.get("/dashboard/operator/audit.csv").await.status,
        StatusCode::FORBIDDEN
    );
    env.finish().await;
}
