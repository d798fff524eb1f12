//! Logging of `tracepatch serve`: one line per event, text for a terminal or JSON in a
//! cluster, written by a background thread so a slow log pipe never delays an
//! admission.

use crate::cli::LogFormat;

/// Keeps the log writer's worker alive; drop it last so buffered lines are flushed.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Lines buffered between the request path and the writer thread; beyond this, lines
/// are dropped rather than delaying an admission (about 3 MB of JSON lines).
const LOG_LINES_BUFFERED: usize = 8192;

/// Installs the log subscriber: `RUST_LOG` filters (default `info`), lines go to
/// standard output through a non-blocking writer thread, so that a slow log consumer
/// never delays an admission (lines are dropped instead), and in batches (one write
/// per batch of lines, not one per line).
pub fn init(format: LogFormat) -> LogGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_LINES_BUFFERED)
        .lossy(true)
        .thread_name("tracepatch-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi && format == LogFormat::Text);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Already installed (tests): keep the existing subscriber.
    let _ = result;
    guard
}
