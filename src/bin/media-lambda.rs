//! `media-lambda`: the token and Twilio voice-webhook function. Reads config and resolves
//! secrets once per cold start (bad config: one stderr line, exit 2), then serves events from
//! the Lambda Runtime API through [`lambda::respond`].

use std::process::ExitCode;

use lambda_http::{service_fn, Request};
use media_orchestrator::lambda::{self, LambdaConfig, LambdaState};
use media_orchestrator::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match LambdaConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("media-lambda: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let state = match LambdaState::load(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("media-lambda: {e}");
            return ExitCode::from(2);
        }
    };
    let state = &state;
    let handler = service_fn(move |req: Request| async move {
        Ok::<_, lambda_http::Error>(lambda::respond(state, req).await)
    });
    match lambda_http::run(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "lambda runtime failed");
            ExitCode::from(1)
        }
    }
}
