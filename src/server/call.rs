//! One call's life after the 101: the read loop with its guards (idle, keepalive,
//! backpressure, drain), the writer task, panic containment and the one summary log line.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::outbox;
use super::session::{CallError, Event, Session};
use super::{AppState, CallClaim};
use crate::agent::{self, AgentEnd, AgentEvent, AgentHandle, CallStart};
use crate::auth::Grant;
use crate::metrics::{Direction, Outcome};
use crate::registry::ClaimError;
use crate::relay::playout::{mark_name, Accepted, Playout, Release, FRAME_BYTES};
use crate::twilio::message::{ProtocolError, Start};

/// How long the peer may stay above the outbound byte limit before the call is closed.
pub const BACKPRESSURE_CLOSE_AFTER: Duration = Duration::from_secs(5);
/// Interval of the backpressure check.
const GUARD_TICK: Duration = Duration::from_millis(250);
/// How long closing (our close frame out, the peer's back) may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Counted outcome.
    pub outcome: Outcome,
    /// Close code we sent, if we closed.
    pub close_code: Option<u16>,
    /// Constant reason for the log.
    pub reason: &'static str,
    /// Media frames received.
    pub frames_in: u64,
    /// Media frames sent.
    pub frames_out: u64,
    /// Outbound frames dropped by backpressure.
    pub dropped: u64,
}

impl Summary {
    fn new(outcome: Outcome, close_code: Option<u16>, reason: &'static str) -> Self {
        Self {
            outcome,
            close_code,
            reason,
            frames_in: 0,
            frames_out: 0,
            dropped: 0,
        }
    }
}

/// Completes the upgrade and runs the call; the permit is held until the call ends.
pub(crate) async fn accept(
    on_upgrade: OnUpgrade,
    state: Arc<AppState>,
    grant: Grant,
    permit: OwnedSemaphorePermit,
    peer: SocketAddr,
) {
    let conn_id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!(
        "call",
        conn_id = %conn_id,
        %peer,
        stream_sid = tracing::field::Empty,
        call_sid = tracing::field::Empty,
    );
    async move {
        let upgraded = match tokio::time::timeout(state.config.handshake_timeout, on_upgrade).await
        {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
            Err(_) => {
                tracing::debug!("upgrade timed out");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(state.websocket_config()),
        )
        .await;
        supervise(&state, run(ws, &state, grant)).await;
        drop(permit);
    }
    .instrument(span)
    .await;
}

/// Runs one call's future with accounting: active gauge, outcome, duration, the summary log
/// line — and a panic inside it ends only this call (counted as `panic`).
pub async fn supervise<F>(state: &AppState, call: F) -> Summary
where
    F: Future<Output = Summary>,
{
    let started = Instant::now();
    let active = state.metrics.call_started();
    state.publish_active_calls();
    tracing::info!(active_calls = active, "call accepted");
    let summary = match AssertUnwindSafe(call).catch_unwind().await {
        Ok(summary) => summary,
        Err(_) => {
            tracing::error!("call task panicked; call ended");
            Summary::new(Outcome::panic, None, "internal error")
        }
    };
    let elapsed = started.elapsed();
    state
        .metrics
        .call_ended(summary.outcome, elapsed.as_secs_f64());
    state.publish_active_calls();
    tracing::info!(
        outcome = ?summary.outcome,
        close_code = summary.close_code,
        reason = summary.reason,
        frames_in = summary.frames_in,
        frames_out = summary.frames_out,
        dropped = summary.dropped,
        duration_ms = elapsed.as_millis() as u64,
        "call closed"
    );
    summary
}

/// The call loop over an upgraded WebSocket.
pub async fn run<S>(ws: WebSocketStream<S>, state: &Arc<AppState>, grant: Grant) -> Summary
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &state.config;
    let (sink, mut stream) = ws.split();
    let (outbox, writer) = outbox::channel(cfg.max_buffered_bytes);
    let mut writer_task = JoinSet::new();
    writer_task.spawn(outbox::write_loop(sink, writer));
    let mut call = Call {
        state,
        outbox,
        session: Session::new(grant.call_sid, cfg.max_media_payload_bytes)
            .with_account(cfg.twilio_account_sid.clone()),
        agent: None,
        agent_tasks: JoinSet::new(),
        claim: None,
        playout: Playout::new(cfg.playout_lead, cfg.playout_max),
        audio: Vec::with_capacity(1024),
        b64: String::with_capacity(256),
        frames_in: 0,
        frames_out: 0,
        dropped: 0,
    };

    let idle = tokio::time::sleep(cfg.idle_timeout);
    tokio::pin!(idle);
    let mut keepalive = tokio::time::interval_at(Instant::now() + cfg.keepalive, cfg.keepalive);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut guard = tokio::time::interval(GUARD_TICK);
    guard.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    let cancel = state.calls_cancel.clone();

    let mut summary = loop {
        let playout_due = call.playout.next_deadline();
        let msg = tokio::select! {
            biased;
            () = cancel.cancelled() => break Summary::new(Outcome::drained, Some(1001), "server shutting down"),
            msg = stream.next() => msg,
            event = next_agent_event(&mut call.agent) => {
                match call.on_agent_event(event) {
                    Some(end) => break end,
                    None => continue,
                }
            }
            () = sleep_until(playout_due) => {
                call.release(Instant::now());
                continue;
            }
            () = &mut idle => break Summary::new(Outcome::idle, Some(1000), "idle timeout"),
            _ = keepalive.tick() => {
                if awaiting_pong {
                    break Summary::new(Outcome::keepalive, Some(1001), "keepalive timeout");
                }
                awaiting_pong = true;
                if call.outbox.ping().is_err() {
                    break Summary::new(Outcome::disconnected, None, "writer closed");
                }
                continue;
            }
            _ = guard.tick() => {
                if call.outbox.over_limit_for(Instant::now()) >= BACKPRESSURE_CLOSE_AFTER {
                    break Summary::new(Outcome::backpressure, Some(1013), "peer too slow");
                }
                continue;
            }
        };
        let end = match msg {
            None => Some(Summary::new(Outcome::disconnected, None, "peer gone")),
            Some(Err(e)) => Some(read_error(&e)),
            Some(Ok(Message::Text(text))) => {
                idle.as_mut().reset(Instant::now() + cfg.idle_timeout);
                if text.as_str() == "ping" {
                    call.outbox
                        .pong_text()
                        .err()
                        .map(|_| Summary::new(Outcome::disconnected, None, "writer closed"))
                } else {
                    call.on_text(text.as_str()).await
                }
            }
            Some(Ok(Message::Binary(_))) => Some(call_error(ProtocolError::BinaryFrame.into())),
            Some(Ok(Message::Pong(_))) => {
                awaiting_pong = false;
                None
            }
            Some(Ok(Message::Close(_))) => {
                let outcome = if call.session.stopped() {
                    Outcome::normal
                } else {
                    Outcome::disconnected
                };
                // tungstenite answers the peer's close itself.
                Some(Summary::new(outcome, None, "peer closed"))
            }
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => None,
        };
        if let Some(end) = end {
            break end;
        }
    };
    summary.frames_in = call.frames_in;
    summary.frames_out = call.frames_out;
    summary.dropped = call.dropped;

    // Tell the agent first (dropping its audio sender closes its socket), then Twilio.
    call.agent = None;
    if let Some(code) = summary.close_code {
        // The writer may already be gone (peer vanished); then there is nobody to tell.
        let _ = call.outbox.close(code, summary.reason);
    }
    let Call {
        outbox,
        mut agent_tasks,
        claim,
        ..
    } = call;
    drop(outbox);
    let closed = tokio::time::timeout(CLOSE_WAIT, async {
        // Let the writer send the close frame, then wait for the peer's close (or EOF),
        // while the agent session closes its own socket.
        while writer_task.join_next().await.is_some() {}
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
        }
        while agent_tasks.join_next().await.is_some() {}
    })
    .await;
    if closed.is_err() {
        tracing::debug!("close handshake timed out");
    }
    writer_task.shutdown().await;
    agent_tasks.shutdown().await;
    drop(claim);
    summary
}

/// One call's state inside the loop.
struct Call<'a> {
    state: &'a Arc<AppState>,
    outbox: outbox::Outbox,
    session: Session,
    agent: Option<AgentHandle>,
    agent_tasks: JoinSet<()>,
    claim: Option<CallClaim>,
    playout: Playout,
    /// Decoded caller audio of the current frame (reused).
    audio: Vec<u8>,
    /// Base64 of the current outbound frame (reused).
    b64: String,
    frames_in: u64,
    frames_out: u64,
    dropped: u64,
}

impl Call<'_> {
    async fn on_text(&mut self, text: &str) -> Option<Summary> {
        let (name, result) = self.session.on_text(text, &mut self.audio);
        self.state.metrics.event(name);
        match result {
            Ok(Event::Started(start)) => self.on_start(*start).await,
            Ok(event) => self.on_event(event),
            Err(e) => Some(call_error(e)),
        }
    }

    async fn on_start(&mut self, start: Start) -> Option<Summary> {
        let span = tracing::Span::current();
        span.record("stream_sid", start.stream_sid.as_str());
        span.record("call_sid", start.call_sid.as_str());
        tracing::info!(
            tracks = start.tracks.len(),
            custom_parameters = start.custom_parameters.0.len(),
            "stream started"
        );
        self.start_agent(start).await
    }

    fn on_event(&mut self, event: Event) -> Option<Summary> {
        match event {
            Event::Nothing | Event::Dtmf => None,
            Event::Mark(name) => {
                self.playout.on_mark(&name, Instant::now());
                None
            }
            // Handled by `on_start` (it may wait for the call registry).
            Event::Started(_) => None,
            Event::Audio(bytes) => {
                self.frames_in += 1;
                self.state.metrics.frame(Direction::inbound, bytes);
                if let Some(agent) = &self.agent {
                    if !agent.send_audio(&self.audio) {
                        self.dropped += 1;
                        self.state.metrics.dropped("agent_slow", 1);
                    }
                }
                None
            }
            Event::Stopped => {
                tracing::info!("stream stopped");
                Some(Summary::new(Outcome::normal, Some(1000), "stream stopped"))
            }
        }
    }

    async fn start_agent(&mut self, start: Start) -> Option<Summary> {
        let agent = self.state.agent.as_ref()?;
        let duplicate = || {
            tracing::warn!("second stream for a live call refused");
            Some(Summary::new(
                Outcome::duplicate,
                Some(1008),
                "duplicate stream for call",
            ))
        };
        let Some(mut claim) = self.state.claim_call(start.call_sid.as_str()) else {
            return duplicate();
        };
        match claim.claim_fleet().await {
            Ok(()) => {}
            Err(ClaimError::Taken) => return duplicate(),
            Err(ClaimError::Unavailable(cause)) => {
                tracing::error!(error = %cause, "call registry unavailable, refusing the call");
                return Some(Summary::new(
                    Outcome::unavailable,
                    Some(1013),
                    "call registry unavailable",
                ));
            }
        }
        self.claim = Some(claim);
        let (handle, io) = agent::channels(Arc::clone(self.state));
        let call = CallStart {
            call_sid: start.call_sid.as_str().to_string(),
            stream_sid: start.stream_sid.as_str().to_string(),
            parameters: start.custom_parameters.0,
        };
        self.agent_tasks
            .spawn(agent.session(call, io).instrument(tracing::Span::current()));
        self.agent = Some(handle);
        None
    }

    fn on_agent_event(&mut self, event: AgentEvent) -> Option<Summary> {
        let now = Instant::now();
        match event {
            AgentEvent::Audio { ulaw, event_id } => {
                match self.playout.push(&ulaw, event_id) {
                    Accepted::Queued => {}
                    Accepted::Stale => self.state.metrics.dropped("interrupted", 1),
                    Accepted::Overflow(bytes) => {
                        self.dropped += 1;
                        self.state
                            .metrics
                            .dropped("playout_full", bytes.div_ceil(FRAME_BYTES) as u64);
                    }
                }
                self.release(now);
                None
            }
            AgentEvent::Interruption {
                event_id,
                received_at,
            } => {
                let held = self.playout.interrupt(event_id, now);
                if let Some(sid) = self.session.stream_sid() {
                    if self.outbox.clear(sid.as_str()).is_err() {
                        return Some(Summary::new(Outcome::disconnected, None, "writer closed"));
                    }
                }
                let latency = received_at.elapsed();
                self.state.metrics.bargein(latency.as_secs_f64());
                tracing::debug!(
                    dropped_frames = held,
                    latency_us = latency.as_micros() as u64,
                    "barge-in"
                );
                None
            }
            AgentEvent::Ended(end) => {
                self.agent = None;
                let (outcome, reason) = match end {
                    AgentEnd::Finished => (Outcome::normal, "agent ended"),
                    AgentEnd::Closed(_) => (Outcome::agent_error, "agent closed"),
                    AgentEnd::Unreachable => (Outcome::agent_error, "agent unavailable"),
                    AgentEnd::ProtocolError => (Outcome::agent_error, "agent protocol error"),
                };
                tracing::info!(end = ?end, "closing call after agent end");
                // 1000 so Twilio continues with the TwiML after <Connect>.
                Some(Summary::new(outcome, Some(1000), reason))
            }
        }
    }

    /// Sends whatever the playout releases at `now`.
    fn release(&mut self, now: Instant) {
        let Some(sid) = self.session.stream_sid() else {
            return;
        };
        while let Some(item) = self.playout.poll(now) {
            match item {
                Release::Frame(frame) => {
                    self.b64.clear();
                    STANDARD.encode_string(&frame, &mut self.b64);
                    match self.outbox.media(sid.as_str(), &self.b64) {
                        Ok(()) => {
                            self.frames_out += 1;
                            self.state.metrics.frame(Direction::outbound, frame.len());
                        }
                        Err(_) => {
                            self.dropped += 1;
                            self.state.metrics.dropped("backpressure", 1);
                        }
                    }
                    self.playout.recycle(frame);
                }
                Release::Mark(id) => {
                    mark_name(id, &mut self.b64);
                    // A refused mark only means the writer is gone; the loop sees that next.
                    let _ = self.outbox.mark(sid.as_str(), &self.b64);
                }
            }
        }
    }
}

async fn next_agent_event(agent: &mut Option<AgentHandle>) -> AgentEvent {
    match agent {
        Some(handle) => handle.next_event().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn call_error(e: CallError) -> Summary {
    tracing::info!(error = %e, "closing call");
    Summary::new(e.outcome(), Some(e.close_code()), e.reason())
}

fn read_error(e: &WsError) -> Summary {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            call_error(ProtocolError::PayloadTooLarge.into())
        }
        WsError::Protocol(
            tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Summary::new(Outcome::disconnected, None, "peer reset"),
        WsError::Utf8(_) => Summary::new(Outcome::protocol_error, Some(1007), "invalid utf-8"),
        WsError::Protocol(_) | WsError::Capacity(_) => {
            tracing::debug!(error = %e, "websocket protocol error");
            Summary::new(
                Outcome::protocol_error,
                Some(1002),
                "websocket protocol error",
            )
        }
        _ => {
            tracing::debug!(error = %e, "websocket read failed");
            Summary::new(Outcome::disconnected, None, "read failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn a_panicking_call_is_contained_and_counted() {
        let config = Config::from_source(&HashMap::<&str, &str>::new()).unwrap();
        let state = AppState::new(config).unwrap();
        let summary = supervise(&state, async {
            if state.metrics.active_calls() == 1 {
                panic!("bug in a call");
            }
            Summary::new(Outcome::normal, None, "unreachable")
        })
        .await;
        assert_eq!(summary.outcome, Outcome::panic);
        assert_eq!(state.metrics.active_calls(), 0);
        assert!(state
            .metrics
            .render()
            .contains("media_calls_total{outcome=\"panic\"} 1"));
        // The runtime and the server state are intact: the next call runs normally.
        let next = supervise(&state, async {
            Summary::new(Outcome::normal, Some(1000), "ok")
        })
        .await;
        assert_eq!(next.outcome, Outcome::normal);
    }
}
