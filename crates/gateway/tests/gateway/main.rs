//! The gateway's integration tests: the real HTTP server on 127.0.0.1:0, the WeChat simulator,
//! a real database file (or PostgreSQL for `postgres::` tests) and a real OIDC relying party
//! (the `openidconnect` crate). Time is a shared ManualClock; nothing sleeps.

mod abuse;
mod common;
mod login;
mod oidc;
mod push;
mod replicas;
mod routes;
mod scan;
mod stats;
mod strict;
