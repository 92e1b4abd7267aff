//! The one body type of the native runtime, used for requests and responses in both
//! directions so that bodies stream end to end without buffering.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use gatehouse_core::error::BoxError;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;

use crate::http1_pool::PooledBody;

/// An HTTP body: a body streaming from a hyper connection, bytes held in memory, or
/// any other body boxed.
///
/// It is `Unpin`, `Send` and `Sync`, which is what hyper's client and HTTP/2 server
/// require of a body.
pub struct NativeBody {
    kind: Kind,
}

enum Kind {
    Empty,
    /// Bytes not yet sent; `None` once the single frame has been returned.
    Full(Option<Bytes>),
    Incoming(Incoming),
    /// A response on a pooled upstream connection, which goes back to the pool at the
    /// body's end.
    Pooled(PooledBody),
    Boxed(BoxBody<Bytes, BoxError>),
}

impl NativeBody {
    /// Creates a body with no bytes.
    pub fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    pub(crate) fn pooled(body: PooledBody) -> Self {
        Self {
            kind: Kind::Pooled(body),
        }
    }

    /// Wraps any body whose errors convert to [`BoxError`].
    pub fn wrap<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            kind: Kind::Boxed(body.map_err(Into::into).boxed()),
        }
    }
}

impl Default for NativeBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for NativeBody {
    fn from(bytes: Bytes) -> Self {
        // An empty body must report its end before the first poll, or hyper sends an
        // empty chunked body instead of `Content-Length: 0`.
        if bytes.is_empty() {
            Self::empty()
        } else {
            Self {
                kind: Kind::Full(Some(bytes)),
            }
        }
    }
}

impl From<Vec<u8>> for NativeBody {
    fn from(bytes: Vec<u8>) -> Self {
        Self::from(Bytes::from(bytes))
    }
}

impl From<String> for NativeBody {
    fn from(text: String) -> Self {
        Self::from(Bytes::from(text))
    }
}

impl From<&'static str> for NativeBody {
    fn from(text: &'static str) -> Self {
        Self::from(Bytes::from_static(text.as_bytes()))
    }
}

impl From<Incoming> for NativeBody {
    fn from(body: Incoming) -> Self {
        Self {
            kind: Kind::Incoming(body),
        }
    }
}

impl Body for NativeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::Incoming(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|error| Box::new(error) as BoxError),
            Kind::Pooled(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|error| Box::new(error) as BoxError),
            Kind::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Incoming(body) => body.is_end_stream(),
            Kind::Pooled(body) => body.is_end_stream(),
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
            Kind::Incoming(body) => body.size_hint(),
            Kind::Pooled(body) => body.size_hint(),
            Kind::Boxed(body) => body.size_hint(),
        }
    }
}

impl fmt::Debug for NativeBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Incoming(_) | Kind::Pooled(_) => "incoming",
            Kind::Boxed(_) => "boxed",
        };
        f.debug_struct("NativeBody").field("kind", &kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_body_yields_bytes_once() {
        let mut body = NativeBody::from("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let collected = match (&mut body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => panic!("collecting a full body failed: {error}"),
        };
        assert_eq!(collected, Bytes::from_static(b"hello"));
        assert!(body.is_end_stream());
    }

    #[test]
    fn empty_bytes_make_empty_body() {
        let body = NativeBody::from(Bytes::new());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn wrapped_body_streams() {
        let body = NativeBody::wrap(http_body_util::Full::new(Bytes::from_static(b"abc")));
        let collected = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => panic!("collecting a wrapped body failed: {error}"),
        };
        assert_eq!(collected.len(), 3);
    }
}
