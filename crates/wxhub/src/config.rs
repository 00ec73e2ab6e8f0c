//! wxhub's configuration: one typed struct, loaded once at start and validated.
//!
//! Sources, strongest first: command-line flags, `WXHUB_*` environment variables (clap reads
//! both), the TOML file named by `--config` / `WXHUB_CONFIG`, then the built-in defaults, which
//! serve the embedded case (SQLite under `./data`, listening on loopback).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use url::Url;

/// Flags and environment variables shared by every subcommand that touches the deployment.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML configuration file. Keys are the long flag names with `_` instead of `-`
    /// (e.g. `data_dir = "/var/lib/wxhub"`).
    #[arg(long, env = "WXHUB_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the SQLite database and the development keyring [default: ./data]
    #[arg(long, env = "WXHUB_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Database URL: `sqlite:///path/wxhub.db` or `postgres://user:pass@host/db`
    /// [default: sqlite in the data directory]
    #[arg(
        long,
        env = "WXHUB_DATABASE_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Master-key keyring file (TOML, mode 0600). Ignored when WXHUB_KEYRING holds the keyring
    /// itself (base64 of the same TOML) [default: DATA_DIR/keyring.toml]
    #[arg(long, env = "WXHUB_KEYRING_FILE", global = true, value_name = "FILE")]
    pub keyring_file: Option<PathBuf>,

    /// Create a development keyring in the data directory when none exists. Never use it in
    /// production: anyone who can read the data directory can decrypt every secret.
    #[arg(long, env = "WXHUB_DEV_KEYRING", global = true)]
    pub dev_keyring: bool,

    /// Address the HTTP server listens on [default: 127.0.0.1:8080]
    #[arg(long, env = "WXHUB_LISTEN", global = true, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// The URL at which users and WeChat reach this server; OIDC issuers and push URLs are built
    /// from it [default: http://LISTEN]
    #[arg(long, env = "WXHUB_PUBLIC_URL", global = true, value_name = "URL")]
    pub public_url: Option<Url>,

    /// Base URL of the WeChat API; point it at a simulator for testing
    /// [default: https://api.weixin.qq.com]
    #[arg(long, env = "WXHUB_WECHAT_API_URL", global = true, value_name = "URL")]
    pub wechat_api_url: Option<Url>,

    /// Base URL of WeChat's OAuth authorize page, where the login gateway sends end users;
    /// point it at a simulator for testing [default: https://open.weixin.qq.com]
    #[arg(long, env = "WXHUB_WECHAT_OPEN_URL", global = true, value_name = "URL")]
    pub wechat_open_url: Option<Url>,

    /// Base URL of WeChat's mp host, which serves QR code images (`showqrcode`) to the login
    /// gateway's scan and follow pages [default: https://mp.weixin.qq.com; with a simulator
    /// given by --wechat-api-url: its /mp]
    #[arg(long, env = "WXHUB_WECHAT_MP_URL", global = true, value_name = "URL")]
    pub wechat_mp_url: Option<Url>,

    /// Operators must enrol TOTP before they can use the dashboard
    /// [default: true when the public URL is https]
    #[arg(
        long,
        env = "WXHUB_REQUIRE_TOTP_FOR_OPERATORS",
        global = true,
        value_name = "BOOL"
    )]
    pub require_totp_for_operators: Option<bool>,

    /// Log format: `text` for people, `json` for log collectors [default: text]
    #[arg(long, env = "WXHUB_LOG_FORMAT", global = true, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// The public IP addresses this server calls WeChat from, comma-separated: the IP
    /// whitelist entries the dashboard tells owners to add (设置与开发 → 基本配置 → IP白名单)
    #[arg(
        long = "egress-ip",
        env = "WXHUB_EGRESS_IPS",
        global = true,
        value_name = "IP",
        value_delimiter = ','
    )]
    pub egress_ips: Vec<IpAddr>,

    /// Let anyone create an owner account from the dashboard's sign-in page
    /// [default: false: operators invite owners]
    #[arg(long, env = "WXHUB_OPEN_SIGN_UP", global = true, value_name = "BOOL")]
    pub open_sign_up: Option<bool>,

    /// Days the daily statistics (charts, platform totals, ranks) are kept [default: 1098,
    /// three years]
    #[arg(
        long,
        env = "WXHUB_STATS_RETENTION_DAYS",
        global = true,
        value_name = "DAYS"
    )]
    pub stats_retention_days: Option<u32>,

    /// Days WeChat's own statistics (followers, push handling) synced nightly are kept
    /// [default: 1098, three years]
    #[arg(
        long,
        env = "WXHUB_DATACUBE_RETENTION_DAYS",
        global = true,
        value_name = "DAYS"
    )]
    pub datacube_retention_days: Option<u32>,

    /// Calls to WeChat's statistics API per account and day, at most; a backfill continues
    /// the next day [default: 60]
    #[arg(
        long,
        env = "WXHUB_DATACUBE_DAILY_BUDGET",
        global = true,
        value_name = "CALLS"
    )]
    pub datacube_daily_budget: Option<u32>,

    /// Serve `/metrics` (Prometheus) on this separate address, without authentication: bind
    /// it where only the monitoring system reaches [default: not served separately]
    #[arg(long, env = "WXHUB_METRICS_LISTEN", global = true, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve `/metrics` on the main listener to requests with `Authorization: Bearer TOKEN`
    /// (at least 32 characters) [default: not served there]
    #[arg(
        long,
        env = "WXHUB_METRICS_TOKEN",
        global = true,
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,

    /// Label token refreshes, logins and pushes in `/metrics` with the account, for small
    /// installs (every account adds series) [default: false]
    #[arg(
        long,
        env = "WXHUB_METRICS_PER_ACCOUNT",
        global = true,
        value_name = "BOOL"
    )]
    pub metrics_per_account: Option<bool>,

    /// Seconds a client may take to send a request's headers, and may leave a kept-alive
    /// connection idle; then the connection is closed [default: 10]
    #[arg(
        long,
        env = "WXHUB_HTTP_HEADER_TIMEOUT",
        global = true,
        value_name = "SECS"
    )]
    pub http_header_timeout: Option<u64>,

    /// Seconds a request may take until its answer starts (reading its body included); a
    /// slower one is answered 408 [default: 30]
    #[arg(
        long,
        env = "WXHUB_HTTP_REQUEST_TIMEOUT",
        global = true,
        value_name = "SECS"
    )]
    pub http_request_timeout: Option<u64>,

    /// Connections open at once on each listener; further ones wait in the kernel's queue
    /// until one closes [default: 4096]
    #[arg(long, env = "WXHUB_MAX_CONNECTIONS", global = true, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Reverse proxies in front of wxhub, comma-separated addresses or blocks
    /// (`10.0.0.0/8,2001:db8::/32`): for requests from them the client is taken from
    /// `X-Forwarded-For`, so per-client limits tell clients apart [default: none; every
    /// client is its connection's peer]
    #[arg(
        long = "trusted-proxy",
        env = "WXHUB_TRUSTED_PROXIES",
        global = true,
        value_name = "IP[/N]",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<crate::listener::IpNet>,
    /// A host that push routes may reach on a non-public address (loopback, private,
    /// link-local…), as written in route URLs, comma-separated; e.g. `localhost,127.0.0.1`
    /// for development. Every other target must resolve to public addresses only
    #[arg(
        long = "push-allow-host",
        env = "WXHUB_PUSH_ALLOW_HOSTS",
        global = true,
        value_name = "HOST",
        value_delimiter = ','
    )]
    pub push_allow_hosts: Vec<String>,

    /// How long a reply route may take to answer, counted from the push's arrival, in ms
    /// (WeChat waits 5000 ms; 100 to 4800) [default: 4000]
    #[arg(
        long,
        env = "WXHUB_PUSH_REPLY_DEADLINE_MS",
        global = true,
        value_name = "MS"
    )]
    pub push_reply_deadline_ms: Option<u64>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The contents of the TOML file; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    keyring_file: Option<PathBuf>,
    dev_keyring: Option<bool>,
    listen: Option<SocketAddr>,
    public_url: Option<Url>,
    wechat_api_url: Option<Url>,
    wechat_open_url: Option<Url>,
    wechat_mp_url: Option<Url>,
    require_totp_for_operators: Option<bool>,
    log_format: Option<LogFormat>,
    egress_ips: Option<Vec<IpAddr>>,
    open_sign_up: Option<bool>,
    stats_retention_days: Option<u32>,
    datacube_retention_days: Option<u32>,
    datacube_daily_budget: Option<u32>,
    metrics_listen: Option<SocketAddr>,
    metrics_token: Option<String>,
    metrics_per_account: Option<bool>,
    http_header_timeout: Option<u64>,
    http_request_timeout: Option<u64>,
    max_connections: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
    push_allow_hosts: Option<Vec<String>>,
    push_reply_deadline_ms: Option<u64>,
}

/// Where the master keys come from.
#[derive(Debug, Clone)]
pub enum KeyringSource {
    /// `WXHUB_KEYRING`: the keyring TOML, base64-encoded, held in the environment.
    Env,
    /// A keyring file; `dev` allows creating a development keyring there when missing.
    File { path: PathBuf, dev: bool },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub keyring: KeyringSource,
    pub listen: SocketAddr,
    pub public_url: Url,
    pub wechat_api_url: Url,
    pub wechat_open_url: Url,
    /// WeChat's mp host (QR code images).
    pub wechat_mp_url: Url,
    /// Operators must enrol TOTP before using the dashboard.
    pub require_totp_for_operators: bool,
    pub log_format: LogFormat,
    /// The addresses WeChat sees this server's calls come from.
    pub egress_ips: Vec<IpAddr>,
    /// Anyone may sign up as an owner.
    pub open_sign_up: bool,
    /// Days daily statistics are kept.
    pub stats_retention_days: u32,
    /// Days synced WeChat statistics are kept.
    pub datacube_retention_days: u32,
    /// WeChat statistics calls per account and day.
    pub datacube_daily_budget: u32,
    /// Where `/metrics` is served on its own, unauthenticated.
    pub metrics_listen: Option<SocketAddr>,
    /// The bearer token that opens `/metrics` on the main listener (never logged).
    pub metrics_token: Option<MetricsToken>,
    /// Per-account labels in `/metrics`.
    pub metrics_per_account: bool,
    /// Timeouts and the connection limit of every listener.
    pub http: crate::listener::HttpLimits,
    /// Hosts push routes may reach on non-public addresses.
    pub push_allow_hosts: Vec<String>,
    /// How long a reply route may take, from the push's arrival.
    pub push_reply_deadline: std::time::Duration,
}

/// The `/metrics` bearer token: redacted in `Debug`, compared in constant time.
#[derive(Clone)]
pub struct MetricsToken(String);

impl MetricsToken {
    /// Whether `presented` is the token.
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        // Equal-length digests compared in constant time: the answer's time says nothing
        // about the token, not even its length.
        let a = sha2::Sha256::digest(self.0.as_bytes());
        let b = sha2::Sha256::digest(presented.as_bytes());
        a.ct_eq(&b).into()
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(***)")
    }
}

/// Three years and two days: a chart of the same day three years ago still has it.
const DEFAULT_RETENTION_DAYS: u32 = 1098;

/// The environment variable that may hold the whole keyring (base64 of its TOML).
pub const KEYRING_ENV: &str = "WXHUB_KEYRING";

impl Config {
    /// Merges flags/environment over the file over the defaults, and validates the result.
    pub fn load(args: &ConfigArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        let database_url = match args.database_url.clone().or(file.database_url) {
            Some(url) => url,
            None => sqlite_url(&data_dir.join("wxhub.db")),
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            bail!(
                "database URL must start with sqlite:, postgres:// or postgresql:// (got a URL with scheme {:?})",
                database_url.split(':').next().unwrap_or("")
            );
        }
        let keyring = if std::env::var_os(KEYRING_ENV).is_some() {
            KeyringSource::Env
        } else {
            KeyringSource::File {
                path: args
                    .keyring_file
                    .clone()
                    .or(file.keyring_file)
                    .unwrap_or_else(|| data_dir.join("keyring.toml")),
                dev: args.dev_keyring || file.dev_keyring.unwrap_or(false),
            }
        };
        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let public_url = match args.public_url.clone().or(file.public_url) {
            Some(url) => url,
            None => Url::parse(&format!("http://{listen}")).context("building the public URL")?,
        };
        if !matches!(public_url.scheme(), "http" | "https") {
            bail!("public URL must be http:// or https:// (got {public_url})");
        }
        if public_url.query().is_some() || public_url.fragment().is_some() {
            bail!("public URL must not carry a query or fragment (got {public_url})");
        }
        let wechat_api_url = match args.wechat_api_url.clone().or(file.wechat_api_url) {
            Some(url) => url,
            None => Url::parse("https://api.weixin.qq.com").expect("constant URL"),
        };
        let wechat_open_url = match args.wechat_open_url.clone().or(file.wechat_open_url) {
            Some(url) => url,
            None => Url::parse("https://open.weixin.qq.com").expect("constant URL"),
        };
        let wechat_mp_url = match args.wechat_mp_url.clone().or(file.wechat_mp_url) {
            Some(url) => url,
            // A simulator serves the mp host's endpoints under /mp beside its API.
            None if wechat_api_url.host_str() != Some("api.weixin.qq.com") => {
                wechat::ClientConfig::for_base(wechat_api_url.clone()).mp_base
            }
            None => Url::parse("https://mp.weixin.qq.com").expect("constant URL"),
        };
        for (name, url) in [
            ("WeChat API", &wechat_api_url),
            ("WeChat authorize page", &wechat_open_url),
            ("WeChat mp host", &wechat_mp_url),
        ] {
            if !matches!(url.scheme(), "http" | "https") {
                bail!("the {name} URL must be http:// or https:// (got {url})");
            }
        }
        let stats_retention_days = args
            .stats_retention_days
            .or(file.stats_retention_days)
            .unwrap_or(DEFAULT_RETENTION_DAYS);
        let datacube_retention_days = args
            .datacube_retention_days
            .or(file.datacube_retention_days)
            .unwrap_or(DEFAULT_RETENTION_DAYS);
        for (name, days) in [
            ("stats_retention_days", stats_retention_days),
            ("datacube_retention_days", datacube_retention_days),
        ] {
            if days < 2 {
                bail!("{name} must be at least 2 days (got {days})");
            }
        }
        let datacube_daily_budget = args
            .datacube_daily_budget
            .or(file.datacube_daily_budget)
            .unwrap_or(60);
        if datacube_daily_budget < 4 {
            bail!(
                "datacube_daily_budget must be at least 4 calls: a day's sync takes 4 (got {datacube_daily_budget})"
            );
        }
        let metrics_token = match args.metrics_token.clone().or(file.metrics_token) {
            Some(token) if token.trim().len() < 32 => {
                bail!("metrics_token must be at least 32 characters (use a random value)")
            }
            Some(token) => Some(MetricsToken(token.trim().to_owned())),
            None => None,
        };
        let defaults = crate::listener::HttpLimits::default();
        let secs = |flag: Option<u64>, file: Option<u64>, name: &str, default: Duration| match flag
            .or(file)
        {
            None => Ok(default),
            Some(0) => bail!("{name} must be at least 1 second"),
            Some(n) if n > 3600 => bail!("{name} must be at most 3600 seconds (got {n})"),
            Some(n) => Ok(Duration::from_secs(n)),
        };
        let http = crate::listener::HttpLimits {
            header_timeout: secs(
                args.http_header_timeout,
                file.http_header_timeout,
                "http_header_timeout",
                defaults.header_timeout,
            )?,
            request_timeout: secs(
                args.http_request_timeout,
                file.http_request_timeout,
                "http_request_timeout",
                defaults.request_timeout,
            )?,
            max_connections: match args.max_connections.or(file.max_connections) {
                None => defaults.max_connections,
                Some(n @ 1..=1_000_000) => n,
                Some(n) => bail!("max_connections must be between 1 and 1000000 (got {n})"),
            },
            trusted_proxies: if args.trusted_proxies.is_empty() {
                file.trusted_proxies
                    .unwrap_or_default()
                    .iter()
                    .map(|text| {
                        text.parse()
                            .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
                    .into()
            } else {
                args.trusted_proxies.clone().into()
            },
        };
        let require_totp_for_operators = args
            .require_totp_for_operators
            .or(file.require_totp_for_operators)
            .unwrap_or(public_url.scheme() == "https");
        let push_reply_deadline_ms = args
            .push_reply_deadline_ms
            .or(file.push_reply_deadline_ms)
            .unwrap_or(4000);
        if !(100..=4800).contains(&push_reply_deadline_ms) {
            anyhow::bail!(
                "push reply deadline {push_reply_deadline_ms} ms: must be 100 to 4800 (WeChat \
                 waits 5000 ms for the whole answer)"
            );
        }
        let push_reply_deadline = std::time::Duration::from_millis(push_reply_deadline_ms);
        Ok(Config {
            require_totp_for_operators,
            data_dir,
            database_url,
            keyring,
            listen,
            public_url,
            wechat_api_url,
            wechat_open_url,
            wechat_mp_url,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            open_sign_up: args.open_sign_up.or(file.open_sign_up).unwrap_or(false),
            egress_ips: if args.egress_ips.is_empty() {
                file.egress_ips.unwrap_or_default()
            } else {
                args.egress_ips.clone()
            },
            stats_retention_days,
            datacube_retention_days,
            datacube_daily_budget,
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            metrics_token,
            metrics_per_account: args
                .metrics_per_account
                .or(file.metrics_per_account)
                .unwrap_or(false),
            http,
            push_allow_hosts: if args.push_allow_hosts.is_empty() {
                file.push_allow_hosts.unwrap_or_default()
            } else {
                args.push_allow_hosts.clone()
            },
            push_reply_deadline,
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading configuration file {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("configuration file {} is not valid", path.display()))
}

/// `sqlite://` URL for a file path, created if missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_the_embedded_case() {
        let config = Config::load(&ConfigArgs::default()).unwrap();
        assert_eq!(config.database_url, "sqlite://data/wxhub.db?mode=rwc");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.public_url.as_str(), "http://127.0.0.1:8080/");
        assert!(!config.require_totp_for_operators, "off on plain http");
        assert!(
            !config.open_sign_up,
            "operators invite owners unless configured"
        );
        let https = Config::load(&ConfigArgs {
            public_url: Some(Url::parse("https://hub.example").unwrap()),
            ..ConfigArgs::default()
        })
        .unwrap();
        assert!(https.require_totp_for_operators, "on by default on https");
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("wxhub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wxhub.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/wx\"\negress_ips = [\"203.0.113.7\"]\n",
        )
        .unwrap();
        let args = ConfigArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..ConfigArgs::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.data_dir, PathBuf::from("/srv/wx"));
        assert_eq!(
            config.egress_ips,
            ["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        let flagged = Config::load(&ConfigArgs {
            egress_ips: vec![
                "198.51.100.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
            ..args
        })
        .unwrap();
        assert_eq!(flagged.egress_ips.len(), 2, "flags replace the file's list");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn listener_limits_have_defaults_and_refuse_zero() {
        let config = Config::load(&ConfigArgs::default()).unwrap();
        assert_eq!(config.http, crate::listener::HttpLimits::default());
        assert_eq!(config.http.header_timeout, Duration::from_secs(10));
        let set = Config::load(&ConfigArgs {
            http_header_timeout: Some(3),
            http_request_timeout: Some(60),
            max_connections: Some(100),
            ..ConfigArgs::default()
        })
        .unwrap();
        assert_eq!(set.http.header_timeout, Duration::from_secs(3));
        assert_eq!(set.http.request_timeout, Duration::from_secs(60));
        assert_eq!(set.http.max_connections, 100);
        for args in [
            ConfigArgs {
                http_header_timeout: Some(0),
                ..ConfigArgs::default()
            },
            ConfigArgs {
                max_connections: Some(0),
                ..ConfigArgs::default()
            },
        ] {
            let err = Config::load(&args).unwrap_err().to_string();
            assert!(
                err.contains("http_header_timeout") || err.contains("max_connections"),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_file_keys_are_rejected_with_the_file_name() {
        let dir = std::env::temp_dir().join(format!("wxhub-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wxhub.toml");
        std::fs::write(&path, "listn = \"127.0.0.1:9000\"\n").unwrap();
        let args = ConfigArgs {
            config: Some(path.clone()),
            ..ConfigArgs::default()
        };
        let err = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(err.contains("wxhub.toml"), "{err}");
        assert!(err.contains("listn"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
