//! The operator's commands (`status`, `remove`, `push-config`, `switch`) and the
//! blocking admin-API client they share.
//!
//! - [`client`]: the HTTP client (over the API's shared types, [`crate::api`]), problem
//!   documents and exit codes, and the `text/event-stream` parser for `/v1/watch`;
//! - [`admin`]: the commands, as clap argument structs with a `run`;
//! - [`cluster`]: `cluster list`;
//! - [`config`]: `config get|history|diff|rollback`, the history of a cluster's config;
//! - [`format`](mod@format): tables, human durations and watch lines, as pure functions;
//! - [`snapshot`]: `snapshot save|status|restore`, backups of a running keeper;
//! - [`watch`]: `status --watch`, the listing then its changes, as steps a test can drive.

pub mod admin;
pub mod client;
pub mod cluster;
pub mod config;
pub mod format;
pub mod rollout;
pub mod snapshot;
pub mod version;
pub mod watch;
pub mod yaml;
