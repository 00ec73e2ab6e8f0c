//! Push routes: the owner's own servers that keep receiving the account's pushes, and keep
//! answering its users, through wxhub (the gateway delivers them, `gateway::routes`).
//!
//! A route has a target (https; http only to a loopback host), a match on `MsgType`, `Event`
//! and an `EventKey` prefix, a delivery (`reply`: synchronous, its answer is the passive reply;
//! `copy`: from the durable queue) and its own signing Token and optional EncodingAESKey, so
//! the owner's server verifies wxhub exactly as it verified WeChat. The credentials are sealed
//! under the account's data key and never shown again. Every change is audited and announced
//! to every replica like the other gateway settings.

use serde_json::json;
use store::changes::ChangeKind;
pub use store::push_routes::{DeadCopy, Delivery, PushRoute, RouteFailure};
use store::push_routes::{aes_key_field, token_field};
use vault::SecretString;

use crate::policy::Operation;
use crate::settings::{PushMode, check_push_target};
use crate::targets::AllowList;
use crate::{Principal, Tenancy, TenancyError};

/// A route as shown: everything but its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    pub id: String,
    pub position: i64,
    pub target_url: String,
    pub match_msg_type: Option<String>,
    pub match_event: Option<String>,
    pub match_event_key_prefix: Option<String>,
    pub delivery: Delivery,
    /// How pushes reach the owner's server (`None` on the relay route: as the account's).
    pub push_mode: Option<PushMode>,
    /// Whether it has an EncodingAESKey.
    pub has_aes_key: bool,
    /// The account's relay route (the gateway setting `push_relay_url`), signed with the
    /// account's own credentials.
    pub relay: bool,
    pub enabled: bool,
}

impl RouteView {
    fn of(route: &PushRoute) -> Self {
        RouteView {
            id: route.id.clone(),
            position: route.position,
            target_url: route.target_url.clone(),
            match_msg_type: route.match_msg_type.clone(),
            match_event: route.match_event.clone(),
            match_event_key_prefix: route.match_event_key_prefix.clone(),
            delivery: route.delivery,
            push_mode: route.push_mode,
            has_aes_key: route.encoding_aes_key.is_some(),
            relay: route.relay,
            enabled: route.enabled,
        }
    }

    /// The match in words (`text`, `event CLICK menu_*`, `everything`).
    pub fn describe_match(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.match_msg_type {
            parts.push(t.clone());
        }
        if let Some(e) = &self.match_event {
            parts.push(format!("Event={e}"));
        }
        if let Some(k) = &self.match_event_key_prefix {
            parts.push(format!("EventKey={k}*"));
        }
        if parts.is_empty() {
            "everything".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

/// The route's signing credentials, as entered (never stored in the clear).
pub struct RouteCredentials {
    pub token: SecretString,
    pub encoding_aes_key: Option<SecretString>,
}

/// A new route.
pub struct NewRoute {
    pub target_url: String,
    pub match_msg_type: Option<String>,
    pub match_event: Option<String>,
    pub match_event_key_prefix: Option<String>,
    pub delivery: Delivery,
    /// `None`: safe with an EncodingAESKey, plain without.
    pub push_mode: Option<PushMode>,
    pub credentials: RouteCredentials,
    /// `None`: after the last route.
    pub position: Option<i64>,
    pub enabled: bool,
}

/// A change to a route: `None` keeps a value, `Some(None)` clears an optional one.
#[derive(Default)]
pub struct RouteChange {
    pub target_url: Option<String>,
    pub match_msg_type: Option<Option<String>>,
    pub match_event: Option<Option<String>>,
    pub match_event_key_prefix: Option<Option<String>>,
    pub delivery: Option<Delivery>,
    pub push_mode: Option<Option<PushMode>>,
    pub credentials: Option<RouteCredentials>,
    pub position: Option<i64>,
    pub enabled: Option<bool>,
}

/// An account's recorded failures and dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteProblems {
    /// Newest first, at most `store::push_routes::FAILURES_KEPT` per route.
    pub failures: Vec<RouteFailure>,
    /// Copies whose last attempt failed, newest first; each can be re-sent.
    pub dead_letters: Vec<DeadCopy>,
    /// Copies waiting for delivery.
    pub pending: i64,
}

fn blank_to_none(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn check_match_word(field: &'static str, value: &Option<String>) -> Result<(), TenancyError> {
    if let Some(v) = value
        && (v.len() > 64 || !v.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(TenancyError::invalid(
            field,
            format!("{v:?} must be at most 64 visible ASCII characters (as WeChat sends it)"),
        ));
    }
    Ok(())
}

/// Checks a route before it is stored.
fn validate(
    route: &PushRoute,
    creds: Option<&RouteCredentials>,
    allow: &AllowList,
) -> Result<(), TenancyError> {
    check_push_target("target_url", &route.target_url, allow)?;
    check_match_word("match_msg_type", &route.match_msg_type)?;
    check_match_word("match_event", &route.match_event)?;
    check_match_word("match_event_key_prefix", &route.match_event_key_prefix)?;
    if let Some(creds) = creds {
        // The account-level checks name the account's field; here they concern the route's.
        let named = |field: &'static str| {
            move |error: accounts::AccountError| match TenancyError::from(error) {
                TenancyError::Invalid { message, .. } => TenancyError::Invalid { field, message },
                other => other,
            }
        };
        accounts::registry::validate_push_token(&creds.token).map_err(named("route_token"))?;
        if let Some(key) = &creds.encoding_aes_key {
            accounts::registry::validate_encoding_aes_key(key)
                .map_err(named("encoding_aes_key"))?;
        }
    }
    let has_key =
        route.encoding_aes_key.is_some() || creds.is_some_and(|c| c.encoding_aes_key.is_some());
    if !route.relay
        && matches!(route.push_mode, Some(PushMode::Safe | PushMode::Compatible))
        && !has_key
    {
        return Err(TenancyError::invalid(
            "push_mode",
            "compatible and safe mode need the route's EncodingAESKey",
        ));
    }
    Ok(())
}

fn summary(route: &PushRoute) -> serde_json::Value {
    json!({
        "id": route.id,
        "position": route.position,
        "target_url": route.target_url,
        "match_msg_type": route.match_msg_type,
        "match_event": route.match_event,
        "match_event_key_prefix": route.match_event_key_prefix,
        "delivery": route.delivery.as_str(),
        "push_mode": route.push_mode.map(PushMode::as_str),
        "has_aes_key": route.encoding_aes_key.is_some(),
        "relay": route.relay,
        "enabled": route.enabled,
    })
}

impl Tenancy {
    /// Seals a route's credentials under the account's data key, bound to the route.
    async fn seal_route_credentials(
        &self,
        account_id: &str,
        route: &mut PushRoute,
        creds: &RouteCredentials,
    ) -> Result<(), TenancyError> {
        let sealed = self
            .store()
            .load_account_secrets(account_id)
            .await?
            .ok_or(TenancyError::NotFound { what: "account" })?;
        let vault = self.inner.vault.for_wrapped_dek(&sealed.wrapped_dek);
        let seal = |field: String, value: &SecretString| {
            accounts::seal_field(&vault, account_id, &sealed.wrapped_dek, &field, value)
        };
        route.token = Some(seal(token_field(&route.id), &creds.token)?);
        route.encoding_aes_key = creds
            .encoding_aes_key
            .as_ref()
            .map(|k| seal(aes_key_field(&route.id), k))
            .transpose()?;
        Ok(())
    }

    /// The account's push routes in order.
    pub async fn list_push_routes(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<Vec<RouteView>, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::PushRouteList, appid)
            .await?;
        let routes = self.store().push_routes(&account.id).await?;
        Ok(routes.iter().map(RouteView::of).collect())
    }

    /// Adds a route.
    pub async fn create_push_route(
        &self,
        principal: &Principal,
        appid: &str,
        new: NewRoute,
    ) -> Result<RouteView, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::PushRouteCreate, appid)
            .await?;
        let existing = self.store().push_routes(&account.id).await?;
        let now = self.now();
        let mut route = PushRoute {
            id: store::new_id(),
            account_id: account.id.clone(),
            position: new
                .position
                .unwrap_or_else(|| existing.iter().map(|r| r.position + 1).max().unwrap_or(0)),
            target_url: new.target_url.trim().to_owned(),
            match_msg_type: blank_to_none(new.match_msg_type),
            match_event: blank_to_none(new.match_event),
            match_event_key_prefix: blank_to_none(new.match_event_key_prefix),
            delivery: new.delivery,
            push_mode: new.push_mode,
            token: None,
            encoding_aes_key: None,
            relay: false,
            enabled: new.enabled,
            created_at: now,
            updated_at: now,
        };
        validate(&route, Some(&new.credentials), &self.push_targets())?;
        self.seal_route_credentials(&account.id, &mut route, &new.credentials)
            .await?;
        let record = self
            .record(principal, Operation::PushRouteCreate, Some(&account))
            .target(route.id.clone())
            .details(json!({"appid": account.appid, "route": summary(&route)}))
            .announce(ChangeKind::Settings);
        self.store().save_push_route(&route, false, &record).await?;
        Ok(RouteView::of(&route))
    }

    /// Changes a route.
    pub async fn edit_push_route(
        &self,
        principal: &Principal,
        appid: &str,
        route_id: &str,
        change: RouteChange,
    ) -> Result<RouteView, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::PushRouteEdit, appid)
            .await?;
        let before = self
            .store()
            .push_route(&account.id, route_id)
            .await?
            .ok_or(TenancyError::NotFound { what: "push route" })?;
        let mut route = before.clone();
        if let Some(url) = change.target_url {
            route.target_url = url.trim().to_owned();
        }
        if let Some(v) = change.match_msg_type {
            route.match_msg_type = blank_to_none(v);
        }
        if let Some(v) = change.match_event {
            route.match_event = blank_to_none(v);
        }
        if let Some(v) = change.match_event_key_prefix {
            route.match_event_key_prefix = blank_to_none(v);
        }
        if let Some(d) = change.delivery {
            route.delivery = d;
        }
        if let Some(m) = change.push_mode {
            route.push_mode = m;
        }
        if let Some(p) = change.position {
            route.position = p;
        }
        if let Some(e) = change.enabled {
            route.enabled = e;
        }
        route.updated_at = self.now();
        if route.relay && change.credentials.is_some() {
            return Err(TenancyError::invalid(
                "credentials",
                "the relay route signs with the account's own push credentials; add a route \
                 of its own to use other ones",
            ));
        }
        validate(&route, change.credentials.as_ref(), &self.push_targets())?;
        if let Some(creds) = &change.credentials {
            self.seal_route_credentials(&account.id, &mut route, creds)
                .await?;
        }
        let record = self
            .record(principal, Operation::PushRouteEdit, Some(&account))
            .target(route.id.clone())
            .details(json!({
                "appid": account.appid,
                "before": summary(&before),
                "after": summary(&route),
                "credentials_replaced": change.credentials.is_some(),
            }))
            .announce(ChangeKind::Settings);
        self.store().save_push_route(&route, true, &record).await?;
        Ok(RouteView::of(&route))
    }

    /// Deletes a route and its queued copies.
    pub async fn delete_push_route(
        &self,
        principal: &Principal,
        appid: &str,
        route_id: &str,
    ) -> Result<(), TenancyError> {
        let account = self
            .authorized_account(principal, Operation::PushRouteDelete, appid)
            .await?;
        let route = self
            .store()
            .push_route(&account.id, route_id)
            .await?
            .ok_or(TenancyError::NotFound { what: "push route" })?;
        let record = self
            .record(principal, Operation::PushRouteDelete, Some(&account))
            .target(route.id.clone())
            .details(json!({"appid": account.appid, "route": summary(&route)}))
            .announce(ChangeKind::Settings);
        let now = self.now();
        if !self
            .store()
            .delete_push_route(&account.id, route_id, now, &record)
            .await?
        {
            return Err(TenancyError::NotFound { what: "push route" });
        }
        Ok(())
    }

    /// The account's recorded route failures, dead letters and queue length.
    pub async fn push_route_problems(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<RouteProblems, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::PushRouteFailures, appid)
            .await?;
        Ok(RouteProblems {
            failures: self.store().push_route_failures(&account.id).await?,
            dead_letters: self.store().dead_push_copies(&account.id, 100).await?,
            pending: self.store().pending_push_copies(&account.id).await?,
        })
    }

    /// Queues a dead letter again, due now.
    pub async fn resend_dead_letter(
        &self,
        principal: &Principal,
        appid: &str,
        copy_id: &str,
    ) -> Result<(), TenancyError> {
        let account = self
            .authorized_account(principal, Operation::PushRouteResend, appid)
            .await?;
        let record = self
            .record(principal, Operation::PushRouteResend, Some(&account))
            .target(copy_id.to_owned())
            .details(json!({"appid": account.appid}))
            .announce(ChangeKind::Settings);
        let now = self.now();
        if !self
            .store()
            .resend_push_copy(&account.id, copy_id, now, &record)
            .await?
        {
            return Err(TenancyError::NotFound {
                what: "dead letter",
            });
        }
        Ok(())
    }
}
