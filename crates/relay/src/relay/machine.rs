//! One call as a pure state machine: Twilio's protocol ([`Session`]), the agent's (ElevenLabs
//! messages, or the echo's delay line), playout and barge-in ([`Playout`]), the call's guards
//! (idle, keepalive) and how it ends, with per-call counters. No I/O and no clock of its own:
//! the call loop feeds [`Input`]s with the time, writes what [`Relay::poll_output`] hands
//! back, and sleeps until [`Relay::next_deadline`].

use std::collections::{BTreeMap, VecDeque};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::time::Instant;

use super::counters::{CallCounters, Drop};
use super::echo::EchoLine;
use super::events::{
    AgentMode, CallStart, EndReason, Ending, Input, Output, RelayConfig, TwilioKind,
};
use super::playout::{mark_name, parse_mark_name, Accepted, Playout, Release, FRAME_BYTES};
use super::record::CallFacts;
use super::session::{CallError, Event, Session};
use super::transcode::{FromAgent, ToAgent};
use crate::elevenlabs::message::InitiationClientData;
use crate::twilio::message::{self as tw, ProtocolError};

/// Caller frames held while the agent connects and until its metadata (20 ms each): 1 s.
pub const PRE_METADATA_FRAMES: usize = 50;
/// Custom parameters never passed to the agent: credentials, not conversation data.
const WITHHELD_PARAMETERS: &[&str] = &["token", "authorization"];

enum Pending {
    Pong,
    Ping,
    Clear(Instant),
    Mark(u64),
    AgentText(String),
    AgentPing,
    CallerAudio,
    Start(CallStart),
    Transfer,
    ConversationStarted(String),
}

enum Remote {
    /// Claiming or connecting: caller audio is held.
    Connecting,
    /// Connected, waiting for the metadata (the formats).
    AwaitingMetadata,
    /// Talking, with a converter per direction.
    Ready(Box<(ToAgent, FromAgent)>),
}

enum Agent {
    Off,
    Echo(EchoLine),
    Remote(Remote),
}

/// One call's relay state.
pub struct Relay {
    config: RelayConfig,
    /// The stream's token named its CallSid (JWT `sub`): only then may the call be acted on
    /// through Twilio's REST API (hang-up, transfer) or claimed across the fleet. Whoever
    /// holds a static or sub-less token can write any CallSid into `start`.
    bound: bool,
    session: Session,
    playout: Playout,
    agent: Agent,
    /// Caller frames held until the agent can take them.
    held: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    pending: VecDeque<Pending>,
    /// Caller audio of the current Twilio frame, decoded.
    audio: Vec<u8>,
    /// Agent audio of the current agent frame, as μ-law.
    ulaw: Vec<u8>,
    b64: String,
    text: String,
    agent_text: String,
    /// Caller audio rendered for the agent (JSON text, or raw PCM in binary mode).
    caller_out: CallerOut,
    /// `conversation_initiation_client_data`, built at `start`, sent once connected.
    initiation: Option<String>,
    idle_at: Instant,
    ping_at: Instant,
    awaiting_pong: bool,
    ending: Option<Ending>,
    /// An ending waiting for the agent's last words to play.
    closing: Option<control::Closing>,
    keypad: control::Keypad,
    /// The call's time limit and the server's drain.
    limits: limits::Limits,
    /// An allowed transfer, until Twilio has answered its request.
    transfer: Option<control::Transfer>,
    /// The call's own Twilio number (from `<Parameter>`s), the default transfer caller ID.
    call_number: Option<String>,
    agent_connected_at: Instant,
    agent_seen_at: Instant,
    agent_ping_at: Instant,
    /// Per-call counters (flushed by the call loop).
    pub counters: CallCounters,
    /// Ids, timings and counts for the call record.
    facts: CallFacts,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("ending", &self.ending)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay for a stream whose token was bound to `bound_call_sid`, starting at `now`.
    pub fn new(config: RelayConfig, bound_call_sid: Option<String>, now: Instant) -> Self {
        let bound = bound_call_sid.is_some();
        let session = Session::new(bound_call_sid, config.stream.max_payload_bytes)
            .with_account(config.stream.account_sid.clone());
        Self {
            playout: Playout::new(config.stream.playout_lead, config.stream.playout_max),
            session,
            agent: Agent::Off,
            held: VecDeque::new(),
            spare: Vec::new(),
            pending: VecDeque::new(),
            audio: Vec::new(),
            ulaw: Vec::new(),
            b64: String::new(),
            text: String::new(),
            agent_text: String::new(),
            caller_out: CallerOut::default(),
            initiation: None,
            idle_at: now + config.stream.idle_timeout,
            ping_at: now + config.stream.keepalive,
            awaiting_pong: false,
            ending: None,
            closing: None,
            keypad: control::Keypad::default(),
            limits: limits::Limits::new(config.control.max_call, now),
            transfer: None,
            call_number: None,
            agent_connected_at: now,
            agent_seen_at: now,
            agent_ping_at: now,
            counters: CallCounters::default(),
            facts: CallFacts::default(),
            config,
            bound,
        }
    }

    /// Whether this stream may act on its call: REST is configured and the token is bound
    /// to the call's CallSid.
    pub fn controls_call(&self) -> bool {
        self.bound && self.config.control.rest
    }

    /// Whether the stream's token is bound to its CallSid (the fleet-wide claim is made only
    /// then).
    pub fn bound(&self) -> bool {
        self.bound
    }

    /// How the call ended, once it has.
    pub fn ending(&self) -> Option<Ending> {
        self.ending
    }

    /// Whether the agent leg is open (or opening) and must be closed at the end.
    pub fn agent_active(&self) -> bool {
        matches!(self.agent, Agent::Remote(_))
    }

    /// Whether `stop` arrived.
    pub fn stopped(&self) -> bool {
        self.session.stopped()
    }

    fn end(&mut self, mut ending: Ending) {
        // A stream that does not control its call never acts on it: it only closes.
        if !self.controls_call() {
            ending.then = super::events::Then::Close;
        }
        if self.ending.is_none() {
            self.ending = Some(ending);
        }
    }

    /// Handles one input at `now`; then drain [`Relay::poll_output`].
    pub fn handle(&mut self, input: Input<'_>, now: Instant) {
        if self.ending.is_some() {
            return;
        }
        match input {
            Input::TwilioText(text) => {
                self.idle_at = now + self.config.stream.idle_timeout;
                if text == "ping" {
                    self.pending.push_back(Pending::Pong);
                } else {
                    self.on_twilio(text, now);
                }
            }
            Input::TwilioBinary => self.end(CallError::from(ProtocolError::BinaryFrame).into()),
            Input::TwilioPong => self.awaiting_pong = false,
            Input::TwilioGone(ending) | Input::Refused(ending) => self.end(ending),
            Input::TwilioTooSlow => {
                self.end(Ending::of(EndReason::PeerTooSlow));
            }
            Input::AgentConnected => self.on_agent_connected(now),
            Input::AgentBusy => {
                self.counters.agent_events.bump("busy");
                tracing::warn!("agent refused the conversation for concurrency");
                self.end(Ending::overflow());
            }
            Input::AgentUnreachable => {
                self.counters.agent_events.bump("connect_failed");
                self.end(Ending::of(EndReason::AgentUnavailable));
            }
            Input::AgentText(text) => {
                self.agent_seen_at = now;
                self.on_agent_text(text, now);
            }
            Input::AgentAlive => self.agent_seen_at = now,
            Input::AgentGone(code) => {
                self.agent = Agent::Off;
                if self.closing.is_some() {
                    // The goodbye plays on; the agent leg is done.
                } else if code == Some(1000) {
                    self.begin_closing(control::Cause::AgentEnd, now);
                } else {
                    // A failure: the call goes back to Twilio at once (the fallback TwiML).
                    self.counters.control.bump("agent_failed");
                    tracing::warn!(
                        agent_close_code = code,
                        "agent failed; handing the call back to Twilio"
                    );
                    self.end(Ending::of(EndReason::AgentClosed));
                }
            }
            Input::TransferDone { ok } => self.on_transfer_done(ok),
            Input::Tick => self.on_tick(now),
            Input::Drain(deadline) => self.on_drain(deadline, now),
            Input::Shutdown => {
                self.end(Ending::of(EndReason::ServerShuttingDown));
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if self.keypad_deadline().is_some_and(|at| now >= at) {
            self.flush_keypad();
        }
        self.check_agent(now);
        self.check_limits(now);
        if self.ending.is_some() {
            return;
        }
        if now >= self.idle_at {
            self.end(Ending::of(EndReason::IdleTimeout));
            return;
        }
        if now >= self.ping_at {
            if self.awaiting_pong {
                self.end(Ending::of(EndReason::KeepaliveTimeout));
                return;
            }
            self.awaiting_pong = true;
            self.ping_at = now + self.config.stream.keepalive;
            self.pending.push_back(Pending::Ping);
        }
        if let Agent::Echo(line) = &mut self.agent {
            while let Some(frame) = line.pop_due(now) {
                // The echo's audio belongs to no response and is never stale.
                let accepted = self.playout.push(&frame, None);
                line.recycle(frame);
                count_accepted(&mut self.counters, accepted);
            }
        }
    }

    fn on_twilio(&mut self, text: &str, now: Instant) {
        let (name, result) = self.session.on_text(text, &mut self.audio);
        self.counters.twilio_events.bump(name);
        match result {
            Err(e) => self.end(e.into()),
            Ok(Event::Nothing | Event::Dtmf(None)) => {}
            Ok(Event::Dtmf(Some(digit))) => self.on_keypad(digit, now),
            Ok(Event::Mark(name)) => {
                self.playout.on_mark(&name, now);
                self.on_closing_mark(parse_mark_name(&name));
            }
            Ok(Event::Stopped) => {
                tracing::info!("stream stopped");
                self.end(Ending::of(EndReason::StreamStopped));
            }
            Ok(Event::Started(start)) => self.on_start(*start, now),
            Ok(Event::Audio(bytes)) => {
                self.counters.frame_in(bytes);
                self.on_caller_audio(now);
            }
        }
    }

    fn on_start(&mut self, start: tw::Start, now: Instant) {
        self.facts.started(&start, now);
        match self.config.agent {
            AgentMode::None => {}
            AgentMode::Echo(delay) => self.agent = Agent::Echo(EchoLine::new(delay)),
            AgentMode::Remote { .. } => {
                let mut vars: BTreeMap<&str, &str> = start
                    .custom_parameters
                    .0
                    .iter()
                    .filter(|(k, _)| {
                        !WITHHELD_PARAMETERS
                            .iter()
                            .any(|w| k.eq_ignore_ascii_case(w))
                    })
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let context = self.config.context.as_deref();
                // The verified token's variables win over the stream's parameters.
                if let Some(context) = context {
                    vars.extend(
                        context
                            .dynamic_variables
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str())),
                    );
                }
                let overrides = context.map(|c| &c.overrides);
                // Names only: values may carry PHI.
                tracing::info!(
                    dynamic_variables = ?vars.keys().collect::<Vec<_>>(),
                    overrides = ?overrides.map(|o| o.names()).unwrap_or_default(),
                    "agent initiation prepared"
                );
                let mut init = InitiationClientData::new(vars);
                if let Some(overrides) = overrides {
                    init = init.with_overrides(overrides);
                }
                self.initiation = Some(init.to_json());
                self.agent = Agent::Remote(Remote::Connecting);
            }
        }
        // The call's own number: `To` of an inbound call, `From` of one we placed.
        let params = &start.custom_parameters.0;
        let outbound = params
            .get("Direction")
            .is_some_and(|d| d.starts_with("outbound"));
        self.call_number = params
            .get(if outbound { "From" } else { "To" })
            .filter(|n| crate::twilio::number::is_e164(n))
            .cloned();
        if !self.bound && self.config.control.rest {
            // Once per call: the call works, but endings only close the stream.
            self.counters.control.bump("unbound_stream");
            tracing::warn!(
                "stream token not bound to its call: no hang-up, transfer or claim through Twilio"
            );
        }
        let call = CallStart {
            call_sid: start.call_sid.as_str().to_string(),
            stream_sid: start.stream_sid.as_str().to_string(),
            parameters: start.custom_parameters.0,
        };
        self.pending.push_back(Pending::Start(call));
    }

    fn on_caller_audio(&mut self, now: Instant) {
        if !self.caller_audio_wanted() {
            return;
        }
        match &mut self.agent {
            Agent::Off => {}
            Agent::Echo(line) => line.push(&self.audio, now),
            Agent::Remote(Remote::Ready(conv)) if self.held.is_empty() => {
                self.caller_out
                    .render(&mut conv.0, self.config.agent, &self.audio);
                self.pending.push_back(Pending::CallerAudio);
            }
            Agent::Remote(_) if self.held.len() < PRE_METADATA_FRAMES => {
                let mut frame = self.spare.pop().unwrap_or_default();
                frame.clear();
                frame.extend_from_slice(&self.audio);
                self.held.push_back(frame);
            }
            Agent::Remote(_) => self.counters.drop(Drop::AgentNotReady, 1),
        }
    }

    /// The next thing to do at `now`; call until `None` after every [`Relay::handle`] and
    /// whenever [`Relay::next_deadline`] passes.
    pub fn poll_output(&mut self, now: Instant) -> Option<Output<'_>> {
        if self.ending.is_some() {
            return None;
        }
        if self.pending.is_empty() {
            self.advance_closing(now);
            if self.ending.is_some() {
                return None;
            }
        }
        if let Some(p) = self.pending.pop_front() {
            return Some(match p {
                Pending::Pong => Output::Twilio("pong", TwilioKind::Control),
                Pending::Ping => Output::TwilioPing,
                Pending::AgentPing => Output::AgentPing,
                Pending::Start(call) => Output::Start(call),
                Pending::ConversationStarted(id) => Output::ConversationStarted(id),
                Pending::Transfer => {
                    self.text = self.transfer_twiml();
                    Output::Transfer(&self.text)
                }
                Pending::AgentText(text) => {
                    self.agent_text = text;
                    Output::Agent(&self.agent_text, false)
                }
                Pending::Mark(id) => {
                    let sid = self.session.stream_sid().map_or("", |s| s.as_str());
                    mark_name(id, &mut self.b64);
                    tw::write_mark(sid, &self.b64, &mut self.text);
                    Output::Twilio(&self.text, TwilioKind::Control)
                }
                Pending::CallerAudio => return Some(self.caller_audio_output()),
                Pending::Clear(at) => {
                    let sid = self.session.stream_sid().map_or("", |s| s.as_str());
                    tw::write_clear(sid, &mut self.text);
                    Output::Twilio(&self.text, TwilioKind::Clear(at))
                }
            });
        }
        // Caller audio held while the agent was not ready, now that it is.
        if let Agent::Remote(Remote::Ready(conv)) = &mut self.agent {
            if let Some(frame) = self.held.pop_front() {
                self.caller_out
                    .render(&mut conv.0, self.config.agent, &frame);
                self.spare.push(frame);
                return Some(self.caller_audio_output());
            }
        }
        let sid = self.session.stream_sid()?.as_str();
        match self.playout.poll(now)? {
            Release::Frame(frame) => {
                self.b64.clear();
                STANDARD.encode_string(&frame, &mut self.b64);
                tw::write_media(sid, &self.b64, &mut self.text);
                let n = frame.len();
                self.playout.recycle(frame);
                self.facts.audio_out(now);
                Some(Output::Twilio(&self.text, TwilioKind::Media(n)))
            }
            Release::Mark(id) => {
                mark_name(id, &mut self.b64);
                tw::write_mark(sid, &self.b64, &mut self.text);
                Some(Output::Twilio(&self.text, TwilioKind::Control))
            }
        }
    }

    fn caller_audio_output(&self) -> Output<'_> {
        match self.config.agent {
            AgentMode::Remote { binary: true } => Output::AgentBinary(&self.caller_out.raw),
            _ => Output::Agent(&self.caller_out.text, true),
        }
    }

    /// What the call record needs from the relay (complete once the call has ended).
    pub fn facts(&self) -> &CallFacts {
        &self.facts
    }

    /// When the relay next needs a [`Input::Tick`] (`now`: at once).
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let mut at = self.idle_at.min(self.ping_at);
        if let Some(p) = self.playout.next_deadline(now) {
            at = at.min(p);
        }
        if let Agent::Echo(line) = &self.agent {
            if let Some(due) = line.next_due() {
                at = at.min(due);
            }
        }
        for d in [
            self.closing_deadline(),
            self.keypad_deadline(),
            self.agent_deadline(),
            self.limits.next(),
        ]
        .into_iter()
        .flatten()
        {
            at = at.min(d);
        }
        at
    }
}

pub(super) fn count_accepted(counters: &mut CallCounters, accepted: Accepted) {
    match accepted {
        Accepted::Queued => {}
        Accepted::Stale => counters.drop(Drop::Interrupted, 1),
        Accepted::Overflow(bytes) => {
            counters.drop(Drop::PlayoutFull, bytes.div_ceil(FRAME_BYTES) as u64);
        }
    }
}

mod agent;
mod control;
mod limits;

use agent::CallerOut;

#[cfg(test)]
mod tests;
