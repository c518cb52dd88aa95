//! One `tracing` setup for every binary: JSON lines (containers, CloudWatch) or pretty
//! lines (terminals), filtered by `RUST_LOG` (default `info`). Writes to stdout.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, first thing in `main`.
///
/// Returns `false` if a subscriber was already installed (the call then changes nothing).
pub fn init(format: LogFormat) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
            .is_ok(),
        LogFormat::Pretty => builder.compact().try_init().is_ok(),
    }
}
