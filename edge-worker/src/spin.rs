//! The Spin component adapter.
