//! Log setup: application logs as text or JSON on stderr, filtered by `RUST_LOG`
//! (default `info`), and access-log events as bare JSON lines on stderr.

use std::fmt;
use std::io::IsTerminal;

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::access_log::ACCESS_LOG_TARGET;

/// Format of application log lines. Access-log lines are JSON in both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global `tracing` subscriber. Does nothing when one is already set,
/// which happens when tests call it more than once.
pub fn init(format: LogFormat) {
    // `from_env_lossy` skips invalid directives in RUST_LOG instead of failing.
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();

    let application = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter_fn(|metadata| metadata.target() != ACCESS_LOG_TARGET));
    let access = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(MessageOnly)
        .with_filter(filter_fn(|metadata| metadata.target() == ACCESS_LOG_TARGET));

    let _already_set = Registry::default()
        .with(filter)
        .with(application)
        .with(access)
        .try_init();
}

/// Writes only an event's message, because access-log messages are complete JSON
/// objects that must not be wrapped in another line format.
struct MessageOnly;

impl<S, N> FormatEvent<S, N> for MessageOnly
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut message = MessageVisitor(String::new());
        event.record(&mut message);
        writeln!(writer, "{}", message.0)
    }
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `format_args!` messages arrive here, and their Debug output is the text.
        if field.name() == "message" {
            use std::fmt::Write as _;
            let _ = write!(self.0, "{value:?}");
        }
    }
}
