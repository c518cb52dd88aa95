//! One call = one task ([`run`]): the Twilio socket, the agent leg (claim, connect, socket)
//! and the host's requests are arms of one `select!`; every input goes to the pure
//! [`Relay`], and what it hands back is written straight to its socket ([`Conn`]). The call's
//! ports ([`Host`], [`AgentConnector`]) are defined here, so component tests drive a whole
//! call over in-memory pipes.

pub mod stop;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use std::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::Message;

pub use stop::{CallStops, Shutdown, Stop};

use crate::metrics::{Direction, Metrics};
use crate::relay::{
    twilio_gone, AgentMode, CallFacts, CallStart, EndReason, Ending, Input, LatencyTally, Outcome,
    Output, Relay, RelayConfig, Then, TwilioEnd, TwilioKind,
};
use crate::twilio::rest::RestError;
use crate::ws::{Conn, Socket};

/// Now on tokio's clock (paused in component tests), as the relay's `std` instant.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Time since `at` on that clock.
fn since(at: Instant) -> Duration {
    clock().saturating_duration_since(at)
}

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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// What the call record needs beyond the summary, once the stream had started.
    pub report: Option<Box<CallReport>>,
}

/// A started stream's record, as the driver saw it end: the relay's facts, the ending's
/// cause, the latency the bridge added and a refused transfer's Twilio code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReport {
    /// Ids, timings and counts from the relay.
    pub facts: CallFacts,
    /// The ending's cause ([`crate::relay::EndReason::cause`]).
    pub ending: &'static str,
    /// The latency the bridge added to caller frames (inbound) and agent frames (outbound).
    pub bridge: [LatencyTally; 2],
    /// Twilio's error code when a transfer was refused.
    pub transfer_code: Option<u32>,
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
            report: None,
        }
    }
}

/// How a call reaches its agent (`crate::agent::Agent` in the server, a pipe in tests).
pub trait AgentConnector: Send + Sync {
    /// The agent socket.
    type Socket: Socket + 'static;
    /// Why a connect failed (logged).
    type Error: std::fmt::Display + Send;

    /// How the relay treats the agent.
    fn mode(&self) -> AgentMode;

    /// Opens the agent socket (remote agents only), with the agent's retries and timeouts.
    fn connect(&self) -> impl Future<Output = Result<Self::Socket, Self::Error>> + Send;

    /// Whether `error` says the agent's plan is full (the call goes to the overflow, not
    /// the failure path).
    fn plan_full(error: &Self::Error) -> bool;
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

type Claiming<'a, C> = Pin<Box<dyn Future<Output = Result<C, Ending>> + Send + 'a>>;
type Connecting<'a, S, E> = Pin<Box<dyn Future<Output = Result<S, E>> + Send + 'a>>;
type Transferring<'a> = Pin<Box<dyn Future<Output = Result<(), RestError>> + Send + 'a>>;

/// What the write step leaves to the loop: requests it must await alongside the sockets.
#[derive(Debug)]
pub enum Action {
    /// The stream started: claim the call and connect the agent.
    Start(CallStart),
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
    shutdown: Shutdown,
) -> Summary
where
    T: Socket,
    A: AgentConnector,
    H: Host,
{
    let now = clock();
    CallTask {
        tw: Conn::new(twilio, limits.max_buffered_bytes),
        relay: Relay::new(config, bound_call_sid, now),
        agent,
        host,
        leg: Leg::Idle,
        transfer: None,
        claim: None,
        call_sid: None,
        flushed_at: now,
        shutdown,
        shutting_down: false,
        just_read: None,
        bridge: Default::default(),
        transfer_code: None,
    }
    .run()
    .await
}

/// The agent side of a call, step by step.
enum Leg<'a, A: AgentConnector, C> {
    /// No agent yet (before `start`), or none any more.
    Idle,
    /// The host is admitting the call (CallSid claim, agent slot).
    Claiming(Claiming<'a, C>),
    /// The agent socket is being opened, since this instant.
    Connecting(Connecting<'a, A::Socket, A::Error>, Instant),
    /// The agent socket is open.
    Open(Conn<A::Socket>),
}

/// What woke the loop.
enum Wake<S, E, C> {
    Stop(Stop),
    Twilio(Option<Result<Message, WsError>>),
    Agent(Option<Result<Message, WsError>>),
    Claimed(Result<C, Ending>),
    Connected(Result<S, E>),
    Transferred(Result<(), RestError>),
    Deadline,
}

/// One call's state: both sockets, the relay, the agent leg, the host's requests in flight.
/// `run` is the loop: write what the relay has, wait for the next thing, hand it to the relay.
struct CallTask<'a, T: Socket, A: AgentConnector, H: Host> {
    tw: Conn<T>,
    relay: Relay,
    agent: &'a A,
    host: &'a H,
    leg: Leg<'a, A, H::Claim>,
    transfer: Option<(Transferring<'a>, Instant)>,
    claim: Option<H::Claim>,
    call_sid: Option<String>,
    flushed_at: Instant,
    shutdown: Shutdown,
    shutting_down: bool,
    /// The frame just read, for the latency the bridge adds: read → its outputs written.
    just_read: Option<(Direction, Instant)>,
    /// That latency for this call's record, inbound and outbound.
    bridge: [LatencyTally; 2],
    /// Twilio's code for a refused transfer.
    transfer_code: Option<u32>,
}

impl<'a, T: Socket, A: AgentConnector, H: Host> CallTask<'a, T, A, H> {
    async fn run(mut self) -> Summary {
        while self.write_outputs() {
            let wake = self.next_wake().await;
            self.on_wake(wake);
        }
        self.finish().await
    }

    /// Writes everything the relay has; starts what it asks for. `false` once it ended.
    fn write_outputs(&mut self) -> bool {
        let metrics = self.host.metrics();
        loop {
            let read_at = clock();
            let remote = match &mut self.leg {
                Leg::Open(conn) => Some(conn),
                _ => None,
            };
            let action = drain(&mut self.relay, &mut self.tw, remote, metrics, read_at);
            if let Some((direction, at)) = self.just_read.take() {
                let latency = since(at);
                metrics.bridge_latency(direction, latency);
                self.bridge[direction as usize].record(latency);
            }
            match action {
                Some(Action::Start(call)) => self.on_start(call),
                Some(Action::Transfer(twiml)) => self.on_transfer(twiml),
                None => break,
            }
        }
        if self.relay.ending().is_some() {
            return false;
        }
        let now = clock();
        if now >= self.flushed_at + FLUSH_EVERY {
            metrics.flush_call(&mut self.relay.counters);
            self.flushed_at = now;
        }
        true
    }

    fn on_start(&mut self, call: CallStart) {
        let span = tracing::Span::current();
        span.record("stream_sid", call.stream_sid.as_str());
        span.record("call_sid", call.call_sid.as_str());
        tracing::info!(custom_parameters = call.parameters.len(), "stream started");
        self.call_sid = Some(call.call_sid.clone());
        if self.agent.mode() == AgentMode::None {
            return;
        }
        // Only a stream bound to its CallSid claims it (an unbound one could pre-claim
        // another caller's call and have the real stream refused as a duplicate). The claim
        // is a select arm: Twilio's socket and the drain are watched meanwhile.
        let (host, bound) = (self.host, self.relay.bound());
        self.leg = Leg::Claiming(Box::pin(
            async move { host.claim(&call.call_sid, bound).await },
        ));
    }

    fn on_transfer(&mut self, twiml: String) {
        match (self.call_sid.clone(), self.host) {
            (Some(sid), host) => {
                tracing::info!("transfer requested from twilio");
                let request = Box::pin(async move { host.redirect(&sid, &twiml).await });
                self.transfer = Some((request, clock()));
            }
            (None, _) => self
                .relay
                .handle(Input::TransferDone { ok: false }, clock()),
        }
    }

    async fn next_wake(&mut self) -> Wake<A::Socket, A::Error, H::Claim> {
        let mut deadline = self.relay.next_deadline(clock());
        if let Some(over) = self.tw.over_since() {
            deadline = deadline.min(over.into_std() + BACKPRESSURE_CLOSE_AFTER);
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        let watch_stop = !self.shutting_down;
        tokio::select! {
            biased;
            stop = self.shutdown.next(), if watch_stop => Wake::Stop(stop),
            msg = self.tw.next() => Wake::Twilio(msg),
            wake = leg_next(&mut self.leg) => wake,
            result = poll_transfer(&mut self.transfer) => Wake::Transferred(result),
            () = tokio::time::sleep_until(deadline) => Wake::Deadline,
        }
    }

    fn on_wake(&mut self, wake: Wake<A::Socket, A::Error, H::Claim>) {
        let now = clock();
        match wake {
            Wake::Stop(Stop::Drain(deadline)) => {
                self.relay.handle(Input::Drain(deadline.into_std()), now);
            }
            Wake::Stop(Stop::Close) => {
                self.shutting_down = true;
                self.relay.handle(Input::Shutdown, now);
            }
            Wake::Twilio(msg) => {
                on_twilio(&mut self.relay, msg, now);
                self.just_read = Some((Direction::inbound, now));
            }
            Wake::Agent(msg) => {
                if on_agent(&mut self.relay, msg, now) {
                    // The leg is over (the call may go on: a goodbye still playing).
                    self.leg = Leg::Idle;
                }
                self.just_read = Some((Direction::outbound, now));
            }
            Wake::Claimed(Ok(claim)) => {
                self.claim = Some(claim);
                self.leg = Leg::Idle;
                if self.relay.agent_active() {
                    self.leg = Leg::Connecting(Box::pin(self.agent.connect()), now);
                } else {
                    self.relay.handle(Input::AgentConnected, now);
                }
            }
            Wake::Claimed(Err(ending)) => {
                self.leg = Leg::Idle;
                self.relay.handle(Input::Refused(ending), now);
            }
            Wake::Connected(result) => {
                let started = match &self.leg {
                    Leg::Connecting(_, started) => *started,
                    _ => now,
                };
                self.leg = Leg::Idle;
                match result {
                    Ok(socket) => {
                        let connect_ms = since(started).as_millis() as u64;
                        tracing::info!(connect_ms, "agent connected");
                        self.leg = Leg::Open(Conn::new(socket, AGENT_BACKLOG_BYTES));
                        self.relay.handle(Input::AgentConnected, now);
                    }
                    Err(e) if A::plan_full(&e) => self.relay.handle(Input::AgentBusy, now),
                    Err(e) => {
                        tracing::warn!(error = %e, "agent unreachable");
                        self.relay.handle(Input::AgentUnreachable, now);
                    }
                }
            }
            Wake::Transferred(result) => {
                let started = self.transfer.take().map_or(now, |(_, at)| at);
                let ok = rest_done(self.host.metrics(), "transfer", started, &result);
                self.transfer_code = result.err().and_then(|e| e.code());
                self.relay.handle(Input::TransferDone { ok }, now);
            }
            Wake::Deadline => {
                let tokio_now = tokio::time::Instant::from_std(now);
                if self.tw.over_limit_for(tokio_now) >= BACKPRESSURE_CLOSE_AFTER {
                    self.relay.handle(Input::TwilioTooSlow, now);
                }
                self.relay.handle(Input::Tick, now);
            }
        }
    }

    /// The ending carried out: the claim goes before the stream closes (Twilio may stream
    /// this call again at once); REST actions after the agent leg is closed, so no agent
    /// audio bleeds into what Twilio does next.
    async fn finish(mut self) -> Summary {
        let metrics = self.host.metrics();
        let ending = self.relay.ending().unwrap_or(Ending::of(EndReason::Ended));
        self.transfer = None;
        let mut remote = match std::mem::replace(&mut self.leg, Leg::Idle) {
            Leg::Open(conn) => Some(conn),
            _ => None,
        };
        let agent_closed = async {
            if let Some(remote) = &mut remote {
                remote.close(1000, "call ended", CLOSE_WAIT).await;
            }
        };
        let rest = match ending.then {
            Then::HangUp => Some("hang_up"),
            Then::Overflow => Some("overflow"),
            Then::Close => None,
        };
        match (rest, self.call_sid.as_deref()) {
            (Some(op), Some(sid)) => {
                agent_closed.await;
                let started = clock();
                let result = match ending.then {
                    Then::Overflow => self.host.overflow(sid).await,
                    _ => self.host.hang_up(sid).await,
                };
                rest_done(metrics, op, started, &result);
                release(self.host, self.claim.take()).await;
                close_twilio(&mut self.tw, ending).await;
            }
            _ => {
                release(self.host, self.claim.take()).await;
                tokio::join!(agent_closed, close_twilio(&mut self.tw, ending));
            }
        }
        metrics.flush_call(&mut self.relay.counters);
        let facts = self.relay.facts();
        let report = facts.call_sid.is_some().then(|| {
            Box::new(CallReport {
                facts: facts.clone(),
                ending: ending.cause,
                bridge: self.bridge.clone(),
                transfer_code: self.transfer_code,
            })
        });
        Summary {
            outcome: ending.outcome,
            close_code: ending.close_code,
            reason: ending.reason,
            frames_in: self.relay.counters.frames_in,
            frames_out: self.relay.counters.frames_out,
            dropped: self.relay.counters.dropped,
            report,
        }
    }
}

/// The agent leg's next event: the claim's answer, the connect's, or a frame.
async fn leg_next<A: AgentConnector, C>(leg: &mut Leg<'_, A, C>) -> Wake<A::Socket, A::Error, C> {
    match leg {
        Leg::Idle => std::future::pending().await,
        Leg::Claiming(claim) => Wake::Claimed(claim.await),
        Leg::Connecting(connect, _) => Wake::Connected(connect.await),
        Leg::Open(conn) => Wake::Agent(conn.next().await),
    }
}

/// Hands one agent frame to the relay; `true` when the agent's socket is over.
fn on_agent(relay: &mut Relay, msg: Option<Result<Message, WsError>>, now: Instant) -> bool {
    match msg {
        Some(Ok(Message::Text(text))) => {
            relay.handle(Input::AgentText(text.as_str()), now);
            false
        }
        Some(Ok(Message::Close(frame))) => {
            let code = frame.as_ref().map(|f| u16::from(f.code));
            // ElevenLabs' reasons are constants (invalid_message, …), never content.
            let reason = frame
                .as_ref()
                .map(|f| f.reason.chars().take(64).collect::<String>());
            tracing::info!(
                agent_close_code = code,
                agent_close_reason = reason.as_deref(),
                "agent closed"
            );
            relay.handle(Input::AgentGone(code), now);
            true
        }
        // Pings, pongs, binary: the agent is alive.
        Some(Ok(_)) => {
            relay.handle(Input::AgentAlive, now);
            false
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "agent socket failed");
            relay.handle(Input::AgentGone(None), now);
            true
        }
        None => {
            relay.handle(Input::AgentGone(None), now);
            true
        }
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
                let latency = since(read_at);
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
            Output::ConversationStarted(id) => {
                // ElevenLabs' id, to find the transcript of this call; not content.
                tracing::Span::current().record("conversation_id", id.as_str());
                tracing::info!(conversation_id = %id, "agent conversation started");
            }
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
    let elapsed_ms = since(started).as_millis() as u64;
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

async fn poll_transfer(
    transfer: &mut Option<(Transferring<'_>, Instant)>,
) -> Result<(), RestError> {
    match transfer {
        Some((request, _)) => request.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
