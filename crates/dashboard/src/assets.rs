//! The static assets, embedded in the binary: one hand-written stylesheet. Its URL carries a
//! hash of its content, so browsers may keep it for good and still get a new one after an
//! upgrade.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::PREFIX;
use crate::error::DashboardError;

const STYLESHEET: &str = include_str!("../../../web/static/dashboard.css");
const STYLESHEET_NAME: &str = "dashboard.css";

/// The stylesheet's URL, versioned by its content.
pub(crate) fn stylesheet_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let hash = hex::encode(&Sha256::digest(STYLESHEET.as_bytes())[..6]);
        format!("{PREFIX}/static/{STYLESHEET_NAME}?v={hash}")
    })
    .clone()
}

/// `GET /dashboard/static/{file}`.
pub(crate) async fn file(Path(file): Path<String>) -> Result<Response, DashboardError> {
    if file != STYLESHEET_NAME {
        return Err(DashboardError::NotFound);
    }
    let mut response = STYLESHEET.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}
