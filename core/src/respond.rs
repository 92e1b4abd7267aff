//! Error responses.
