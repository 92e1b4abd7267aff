//! Authentication and authorization: the `jwt`, `api_key` and `authorize` policies.
//!
//! A route has at most one authentication policy (`jwt` or `api_key`). It runs after
//! the access policies (`ip`, CORS preflights) and produces an [`Identity`]; then every
//! `authorize` policy of the route checks that identity. A missing or invalid
//! credential is 401 with `WWW-Authenticate`; a valid identity that lacks a
//! requirement is 403; keys that cannot be fetched are 503, because the client did
//! nothing wrong.
//!
//! Identity reaches the upstream in the [`IDENTITY_HEADERS`], which the gateway removes
//! from every client request first, on every route, so a client cannot forge them.

pub mod api_key;
pub mod authorize;
mod credential;
pub mod jwks;
pub mod jwt;
pub mod keys;
#[cfg(test)]
mod tests;
mod verified;

use std::sync::Arc;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::error::{Challenge, Error, ErrorKind, ErrorSource};
use crate::platform::Platform;
pub use api_key::{ApiKeyPolicy, ConsumerTable};
pub use authorize::AuthorizePolicy;
pub use jwt::JwtPolicy;

/// Header with the authenticated subject: the JWT `sub`, or the consumer name.
pub const SUBJECT_HEADER: HeaderName = HeaderName::from_static("x-auth-subject");
/// Header with the consumer name of an API key.
pub const CONSUMER_HEADER: HeaderName = HeaderName::from_static("x-auth-consumer");
/// Header with the granted scopes, separated by spaces as in the OAuth `scope` claim.
pub const SCOPES_HEADER: HeaderName = HeaderName::from_static("x-auth-scopes");
/// Header with the consumer's groups, separated by commas.
pub const GROUPS_HEADER: HeaderName = HeaderName::from_static("x-auth-groups");

/// Headers that carry the identity upstream. They are removed from every client
/// request before forwarding, whether or not the route authenticates.
pub const IDENTITY_HEADERS: [HeaderName; 4] = [
    SUBJECT_HEADER,
    CONSUMER_HEADER,
    SCOPES_HEADER,
    GROUPS_HEADER,
];

/// Who made a request, as established by an authentication policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The JWT `sub` claim, or the consumer name for API keys.
    pub subject: Option<String>,
    /// The consumer of an API key.
    pub consumer: Option<String>,
    /// The first 16 hex digits of the SHA-256 of the API key presented, which tells
    /// one key of a consumer from its others without revealing any key.
    pub api_key_id: Option<String>,
    /// Granted scopes, from the `scope` (space-separated) or `scp` claim.
    pub scopes: Vec<String>,
    /// Consumer groups.
    pub groups: Vec<String>,
    /// The verified JWT claims, or `plan` for API key consumers.
    pub claims: Map<String, Value>,
}

/// The authentication policy of a route.
#[derive(Debug, Clone)]
pub(crate) enum Authenticator {
    Jwt(Arc<JwtPolicy>),
    ApiKey(Arc<ApiKeyPolicy>),
}

/// The outcome of authentication: the identity and what to change on the request sent
/// upstream.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    pub identity: Identity,
    /// The scheme named in the challenge of a later 403.
    pub scheme: &'static str,
    /// Whether to set the identity headers.
    pub identity_headers: bool,
    /// A header carrying the credential that must not be forwarded.
    pub remove_header: Option<HeaderName>,
}

impl Authenticator {
    /// Authenticates the request described by `headers` and `query`.
    pub(crate) async fn authenticate<P: Platform>(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        platform: &P,
    ) -> Result<Authenticated, Error> {
        match self {
            Self::Jwt(policy) => policy.authenticate(headers, query, platform).await,
            Self::ApiKey(policy) => policy.authenticate(headers, query, platform).await,
        }
    }
}

impl Authenticated {
    /// Sets the identity headers and removes the credential, as the policy says. The
    /// client's own identity headers are already gone, see [`strip_identity_headers`].
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        if let Some(name) = &self.remove_header {
            headers.remove(name);
        }
        if !self.identity_headers {
            return;
        }
        let identity = &self.identity;
        let mut set = |name: HeaderName, value: Option<String>| {
            // A claim that cannot be a header value (control characters) is left out
            // rather than failing a request whose token is otherwise valid.
            if let Some(value) = value.and_then(|value| HeaderValue::from_str(&value).ok()) {
                headers.insert(name, value);
            }
        };
        set(SUBJECT_HEADER, identity.subject.clone());
        set(CONSUMER_HEADER, identity.consumer.clone());
        let scopes = (!identity.scopes.is_empty()).then(|| identity.scopes.join(" "));
        set(SCOPES_HEADER, scopes);
        let groups = (!identity.groups.is_empty()).then(|| identity.groups.join(","));
        set(GROUPS_HEADER, groups);
    }
}

/// Removes client-supplied copies of the identity headers, on every request.
pub(crate) fn strip_identity_headers(headers: &mut HeaderMap) {
    for name in &IDENTITY_HEADERS {
        headers.remove(name);
    }
}

/// Creates the 401 for a missing or invalid credential.
pub(crate) fn unauthorized(
    scheme: &'static str,
    code: Option<&'static str>,
    detail: &'static str,
) -> Error {
    Error::new(ErrorKind::Unauthorized, ErrorSource::Client, detail).with_challenge(Challenge {
        scheme,
        error: code,
    })
}

/// Creates the 400 for a request with more than one credential, which would leave it
/// unclear which one the gateway checked and which one the upstream reads.
pub(crate) fn ambiguous_credentials(scheme: &'static str, detail: &'static str) -> Error {
    Error::bad_request(detail).with_challenge(Challenge {
        scheme,
        error: Some("invalid_request"),
    })
}
