//! `wxhub push-route …`: the owner's own servers behind the account's push URL, as a thin
//! adapter over the tenancy layer (acting as the local CLI).
//!
//! A route's Token and EncodingAESKey never come from argv: they are read from stdin (line 1
//! the Token, optional line 2 the EncodingAESKey), or generated with `--generate` and printed
//! once, to be entered in the owner's server where WeChat's were.

use std::fmt::Write as _;
use std::io::BufRead;

use clap::Subcommand;
use tenancy::push_routes::{Delivery, NewRoute, RouteChange, RouteCredentials, RouteView};
use tenancy::settings::PushMode;

use crate::config::Config;
use crate::tenants::{read_secret_line, time, with_tenancy};

/// `wxhub push-route …`.
#[derive(Debug, Subcommand)]
pub enum PushRouteCommand {
    /// Add a route: pushes that match go to the owner's server, signed with the route's own
    /// Token (line 1 of stdin) and, for compatible or safe mode, encrypted with its
    /// EncodingAESKey (line 2) — or with --generate, new ones printed once.
    Add {
        /// The account's AppID.
        appid: String,
        /// The owner's server: https (http only to a loopback host the operator allows).
        #[arg(long, value_name = "URL")]
        url: String,
        /// `reply`: called at once, its passive reply goes back to the user (at most one
        /// reply route answers a push); `copy`: gets a copy from the durable queue, with
        /// retries, and its answer is ignored.
        #[arg(long, value_parser = ["reply", "copy"], default_value = "copy")]
        delivery: String,
        /// Only pushes with this MsgType (text, image, event, …).
        #[arg(long, value_name = "TYPE")]
        msg_type: Option<String>,
        /// Only events with this Event (CLICK, subscribe, SCAN, …).
        #[arg(long, value_name = "EVENT")]
        event: Option<String>,
        /// Only pushes whose EventKey starts with this (e.g. `menu_`).
        #[arg(long, value_name = "PREFIX")]
        event_key_prefix: Option<String>,
        /// How the owner's server expects pushes: plain, compatible or safe [default: safe
        /// with an EncodingAESKey, plain without].
        #[arg(long, value_parser = ["plain", "compatible", "safe"])]
        push_mode: Option<String>,
        /// Where it goes among the account's routes (ascending) [default: last].
        #[arg(long)]
        position: Option<i64>,
        /// Generate the route's Token and EncodingAESKey and print them once.
        #[arg(long)]
        generate: bool,
        /// Add it switched off.
        #[arg(long)]
        disabled: bool,
    },
    /// List an account's routes, in order (never their credentials).
    List {
        /// The account's AppID.
        appid: String,
    },
    /// Change a route; options not given keep their value, an empty value ("") clears a
    /// match.
    Edit {
        /// The account's AppID.
        appid: String,
        /// The route's id, from `wxhub push-route list`.
        route_id: String,
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        #[arg(long, value_parser = ["reply", "copy"])]
        delivery: Option<String>,
        #[arg(long, value_name = "TYPE")]
        msg_type: Option<String>,
        #[arg(long, value_name = "EVENT")]
        event: Option<String>,
        #[arg(long, value_name = "PREFIX")]
        event_key_prefix: Option<String>,
        #[arg(long, value_parser = ["plain", "compatible", "safe", ""])]
        push_mode: Option<String>,
        #[arg(long)]
        position: Option<i64>,
        /// Switch the route on (true) or off (false).
        #[arg(long, value_name = "BOOL")]
        enabled: Option<bool>,
        /// Replace the Token and EncodingAESKey from stdin (line 1 and 2).
        #[arg(long, conflicts_with = "generate")]
        credentials: bool,
        /// Replace them with generated ones, printed once.
        #[arg(long)]
        generate: bool,
    },
    /// Delete a route with its queued copies.
    Delete {
        /// The account's AppID.
        appid: String,
        /// The route's id.
        route_id: String,
    },
    /// Show the routes' last failures with their cause, the dead letters (copies whose last
    /// attempt failed) and how many copies wait.
    Failures {
        /// The account's AppID.
        appid: String,
    },
    /// Queue a dead letter again, due now, with fresh attempts.
    Resend {
        /// The account's AppID.
        appid: String,
        /// The dead letter's id, from `wxhub push-route failures`.
        copy_id: String,
    },
}

fn delivery(value: &str) -> anyhow::Result<Delivery> {
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("delivery {value:?} is not reply or copy"))
}

fn push_mode(value: &str) -> anyhow::Result<PushMode> {
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("push mode {value:?} is not plain, compatible or safe"))
}

fn clearable(value: Option<String>) -> Option<Option<String>> {
    value.map(|v| (!v.trim().is_empty()).then_some(v))
}

/// Reads or generates credentials; returns them and what to print once.
fn credentials(
    generate: bool,
    input: &mut dyn BufRead,
) -> anyhow::Result<(RouteCredentials, Option<String>)> {
    if generate {
        let creds = tenancy::credentials::generate_push_credentials()?;
        let shown = format!(
            "Token:          {}\nEncodingAESKey: {}\nShown only this once: enter both in the \
             owner's server where WeChat's Token and EncodingAESKey were.\n",
            creds.token.expose(),
            creds.encoding_aes_key.expose()
        );
        return Ok((
            RouteCredentials {
                token: creds.token,
                encoding_aes_key: Some(creds.encoding_aes_key),
            },
            Some(shown),
        ));
    }
    let token = read_secret_line(input)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no Token on stdin: pipe the route's Token in (line 1; line 2 the EncodingAESKey \
             for compatible or safe mode), or use --generate"
        )
    })?;
    let encoding_aes_key = read_secret_line(input)?;
    Ok((
        RouteCredentials {
            token,
            encoding_aes_key,
        },
        None,
    ))
}

fn describe(route: &RouteView) -> String {
    format!(
        "{}  #{} {} {} → {}  mode {}{}{}\n",
        route.id,
        route.position,
        route.delivery,
        route.describe_match(),
        route.target_url,
        route.push_mode.map_or_else(
            || {
                if route.relay {
                    "as the account".to_owned()
                } else if route.has_aes_key {
                    "safe".to_owned()
                } else {
                    "plain".to_owned()
                }
            },
            |m| m.to_string()
        ),
        if route.relay {
            "  (relay: signed with the account's own Token)"
        } else {
            ""
        },
        if route.enabled { "" } else { "  [off]" },
    )
}

/// Runs one `wxhub push-route` command; returns what to print.
pub async fn run(
    config: &Config,
    command: PushRouteCommand,
    input: &mut dyn BufRead,
) -> anyhow::Result<String> {
    match command {
        PushRouteCommand::Add {
            appid,
            url,
            delivery: d,
            msg_type,
            event,
            event_key_prefix,
            push_mode: mode,
            position,
            generate,
            disabled,
        } => {
            let (creds, shown) = credentials(generate, input)?;
            let new = NewRoute {
                target_url: url,
                match_msg_type: msg_type,
                match_event: event,
                match_event_key_prefix: event_key_prefix,
                delivery: delivery(&d)?,
                push_mode: mode.as_deref().map(push_mode).transpose()?,
                credentials: creds,
                position,
                enabled: !disabled,
            };
            let route = with_tenancy(config, async |t, p| {
                t.create_push_route(p, &appid, new).await
            })
            .await?;
            Ok(format!(
                "route added:\n  {}{}",
                describe(&route),
                shown.unwrap_or_default()
            ))
        }
        PushRouteCommand::List { appid } => {
            let routes =
                with_tenancy(config, async |t, p| t.list_push_routes(p, &appid).await).await?;
            if routes.is_empty() {
                return Ok(format!(
                    "{appid} has no push routes: pushes are handled by wxhub alone\n"
                ));
            }
            Ok(routes.iter().map(describe).collect())
        }
        PushRouteCommand::Edit {
            appid,
            route_id,
            url,
            delivery: d,
            msg_type,
            event,
            event_key_prefix,
            push_mode: mode,
            position,
            enabled,
            credentials: replace,
            generate,
        } => {
            let (creds, shown) = if replace || generate {
                let (c, s) = credentials(generate, input)?;
                (Some(c), s)
            } else {
                (None, None)
            };
            let change = RouteChange {
                target_url: url,
                match_msg_type: clearable(msg_type),
                match_event: clearable(event),
                match_event_key_prefix: clearable(event_key_prefix),
                delivery: d.as_deref().map(delivery).transpose()?,
                push_mode: match mode.as_deref() {
                    None => None,
                    Some("") => Some(None),
                    Some(m) => Some(Some(push_mode(m)?)),
                },
                credentials: creds,
                position,
                enabled,
            };
            let route = with_tenancy(config, async |t, p| {
                t.edit_push_route(p, &appid, &route_id, change).await
            })
            .await?;
            Ok(format!(
                "route changed:\n  {}{}",
                describe(&route),
                shown.unwrap_or_default()
            ))
        }
        PushRouteCommand::Delete { appid, route_id } => {
            with_tenancy(config, async |t, p| {
                t.delete_push_route(p, &appid, &route_id).await
            })
            .await?;
            Ok(format!(
                "route {route_id} deleted, with its queued copies\n"
            ))
        }
        PushRouteCommand::Failures { appid } => {
            let problems =
                with_tenancy(config, async |t, p| t.push_route_problems(p, &appid).await).await?;
            let mut out = format!("{} copies waiting\n", problems.pending);
            if problems.failures.is_empty() {
                out.push_str("no failures recorded\n");
            } else {
                out.push_str("last failures, newest first:\n");
            }
            for f in &problems.failures {
                let _ = writeln!(out, "  {}  route {}  {}", time(f.at), f.route_id, f.cause);
            }
            if !problems.dead_letters.is_empty() {
                out.push_str("dead letters (re-send with `wxhub push-route resend APPID ID`):\n");
            }
            for d in &problems.dead_letters {
                let _ = writeln!(
                    out,
                    "  {}  route {}  queued {}  {} attempts  {}",
                    d.id,
                    d.route_id,
                    time(d.created_at),
                    d.attempts,
                    d.last_error.as_deref().unwrap_or("")
                );
            }
            Ok(out)
        }
        PushRouteCommand::Resend { appid, copy_id } => {
            with_tenancy(config, async |t, p| {
                t.resend_dead_letter(p, &appid, &copy_id).await
            })
            .await?;
            Ok(format!(
                "dead letter {copy_id} queued again; a running server delivers it within a second\n"
            ))
        }
    }
}
