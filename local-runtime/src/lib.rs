//! The native runtime of the gatehouse API gateway: a Tokio/hyper server around the
//! runtime-agnostic core in `gatehouse-core`.
//!
//! The binary `gatehouse` is a thin layer over [`cli`]. The other modules are public
//! so that integration tests can reuse them, such as the [`demo`] upstream.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cache_store;
pub mod cli;
pub mod config_file;
pub mod counters;
pub mod demo;
pub mod discovery;
pub mod health_check;
mod http1_pool;
pub mod key_value_seed;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod operations;
pub mod otlp;
pub mod platform;
pub mod redact;
pub mod reload;
pub mod server;
pub mod simulator;
pub mod spin_manifest;
pub mod tls;
pub mod websocket;

pub use body::NativeBody;
pub use platform::NativePlatform;
pub use server::Server;
