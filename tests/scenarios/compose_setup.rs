//! What `docker-compose.yml` runs, run here without a container engine: the simulator as its
//! `sim` service starts it, `deploy/setup.sh` (twice: a restarted stack runs it again), a
//! replica, and `wxhub sample-site` from the client file the script wrote; then a person's
//! login through the sample site.

use std::process::Command;

use e2e::{PATIENCE, Process, clean_env, http, wxhub_bin};

const UA: &str = "Mozilla/5.0 (iPhone) MicroMessenger/8.0.50";
/// The address the site's redirect URI names; the test sends the browser to the site's real
/// port instead.
const SITE_URL: &str = "http://127.0.0.1:9/";

fn with_port(url: &str, port: u16) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_port(Some(port)).unwrap();
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_script_and_sample_site_of_the_compose_file_work() {
    let Some(db) = testkit::TestDatabase::postgres().await else {
        eprintln!("{}", testkit::DID_NOT_RUN);
        return;
    };
    let dir = testkit::TempDir::new();
    let mut sim = Command::new(wxhub_bin());
    clean_env(&mut sim);
    // As the compose file's `sim` service: sample accounts, redirects accepted to the hub's
    // host (here 127.0.0.1; pushes are not part of this scenario).
    sim.args([
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--hub-url",
        "http://127.0.0.1:1",
    ]);
    let sim = Process::spawn(sim, dir.path().join("sim.log"));
    let sim_base = sim
        .wait_for_line("WeChat simulator at ")
        .trim()
        .trim_start_matches("WeChat simulator at ")
        .trim_end_matches('/')
        .to_owned();
    let bin_dir = wxhub_bin().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The compose file gives setup and replicas one fixed public URL; here a port just found
    // free (the site's back channel reaches the hub at the issuer the client file names).
    let hub_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let public_url = format!("http://127.0.0.1:{hub_port}");
    let client_file = dir.path().join("client.txt");
    let keyring = dir.path().join("keyring.toml");
    let environment = |command: &mut Command| {
        clean_env(command);
        command
            .env("PATH", &path)
            .env("WXHUB_DATABASE_URL", db.url())
            .env("WXHUB_DATA_DIR", dir.path())
            .env("WXHUB_KEYRING_FILE", &keyring)
            .env("WXHUB_WECHAT_API_URL", &sim_base)
            .env("WXHUB_WECHAT_OPEN_URL", &sim_base)
            .env("WXHUB_PUBLIC_URL", &public_url)
            .env("WXHUB_LISTEN", format!("127.0.0.1:{hub_port}"));
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/setup.sh");
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let mut setup = Command::new("sh");
        environment(&mut setup);
        let output = setup
            .arg(script)
            .env("SITE_CLIENT_FILE", &client_file)
            .env("SITE_REDIRECT_URI", format!("{SITE_URL}callback"))
            .output()
            .expect("run deploy/setup.sh");
        assert!(
            output.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        outputs.push((
            std::fs::read(&keyring).unwrap(),
            std::fs::read(&client_file).unwrap(),
        ));
    }
    assert_eq!(
        outputs[0], outputs[1],
        "the second run changed neither keyring nor client"
    );

    let mut serve = Command::new(wxhub_bin());
    environment(&mut serve);
    serve.arg("serve");
    let replica = Process::spawn(serve, dir.path().join("replica.log"));
    replica.wait_for_line("wxhub is serving");

    let mut site = Command::new(wxhub_bin());
    clean_env(&mut site);
    site.args([
        "sample-site",
        "--listen",
        "127.0.0.1:0",
        "--site-url",
        SITE_URL,
    ])
    .arg("--client-file")
    .arg(&client_file);
    let site = Process::spawn(site, dir.path().join("site.log"));
    let line = site.wait_for_line("sample site at ");
    let site_port: u16 = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .expect("the site's port");

    let http = http();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !http
        .get(format!("http://127.0.0.1:{hub_port}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica is not ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A person: the site's button → the hub → WeChat's page (alice allows) → the hub → the
    // site, logged in.
    let site_base = format!("http://127.0.0.1:{site_port}");
    let to_hub = http
        .get(format!("{site_base}/login?client=0"))
        .header("user-agent", UA)
        .send()
        .await
        .unwrap();
    let site_cookie = cookies(&to_hub);
    let to_hub = location(&to_hub);
    assert!(to_hub.starts_with(&format!("{public_url}/t/")), "{to_hub}");
    let to_wechat = http
        .get(&to_hub)
        .header("user-agent", UA)
        .send()
        .await
        .unwrap();
    let hub_cookie = cookies(&to_wechat);
    let wechat = location(&to_wechat).replace("#wechat_redirect", "");
    let back = http
        .get(format!("{wechat}&sim_user=alice&sim_answer=allow"))
        .header("user-agent", UA)
        .send()
        .await
        .unwrap();
    let to_site = http
        .get(location(&back))
        .header("user-agent", UA)
        .header("cookie", hub_cookie)
        .send()
        .await
        .unwrap();
    let callback = with_port(&location(&to_site), site_port);
    let page = http
        .get(callback)
        .header("cookie", site_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Logged in"), "{page}");
    drop((replica, site, sim));
    db.finish().await;
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("expected a redirect, got {}", response.status()))
        .to_owned()
}

fn cookies(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}
