//! OpenTelemetry span export over OTLP/HTTP (JSON), when `[tracing.otlp]` is set.
//!
//! Each finished request becomes a server span, and each upstream attempt a client
//! span under it, with the ids the core sent upstream in `traceparent`, so the
//! gateway's spans join the upstream's in one trace. Only sampled traces are exported.
//!
//! Requests never wait for the collector: spans go into a bounded queue with
//! `try_send`, and a full queue drops them and counts them. One thread drains the
//! queue in batches and sends each batch with the OTLP exporter, whose HTTP client is
//! reqwest's blocking client, so the export runs outside the Tokio runtime.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_core::config::OtlpConfig;
use gatehouse_core::{AccessRecord, TraceRecord};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};

/// Largest number of spans sent in one export request, the batch span processor's
/// default.
const MAX_BATCH_SPANS: usize = 512;

/// Interval at which a batch that is not full yet is sent, the batch span
/// processor's default delay. An export in progress delays the next one.
const EXPORT_DELAY: Duration = Duration::from_secs(5);

/// Minimum interval between two logged export failures, so that a collector that is
/// down for an hour logs a line a minute rather than one per batch.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The queue of spans waiting for export, and the thread that sends them.
#[derive(Debug)]
pub struct SpanExport {
    sender: SyncSender<SpanData>,
    dropped: AtomicU64,
}

impl SpanExport {
    /// Starts the export thread for `config`. The exporter is built on that thread,
    /// because reqwest's blocking client must not be created inside the Tokio runtime.
    /// A failure to build it is logged, and spans are then dropped.
    pub fn start(config: &OtlpConfig) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(config.max_queue_spans);
        let config = config.clone();
        std::thread::Builder::new()
            .name("gatehouse-otlp".to_owned())
            .spawn(move || export_loop(&config, &receiver))?;
        Ok(Self {
            sender,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues the spans of a finished request, without waiting. `duration` is the
    /// time from its arrival to the end of its response body.
    pub fn record(&self, record: &AccessRecord, duration: Duration) {
        let Some(trace) = &record.trace else {
            return;
        };
        if trace.context.flags & 0x01 == 0 {
            return;
        }
        for span in spans(record, trace, duration) {
            match self.sender.try_send(span) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    // Powers of two keep the log short during a long outage.
                    if dropped.is_power_of_two() {
                        tracing::warn!(dropped, "the OTLP span queue is full; dropping spans");
                    }
                }
                // The export thread ended after logging why.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// Builds the request's server span and one client span per upstream attempt.
fn spans(record: &AccessRecord, trace: &TraceRecord, duration: Duration) -> Vec<SpanData> {
    let context = &trace.context;
    let trace_id = TraceId::from_bytes(context.trace_id);
    let flags = TraceFlags::new(context.flags);
    let request_span = SpanId::from_bytes(context.span_id);
    let start = UNIX_EPOCH + Duration::from_millis(record.start_unix_ms);
    let mut attributes = vec![
        KeyValue::new("http.request.method", record.method.clone()),
        KeyValue::new("url.path", record.path.clone()),
        KeyValue::new("http.response.status_code", i64::from(record.status)),
        KeyValue::new("gatehouse.request_id", record.request_id.clone()),
    ];
    if let Some(route) = &record.route {
        attributes.push(KeyValue::new("http.route", route.to_string()));
    }
    if let Some(client) = record.client_ip {
        attributes.push(KeyValue::new("client.address", client.to_string()));
    }
    if let Some(upstream) = &record.upstream {
        attributes.push(KeyValue::new("gatehouse.upstream", upstream.to_string()));
    }
    let name = match &record.route {
        Some(route) => format!("{} {route}", record.method),
        None => record.method.clone(),
    };
    let mut spans = Vec::with_capacity(1 + trace.attempts.len());
    spans.push(span_data(SpanFields {
        context: SpanContext::new(trace_id, request_span, flags, false, TraceState::NONE),
        parent: context.parent_span_id.map(SpanId::from_bytes),
        kind: SpanKind::Server,
        name,
        start,
        end: start + duration,
        attributes,
        failed: record.status >= 500,
    }));

    for attempt in &trace.attempts {
        let start = UNIX_EPOCH + Duration::from_millis(attempt.start_unix_ms);
        let mut attributes = vec![KeyValue::new("server.address", attempt.endpoint.clone())];
        if let Some(status) = attempt.status {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        spans.push(span_data(SpanFields {
            context: SpanContext::new(
                trace_id,
                SpanId::from_bytes(attempt.span_id),
                flags,
                false,
                TraceState::NONE,
            ),
            parent: Some(request_span),
            kind: SpanKind::Client,
            name: format!(
                "upstream {}",
                record.upstream.as_deref().unwrap_or_default()
            ),
            start,
            end: start + Duration::from_micros(attempt.duration_micros),
            attributes,
            failed: attempt.status.is_none_or(|status| status >= 500),
        }));
    }
    spans
}

struct SpanFields {
    context: SpanContext,
    parent: Option<SpanId>,
    kind: SpanKind,
    name: String,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    failed: bool,
}

fn span_data(fields: SpanFields) -> SpanData {
    SpanData {
        span_context: fields.context,
        parent_span_id: fields.parent.unwrap_or(SpanId::INVALID),
        // Only the request span has a remote parent: the caller's span.
        parent_span_is_remote: fields.kind == SpanKind::Server && fields.parent.is_some(),
        span_kind: fields.kind,
        name: Cow::Owned(fields.name),
        start_time: fields.start,
        end_time: fields.end,
        attributes: fields.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if fields.failed {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: InstrumentationScope::builder("gatehouse").build(),
    }
}

/// Receives spans until every sender is dropped, sending them in batches of up to
/// [`MAX_BATCH_SPANS`] at least every [`EXPORT_DELAY`].
fn export_loop(config: &OtlpConfig, receiver: &Receiver<SpanData>) {
    let built = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(config.endpoint.clone())
        .with_timeout(config.timeout.get())
        .build();
    let mut exporter = match built {
        Ok(exporter) => exporter,
        Err(error) => {
            tracing::error!(%error, endpoint = %config.endpoint, "failed to start the OTLP exporter; spans are not exported");
            return;
        }
    };
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .build(),
    );
    tracing::info!(endpoint = %config.endpoint, "exporting spans over OTLP");

    let mut batch = Vec::with_capacity(MAX_BATCH_SPANS);
    let mut last_failure_log: Option<Instant> = None;
    let mut failed_batches: u64 = 0;
    let mut deadline = Instant::now() + EXPORT_DELAY;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let disconnected = match receiver.recv_timeout(wait) {
            Ok(span) => {
                batch.push(span);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let due = Instant::now() >= deadline;
        if batch.len() >= MAX_BATCH_SPANS || (due && !batch.is_empty()) || disconnected {
            let spans = std::mem::take(&mut batch);
            let count = spans.len();
            if count > 0
                && let Err(error) = futures::executor::block_on(exporter.export(spans))
            {
                failed_batches += 1;
                let log_now =
                    last_failure_log.is_none_or(|logged| logged.elapsed() >= FAILURE_LOG_INTERVAL);
                if log_now {
                    tracing::warn!(
                        %error,
                        endpoint = %config.endpoint,
                        spans = count,
                        failed_batches,
                        "failed to export spans over OTLP; they are dropped"
                    );
                    last_failure_log = Some(Instant::now());
                }
            }
        }
        if disconnected {
            return;
        }
        if due || batch.is_empty() {
            deadline = Instant::now() + EXPORT_DELAY;
        }
    }
}
