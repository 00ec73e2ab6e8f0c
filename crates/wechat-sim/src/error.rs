//! [`SimError`]: what a control-API call or a Rust setup method can fail with, and its one
//! HTTP mapping (`{"error": "...", "kind": "..."}` with a 4xx status).
//!
//! WeChat-facing endpoints never use this type: they answer with WeChat's own errcodes
//! ([`crate::wire::ApiError`]) or HTML error pages.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A refused control operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No such account, user, fault or delivery.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up.
        what: String,
    },
    /// The operation conflicts with the current state (duplicate appid, user not following…).
    #[error("conflict: {reason}")]
    Conflict {
        /// Why.
        reason: String,
    },
    /// The input is invalid (bad JSON, bad key, bad rate…).
    #[error("invalid input: {reason}")]
    Invalid {
        /// Why.
        reason: String,
    },
    /// A configured cap (accounts, users) is reached.
    #[error("capacity reached: {what}")]
    Capacity {
        /// Which cap.
        what: String,
    },
    /// The thing exists but its life is over (a scanned temporary QR code past its expiry).
    #[error("{what} has expired")]
    Expired {
        /// What expired.
        what: String,
    },
    /// The clock can only be moved when the simulator owns a `ManualClock`.
    #[error("the simulator's clock is not a ManualClock")]
    ClockNotManual,
}

impl SimError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        SimError::NotFound { what: what.into() }
    }
    pub(crate) fn conflict(reason: impl Into<String>) -> Self {
        SimError::Conflict {
            reason: reason.into(),
        }
    }
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        SimError::Invalid {
            reason: reason.into(),
        }
    }

    fn kind(&self) -> (&'static str, StatusCode) {
        match self {
            SimError::NotFound { .. } => ("not_found", StatusCode::NOT_FOUND),
            SimError::Conflict { .. } => ("conflict", StatusCode::CONFLICT),
            SimError::Invalid { .. } => ("invalid", StatusCode::UNPROCESSABLE_ENTITY),
            SimError::Capacity { .. } => ("capacity", StatusCode::INSUFFICIENT_STORAGE),
            SimError::Expired { .. } => ("expired", StatusCode::GONE),
            SimError::ClockNotManual => ("clock_not_manual", StatusCode::CONFLICT),
        }
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let (kind, status) = self.kind();
        (
            status,
            axum::Json(json!({"error": self.to_string(), "kind": kind})),
        )
            .into_response()
    }
}
