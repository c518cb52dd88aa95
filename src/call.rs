//! One call = one task: the Twilio socket and the agent socket (or the echo's delay line) are
//! owned by one loop with one `select!` — Twilio frame, agent frame, agent connect, the next
//! deadline (playout, marks, guards), drain. Every input goes to the pure [`Relay`]; what it
//! hands back is written straight to its socket ([`conn::Conn`]). Generic over the sockets,
//! so component tests drive a whole call over in-memory pipes.

pub mod conn;
pub mod stop;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::Message;

pub use conn::{Conn, Socket};
pub use stop::{CallStops, Shutdown, Stop};

use crate::agent::AgentConnector;
use crate::elevenlabs::client::ConnectError;
use crate::metrics::{Direction, Metrics, Outcome};
use crate::relay::{
    twilio_gone, Ending, Input, Output, Relay, RelayConfig, Then, TwilioEnd, TwilioKind,
};
use crate::twilio::rest::RestError;

/// How long Twilio may stay behind by more than the byte limit before the call is closed
/// with 1013: the write budget of a peer that stopped reading.
pub const BACKPRESSURE_CLOSE_AFTER: Duration = Duration::from_secs(5);
/// How long closing (our close frame out, the peer's back) may take.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Counters of long calls reach the metrics at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Bytes of caller audio that may wait for a slow agent (about 50 frames of 20 ms).
const AGENT_BACKLOG_BYTES: usize = 64 * 1024;

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
    /// Frames dropped, any reason.
    pub dropped: u64,
}

impl Summary {
    /// A summary with no frames (a call that never got going).
    pub fn new(outcome: Outcome, close_code: Option<u16>, reason: &'static str) -> Self {
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

/// What the call needs from the server it runs in.
pub trait Host: Sync {
    /// Held for the life of the call once granted (one stream per CallSid).
    type Claim: Send;

    /// The server's metrics (per-call counters are flushed into them).
    fn metrics(&self) -> &Metrics;

    /// Admits the call: claims `call_sid` for this stream when the stream is `bound` to it,
    /// and holds an agent slot when the fleet counts them — or says how the call ends instead.
    fn claim(
        &self,
        call_sid: &str,
        bound: bool,
    ) -> impl Future<Output = Result<Self::Claim, Ending>> + Send;

    /// Hangs up `call_sid` through Twilio's REST API.
    fn hang_up(&self, call_sid: &str) -> impl Future<Output = Result<(), RestError>> + Send;

    /// Replaces what `call_sid` runs with `twiml` (a transfer).
    fn redirect(
        &self,
        call_sid: &str,
        twiml: &str,
    ) -> impl Future<Output = Result<(), RestError>> + Send;

    /// Replaces what `call_sid` runs with the overflow TwiML (no agent for this call).
    fn overflow(&self, call_sid: &str) -> impl Future<Output = Result<(), RestError>> + Send;

    /// Gives the claim back, time-bounded, before the stream is closed: Twilio may stream the
    /// same call again (a `<Redirect>` after `<Connect>`) to another task at once.
    fn release(&self, claim: Self::Claim) -> impl Future<Output = ()> + Send;
}

/// Limits of one call's sockets.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of audio that may wait for Twilio before frames are dropped.
    pub max_buffered_bytes: usize,
}

type Connecting<'a, S> = Pin<Box<dyn Future<Output = Result<S, ConnectError>> + Send + 'a>>;
type Transferring<'a> = Pin<Box<dyn Future<Output = Result<(), RestError>> + Send + 'a>>;

/// What the write step leaves to the loop: requests it must await alongside the sockets.
#[derive(Debug)]
pub enum Action {
    /// The stream started: claim the call and connect the agent.
    Start(crate::agent::CallStart),
    /// Put this transfer TwiML on the call.
    Transfer(String),
}

/// Runs one call over `twilio` until it ends; returns how.
pub async fn run<T, A, H>(
    twilio: T,
    agent: &A,
    host: &H,
    config: RelayConfig,
    bound_call_sid: Option<String>,
    limits: Limits,
    mut shutdown: Shutdown,
) -> Summary
where
    T: Socket,
    A: AgentConnector,
    H: Host,
{
    let metrics = host.metrics();
    let mut tw = Conn::new(twilio, limits.max_buffered_bytes);
    let mut relay = Relay::new(config, bound_call_sid, Instant::now());
    let mut remote: Option<Conn<A::Socket>> = None;
    let mut connecting: Option<Connecting<'_, A::Socket>> = None;
    let mut connect_started = Instant::now();
    let mut transferring: Option<Transferring<'_>> = None;
    let mut transfer_started = Instant::now();
    let mut claim: Option<H::Claim> = None;
    let mut call_sid: Option<String> = None;
    let mut flushed_at = Instant::now();
    let mut shutting_down = false;
    // The frame just read, for the latency the bridge adds: read → its outputs written.
    let mut just_read: Option<(Direction, Instant)> = None;

    loop {
        let read_at = Instant::now();
        let action = drain(&mut relay, &mut tw, remote.as_mut(), metrics, read_at);
        if let Some((direction, at)) = just_read.take() {
            metrics.bridge_latency(direction, at.elapsed());
        }
        if let Some(Action::Transfer(twiml)) = action {
            match call_sid.clone() {
                Some(sid) => {
                    tracing::info!("transfer requested from twilio");
                    transfer_started = Instant::now();
                    transferring = Some(Box::pin(async move { host.redirect(&sid, &twiml).await }));
                }
                None => relay.handle(Input::TransferDone { ok: false }, Instant::now()),
            }
            continue;
        }
        if let Some(Action::Start(call)) = action {
            let span = tracing::Span::current();
            span.record("stream_sid", call.stream_sid.as_str());
            span.record("call_sid", call.call_sid.as_str());
            call_sid = Some(call.call_sid.clone());
            tracing::info!(custom_parameters = call.parameters.len(), "stream started");
            if agent.mode() == crate::relay::AgentMode::None {
                continue;
            }
            // Only a stream bound to its CallSid claims it (an unbound one could pre-claim
            // another caller's call and have the real stream refused as a duplicate).
            match host.claim(&call.call_sid, relay.bound()).await {
                Ok(c) => {
                    claim = Some(c);
                    if relay.agent_active() {
                        connect_started = Instant::now();
                        connecting = Some(Box::pin(agent.connect()));
                    } else {
                        relay.handle(Input::AgentConnected, Instant::now());
                    }
                }
                Err(ending) => relay.handle(Input::Refused(ending), Instant::now()),
            }
            continue;
        }
        if relay.ending().is_some() {
            break;
        }
        if read_at >= flushed_at + FLUSH_EVERY {
            metrics.flush_call(&mut relay.counters);
            flushed_at = read_at;
        }
        let mut deadline = relay.next_deadline();
        if let Some(since) = tw.over_since() {
            deadline = deadline.min(since + BACKPRESSURE_CLOSE_AFTER);
        }
        tokio::select! {
            biased;
            stop = shutdown.next(), if !shutting_down => match stop {
                Stop::Drain(deadline) => relay.handle(Input::Drain(deadline), Instant::now()),
                Stop::Close => {
                    shutting_down = true;
                    relay.handle(Input::Shutdown, Instant::now());
                }
            },
            msg = tw.next() => {
                let now = Instant::now();
                on_twilio(&mut relay, msg, now);
                just_read = Some((Direction::inbound, now));
            }
            msg = next_remote(&mut remote) => {
                let now = Instant::now();
                let gone = matches!(msg, None | Some(Err(_) | Ok(Message::Close(_))));
                match msg {
                    Some(Ok(Message::Text(text))) => relay.handle(Input::AgentText(text.as_str()), now),
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.as_ref().map(|f| u16::from(f.code));
                        // ElevenLabs' reasons are constants (invalid_message, …), never content.
                        let reason = frame.as_ref().map(|f| f.reason.chars().take(64).collect::<String>());
                        tracing::info!(agent_close_code = code, agent_close_reason = reason.as_deref(), "agent closed");
                        relay.handle(Input::AgentGone(code), now);
                    }
                    // Pings, pongs, binary: the agent is alive.
                    Some(Ok(_)) => relay.handle(Input::AgentAlive, now),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "agent socket failed");
                        relay.handle(Input::AgentGone(None), now);
                    }
                    None => relay.handle(Input::AgentGone(None), now),
                }
                if gone {
                    // The leg is over (the call may go on: a goodbye still playing).
                    remote = None;
                }
                just_read = Some((Direction::outbound, now));
            }
            socket = poll_connecting(&mut connecting) => {
                connecting = None;
                match socket {
                    Ok(socket) => {
                        tracing::info!(
                            connect_ms = connect_started.elapsed().as_millis() as u64,
                            "agent connected"
                        );
                        remote = Some(Conn::new(socket, AGENT_BACKLOG_BYTES));
                        relay.handle(Input::AgentConnected, Instant::now());
                    }
                    Err(ConnectError::Busy) => relay.handle(Input::AgentBusy, Instant::now()),
                    Err(e) => {
                        tracing::warn!(error = %e, "agent unreachable");
                        relay.handle(Input::AgentUnreachable, Instant::now());
                    }
                }
            }
            result = poll_transferring(&mut transferring) => {
                transferring = None;
                let ok = rest_done(metrics, "transfer", transfer_started, &result);
                relay.handle(Input::TransferDone { ok }, Instant::now());
            }
            () = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                if tw.over_limit_for(now) >= BACKPRESSURE_CLOSE_AFTER {
                    relay.handle(Input::TwilioTooSlow, now);
                }
                relay.handle(Input::Tick, now);
            }
        }
    }

    let ending = relay
        .ending()
        .unwrap_or(Ending::new(Outcome::normal, None, "ended"));
    drop(connecting);
    drop(transferring);
    let agent_closed = async {
        if let Some(remote) = &mut remote {
            remote.close(1000, "call ended", CLOSE_WAIT).await;
        }
    };
    // The claim goes before the stream closes: Twilio may stream this call again at once.
    match (ending.then, call_sid.as_deref()) {
        (Then::HangUp, Some(sid)) => {
            // The agent leg first (no agent audio bleeds into what Twilio does next), then
            // the REST hang-up.
            agent_closed.await;
            let started = Instant::now();
            let result = host.hang_up(sid).await;
            rest_done(metrics, "hang_up", started, &result);
            release(host, claim).await;
            close_twilio(&mut tw, ending).await;
        }
        (Then::Overflow, Some(sid)) => {
            agent_closed.await;
            let started = Instant::now();
            let result = host.overflow(sid).await;
            rest_done(metrics, "overflow", started, &result);
            release(host, claim).await;
            close_twilio(&mut tw, ending).await;
        }
        _ => {
            release(host, claim).await;
            tokio::join!(agent_closed, close_twilio(&mut tw, ending));
        }
    }
    metrics.flush_call(&mut relay.counters);
    Summary {
        outcome: ending.outcome,
        close_code: ending.close_code,
        reason: ending.reason,
        frames_in: relay.counters.frames_in,
        frames_out: relay.counters.frames_out,
        dropped: relay.counters.dropped,
    }
}

/// The loop's write step: everything the relay has to send at `now`, written to its socket
/// (dropped audio counted). Returns what the loop must await (the call's claim and agent
/// connect, a transfer). Public for the allocation test, which drives the round trip by hand.
pub fn drain<T: Socket, S: Socket>(
    relay: &mut Relay,
    tw: &mut Conn<T>,
    mut remote: Option<&mut Conn<S>>,
    metrics: &Metrics,
    now: Instant,
) -> Option<Action> {
    loop {
        let mut sent_media = None;
        let mut dropped_twilio = false;
        let mut dropped_agent = false;
        match relay.poll_output(now)? {
            Output::Twilio(text, TwilioKind::Media(bytes)) => {
                if tw.send_text(text, true) {
                    sent_media = Some(bytes);
                } else {
                    dropped_twilio = true;
                }
            }
            Output::Twilio(text, TwilioKind::Control) => {
                tw.send_text(text, false);
            }
            Output::Twilio(text, TwilioKind::Clear(read_at)) => {
                tw.send_text(text, false);
                let latency = read_at.elapsed();
                metrics.bargein(latency.as_secs_f64());
                tracing::debug!(latency_us = latency.as_micros() as u64, "clear sent");
            }
            Output::TwilioPing => tw.ping(),
            Output::AgentPing => {
                if let Some(r) = remote.as_deref_mut() {
                    r.ping();
                }
            }
            Output::Agent(text, audio) => {
                if let Some(r) = remote.as_deref_mut() {
                    dropped_agent = !r.send_text(text, audio);
                }
            }
            Output::AgentBinary(data) => {
                if let Some(r) = remote.as_deref_mut() {
                    dropped_agent = !r.send_binary(data, true);
                }
            }
            Output::Start(call) => return Some(Action::Start(call)),
            Output::Transfer(twiml) => return Some(Action::Transfer(twiml.to_string())),
        }
        if let Some(bytes) = sent_media {
            relay.counters.frame_out(bytes);
        }
        if dropped_twilio {
            relay.counters.drop(crate::relay::Drop::Backpressure, 1);
        }
        if dropped_agent {
            relay.counters.drop(crate::relay::Drop::AgentSlow, 1);
        }
    }
}

/// Counts and logs a REST request's result (Twilio's code, never its message or a number);
/// returns whether it succeeded.
fn rest_done(
    metrics: &Metrics,
    op: &'static str,
    started: Instant,
    result: &Result<(), RestError>,
) -> bool {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(()) => {
            metrics.twilio_rest(op, "ok", None);
            tracing::info!(op, elapsed_ms, "twilio rest request done");
            true
        }
        Err(e) => {
            metrics.twilio_rest(op, e.label(), e.code());
            tracing::warn!(op, error = %e, twilio_code = e.code(), elapsed_ms, "twilio rest request failed");
            false
        }
    }
}

async fn release<H: Host>(host: &H, claim: Option<H::Claim>) {
    if let Some(claim) = claim {
        host.release(claim).await;
    }
}

/// Closes Twilio's socket as `ending` says: our close frame, or (Twilio closed first) the
/// end of its handshake.
async fn close_twilio<T: Socket>(tw: &mut Conn<T>, ending: Ending) {
    match ending.close_code {
        Some(code) => tw.close(code, ending.reason, CLOSE_WAIT).await,
        None => tw.finish(CLOSE_WAIT).await,
    }
}

fn on_twilio(relay: &mut Relay, msg: Option<Result<Message, WsError>>, now: Instant) {
    let input = match msg {
        None => Input::TwilioGone(twilio_gone(relay.stopped(), TwilioEnd::Gone)),
        Some(Err(e)) => Input::TwilioGone(twilio_gone(relay.stopped(), read_error(&e))),
        Some(Ok(Message::Text(text))) => {
            relay.handle(Input::TwilioText(text.as_str()), now);
            return;
        }
        Some(Ok(Message::Binary(_))) => Input::TwilioBinary,
        Some(Ok(Message::Pong(_))) => Input::TwilioPong,
        Some(Ok(Message::Close(_))) => {
            Input::TwilioGone(twilio_gone(relay.stopped(), TwilioEnd::Closed))
        }
        Some(Ok(Message::Ping(_) | Message::Frame(_))) => return,
    };
    relay.handle(input, now);
}

fn read_error(e: &WsError) -> TwilioEnd {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => TwilioEnd::TooLarge,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => TwilioEnd::Reset,
        WsError::Utf8(_) => TwilioEnd::InvalidUtf8,
        WsError::Protocol(_) | WsError::Capacity(_) => {
            tracing::debug!(error = %e, "websocket protocol error");
            TwilioEnd::Protocol
        }
        _ => {
            tracing::debug!(error = %e, "websocket read failed");
            TwilioEnd::ReadFailed
        }
    }
}

async fn next_remote<S: Socket>(remote: &mut Option<Conn<S>>) -> Option<Result<Message, WsError>> {
    match remote {
        Some(conn) => conn.next().await,
        None => std::future::pending().await,
    }
}

async fn poll_transferring(transferring: &mut Option<Transferring<'_>>) -> Result<(), RestError> {
    match transferring {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

async fn poll_connecting<S>(connecting: &mut Option<Connecting<'_, S>>) -> Result<S, ConnectError> {
    match connecting {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
