//! The access log: one JSON line per request, written when the response body has
//! finished streaming, so it records the bytes actually sent and the full duration.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_core::AccessRecord;
use gatehouse_core::error::BoxError;
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;

use crate::body::NativeBody;
use crate::metrics::Metrics;
use crate::otlp::SpanExport;

/// The `tracing` target of access-log events. The logging setup prints events of this
/// target as bare JSON lines.
pub const ACCESS_LOG_TARGET: &str = "gatehouse::access";

/// One access-log line: the core's record plus the fields only the runtime can fill in.
#[derive(Serialize)]
struct AccessLine<'a> {
    #[serde(flatten)]
    record: &'a AccessRecord,
    /// Time from the arrival of the request to the end of the response body.
    duration_micros: u64,
    /// Whether the whole response body was sent; `false` when the client went away or
    /// the upstream body failed midway.
    body_complete: bool,
}

/// A response body that counts the bytes it sends and writes the access-log line, and
/// records the request in the metrics, when it ends, fails or is dropped.
#[derive(Debug)]
pub struct AccessLogBody {
    inner: NativeBody,
    /// The record still to be written; `None` once it has been.
    pending: Option<AccessRecord>,
    started: Instant,
    bytes_sent: u64,
    metrics: Option<Arc<Metrics>>,
    spans: Option<Arc<SpanExport>>,
}

impl AccessLogBody {
    /// Wraps `inner` to log `record` once it finishes. `started` is when the request
    /// arrived.
    pub fn new(inner: NativeBody, record: AccessRecord, started: Instant) -> Self {
        Self {
            inner,
            pending: Some(record),
            started,
            bytes_sent: 0,
            metrics: None,
            spans: None,
        }
    }

    /// Also exports the request's spans through `spans` when it finishes.
    pub fn with_spans(mut self, spans: Option<Arc<SpanExport>>) -> Self {
        self.spans = spans;
        self
    }

    /// Also records the request in `metrics` when it finishes, exactly once, like the
    /// access-log line.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn finish(&mut self, body_complete: bool) {
        let Some(mut record) = self.pending.take() else {
            return;
        };
        record.response_bytes = Some(self.bytes_sent);
        if let Some(metrics) = &self.metrics {
            metrics.record_request(&record);
        }
        if let Some(spans) = &self.spans {
            spans.record(&record, self.started.elapsed());
        }
        // Serializing costs more than the rest of the record's life, so skip it when
        // the access log is filtered out.
        if !tracing::enabled!(target: ACCESS_LOG_TARGET, tracing::Level::INFO) {
            return;
        }
        let line = AccessLine {
            record: &record,
            duration_micros: self.started.elapsed().as_micros() as u64,
            body_complete,
        };
        match serde_json::to_string(&line) {
            Ok(json) => tracing::info!(target: ACCESS_LOG_TARGET, "{json}"),
            Err(error) => tracing::error!(
                request_id = %record.request_id,
                %error,
                "failed to serialize the access-log record"
            ),
        }
    }
}

impl Body for AccessLogBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_sent += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(None) => this.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AccessLogBody {
    fn drop(&mut self) {
        // hyper stops polling once `is_end_stream` is true, so a fully sent body often
        // ends here rather than with a final `None` frame.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn counts_bytes_and_logs_once() {
        let record = AccessRecord {
            request_id: "abc".to_owned(),
            ..AccessRecord::default()
        };
        let mut body = AccessLogBody::new(NativeBody::from("hello"), record, Instant::now());
        let collected = (&mut body).collect().await.expect("full body never fails");
        assert_eq!(collected.to_bytes().len(), 5);
        assert_eq!(body.bytes_sent, 5);
        assert!(body.pending.is_none());
    }

    #[test]
    fn line_flattens_record() {
        let record = AccessRecord {
            request_id: "abc".to_owned(),
            status: 200,
            response_bytes: Some(5),
            ..AccessRecord::default()
        };
        let line = AccessLine {
            record: &record,
            duration_micros: 12,
            body_complete: true,
        };
        let json: serde_json::Value = serde_json::to_value(&line).expect("access line serializes");
        assert_eq!(json["request_id"], "abc");
        assert_eq!(json["status"], 200);
        assert_eq!(json["response_bytes"], 5);
        assert_eq!(json["duration_micros"], 12);
        assert_eq!(json["body_complete"], true);
    }
}
