//! The runtime-agnostic core of the gatehouse API gateway.
//!
//! One request pipeline ([`Gateway::handle`]) runs the same way on every target: the
//! native Tokio/hyper runtime, a Cloudflare Worker and a Spin component. The core
//! depends on no async runtime; it reaches the network, the clock and storage only
//! through the traits in [`platform`].

pub mod auth;
pub mod balance;
pub mod body;
pub mod cache;
pub mod circuit;
pub mod client_ip;
pub mod config;
/// Endpoints read from DNS, files and the key-value store while the gateway runs.
pub mod discovery {
    pub use crate::gateway::discovery::{
        DiscoveryRead, KeyValueDiscovery, MAX_DISCOVERED_ENDPOINTS, check_discovered,
        parse_endpoint_list,
    };
}
pub mod error;
pub mod forward;
mod gateway;
pub mod grpc;
pub mod health;
pub mod key_value;
pub mod limit;
pub mod locality;
pub mod path;
pub mod platform;
pub mod policy;
pub mod respond;
pub mod retry;
pub mod route;
pub mod trace;
pub mod transform;
pub mod websocket;

pub use error::{Challenge, Error, ErrorKind, ErrorSource};
pub use gateway::{
    AccessRecord, AttemptSpan, BackgroundTask, ConnectionInfo, EndpointHealth, Gateway, Handled,
    HealthCheckTarget, TraceRecord, UpstreamHealth,
};
