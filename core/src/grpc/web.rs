//! gRPC-Web to gRPC translation, for routes with `grpc_web = true`.
//!
//! Browsers cannot read HTTP trailers, so gRPC-Web (`application/grpc-web`) carries
//! the trailers of a call as one last length-prefixed frame in the body, whose flag
//! byte is `0x80`, and `application/grpc-web-text` additionally base64-encodes the
//! whole body in both directions. The gateway turns such a request into a gRPC
//! request for the upstream, and the gRPC response back into gRPC-Web: the same
//! messages, with the upstream's trailers appended as that final frame.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TE};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};

use super::Protocol;
use crate::error::{BoxError, Error};

/// Flag byte of the frame that carries the trailers.
pub const TRAILER_FLAG: u8 = 0x80;

/// Rewrites the head of a gRPC-Web request into a gRPC request: the media type
/// becomes `application/grpc` with the same codec suffix, `TE: trailers` is set
/// because gRPC servers require it, and a text request loses its `Content-Length`,
/// which decoding changes.
pub fn translate_request_head<B>(request: &mut Request<B>, protocol: Protocol) {
    let headers = request.headers_mut();
    let codec = codec_suffix(headers);
    let content_type = format!("application/grpc{codec}");
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if protocol == Protocol::GrpcWebText {
        headers.remove(CONTENT_LENGTH);
    }
}

/// Rewrites the head of the upstream's gRPC response into a gRPC-Web response in
/// `protocol`. Returns `false`, changing nothing, when the response is not gRPC,
/// such as an error page of a proxy in front of the upstream. Its body then passes
/// unchanged.
pub fn translate_response_head<B>(response: &mut Response<B>, protocol: Protocol) -> bool {
    let headers = response.headers_mut();
    if Protocol::of(headers) != Some(Protocol::Grpc) {
        return false;
    }
    let codec = codec_suffix(headers);
    let content_type = format!("{}{codec}", protocol.content_type());
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    // The trailer frame, and base64 in text mode, change the length.
    headers.remove(CONTENT_LENGTH);
    true
}

/// Returns the `+codec` part of the media type, such as `+proto`, or an empty string.
fn codec_suffix(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .and_then(|essence| essence.trim().split_once('+'))
        .map(|(_, codec)| format!("+{}", codec.to_ascii_lowercase()))
        .unwrap_or_default()
}

/// Encodes trailers as the body frame gRPC-Web ends with: the flag byte `0x80`, the
/// length as a 4-byte big-endian number, then `name: value\r\n` per trailer with
/// lowercase names.
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut block = Vec::new();
    for (name, value) in trailers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + block.len());
    frame.put_u8(TRAILER_FLAG);
    // A header block larger than 4 GiB cannot arrive through any HTTP stack.
    frame.put_u32(u32::try_from(block.len()).unwrap_or(u32::MAX));
    frame.extend_from_slice(&block);
    frame.freeze()
}

/// A request body of `application/grpc-web-text` that was not valid base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidText {
    reason: &'static str,
}

impl fmt::Display for InvalidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid grpc-web-text request body: {}", self.reason)
    }
}

impl StdError for InvalidText {}

impl InvalidText {
    /// Returns the 400 error sent to a client whose request body was not valid
    /// base64.
    pub fn to_error(&self) -> Error {
        Error::bad_request(self.to_string())
    }
}

/// A flag that a text request body sets when it fails to decode, so the pipeline can
/// report the client's error when the upstream request fails. The HTTP/2 client of
/// the native runtime resets the stream on a body error and reports only the reset.
#[derive(Debug, Clone, Default)]
pub struct DecodeFailure(Arc<OnceLock<InvalidText>>);

impl DecodeFailure {
    /// Returns the decoding failure, if the body had one.
    pub fn get(&self) -> Option<&InvalidText> {
        self.0.get()
    }
}

/// What a [`WebBody`] does to the frames of the body it wraps.
#[derive(Debug)]
enum Mode {
    /// Decodes a base64 request body (`grpc-web-text`) into gRPC frames.
    DecodeText {
        /// Base64 characters received but not yet decoded, fewer than a group of 4.
        pending: BytesMut,
        failure: DecodeFailure,
    },
    /// Turns a gRPC response body into gRPC-Web: the trailers become the final frame,
    /// and in text mode everything is base64-encoded.
    Encode {
        text: bool,
        /// Bytes not yet base64-encoded in text mode, fewer than 3, so that chunks
        /// carry no padding until the last one.
        remainder: BytesMut,
        /// Whether the trailer frame or the final text chunk has been sent.
        finished: bool,
    },
}

/// A body translated between gRPC-Web and gRPC while it streams. A platform boxes it
/// into its own body type in [`crate::platform::Platform::grpc_web_body`].
#[derive(Debug)]
pub struct WebBody<B> {
    inner: B,
    mode: Mode,
}

impl<B> WebBody<B> {
    /// Wraps a `grpc-web-text` request body, which decodes to the gRPC frames sent
    /// upstream, and returns it with the flag it sets if decoding fails. Binary
    /// gRPC-Web request bodies are gRPC frames already and need no wrapper.
    pub fn decode_text_request(inner: B) -> (Self, DecodeFailure) {
        let failure = DecodeFailure::default();
        let body = Self {
            inner,
            mode: Mode::DecodeText {
                pending: BytesMut::new(),
                failure: failure.clone(),
            },
        };
        (body, failure)
    }

    /// Wraps the upstream's gRPC response body for a client of `protocol`.
    pub fn encode_response(inner: B, protocol: Protocol) -> Self {
        Self {
            inner,
            mode: Mode::Encode {
                text: protocol == Protocol::GrpcWebText,
                remainder: BytesMut::new(),
                finished: false,
            },
        }
    }
}

impl<B> Body for WebBody<B>
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
        loop {
            let polled = match &this.mode {
                Mode::Encode { finished: true, .. } => return Poll::Ready(None),
                _ => Pin::new(&mut this.inner).poll_frame(cx),
            };
            let frame = match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(Some(Ok(frame))) => Some(frame),
                Poll::Ready(None) => None,
            };
            let output = match &mut this.mode {
                Mode::DecodeText { pending, failure } => {
                    decode_step(pending, frame).inspect_err(|error| {
                        let _ = failure.0.set(error.clone());
                    })
                }
                Mode::Encode {
                    text,
                    remainder,
                    finished,
                } => Ok(encode_step(*text, remainder, finished, frame)),
            };
            match output {
                // A step that produced nothing, such as fewer than 4 base64 characters,
                // waits for the next frame.
                Ok(Step::Continue) => continue,
                Ok(Step::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Step::End) => return Poll::Ready(None),
                Err(error) => return Poll::Ready(Some(Err(Box::new(error)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.mode {
            Mode::Encode {
                finished,
                remainder,
                ..
            } => *finished || (remainder.is_empty() && self.inner.is_end_stream()),
            Mode::DecodeText { pending, .. } => pending.is_empty() && self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        // Both directions change the length.
        SizeHint::default()
    }
}

/// What one translation step produced.
enum Step {
    Frame(Frame<Bytes>),
    Continue,
    End,
}

fn decode_step(pending: &mut BytesMut, frame: Option<Frame<Bytes>>) -> Result<Step, InvalidText> {
    let Some(frame) = frame else {
        if pending.is_empty() {
            return Ok(Step::End);
        }
        return Err(InvalidText {
            reason: "the body ends inside a group of 4 base64 characters",
        });
    };
    let data = match frame.into_data() {
        Ok(data) => data,
        // Request trailers pass unchanged.
        Err(frame) => return Ok(Step::Frame(frame)),
    };
    // Some encoders wrap lines; whitespace is not part of the data.
    pending.extend(data_without_whitespace(&data));
    let decoded = decode_groups(pending)?;
    if decoded.is_empty() {
        Ok(Step::Continue)
    } else {
        Ok(Step::Frame(Frame::data(decoded)))
    }
}

fn data_without_whitespace(data: &[u8]) -> impl Iterator<Item = u8> + '_ {
    data.iter()
        .copied()
        .filter(|byte| !byte.is_ascii_whitespace())
}

/// Decodes the complete groups of 4 characters at the front of `pending` and leaves
/// the rest there. Clients encode each message on its own, so padding may end a group
/// in the middle of the body. Each padded group ends one run that is decoded alone.
fn decode_groups(pending: &mut BytesMut) -> Result<Bytes, InvalidText> {
    let complete = pending.len() / 4 * 4;
    let groups = pending.split_to(complete);
    let mut decoded = Vec::with_capacity(complete / 4 * 3);
    let mut run_start = 0;
    for (index, group) in groups.chunks_exact(4).enumerate() {
        if group.contains(&b'=') {
            let run_end = (index + 1) * 4;
            decode_run(&groups[run_start..run_end], &mut decoded)?;
            run_start = run_end;
        }
    }
    decode_run(&groups[run_start..], &mut decoded)?;
    Ok(Bytes::from(decoded))
}

fn decode_run(run: &[u8], output: &mut Vec<u8>) -> Result<(), InvalidText> {
    if run.is_empty() {
        return Ok(());
    }
    STANDARD.decode_vec(run, output).map_err(|_| InvalidText {
        reason: "it is not valid base64",
    })
}

fn encode_step(
    text: bool,
    remainder: &mut BytesMut,
    finished: &mut bool,
    frame: Option<Frame<Bytes>>,
) -> Step {
    let Some(frame) = frame else {
        // The body ended without trailers, as in a trailers-only response, whose
        // status is in the headers. A text body flushes its last bytes.
        *finished = true;
        if text && !remainder.is_empty() {
            let tail = STANDARD.encode(remainder.split());
            return Step::Frame(Frame::data(Bytes::from(tail)));
        }
        return Step::End;
    };
    let data = match frame.into_data() {
        Ok(data) => data,
        Err(frame) => match frame.into_trailers() {
            Ok(trailers) => {
                *finished = true;
                let last = trailer_frame(&trailers);
                if !text {
                    return Step::Frame(Frame::data(last));
                }
                remainder.extend_from_slice(&last);
                let tail = STANDARD.encode(remainder.split());
                return Step::Frame(Frame::data(Bytes::from(tail)));
            }
            // A frame that is neither data nor trailers has nothing to translate.
            Err(_) => return Step::Continue,
        },
    };
    if !text {
        return Step::Frame(Frame::data(data));
    }
    remainder.extend_from_slice(&data);
    let whole = remainder.len() / 3 * 3;
    if whole == 0 {
        return Step::Continue;
    }
    let encoded = STANDARD.encode(remainder.split_to(whole));
    Step::Frame(Frame::data(Bytes::from(encoded)))
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    type Frames = Vec<Result<Frame<Bytes>, BoxError>>;
    type TestBody =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    /// A body that yields `frames` one by one.
    fn body_of(frames: Frames) -> TestBody {
        StreamBody::new(futures::stream::iter(frames))
    }

    fn data(bytes: &[u8]) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::copy_from_slice(bytes)))
    }

    fn trailers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// A gRPC message frame: flag 0, 4-byte length, payload.
    fn message(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// Collects the data frames of `body` and its error, if it failed.
    fn collect<B>(body: B) -> (Vec<u8>, Option<String>)
    where
        B: Body<Data = Bytes, Error = BoxError> + Unpin,
    {
        futures::executor::block_on(async {
            let mut body = body;
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Ok(data) = frame.into_data() {
                            bytes.extend_from_slice(&data);
                        }
                    }
                    Err(error) => return (bytes, Some(error.to_string())),
                }
            }
            (bytes, None)
        })
    }

    #[test]
    fn trailer_frame_layout() {
        let frame = trailer_frame(&trailers(&[
            ("grpc-status", "5"),
            ("grpc-message", "not%20here"),
        ]));
        let block = b"grpc-status: 5\r\ngrpc-message: not%20here\r\n";
        assert_eq!(frame[0], TRAILER_FLAG);
        assert_eq!(&frame[1..5], &(block.len() as u32).to_be_bytes());
        assert_eq!(&frame[5..], block);
    }

    #[test]
    fn binary_response_appends_trailer_frame() {
        let first = message(b"hello");
        let second = message(b"world");
        let body = body_of(vec![
            data(&first),
            data(&second),
            Ok(Frame::trailers(trailers(&[("grpc-status", "0")]))),
        ]);
        let (bytes, error) = collect(WebBody::encode_response(body, Protocol::GrpcWeb));
        assert_eq!(error, None);
        let mut expected = first.clone();
        expected.extend_from_slice(&second);
        expected.extend_from_slice(&trailer_frame(&trailers(&[("grpc-status", "0")])));
        assert_eq!(bytes, expected);
    }

    #[test]
    fn text_response_is_base64_without_inner_padding() {
        // Chunk sizes that are not multiples of 3 would need padding if each chunk
        // were encoded alone.
        let payload = message(b"abcdefghij");
        let body = body_of(vec![
            data(&payload[..4]),
            data(&payload[4..]),
            Ok(Frame::trailers(trailers(&[("grpc-status", "0")]))),
        ]);
        let (bytes, error) = collect(WebBody::encode_response(body, Protocol::GrpcWebText));
        assert_eq!(error, None);
        let text = String::from_utf8(bytes).unwrap();
        let trimmed = text.trim_end_matches('=');
        assert!(!trimmed.contains('='), "padding inside: {text}");
        let decoded = STANDARD.decode(&text).unwrap();
        let mut expected = payload.clone();
        expected.extend_from_slice(&trailer_frame(&trailers(&[("grpc-status", "0")])));
        assert_eq!(decoded, expected);
    }

    #[test]
    fn text_response_without_trailers_flushes_remainder() {
        let body = body_of(vec![data(b"ab")]);
        let (bytes, error) = collect(WebBody::encode_response(body, Protocol::GrpcWebText));
        assert_eq!(error, None);
        assert_eq!(bytes, b"YWI=");
    }

    #[test]
    fn empty_response_stays_empty() {
        let body = body_of(Vec::new());
        let (bytes, error) = collect(WebBody::encode_response(body, Protocol::GrpcWeb));
        assert_eq!(error, None);
        assert!(bytes.is_empty());
    }

    #[test]
    fn text_request_decodes_across_chunks() {
        let first = message(b"one");
        let second = message(b"second message");
        // Each message encoded on its own, with padding, then split at odd places.
        let text = format!("{}{}", STANDARD.encode(&first), STANDARD.encode(&second));
        assert!(text[..text.len() - 2].contains('='), "{text}");
        let bytes = text.as_bytes();
        let body = body_of(vec![
            data(&bytes[..3]),
            data(&bytes[3..9]),
            data(b"\r\n"),
            data(&bytes[9..]),
        ]);
        let (body, failure) = WebBody::decode_text_request(body);
        let (decoded, error) = collect(body);
        assert_eq!(error, None);
        assert_eq!(failure.get(), None);
        let mut expected = first;
        expected.extend_from_slice(&second);
        assert_eq!(decoded, expected);
    }

    #[test]
    fn text_request_rejects_invalid_base64() {
        let body = body_of(vec![data(b"AA*A")]);
        let (body, failure) = WebBody::decode_text_request(body);
        let (_, error) = collect(body);
        let message = "invalid grpc-web-text request body: it is not valid base64";
        assert_eq!(error.as_deref(), Some(message));
        let recorded = failure.get().expect("the failure is recorded");
        assert_eq!(recorded.to_error().detail(), message);
    }

    #[test]
    fn text_request_rejects_truncated_group() {
        let body = body_of(vec![data(b"AAAAAA")]);
        let (body, _) = WebBody::decode_text_request(body);
        let (decoded, error) = collect(body);
        assert_eq!(decoded, [0, 0, 0]);
        assert!(
            error
                .as_deref()
                .is_some_and(|error| error.contains("inside a group")),
            "{error:?}"
        );
    }

    #[test]
    fn heads_are_translated() {
        let mut request = Request::new(());
        request.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web-text+proto"),
        );
        request
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("12"));
        translate_request_head(&mut request, Protocol::GrpcWebText);
        assert_eq!(request.headers()[CONTENT_TYPE], "application/grpc+proto");
        assert_eq!(request.headers()[TE], "trailers");
        assert!(!request.headers().contains_key(CONTENT_LENGTH));

        let mut response = Response::new(());
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(translate_response_head(
            &mut response,
            Protocol::GrpcWebText
        ));
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/grpc-web-text+proto"
        );

        let mut page = Response::new(());
        page.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(!translate_response_head(&mut page, Protocol::GrpcWeb));
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html");
    }
}
