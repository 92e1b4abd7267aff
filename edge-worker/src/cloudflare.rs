//! The Cloudflare Worker adapter.
