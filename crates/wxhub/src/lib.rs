//! wxhub's composition root as a library, so integration tests can start the real server on a
//! loopback port and run the operator commands in-process.
//!
//! - [`config`]: the typed configuration (flags, `WXHUB_*` variables, TOML file, defaults);
//! - [`unseal`]: loading the master keyring from where the configuration says;
//! - [`server`]: `wxhub serve`, the HTTP server;
//! - [`ops`]: the operator commands (`migrate`, `vault …`);
//! - [`demo`]: `wxhub sim` and `wxhub demo`.

pub mod config;
pub mod demo;
pub mod ops;
pub mod server;
pub mod unseal;
