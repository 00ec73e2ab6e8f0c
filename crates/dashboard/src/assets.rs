//! The static assets, embedded in the binary: one hand-written stylesheet and one small
//! script (copy buttons; every page works without it). Their URLs carry a hash of their
//! content, so browsers may keep them for good and still get new ones after an upgrade.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::PREFIX;
use crate::error::DashboardError;

const STYLESHEET: &str = include_str!("../../../web/static/dashboard.css");
const STYLESHEET_NAME: &str = "dashboard.css";
const SCRIPT: &str = include_str!("../../../web/static/copy.js");
const SCRIPT_NAME: &str = "copy.js";

fn versioned(name: &str, content: &str) -> String {
    let hash = hex::encode(&Sha256::digest(content.as_bytes())[..6]);
    format!("{PREFIX}/static/{name}?v={hash}")
}

/// The stylesheet's URL, versioned by its content.
pub(crate) fn stylesheet_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| versioned(STYLESHEET_NAME, STYLESHEET))
        .clone()
}

/// The copy buttons' script's URL, versioned by its content.
pub(crate) fn script_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| versioned(SCRIPT_NAME, SCRIPT)).clone()
}

/// `GET /dashboard/static/{file}`.
pub(crate) async fn file(Path(file): Path<String>) -> Result<Response, DashboardError> {
    let (content, kind) = match file.as_str() {
        STYLESHEET_NAME => (STYLESHEET, "text/css; charset=utf-8"),
        SCRIPT_NAME => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return Err(DashboardError::NotFound),
    };
    let mut response = content.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}
