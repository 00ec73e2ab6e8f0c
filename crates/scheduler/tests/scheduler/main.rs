//! The scheduler's integration tests: the real engine, cache and HTTP API against the WeChat
//! simulator on 127.0.0.1:0 and a real database, with a shared `ManualClock` moved instead of
//! sleeping.
//!
//! SQLite tests run everywhere. Tests about replicas need PostgreSQL and are named
//! `postgres::<name>`; without `WXHUB_TEST_POSTGRES_URL` they print
//! `did not run: WXHUB_TEST_POSTGRES_URL is not set` and pass (CI sets it).

mod api;
mod common;
mod engine;
mod postgres;
mod reports;
mod shutdown;
mod stats;
mod waiting;
mod write_back;
