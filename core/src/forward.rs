//! Forwarding headers.
