//! Edge adapters of the gatehouse API gateway.
//!
//! Each adapter converts its platform's requests to `http` types, provides the
//! platform's implementations of the core's traits and calls the core. No gateway logic
//! lives here: what the gateway does is decided in `gatehouse-core`, identically on
//! every target.

pub mod embedded;

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod cloudflare;

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
#[allow(
    unsafe_code,
    reason = "spin-sdk's `http_component` expands to the component's exported FFI functions"
)]
mod spin;
