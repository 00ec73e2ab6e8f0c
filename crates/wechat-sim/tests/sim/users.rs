//! §5 user management.

use std::collections::HashSet;

use wechat::Lang;
use wechat_sim::FollowOptions;

use crate::common::{Env, NOON_CHINA, code};

fn quiet() -> FollowOptions {
    FollowOptions {
        push: false,
        ..FollowOptions::default()
    }
}

#[tokio::test]
async fn follower_user_info_has_subscribe_fields() {
    let env = Env::new().await;
    env.account("wx1");
    env.user("u1");
    let opts = FollowOptions {
        qr_scene: Some(98765),
        tagid_list: vec![128, 2],
        remark: "vip".into(),
        ..quiet()
    };
    let openid = env.sim().follow("wx1", "u1", opts).await.unwrap().openid;
    let t = env.token("wx1").await;
    let info = env.client.user_info(&t, &openid, Lang::ZhCn).await.unwrap();
    assert!(info.subscribe);
    assert_eq!(info.openid, openid);
    assert_eq!(info.subscribe_time, Some(NOON_CHINA / 1000));
    assert_eq!(info.subscribe_scene.as_deref(), Some("ADD_SCENE_QR_CODE"));
    assert_eq!(info.qr_scene, Some(98765));
    assert_eq!(info.tagid_list, vec![128, 2]);
    assert_eq!(info.remark.as_deref(), Some("vip"));
    assert_eq!(info.groupid, Some(0));
    assert_eq!(info.nickname, None, "modern shape has no nickname");
    assert_eq!(info.unionid, None, "account not bound to the Open Platform");
}

#[tokio::test]
async fn non_follower_user_info_is_subscribe_0_openid_and_empty_tags() {
    let env = Env::new().await;
    env.account("wx1");
    env.user("u1");
    let openid = env.sim().openid("wx1", "u1").unwrap();
    let t = env.token("wx1").await;
    let raw = env
        .get_json(&format!(
            "/cgi-bin/user/info?access_token={}&openid={openid}",
            t.expose()
        ))
        .await;
    assert_eq!(
        raw,
        serde_json::json!({"subscribe": 0, "openid": openid, "tagid_list": []})
    );
}

#[tokio::test]
async fn legacy_user_info_shape_has_profile_keys() {
    let env = Env::new().await;
    env.account_with("wx1", |a| a.legacy_user_info = true);
    env.user("u1");
    env.user("u2");
    let follower = env.sim().follow("wx1", "u1", quiet()).await.unwrap().openid;
    let stranger = env.sim().openid("wx1", "u2").unwrap();
    let t = env.token("wx1").await;
    let info = env
        .client
        .user_info(&t, &follower, Lang::ZhCn)
        .await
        .unwrap();
    assert_eq!(info.nickname.as_deref(), Some("nick-u1"));
    assert!(info.headimgurl.unwrap().contains("u1"));
    let raw = env
        .get_json(&format!(
            "/cgi-bin/user/info?access_token={}&openid={stranger}",
            t.expose()
        ))
        .await;
    assert_eq!(raw["subscribe"], 0);
    assert_eq!(raw["nickname"], "");
    assert_eq!(raw["headimgurl"], "");
    assert_eq!(raw["sex"], 0);
}

#[tokio::test]
async fn unionid_is_returned_only_for_bound_accounts() {
    let env = Env::new().await;
    env.account_with("wxb", |a| a.unionid_bound = true);
    env.user("u1");
    let openid = env.sim().follow("wxb", "u1", quiet()).await.unwrap().openid;
    let t = env.token("wxb").await;
    let info = env.client.user_info(&t, &openid, Lang::ZhCn).await.unwrap();
    let want = env.sim().user("u1").unwrap().unionid();
    assert_eq!(info.unionid, Some(want));
}

#[tokio::test]
async fn subscribe_time_is_the_latest_follow() {
    let env = Env::new().await;
    env.account("wx1");
    env.user("u1");
    let openid = env.sim().follow("wx1", "u1", quiet()).await.unwrap().openid;
    env.sim().unfollow("wx1", "u1", false).await.unwrap();
    env.advance(3600);
    env.sim().follow("wx1", "u1", quiet()).await.unwrap();
    let t = env.token("wx1").await;
    let info = env.client.user_info(&t, &openid, Lang::ZhCn).await.unwrap();
    assert_eq!(info.subscribe_time, Some(NOON_CHINA / 1000 + 3600));
}

#[tokio::test]
async fn unknown_openid_returns_40003() {
    let env = Env::new().await;
    env.account("wx1");
    let t = env.token("wx1").await;
    let err = env
        .client
        .user_info(&t, "oNOBODY", Lang::ZhCn)
        .await
        .unwrap_err();
    assert_eq!(code(err), 40003);
}

#[tokio::test]
async fn unverified_account_gets_48001_on_user_apis() {
    let env = Env::new().await;
    env.account_with("wx1", |a| a.verified = false);
    env.user("u1");
    let openid = env.sim().openid("wx1", "u1").unwrap();
    let t = env.token("wx1").await;
    let err = env
        .client
        .user_info(&t, &openid, Lang::ZhCn)
        .await
        .unwrap_err();
    assert_eq!(code(err), 48001, "user/info");
    let err = env
        .client
        .user_info_batch(&t, &[openid.as_str()], Lang::ZhCn)
        .await
        .unwrap_err();
    assert_eq!(code(err), 48001, "user/info/batchget");
    let err = env.client.followers(&t, None).await.unwrap_err();
    assert_eq!(code(err), 48001, "user/get");
}

#[tokio::test]
async fn batchget_returns_one_entry_per_user_and_refuses_over_100() {
    let env = Env::new().await;
    env.account("wx1");
    env.user("u1");
    env.user("u2");
    let a = env.sim().follow("wx1", "u1", quiet()).await.unwrap().openid;
    let b = env.sim().openid("wx1", "u2").unwrap();
    let t = env.token("wx1").await;
    let list = env
        .client
        .user_info_batch(&t, &[a.as_str(), b.as_str()], Lang::ZhCn)
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[0].subscribe);
    assert!(!list[1].subscribe);
    let many: Vec<serde_json::Value> = (0..101)
        .map(|_| serde_json::json!({"openid": a, "lang": "zh_CN"}))
        .collect();
    let body = env
        .post_json(
            &format!("/cgi-bin/user/info/batchget?access_token={}", t.expose()),
            serde_json::json!({ "user_list": many }),
        )
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(body["errcode"], 47001);
}

#[tokio::test]
async fn user_get_pages_through_followers() {
    let env = Env::with(|c| c.user_get_page_size = 3).await;
    env.account("wx1");
    let ids: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
    for id in &ids {
        env.user(id);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let expected: HashSet<String> = env
        .sim()
        .seed_followers("wx1", &refs)
        .unwrap()
        .into_iter()
        .collect();
    let t = env.token("wx1").await;
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = env.client.followers(&t, next.as_deref()).await.unwrap();
        pages += 1;
        assert_eq!(page.total, 7);
        assert!(page.openids.len() <= 3);
        if let Some(n) = &page.next_openid {
            assert_eq!(Some(n), page.openids.last());
        }
        seen.extend(page.openids.clone());
        match page.next_openid {
            Some(n) => next = Some(n),
            None => break,
        }
        assert!(pages < 10, "paging does not terminate");
    }
    assert_eq!(pages, 4, "3 + 3 + 1 + the empty last page");
    assert_eq!(seen.len(), 7);
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
}
