//! The WeChat Official Account API as wxhub uses it.
//!
//! This crate is the one place where WeChat's wire format lives: typed calls, error codes and
//! their classification, push signatures, safe-mode (AES) crypto and event XML. It has no
//! database and no web framework; the simulator (`wechat-sim`) shares its types.
//!
//! It must never put a secret (AppSecret, access_token, EncodingAESKey, push Token) into a log
//! line, an error message or a `Debug` string.
//!
//! - [`client`]: [`Client`], the async HTTP client, and [`api`], its request/response types;
//! - [`error`]: [`WechatError`] and its [`ErrorClass`];
//! - [`push`]: push signatures; [`crypto`]: safe-mode encryption; [`xml`]: push and reply XML;
//! - [`secret`]: redacting, zeroizing secret types;
//! - [`clock`], [`errcode`]: shared time source and error codes.

pub mod api;
pub mod client;
pub mod clock;
pub mod crypto;
pub mod errcode;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod push;
pub mod secret;
pub mod xml;

pub use api::{
    CallbackCheck, CallbackCheckAction, CheckOperator, DatacubeEndpoint, InterfaceSummaryHourRow,
    InterfaceSummaryRow, Lang, QrCodeKind, QrCodeTicket, Scope, UserCumulateRow, UserSource,
    UserSummaryRow,
};
/// Calendar dates of the statistics endpoints (`YYYY-MM-DD`, docs/wechat-2.md §5.1).
pub use chrono::NaiveDate;
pub use client::{Client, ClientConfig};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, UnixMillis};
pub use errcode::{ErrCode, ErrorClass};
pub use error::WechatError;
pub use secret::{AccessToken, AppSecret, RefreshToken};
