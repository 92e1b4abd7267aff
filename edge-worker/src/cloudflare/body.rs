//! [`WorkerBody`]: the one body type of the Worker, for requests and responses.

use bytes::Bytes;
use js_sys::Uint8Array;
use wasm_bindgen::JsValue;
use web_sys::ReadableStream;

/// An HTTP body on Workers: bytes the gateway made itself, or a JavaScript stream
/// from the client or an upstream.
///
/// Streams pass from the incoming request to `fetch`, and from the upstream response
/// to the client, as JavaScript objects. Their chunks are never copied into
/// WebAssembly memory, so large bodies cost the isolate neither memory nor CPU.
#[derive(Debug, Default)]
pub struct WorkerBody(Kind);

#[derive(Debug, Default)]
enum Kind {
    #[default]
    Empty,
    Bytes(Bytes),
    Stream(ReadableStream),
}

impl WorkerBody {
    /// Wraps the body of a JavaScript request or response; `None` is a null body.
    pub fn from_stream(stream: Option<ReadableStream>) -> Self {
        match stream {
            Some(stream) => Self(Kind::Stream(stream)),
            None => Self(Kind::Empty),
        }
    }

    /// Converts the body into a value that `new Request(...)` and `new Response(...)`
    /// accept, or `None` for a null body.
    pub fn into_js(self) -> Option<JsValue> {
        match self.0 {
            Kind::Empty => None,
            Kind::Bytes(bytes) => Some(Uint8Array::from(bytes.as_ref()).into()),
            Kind::Stream(stream) => Some(stream.into()),
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
