//! zerokeeper: tells which database proxies of a fleet are alive.
//!
//! Proxies send small authenticated UDP heartbeats; the keeper records each proxy's
//! status (`ready`, `up`, `lost`, or gone), deletes proxies that died while starting,
//! marks silent ones `lost`, tells a deleted proxy that comes back to restart, and refuses
//! cluster-wide operations (push config, switch datasource) while any proxy of the cluster
//! is not `up`. The behaviour is the seed scenario of `spec/scenario.md`.
//!
//! The logic lives in two sans-IO state machines, [`keeper::Keeper`] and
//! [`agent::Agent`]: no sockets, no clock, no threads, no randomness of their own. Time
//! comes in as an argument; what they want done comes out of their `poll_*` methods.
//! Everything else (UDP drivers, the HTTP API, the store) is a thin layer around them.
//!
//! - [`wire`]: every byte on the wire (documented for other languages in
//!   `docs/PROTOCOL.md`);
//! - [`auth`]: keys and the HMAC-SHA256 tag;
//! - [`identity`]: validation of cluster names and proxy addresses;
//! - [`configdoc`]: config versions and their chunks;
//! - [`keeper`]: the keeper core;
//! - [`agent`]: the proxy-side core;
//! - [`hub`]: the retained history of committed changes, shared by the read view and
//!   every watch stream;
//! - [`api`]: the admin API's JSON, shared by the server ([`http`]) and the client
//!   ([`cli`]);
//! - [`scenario`]: the seed scenario as data, and a deterministic harness that replays it
//!   on the cores in virtual time.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod agent;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod configdoc;
pub mod demo;
pub mod driver;
pub mod ha;
pub mod histogram;
pub mod http;
pub mod hub;
pub mod identity;
pub mod keeper;
pub mod loadgen;
pub mod notify;
pub mod procstat;
pub mod reload;
pub mod scenario;
pub mod seal;
pub mod server;
pub mod store;
pub mod time;
pub mod wire;
