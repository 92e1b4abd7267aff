//! Client address resolution.
