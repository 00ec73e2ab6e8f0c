//! The dashboard's errors and their one mapping to pages: a status and a message in the
//! visitor's language. The cause is logged, never shown.
//!
//! `IntoResponse` cannot know the visitor's language, so it answers with the status and an
//! [`ErrorPage`] marker; the middleware (`context`), which knows the visitor, renders it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tenancy::TenancyError;

/// What can go wrong in a dashboard request.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The page is not for this person.
    #[error("not allowed")]
    Forbidden,
    /// No such page or thing.
    #[error("not found")]
    NotFound,
    /// A setup or invitation link that is unknown, used or expired.
    #[error("the link does not work (unknown, used or expired)")]
    LinkInvalid,
    /// A state-changing request from another site.
    #[error("cross-site request")]
    CrossSite,
    /// A form without this browser's token (from another site, or from before sign-in/out).
    #[error("form token missing or wrong")]
    FormExpired,
    /// A form that cannot be read.
    #[error("malformed form")]
    BadForm,
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// What the error page shows: translation keys of its title and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorPage {
    pub(crate) status: StatusCode,
    pub(crate) title: &'static str,
    pub(crate) text: &'static str,
}

macro_rules! page {
    ($status:ident, $kind:literal) => {
        ErrorPage {
            status: StatusCode::$status,
            title: concat!("error.", $kind, ".title"),
            text: concat!("error.", $kind, ".text"),
        }
    };
}

impl ErrorPage {
    /// Every error page there is (the translation test walks these).
    #[cfg(test)]
    pub(crate) fn all() -> Vec<ErrorPage> {
        vec![
            page!(FORBIDDEN, "forbidden"),
            page!(NOT_FOUND, "not_found"),
            page!(NOT_FOUND, "link"),
            page!(FORBIDDEN, "cross_site"),
            page!(FORBIDDEN, "form_expired"),
            page!(BAD_REQUEST, "bad_form"),
            page!(CONFLICT, "conflict"),
            page!(TOO_MANY_REQUESTS, "too_soon"),
            page!(INTERNAL_SERVER_ERROR, "internal"),
        ]
    }
}

impl DashboardError {
    pub(crate) fn page(&self) -> ErrorPage {
        use DashboardError as E;
        match self {
            E::Forbidden => page!(FORBIDDEN, "forbidden"),
            E::NotFound => page!(NOT_FOUND, "not_found"),
            E::LinkInvalid => page!(NOT_FOUND, "link"),
            E::CrossSite => page!(FORBIDDEN, "cross_site"),
            E::FormExpired => page!(FORBIDDEN, "form_expired"),
            E::BadForm => page!(BAD_REQUEST, "bad_form"),
            E::Tenancy(error) => match error {
                TenancyError::Denied { .. } => page!(FORBIDDEN, "forbidden"),
                TenancyError::NotFound { what: "link" } => {
                    page!(NOT_FOUND, "link")
                }
                TenancyError::NotFound { .. } => {
                    page!(NOT_FOUND, "not_found")
                }
                TenancyError::Invalid { .. } => {
                    page!(BAD_REQUEST, "bad_form")
                }
                TenancyError::Conflict { .. } => page!(CONFLICT, "conflict"),
                TenancyError::TooSoon { .. } => {
                    page!(TOO_MANY_REQUESTS, "too_soon")
                }
                _ => page!(INTERNAL_SERVER_ERROR, "internal"),
            },
            E::Store(store::StoreError::NotFound { .. }) => {
                page!(NOT_FOUND, "not_found")
            }
            E::Store(_) | E::Internal(_) => {
                page!(INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let page = self.page();
        if page.status.is_server_error() {
            tracing::error!(error = %self, "dashboard request failed");
        }
        let mut response = page.status.into_response();
        response.extensions_mut().insert(page);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_a_listed_page() {
        let all = ErrorPage::all();
        for error in [
            DashboardError::Forbidden,
            DashboardError::NotFound,
            DashboardError::LinkInvalid,
            DashboardError::CrossSite,
            DashboardError::FormExpired,
            DashboardError::BadForm,
            DashboardError::Internal("x"),
            DashboardError::Tenancy(TenancyError::Conflict { what: "x" }),
            DashboardError::Tenancy(TenancyError::TooSoon {
                message: "x".into(),
            }),
        ] {
            assert!(all.contains(&error.page()), "{error}");
        }
    }
}
