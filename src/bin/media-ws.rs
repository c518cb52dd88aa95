//! `media-ws`: the Twilio Media Streams WebSocket server. Reads config, sets up logging,
//! binds, serves until SIGTERM/SIGINT, drains, exits 0. `media-ws healthcheck` probes
//! `/health` on loopback for container health checks.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use media_orchestrator::config::{AgentKind, AuthMode, Config};
use media_orchestrator::secrets::Secrets;
use media_orchestrator::server::{self, AppState};
use media_orchestrator::{shutdown, telemetry};

const USAGE: &str = "usage: media-ws [healthcheck]\n\
    Configuration comes from the environment; see README.md.";

#[tokio::main]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => serve().await,
        Some("healthcheck") => healthcheck().await,
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(_) => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("media-ws: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    // Secrets: values, or `ssm:` references resolved once here (no AWS client otherwise).
    let secrets = Secrets::new(config.secrets_ttl);
    let origin =
        media_orchestrator::record::Origin::new(media_orchestrator::record::find_task().await);
    let state = match AppState::with_secrets(config, &secrets) {
        Ok(s) => Arc::new(s.with_origin(origin)),
        Err(e) => {
            eprintln!("media-ws: cannot set up the agent client: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = secrets.load().await {
        eprintln!("media-ws: {e}");
        return ExitCode::from(2);
    }
    let config = &state.config;
    if config.server.auth == AuthMode::Open && matches!(config.agent, AgentKind::ElevenLabs(_)) {
        tracing::warn!(
            "ALLOW_UNAUTHENTICATED=true: streams open ElevenLabs conversations without a token"
        );
    }
    let cc = &config.call_control;
    match &cc.rest {
        Some(rest) => tracing::info!(
            api_base = %rest.api_base,
            transfers = !cc.policy.transfer_allowlist.is_empty(),
            "call control on: agent endings hang up through Twilio's REST API"
        ),
        None => tracing::info!(
            "call control without Twilio's REST API: agent endings close the stream after \
             the goodbye (set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to hang up)"
        ),
    }
    if let Some(registry) = &state.registry {
        registry.warm().await;
        tracing::info!(table = registry.table(), "call registry on");
    }
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", config.server.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("media-ws: cannot bind port {}: {e}", config.server.port);
            return ExitCode::from(1);
        }
    };
    let served = tokio::select! {
        served = server::run(listener, Arc::clone(&state), shutdown::signal()) => served,
        // Never completes: refreshes `ssm:` secrets when their TTL runs out.
        never = secrets.refresh_loop() => match never {},
    };
    match served {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::from(1)
        }
    }
}

async fn healthcheck() -> ExitCode {
    let port = match Config::from_env() {
        Ok(c) => c.server.port,
        Err(e) => {
            eprintln!("media-ws: {e}");
            return ExitCode::from(2);
        }
    };
    match server::probe::health(port, Duration::from_secs(3)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("media-ws healthcheck: {e}");
            ExitCode::from(1)
        }
    }
}
