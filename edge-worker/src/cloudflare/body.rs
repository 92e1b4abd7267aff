//! [`WorkerBody`]: the one body type of the Worker, for requests and responses.

use std::cell::RefCell;
use std::fmt;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use gatehouse_core::Error;
use gatehouse_core::body::too_large_in;
use gatehouse_core::error::BoxError;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use js_sys::Uint8Array;
use wasm_bindgen::JsValue;
use wasm_streams::readable::IntoStream;
use web_sys::ReadableStream;

/// An HTTP body on Workers: bytes the gateway made itself, a JavaScript stream from
/// the client or an upstream, or a body the gateway built on top of either.
///
/// Streams pass from the incoming request to `fetch`, and from the upstream response
/// to the client, as JavaScript objects. Their chunks are copied into WebAssembly
/// memory only when the gateway reads the body (through [`http_body::Body`]), so
/// bodies the gateway only forwards cost the isolate neither memory nor CPU.
#[derive(Default)]
pub struct WorkerBody(Kind);

#[derive(Default)]
enum Kind {
    #[default]
    Empty,
    Bytes(Bytes),
    /// A JavaScript stream nobody has read from.
    Stream(ReadableStream),
    /// A JavaScript stream the gateway is reading.
    Reading(IntoStream<'static>),
    /// A body built in Rust, such as a limited or chained body.
    Boxed(Pin<Box<dyn Body<Data = Bytes, Error = BoxError>>>),
}

/// Where a body converted with [`WorkerBody::into_js_observed`] leaves the reason it
/// failed while JavaScript read it, because `fetch` reports only that the body failed.
pub type BodyFailure = Rc<RefCell<Option<Error>>>;

impl WorkerBody {
    /// Wraps the body of a JavaScript request or response; `None` is a null body.
    pub fn from_stream(stream: Option<ReadableStream>) -> Self {
        match stream {
            Some(stream) => Self(Kind::Stream(stream)),
            None => Self(Kind::Empty),
        }
    }

    /// Boxes a body built in Rust.
    pub fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + 'static,
        B::Error: Into<BoxError>,
    {
        Self(Kind::Boxed(Box::pin(body.map_err(Into::into))))
    }

    /// Returns whether the body streams through WebAssembly, as a limited or chained
    /// body does, rather than passing on as bytes or an untouched JavaScript stream.
    pub fn is_read_in_rust(&self) -> bool {
        matches!(self.0, Kind::Reading(_) | Kind::Boxed(_))
    }

    /// Converts the body into a value that `new Request(...)` and `new Response(...)`
    /// accept, or `None` for a null body.
    pub fn into_js(self) -> Option<JsValue> {
        self.into_js_observed(None)
    }

    /// Like [`WorkerBody::into_js`]; when the body is read from Rust and fails because
    /// it passed a size limit, the 413 error is left in `failure`.
    pub fn into_js_observed(self, failure: Option<BodyFailure>) -> Option<JsValue> {
        match self.0 {
            Kind::Empty => None,
            Kind::Bytes(bytes) => Some(Uint8Array::from(bytes.as_ref()).into()),
            Kind::Stream(stream) => Some(stream.into()),
            kind @ (Kind::Reading(_) | Kind::Boxed(_)) => {
                let chunks = Self(kind).into_data_stream().map(move |chunk| match chunk {
                    Ok(bytes) => Ok(JsValue::from(Uint8Array::from(bytes.as_ref()))),
                    Err(error) => {
                        let message = error.to_string();
                        if let (Some(failure), Some(too_large)) =
                            (&failure, too_large_in(error.as_ref()))
                        {
                            *failure.borrow_mut() = Some(too_large);
                        }
                        Err(JsValue::from(js_sys::Error::new(&message)))
                    }
                });
                let stream = wasm_streams::ReadableStream::from_stream(chunks).into_raw();
                Some(stream.into())
            }
        }
    }
}

impl From<Bytes> for WorkerBody {
    fn from(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            Self(Kind::Empty)
        } else {
            Self(Kind::Bytes(bytes))
        }
    }
}

impl Body for WorkerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match &mut this.0 {
                Kind::Empty => return Poll::Ready(None),
                Kind::Bytes(_) => {
                    let Kind::Bytes(bytes) = std::mem::take(&mut this.0) else {
                        return Poll::Ready(None);
                    };
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Kind::Stream(_) => {
                    // The first read locks the JavaScript stream to a reader.
                    let Kind::Stream(stream) = std::mem::take(&mut this.0) else {
                        return Poll::Ready(None);
                    };
                    let reader = wasm_streams::ReadableStream::from_raw(stream).into_stream();
                    this.0 = Kind::Reading(reader);
                }
                Kind::Reading(reader) => {
                    return match reader.poll_next_unpin(cx) {
                        Poll::Ready(Some(Ok(chunk))) => {
                            let bytes = Bytes::from(Uint8Array::new(&chunk).to_vec());
                            Poll::Ready(Some(Ok(Frame::data(bytes))))
                        }
                        Poll::Ready(Some(Err(error))) => {
                            Poll::Ready(Some(Err(js_message(&error).into())))
                        }
                        Poll::Ready(None) => {
                            this.0 = Kind::Empty;
                            Poll::Ready(None)
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                Kind::Boxed(body) => return body.as_mut().poll_frame(cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Bytes(_) | Kind::Stream(_) | Kind::Reading(_) => false,
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Bytes(bytes) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Stream(_) | Kind::Reading(_) => SizeHint::new(),
            Kind::Boxed(body) => body.size_hint(),
        }
    }
}

impl fmt::Debug for WorkerBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            Kind::Empty => "empty",
            Kind::Bytes(_) => "bytes",
            Kind::Stream(_) => "stream",
            Kind::Reading(_) => "reading",
            Kind::Boxed(_) => "boxed",
        };
        f.debug_tuple("WorkerBody").field(&kind).finish()
    }
}

/// Returns the message of a JavaScript error, or its debug form for other values.
pub(super) fn js_message(value: &JsValue) -> String {
    match wasm_bindgen::JsCast::dyn_ref::<js_sys::Error>(value) {
        Some(error) => String::from(error.message()),
        None => format!("{value:?}"),
    }
}
