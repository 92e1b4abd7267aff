//! Request path normalization, shared by routing and forwarding.

use std::borrow::Cow;

use crate::error::Error;

/// Normalizes a request path, or rejects it with a 400 error.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, Error> {
    if !raw.starts_with('/') {
        return Err(Error::bad_request("the request path must start with '/'"));
    }
    Ok(Cow::Borrowed(raw))
}
