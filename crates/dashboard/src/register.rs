//! Adding an account: AppID, name, AppSecret and the account's type, then the tenancy layer's
//! live check with WeChat. A refusal shows the fix beside the field it concerns, in the page's
//! language, and keeps what was typed except the secret; success leads to the account page.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use store::accounts::{AccountKind, TokenMode};
use tenancy::TenancyError;
use tenancy::tenants::{LiveCheck, NewOwner, Registration};
use vault::SecretString;

use crate::csrf::CsrfForm;
use crate::error::DashboardError;
use crate::layout::{self, Ctx, Flash};
use crate::session::OwnerSession;
use crate::{Dashboard, PREFIX, fields};

#[derive(Template)]
#[template(path = "accounts/new.html")]
struct NewPage {
    ctx: Ctx,
    appid: String,
    name: String,
    service: bool,
    verified: bool,
    stable: bool,
    errors: Vec<(&'static str, String)>,
}

impl NewPage {
    fn err(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, text)| text.as_str())
    }
}

/// `GET /dashboard/accounts/new`.
pub(crate) async fn form(
    State(dashboard): State<Dashboard>,
    OwnerSession(owner): OwnerSession,
) -> Result<Response, DashboardError> {
    let ctx = Ctx::new(&dashboard, &owner.visitor).in_section("accounts");
    Ok(layout::page(
        StatusCode::OK,
        &NewPage {
            ctx,
            appid: String::new(),
            name: String::new(),
            service: true,
            verified: true,
            stable: false,
            errors: Vec::new(),
        },
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct NewAccount {
    appid: String,
    name: String,
    appsecret: String,
    service: Option<String>,
    verified: Option<String>,
    stable: Option<String>,
}

/// `POST /dashboard/accounts/new`: the live check, then the account page.
pub(crate) async fn submit(
    State(dashboard): State<Dashboard>,
    OwnerSession(owner): OwnerSession,
    CsrfForm(form): CsrfForm<NewAccount>,
) -> Result<Response, DashboardError> {
    let appid = form.appid.trim().to_owned();
    let registration = Registration {
        appid: appid.clone(),
        name: form.name.clone(),
        kind: if form.service.is_some() {
            AccountKind::Service
        } else {
            AccountKind::Subscription
        },
        verified: form.verified.is_some(),
        token_mode: if form.stable.is_some() {
            TokenMode::StableToken
        } else {
            TokenMode::Token
        },
        appsecret: SecretString::new(form.appsecret.trim().to_owned()),
        push_token: None,
        encoding_aes_key: None,
        owner: NewOwner::Caller,
        check: LiveCheck::Check,
    };
    let ctx = Ctx::new(&dashboard, &owner.visitor).in_section("accounts");
    let (status, errors) = match dashboard
        .tenancy()
        .register_account(&owner.principal, registration)
        .await
    {
        Ok(view) => {
            // Next: what to enter in WeChat's console.
            let to = Flash::AccountAdded
                .on(&format!("{PREFIX}/accounts/{}/console", view.account.appid));
            return Ok(Redirect::to(&to).into_response());
        }
        Err(TenancyError::Conflict { .. }) => (
            StatusCode::CONFLICT,
            vec![("appid", ctx.tf("new_account.taken", &[("appid", &appid)]))],
        ),
        Err(error) => match fields::of(&ctx, &error) {
            Some(found) => (StatusCode::UNPROCESSABLE_ENTITY, vec![found]),
            None => return Err(error.into()),
        },
    };
    Ok(layout::page(
        status,
        &NewPage {
            ctx,
            appid,
            name: form.name.trim().to_owned(),
            service: form.service.is_some(),
            verified: form.verified.is_some(),
            stable: form.stable.is_some(),
            errors,
        },
    ))
}
