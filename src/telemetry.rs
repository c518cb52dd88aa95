//! One `tracing` setup for every binary: JSON lines (containers, CloudWatch) or pretty
//! lines (terminals), filtered by `RUST_LOG` (default `info`). Writes to stdout.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Directives appended to every filter: libraries that print frames or bodies at debug/trace
/// (tungstenite prints payload bytes) stay at `warn` whatever `RUST_LOG` says.
const CONTENT_SAFE: &str =
    "tungstenite=warn,tokio_tungstenite=warn,hyper=warn,h2=warn,aws_smithy_runtime=warn,aws_smithy_http=warn,lambda_runtime=info,lambda_http=info";

/// Installs the global subscriber. Call once, first thing in `main`.
///
/// Returns `false` if a subscriber was already installed (the call then changes nothing).
pub fn init(format: LogFormat) -> bool {
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let filter = EnvFilter::try_new(format!("{wanted},{CONTENT_SAFE}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{CONTENT_SAFE}")));
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
