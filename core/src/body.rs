//! Reading and limiting bodies generically, on any platform's body type.
//!
//! The core never names a platform's body; it uses [`http_body::Body`] through
//! [`crate::platform::Platform::Body`]. The combinators here ([`Limit`], [`Chain`])
//! are plain Rust bodies that a platform boxes into its own body type in
//! [`crate::platform::Platform::limit_body`] and
//! [`crate::platform::Platform::chain_body`], because only the platform decides whether
//! its bodies must be `Send`.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::error::{BoxError, Error, ErrorKind, ErrorSource};

/// The failure of a body that passed its size limit while streaming.
///
/// It travels as the body's error through the platform's HTTP client, so a platform
/// finds it again with [`too_large_in`] and returns 413 instead of 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge {
    /// The limit that was passed, in bytes.
    pub limit: u64,
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the body is larger than the limit of {} bytes",
            self.limit
        )
    }
}

impl StdError for BodyTooLarge {}

impl BodyTooLarge {
    /// Returns the 413 error sent to a client whose request body passed the limit.
    /// It is not retry-safe: part of the body may have reached the upstream.
    pub fn to_error(self) -> Error {
        Error::new(
            ErrorKind::PayloadTooLarge,
            ErrorSource::Client,
            format!(
                "the request body is larger than the limit of {} bytes",
                self.limit
            ),
        )
    }
}

/// Finds a [`BodyTooLarge`] in `error` or its chain of sources and returns the 413
/// error for it. Platforms call this on a failed upstream request, whose cause may be
/// the request body passing its limit.
pub fn too_large_in(error: &(dyn StdError + 'static)) -> Option<Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(too_large) = error.downcast_ref::<BodyTooLarge>() {
            return Some(too_large.to_error());
        }
        current = error.source();
    }
    None
}

/// Classifies a failure to read a request body: 413 when it passed its limit,
/// otherwise 400, because the client ended or broke the body.
pub fn request_read_error(error: BoxError) -> Error {
    match too_large_in(error.as_ref()) {
        Some(too_large) => too_large,
        None => {
            Error::bad_request("the request body could not be read to its end").with_cause(error)
        }
    }
}

/// A body that fails with [`BodyTooLarge`] as soon as more than `limit` bytes have
/// streamed through it. The bytes within the limit pass on unchanged.
#[derive(Debug)]
pub struct Limit<B> {
    inner: B,
    limit: u64,
    seen: u64,
    failed: bool,
}

impl<B> Limit<B> {
    /// Limits `inner` to `limit` bytes.
    pub fn new(inner: B, limit: u64) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
            failed: false,
        }
    }
}

impl<B> Body for Limit<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if this.seen > this.limit {
                        this.failed = true;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        let allowed = self.limit.saturating_sub(self.seen);
        hint.set_lower(inner.lower().min(allowed));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.min(allowed.saturating_add(1)));
        }
        hint
    }
}

/// A body that yields `prefix` and then the frames of `rest`: a body that was partly
/// read, given back whole.
#[derive(Debug)]
pub struct Chain<B> {
    prefix: Option<Bytes>,
    rest: B,
}

impl<B> Chain<B> {
    /// Yields `prefix` (when not empty), then `rest`.
    pub fn new(prefix: Bytes, rest: B) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        }
    }
}

impl<B> Body for Chain<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut this.rest)
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |prefix| prefix.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(prefix));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(prefix));
        }
        hint
    }
}

/// The outcome of [`read_up_to`].
#[derive(Debug)]
pub enum ReadBody<B> {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// The body is larger than the limit: the bytes read so far (more than the limit)
    /// and the unread rest, to be joined again with
    /// [`crate::platform::Platform::chain_body`].
    Partial {
        /// The bytes read, already past the limit.
        prefix: Bytes,
        /// The rest of the body, not yet read.
        rest: B,
    },
}

/// Reads `body` into memory while it stays within `max_bytes`.
///
/// Trailers are dropped: the gateway buffers only bodies it inspects or rewrites,
/// which carry none in practice.
pub async fn read_up_to<B>(mut body: B, max_bytes: usize) -> Result<ReadBody<B>, BoxError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    // A body whose size hint is already over the limit is not read at all.
    if body.size_hint().lower() > max_bytes as u64 {
        return Ok(ReadBody::Partial {
            prefix: Bytes::new(),
            rest: body,
        });
    }
    let mut first: Option<Bytes> = None;
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Into::into)?.into_data() else {
            continue;
        };
        // One frame, the common case for small bodies, is kept without copying.
        match first.take() {
            None if buffer.is_empty() => first = Some(data),
            Some(previous) => {
                buffer.extend_from_slice(&previous);
                buffer.extend_from_slice(&data);
            }
            None => buffer.extend_from_slice(&data),
        }
        let read = first.as_ref().map_or(buffer.len(), Bytes::len);
        if read > max_bytes {
            let prefix = first.take().unwrap_or_else(|| buffer.split().freeze());
            return Ok(ReadBody::Partial { prefix, rest: body });
        }
    }
    Ok(ReadBody::Complete(first.unwrap_or_else(|| buffer.freeze())))
}

/// A body for single-threaded platforms and tests: bytes in memory, chunks that
/// arrive one by one, or any other body boxed. It is not `Send`.
pub struct LocalBody(LocalKind);

enum LocalKind {
    Chunks(VecDeque<Bytes>),
    Boxed(Pin<Box<dyn Body<Data = Bytes, Error = BoxError>>>),
}

impl LocalBody {
    /// Creates a body that yields `chunks` one frame at a time and declares no length,
    /// like a chunked HTTP/1.1 body.
    pub fn chunks(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        Self(LocalKind::Chunks(
            chunks
                .into_iter()
                .filter(|chunk| !chunk.is_empty())
                .collect(),
        ))
    }

    /// Boxes any body whose errors convert to [`BoxError`].
    pub fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + 'static,
        B::Error: Into<BoxError>,
    {
        Self(LocalKind::Boxed(Box::pin(body.map_err(Into::into))))
    }

    /// Reads the whole body.
    pub async fn collect_bytes(self) -> Result<Bytes, BoxError> {
        Ok(BodyExt::collect(self).await?.to_bytes())
    }
}

impl From<Bytes> for LocalBody {
    fn from(bytes: Bytes) -> Self {
        Self::chunks([bytes])
    }
}

impl Body for LocalBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            LocalKind::Chunks(chunks) => {
                Poll::Ready(chunks.pop_front().map(|chunk| Ok(Frame::data(chunk))))
            }
            LocalKind::Boxed(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            LocalKind::Chunks(chunks) => chunks.is_empty(),
            LocalKind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            // Only one chunk or none is a body of known length.
            LocalKind::Chunks(chunks) if chunks.len() <= 1 => {
                SizeHint::with_exact(chunks.front().map_or(0, |chunk| chunk.len() as u64))
            }
            LocalKind::Chunks(_) => SizeHint::new(),
            LocalKind::Boxed(body) => body.size_hint(),
        }
    }
}

impl fmt::Debug for LocalBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            LocalKind::Chunks(chunks) => format!("{} chunks", chunks.len()),
            LocalKind::Boxed(_) => "boxed".to_owned(),
        };
        f.debug_tuple("LocalBody").field(&kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;

    fn chunks(parts: &[&'static str]) -> LocalBody {
        LocalBody::chunks(parts.iter().map(|part| Bytes::from_static(part.as_bytes())))
    }

    #[test]
    fn limit_passes_bodies_within_it() {
        let body = Limit::new(chunks(&["abc", "def"]), 6);
        let bytes = block_on(LocalBody::boxed(body).collect_bytes()).unwrap();
        assert_eq!(bytes, "abcdef");
    }

    #[test]
    fn limit_fails_once_passed_while_streaming() {
        let mut body = Limit::new(chunks(&["abc", "def", "ghi"]), 5);
        let first = block_on(body.frame()).unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "abc");
        let error = block_on(body.frame()).unwrap().unwrap_err();
        let classified = too_large_in(error.as_ref()).expect("the limit error is found");
        assert_eq!(classified.kind(), ErrorKind::PayloadTooLarge);
        assert_eq!(
            classified.detail(),
            "the request body is larger than the limit of 5 bytes"
        );
        assert!(!classified.is_retry_safe());
        assert!(body.is_end_stream());
        assert!(block_on(body.frame()).is_none());
    }

    #[test]
    fn too_large_is_found_under_other_errors() {
        #[derive(Debug)]
        struct Wrapper(BoxError);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("sending failed")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(self.0.as_ref())
            }
        }
        let wrapped = Wrapper(Box::new(BodyTooLarge { limit: 9 }));
        assert!(too_large_in(&wrapped).is_some());
        let other = Wrapper("reset".into());
        assert!(too_large_in(&other).is_none());
        let read = request_read_error(Box::new(other));
        assert_eq!(read.kind(), ErrorKind::BadRequest);
    }

    #[test]
    fn read_up_to_returns_small_bodies_whole() {
        let read = block_on(read_up_to(chunks(&["ab", "cd"]), 4)).unwrap();
        let ReadBody::Complete(bytes) = read else {
            panic!("the body is within the limit");
        };
        assert_eq!(bytes, "abcd");
        let read = block_on(read_up_to(LocalBody::from(Bytes::new()), 4)).unwrap();
        assert!(matches!(read, ReadBody::Complete(bytes) if bytes.is_empty()));
    }

    #[test]
    fn read_up_to_gives_back_large_bodies_whole() {
        let read = block_on(read_up_to(chunks(&["ab", "cd", "ef", "gh"]), 5)).unwrap();
        let ReadBody::Partial { prefix, rest } = read else {
            panic!("the body is over the limit");
        };
        assert_eq!(prefix, "abcdef");
        let whole = block_on(LocalBody::boxed(Chain::new(prefix, rest)).collect_bytes()).unwrap();
        assert_eq!(whole, "abcdefgh");
    }

    #[test]
    fn read_up_to_skips_bodies_declared_too_large() {
        let read = block_on(read_up_to(
            LocalBody::from(Bytes::from_static(b"abcdef")),
            5,
        ))
        .unwrap();
        let ReadBody::Partial { prefix, rest } = read else {
            panic!("the body is over the limit");
        };
        assert!(prefix.is_empty());
        assert_eq!(block_on(rest.collect_bytes()).unwrap(), "abcdef");
    }

    #[test]
    fn chain_reports_sizes() {
        let chained = Chain::new(
            Bytes::from_static(b"ab"),
            LocalBody::from(Bytes::from_static(b"cde")),
        );
        assert_eq!(chained.size_hint().exact(), Some(5));
        assert!(!chained.is_end_stream());
    }
}
