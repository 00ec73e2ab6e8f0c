//! wxhub's composition root as a library, so integration tests can start the real server on a
//! loopback port and run the operator commands in-process.
//!
//! - [`config`]: the typed configuration (flags, `WXHUB_*` variables, TOML file, defaults);
//! - [`unseal`]: loading the master keyring from where the configuration says;
//! - [`server`]: `wxhub serve`, the HTTP server, served by [`listener`] with its limits;
//! - [`ops`]: the operator commands (`migrate`, `vault …`);
//! - [`demo`]: `wxhub sim` and `wxhub demo`, with [`sample_site`], its tenant website;
//! - [`tenants`]: `wxhub account …` and `wxhub apikey …` (accounts and API keys until the
//!   dashboard exists);
//! - [`push_routes`]: `wxhub push-route …`, the owner's own servers behind the push URL;
//! - [`test_clock`]: `wxhub serve --manual-clock`, a hub whose time tests move (never for
//!   production).

pub mod clients;
pub mod config;
pub mod demo;
pub mod listener;
pub mod login_gateway;
pub mod ops;
pub mod push_routes;
pub mod sample_site;
pub mod server;
pub mod tenants;
pub mod test_clock;
pub mod unseal;
