//! The `media-ws` server: one port for HTTP (`/`, `/health`, `/metrics`) and the Twilio
//! WebSocket. Owns accepting, the call limit and the drain on shutdown; routing lives in
//! [`http`], the handshake in [`handshake`], one call's life in `call`.

mod call;
pub mod handshake;
pub mod http;
pub mod probe;
pub mod response;

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

use std::collections::HashSet;
use std::sync::Mutex;

use crate::agent::Agent;
use crate::auth::{Authenticator, Clock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::CallRegistry;
use crate::secrets::Secrets;
use crate::twilio::stream_signature::StreamSignatureVerifier;

/// How long calls still open at the drain deadline get to finish their close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How long queued call events may take to send once the calls are over.
const EVENTS_FLUSH: Duration = Duration::from_secs(2);

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
    /// The agent that answers calls.
    pub agent: Agent,
    /// The fleet-wide call registry (`CALL_REGISTRY_TABLE`).
    pub registry: Option<Arc<CallRegistry>>,
    /// Twilio's REST API (hang-up, transfer), when configured.
    pub twilio: Option<crate::twilio::rest::TwilioRest>,
    /// Where call records say they were made (task, version).
    pub origin: crate::record::Origin,
    /// Call events on EventBridge (`CALL_EVENTS_BUS`).
    pub bus: Option<crate::bus::EventBus>,
    call_slots: Arc<Semaphore>,
    live_call_sids: Mutex<HashSet<String>>,
    active_calls: tokio::sync::watch::Sender<i64>,
    draining: AtomicBool,
    /// Tells every live call of the drain and of its deadline.
    stops: Arc<crate::call::CallStops>,
    calls: TaskTracker,
}

impl AppState {
    /// Builds the shared state from a validated configuration whose secrets are values (an
    /// `ssm:` reference is never loaded here and refuses every handshake).
    ///
    /// # Errors
    /// An I/O error when the ElevenLabs agent's TLS roots cannot be loaded.
    pub fn new(config: Config) -> std::io::Result<Self> {
        let secrets = Secrets::new(config.secrets_ttl);
        Self::with_secrets(config, &secrets)
    }

    /// Builds the shared state, resolving secret references through `secrets` (call
    /// [`Secrets::load`] before serving).
    ///
    /// # Errors
    /// An I/O error when the ElevenLabs agent's TLS roots cannot be loaded.
    pub fn with_secrets(config: Config, secrets: &Secrets) -> std::io::Result<Self> {
        let auth = Authenticator::with_secrets(
            &config.server.auth,
            config.server.jwt_leeway,
            Clock::System,
            secrets,
        );
        let stream_signature = config.server.stream_signature.as_ref().map(|s| {
            StreamSignatureVerifier::new(secrets.handle(&s.auth_token), s.public_base.clone())
        });
        let agent = Agent::from_config(&config.agent, secrets)?;
        let twilio = config
            .call_control
            .rest
            .as_ref()
            .map(|rest| crate::twilio::rest::TwilioRest::new(rest, secrets))
            .transpose()?;
        let metrics = Metrics::new();
        Ok(Self {
            twilio,
            bus: config
                .call_events
                .clone()
                .map(|c| crate::bus::EventBus::start(c, metrics.call_events())),
            origin: crate::record::Origin::new(
                std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into()),
            ),
            auth,
            stream_signature,
            metrics,
            agent,
            registry: config
                .call_registry
                .clone()
                .map(|c| Arc::new(CallRegistry::new(c))),
            live_call_sids: Mutex::new(HashSet::new()),
            active_calls: tokio::sync::watch::Sender::new(0),
            call_slots: Arc::new(Semaphore::new(config.server.max_calls)),
            draining: AtomicBool::new(false),
            stops: crate::call::CallStops::new(),
            calls: TaskTracker::new(),
            config,
        })
    }

    /// The same state, its records naming `origin` (the ECS task found at startup).
    #[must_use]
    pub fn with_origin(mut self, origin: crate::record::Origin) -> Self {
        self.origin = origin;
        self
    }

    /// Claims `call_sid` for one live agent session. `None` when another stream of the same
    /// call holds it; the claim is released when the returned guard drops.
    pub fn claim_call(self: &Arc<Self>, call_sid: &str) -> Option<CallClaim> {
        let mut live = self
            .live_call_sids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.insert(call_sid.to_string()).then(|| CallClaim {
            state: Arc::clone(self),
            call_sid: call_sid.to_string(),
            fleet: false,
        })
    }

    /// Publishes the number of live calls (to task protection and EMF). The gauge is read
    /// inside the channel's lock, so the last publisher always leaves the current value.
    pub(crate) fn publish_active_calls(&self) {
        self.active_calls
            .send_modify(|v| *v = self.metrics.active_calls());
    }

    /// Whether the server is draining (health 503, no new calls).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// WebSocket limits sized for 20 ms Twilio frames: small buffers so idle calls are cheap,
    /// and message/frame caps derived from the largest media payload accepted.
    pub fn websocket_config(&self) -> WebSocketConfig {
        // base64 grows 4/3; the JSON envelope of a media message is ~200 bytes.
        let max_message = self.config.stream.max_payload_bytes * 4 / 3 + 4096;
        WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_write_buffer_size(self.config.server.max_buffered_bytes.saturating_mul(2))
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message))
    }
}

/// Holds a call's CallSid in the live set until dropped, and in the fleet-wide registry once
/// [`CallClaim::claim_fleet`] succeeded (released in the background on drop, tracked with the
/// calls so a drain waits for it).
#[derive(Debug)]
pub struct CallClaim {
    state: Arc<AppState>,
    call_sid: String,
    fleet: bool,
}

impl CallClaim {
    /// Claims the CallSid in the call registry too, when one is configured.
    ///
    /// # Errors
    /// [`crate::registry::ClaimError`] when another task's stream holds it or the table
    /// cannot be written.
    pub async fn claim_fleet(&mut self) -> Result<(), crate::registry::ClaimError> {
        let Some(registry) = &self.state.registry else {
            return Ok(());
        };
        registry
            .claim_call(&self.call_sid, &self.state.metrics)
            .await?;
        self.fleet = true;
        Ok(())
    }

    /// Gives the CallSid back now: the registry within its request timeout (a failure leaves
    /// the lease to expire), then the live set, as the claim drops.
    pub async fn release(mut self) {
        if std::mem::take(&mut self.fleet) {
            if let Some(registry) = &self.state.registry {
                registry
                    .release_call(&self.call_sid, &self.state.metrics)
                    .await;
            }
        }
    }
}

impl Drop for CallClaim {
    fn drop(&mut self) {
        self.state
            .live_call_sids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.call_sid);
        if let (true, Some(registry)) = (self.fleet, &self.state.registry) {
            let registry = Arc::clone(registry);
            let state = Arc::clone(&self.state);
            let call_sid = std::mem::take(&mut self.call_sid);
            if tokio::runtime::Handle::try_current().is_ok() {
                self.state.calls.spawn(async move {
                    registry.release_call(&call_sid, &state.metrics).await;
                });
            } else {
                registry.forget(&call_sid);
            }
        }
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
/// are refused, live calls are asked to wrap up and end gracefully within `drain_timeout`,
/// the rest are closed with 1001.
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
        tracing::info!(%addr, ws_path = %state.config.server.ws_path, "listening");
    }
    let mut background = tokio::task::JoinSet::new();
    if let Some(tp) = state.config.task_protection.clone() {
        background.spawn(crate::ecs::protect_while_busy(
            tp,
            state.active_calls.subscribe(),
        ));
    }
    if let Some(emf) = state.config.emf.clone() {
        let totals = Arc::clone(&state);
        background.spawn(crate::ecs::publish_emf(
            emf,
            state.active_calls.subscribe(),
            move || totals.metrics.emf_totals(),
        ));
    }
    if let Some(registry) = state.registry.clone() {
        let state = Arc::clone(&state);
        background.spawn(async move { registry.renew_loop(&state.metrics).await });
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
    background.shutdown().await;
    Ok(report)
}

async fn drain(state: &AppState) -> DrainReport {
    state.draining.store(true, Ordering::Release);
    let calls_at_start = state.metrics.active_calls();
    tracing::info!(
        active_calls = calls_at_start,
        drain_timeout_ms = state.config.server.drain_timeout.as_millis() as u64,
        "draining"
    );
    state.calls.close();
    let deadline = tokio::time::Instant::now() + state.config.server.drain_timeout;
    state.stops.drain(deadline);
    let drained_cleanly = tokio::time::timeout_at(deadline, state.calls.wait())
        .await
        .is_ok();
    if !drained_cleanly {
        tracing::info!(
            remaining = state.metrics.active_calls(),
            "drain deadline reached, closing calls"
        );
        state.stops.close();
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
    // The calls' records: what is still queued for EventBridge goes now.
    if let Some(bus) = &state.bus {
        bus.close(EVENTS_FLUSH).await;
    }
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
    // EMFILE and friends: wait a little rather than spin.
    let backoff = crate::retry::Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    let mut failures = 0;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                failures = 0;
                connections.spawn(serve_connection(stream, peer, Arc::clone(state)));
            }
            Err(e) => {
                let wait = backoff.delay(failures);
                tracing::warn!(error = %e, backoff_ms = wait.as_millis() as u64, "accept failed");
                tokio::time::sleep(wait).await;
                failures = failures.saturating_add(1);
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, state: Arc<AppState>) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let handshake_timeout = state.config.server.handshake_timeout;
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, std::convert::Infallible>(http::route(req, &state, peer).await) }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn websocket_buffers_are_sized_for_20ms_frames() {
        let config = Config::from_source(&HashMap::<&str, &str>::new()).unwrap();
        let ws = AppState::new(config).unwrap().websocket_config();
        assert!(ws.read_buffer_size <= 4096, "not the 128 KiB default");
        assert_eq!(ws.write_buffer_size, 0, "writes go straight to the socket");
        // The largest allowed media message (16 000 bytes decoded) still fits.
        let cap = ws.max_message_size.unwrap();
        assert!((16_000 * 4 / 3..64 * 1024).contains(&cap), "{cap}");
        assert_eq!(ws.max_frame_size, Some(cap));
    }
}
