//! The `media-ws` server: one port for HTTP (`/`, `/health`, `/metrics`) and the Twilio
//! WebSocket. Owns accepting, the call limit and the drain on shutdown; routing lives in
//! [`http`], the handshake in [`handshake`], one call's life in [`call`].

pub mod call;
pub mod handshake;
pub mod http;
pub mod outbox;
pub mod probe;
pub mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, Clock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::secrets::Secrets;
use crate::twilio::stream_signature::StreamSignatureVerifier;

/// How long calls still open at the drain deadline get to finish their close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Everything a connection needs, shared by all of them.
#[derive(Debug)]
pub struct AppState {
    /// The validated configuration.
    pub config: Config,
    /// Handshake token checks.
    pub auth: Authenticator,
    /// Twilio's signature on the upgrade, when `VERIFY_TWILIO_SIGNATURE` is on.
    pub stream_signature: Option<StreamSignatureVerifier>,
    /// Metrics of this server.
    pub metrics: Metrics,
    call_slots: Arc<Semaphore>,
    draining: AtomicBool,
    calls_cancel: CancellationToken,
    calls: TaskTracker,
}

impl AppState {
    /// Builds the shared state from a validated configuration whose secrets are values (an
    /// `ssm:` reference is never loaded here and refuses every handshake).
    pub fn new(config: Config) -> Self {
        let secrets = Secrets::new(config.secrets_ttl);
        Self::with_secrets(config, &secrets)
    }

    /// Builds the shared state, resolving secret references through `secrets` (call
    /// [`Secrets::load`] before serving).
    pub fn with_secrets(config: Config, secrets: &Secrets) -> Self {
        let auth =
            Authenticator::with_secrets(&config.auth, config.jwt_leeway, Clock::System, secrets);
        let stream_signature = config.stream_signature.as_ref().map(|s| {
            StreamSignatureVerifier::new(secrets.handle(&s.auth_token), s.public_base.clone())
        });
        Self {
            auth,
            stream_signature,
            metrics: Metrics::new(),
            call_slots: Arc::new(Semaphore::new(config.max_calls)),
            draining: AtomicBool::new(false),
            calls_cancel: CancellationToken::new(),
            calls: TaskTracker::new(),
            config,
        }
    }

    /// Whether the server is draining (health 503, no new calls).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// WebSocket limits sized for 20 ms Twilio frames: small buffers so idle calls are cheap,
    /// and message/frame caps derived from the largest media payload accepted.
    pub fn websocket_config(&self) -> WebSocketConfig {
        // base64 grows 4/3; the JSON envelope of a media message is ~200 bytes.
        let max_message = self.config.max_media_payload_bytes * 4 / 3 + 4096;
        WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_write_buffer_size(self.config.max_buffered_bytes.saturating_mul(2))
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message))
    }
}

/// What happened during the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Calls live when the drain began.
    pub calls_at_start: i64,
    /// Whether every call ended on its own before the deadline.
    pub drained_cleanly: bool,
}

/// Serves `listener` until `shutdown` completes, then drains: `/health` turns 503, upgrades
/// are refused, live calls get `drain_timeout` to end, the rest are closed with 1001.
///
/// # Errors
/// Never fails today; accept errors are logged and retried with backoff.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<DrainReport> {
    let connections = TaskTracker::new();
    let stop_accepting = CancellationToken::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, ws_path = %state.config.ws_path, "listening");
    }
    let accept = accept_loop(&listener, &state, &connections, &stop_accepting);
    let lifecycle = async {
        shutdown.await;
        let report = drain(&state).await;
        stop_accepting.cancel();
        report
    };
    let ((), report) = tokio::join!(accept, lifecycle);
    connections.close();
    Ok(report)
}

async fn drain(state: &AppState) -> DrainReport {
    state.draining.store(true, Ordering::Release);
    let calls_at_start = state.metrics.active_calls();
    tracing::info!(
        active_calls = calls_at_start,
        drain_timeout_ms = state.config.drain_timeout.as_millis() as u64,
        "draining"
    );
    state.calls.close();
    let drained_cleanly = tokio::time::timeout(state.config.drain_timeout, state.calls.wait())
        .await
        .is_ok();
    if !drained_cleanly {
        tracing::info!(
            remaining = state.metrics.active_calls(),
            "drain deadline reached, closing calls"
        );
        state.calls_cancel.cancel();
        if tokio::time::timeout(CLOSE_GRACE, state.calls.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = state.metrics.active_calls(),
                "calls did not close in time"
            );
        }
    }
    tracing::info!(drained_cleanly, "drain complete");
    DrainReport {
        calls_at_start,
        drained_cleanly,
    }
}

async fn accept_loop(
    listener: &TcpListener,
    state: &Arc<AppState>,
    connections: &TaskTracker,
    stop: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                connections.spawn(serve_connection(stream, peer, Arc::clone(state)));
            }
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin.
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, state: Arc<AppState>) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let handshake_timeout = state.config.handshake_timeout;
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, std::convert::Infallible>(http::route(req, &state, peer)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_buf_size(16 * 1024)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "http connection ended with error");
    }
}

/// Spawns a call on the server's call tracker, after the 101 response is sent.
pub(crate) fn spawn_call<F>(state: &AppState, fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    state.calls.spawn(fut);
}
