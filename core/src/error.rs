//! The one error type of the request pipeline.
//!
//! Every failure is classified by [`ErrorKind`] (which decides the status code), by
//! [`ErrorSource`] (who caused it) and by whether retrying the request is safe. The
//! [`crate::respond`] module is the only place that turns an [`Error`] into a response.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Boxed cause of an error, kept for logs and never sent to the client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The kind of failure, in terms of the response the client receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or ambiguous (400).
    BadRequest,
    /// The request carries no valid credentials (401).
    Unauthorized,
    /// The credentials are valid but do not grant access (403).
    Forbidden,
    /// No route matches the request (404).
    NotFound,
    /// The request body is larger than the configured limit (413).
    PayloadTooLarge,
    /// The request target is longer than the configured limit (414).
    UriTooLong,
    /// The request body has a media type the route does not accept (415).
    UnsupportedMediaType,
    /// The client exceeded a rate limit (429).
    TooManyRequests,
    /// The client used up a quota for the current period (429). It has its own
    /// problem type so clients can tell waiting seconds from waiting for a new period.
    QuotaExceeded,
    /// The request headers are larger than the configured limit (431).
    HeadersTooLarge,
    /// A bug or an impossible state inside the gateway (500).
    Internal,
    /// The platform cannot do what the route requires (501).
    NotImplemented,
    /// The upstream refused the connection, reset it or sent an invalid response (502).
    BadGateway,
    /// No healthy endpoint or an unavailable dependency (503).
    Unavailable,
    /// A circuit breaker refused the request: the upstream or every endpoint it could
    /// use is failing, or its limit of requests in flight is reached (503).
    CircuitOpen,
    /// The upstream did not respond within its timeout (504).
    GatewayTimeout,
}

impl ErrorKind {
    /// Returns the HTTP status code sent for this kind.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::BadRequest => S::BAD_REQUEST,
            Self::Unauthorized => S::UNAUTHORIZED,
            Self::Forbidden => S::FORBIDDEN,
            Self::NotFound => S::NOT_FOUND,
            Self::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => S::URI_TOO_LONG,
            Self::UnsupportedMediaType => S::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests | Self::QuotaExceeded => S::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Internal => S::INTERNAL_SERVER_ERROR,
            Self::NotImplemented => S::NOT_IMPLEMENTED,
            Self::BadGateway => S::BAD_GATEWAY,
            Self::Unavailable | Self::CircuitOpen => S::SERVICE_UNAVAILABLE,
            Self::GatewayTimeout => S::GATEWAY_TIMEOUT,
        }
    }

    /// Returns the stable slug of this kind, used in the problem `type` URI and in logs.
    pub fn slug(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UriTooLong => "uri-too-long",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::TooManyRequests => "too-many-requests",
            Self::QuotaExceeded => "quota-exceeded",
            Self::HeadersTooLarge => "headers-too-large",
            Self::Internal => "internal",
            Self::NotImplemented => "not-implemented",
            Self::BadGateway => "bad-gateway",
            Self::Unavailable => "unavailable",
            Self::CircuitOpen => "circuit-open",
            Self::GatewayTimeout => "gateway-timeout",
        }
    }

    /// Returns the short, fixed title of this kind (RFC 9457 `title`).
    pub fn title(self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }
}

/// The party that caused a failure. It decides what is logged as whose fault and which
/// failures count against an endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorSource {
    /// The downstream client sent something the gateway rejects.
    Client,
    /// An upstream endpoint failed to connect, respond or complete its response.
    Upstream,
    /// The platform the gateway runs on failed (a store, a runtime limit).
    Platform,
    /// The configuration does not allow the request to be served.
    Config,
}

impl ErrorSource {
    /// Returns the lowercase name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
            Self::Platform => "platform",
            Self::Config => "config",
        }
    }
}

/// The authentication challenge of a 401 or 403, sent in `WWW-Authenticate`.
///
/// It is data on the error rather than a header set by a policy, so that
/// [`crate::respond`] stays the one place that builds error responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// Authentication scheme, such as `Bearer` (RFC 6750) or `ApiKey`.
    pub scheme: &'static str,
    /// RFC 6750 error code: `invalid_request`, `invalid_token` or
    /// `insufficient_scope`. `None` when the request carried no credentials, which
    /// RFC 6750 section 3.1 answers without an error code.
    pub error: Option<&'static str>,
}

impl Challenge {
    /// Realm named in every challenge.
    pub const REALM: &'static str = "gatehouse";

    /// Formats the `WWW-Authenticate` value, such as
    /// `Bearer realm="gatehouse", error="invalid_token"`.
    pub fn header_value(&self) -> String {
        match self.error {
            Some(error) => format!(
                "{} realm=\"{}\", error=\"{error}\"",
                self.scheme,
                Self::REALM
            ),
            None => format!("{} realm=\"{}\"", self.scheme, Self::REALM),
        }
    }
}

/// A classified failure of one request.
///
/// `detail` is sent to the client, so it must never contain a secret or an internal
/// address; `cause` is for logs only.
pub struct Error {
    kind: ErrorKind,
    source: ErrorSource,
    retry_safe: bool,
    detail: Cow<'static, str>,
    retry_after: Option<Duration>,
    challenge: Option<Challenge>,
    cause: Option<BoxError>,
}

impl Error {
    /// Creates an error of `kind` caused by `source`, with a client-facing detail.
    pub fn new(kind: ErrorKind, source: ErrorSource, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            source,
            retry_safe: false,
            detail: detail.into(),
            retry_after: None,
            challenge: None,
            cause: None,
        }
    }

    /// Creates a 400 error for malformed or ambiguous client input.
    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadRequest, ErrorSource::Client, detail)
    }

    /// Creates a 404 error for a request that no route matches.
    pub fn not_found(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, ErrorSource::Client, detail)
    }

    /// Creates a 502 error for an upstream that failed before or while responding.
    pub fn bad_gateway(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadGateway, ErrorSource::Upstream, detail)
    }

    /// Creates a 504 error for an upstream that did not respond in time.
    pub fn gateway_timeout(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::GatewayTimeout, ErrorSource::Upstream, detail)
    }

    /// Creates a 503 error for an upstream with no endpoint able to take the request.
    pub fn unavailable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unavailable, ErrorSource::Upstream, detail)
    }

    /// Creates a 503 error for a request a circuit breaker refused without trying it.
    pub fn circuit_open(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::CircuitOpen, ErrorSource::Upstream, detail)
    }

    /// Creates a 500 error for a state the gateway should never reach.
    pub fn internal(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, ErrorSource::Platform, detail)
    }

    /// Marks whether the request may be sent again, to another endpoint, without harm.
    /// A connect failure is retry-safe for every method; a reset after the request was
    /// sent is not.
    pub fn with_retry_safe(mut self, retry_safe: bool) -> Self {
        self.retry_safe = retry_safe;
        self
    }

    /// Sets the delay sent to the client in `Retry-After`.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Sets the challenge sent in `WWW-Authenticate`.
    pub fn with_challenge(mut self, challenge: Challenge) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// Returns the authentication challenge, if any.
    pub fn challenge(&self) -> Option<Challenge> {
        self.challenge
    }

    /// Attaches the underlying error, which is logged but never sent to the client.
    pub fn with_cause(mut self, cause: impl Into<BoxError>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// Returns what went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Returns who caused the failure.
    pub fn error_source(&self) -> ErrorSource {
        self.source
    }

    /// Returns whether sending the request again is safe.
    pub fn is_retry_safe(&self) -> bool {
        self.retry_safe
    }

    /// Returns the client-facing explanation.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Returns the delay to advertise in `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Returns the underlying error, if one was attached.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .field("retry_safe", &self.retry_safe)
            .field("detail", &self.detail)
            .field("challenge", &self.challenge)
            .field("cause", &self.cause)
            .finish()
    }
}

// `Display` leaves out the cause so that callers walking `source()` do not print it twice.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.slug(), self.detail)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}
