//! What goes into the relay and what comes out of it: the call's settings, the inputs the
//! call loop feeds it, the outputs it hands back, and how a call ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use super::session::CallError;
use super::Outcome;
use crate::twilio::message::ProtocolError;

/// What the call knows when the agent session starts (at Twilio `start`).
#[derive(Clone)]
pub struct CallStart {
    /// Twilio's CallSid.
    pub call_sid: String,
    /// Twilio's StreamSid.
    pub stream_sid: String,
    /// `start.customParameters`: passed to the agent, never logged (names only).
    pub parameters: BTreeMap<String, String>,
}

impl std::fmt::Debug for CallStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStart")
            .field("call_sid", &self.call_sid)
            .field("stream_sid", &self.stream_sid)
            .field("parameters", &self.parameters.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Which agent answers, as the relay sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMode {
    /// No agent: caller frames are counted only.
    None,
    /// The built-in echo, after this delay.
    Echo(Duration),
    /// A conversational agent on a WebSocket (the ElevenLabs protocol); `binary`: caller
    /// audio as raw PCM16LE 16 kHz binary frames (legacy).
    Remote {
        /// Legacy binary caller audio.
        binary: bool,
    },
}

/// What the relay holds Twilio's stream to: the server's configuration
/// (`media_orchestrator::config::Config::stream`) is this struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Largest decoded media payload.
    pub max_payload_bytes: usize,
    /// How far ahead of playback agent audio is released to Twilio.
    pub playout_lead: Duration,
    /// Most agent audio held.
    pub playout_max: Duration,
    /// No Twilio message for this long ends the call.
    pub idle_timeout: Duration,
    /// WebSocket ping interval to Twilio.
    pub keepalive: Duration,
    /// Only this account's streams are accepted.
    pub account_sid: Option<String>,
}

impl Default for StreamConfig {
    /// media-ws's defaults: 16 000-byte payloads, 200 ms lead, 30 s held, 30 s idle, 15 s
    /// keepalive, any account.
    fn default() -> Self {
        Self {
            max_payload_bytes: 16_000,
            playout_lead: Duration::from_millis(200),
            playout_max: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
            account_sid: None,
        }
    }
}

/// What the relay needs to know about the call's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The stream's limits and guards.
    pub stream: StreamConfig,
    /// The agent.
    pub agent: AgentMode,
    /// Endings, tools, the dead-agent timers and the keypad.
    pub control: ControlPolicy,
    /// The agent context from a verified stream token (outbound calls): overrides and
    /// dynamic variables. Never taken from Twilio's `<Parameter>`s.
    pub context: Option<Arc<crate::context::CallContext>>,
}

/// How the relay ends calls and answers the agent's tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPolicy {
    /// Twilio's REST API is configured: endings hang up, transfers are possible.
    pub rest: bool,
    /// Longest wait for the final mark's echo.
    pub end_grace: Duration,
    /// Numbers `transfer_to_number` may dial (empty: none).
    pub transfer_allowlist: Arc<crate::twilio::number::Allowlist>,
    /// `callerId` of a transfer (else the call's own number).
    pub transfer_caller_id: Option<Arc<str>>,
    /// Ring time of a transfer, seconds.
    pub transfer_timeout_secs: u32,
    /// No frame from the agent for this long: dead.
    pub agent_silence: Duration,
    /// No metadata this long after the agent socket opened: dead.
    pub metadata_timeout: Duration,
    /// Keypad inter-digit timeout.
    pub keypad_timeout: Duration,
    /// A call's longest life (`MAX_CALL_SECONDS`; `None`: no limit): the agent is asked to
    /// wrap up before it, and the call ends gracefully at it.
    pub max_call: Option<Duration>,
    /// `<Dial action>` of a transfer: where Twilio reports a transfer that was not answered.
    pub transfer_action_url: Option<Arc<str>>,
}

impl ControlPolicy {
    /// The defaults of `media-ws` without REST credentials (no hang-up, no transfers).
    pub fn without_rest() -> Self {
        Self {
            rest: false,
            end_grace: Duration::from_secs(10),
            transfer_allowlist: Arc::default(),
            transfer_caller_id: None,
            transfer_timeout_secs: 30,
            agent_silence: Duration::from_secs(12),
            metadata_timeout: Duration::from_secs(5),
            keypad_timeout: Duration::from_secs(2),
            max_call: Some(Duration::from_secs(3_300)),
            transfer_action_url: None,
        }
    }
}

impl RelayConfig {
    /// The defaults of `media-ws` (30 s idle, 15 s keepalive, 200 ms lead) for `agent`,
    /// without REST: what tests and the simulator start from.
    pub fn with_agent(agent: AgentMode) -> Self {
        Self {
            stream: StreamConfig::default(),
            agent,
            control: ControlPolicy::without_rest(),
            context: None,
        }
    }
}

/// What the call loop does with the call once the relay has ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Close the stream (Twilio runs what follows `<Connect>`: the fallback TwiML).
    Close,
    /// Hang up through Twilio's REST API (`Status=completed`), then close the stream.
    HangUp,
    /// Put the overflow TwiML on the call through the REST API (no agent for it), then
    /// close the stream.
    Overflow,
}

/// Every way a call ends, and the single source of its outcome, close code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Twilio sent `stop`.
    StreamStopped,
    /// Twilio closed its socket after `stop`.
    PeerClosedAfterStop,
    /// Twilio closed its socket without `stop`.
    PeerClosed,
    /// Twilio's socket ended without a close frame.
    PeerGone,
    /// Twilio's socket was reset.
    PeerReset,
    /// Reading Twilio's socket failed.
    ReadFailed,
    /// A text frame that is not UTF-8.
    InvalidUtf8,
    /// A WebSocket protocol violation.
    WebSocketProtocol,
    /// No Twilio message for the idle timeout.
    IdleTimeout,
    /// No pong for a whole keepalive interval.
    KeepaliveTimeout,
    /// Twilio read too slowly for the write budget.
    PeerTooSlow,
    /// The agent could not be reached.
    AgentUnavailable,
    /// The agent's socket failed or closed with an error.
    AgentClosed,
    /// The agent broke its protocol (an unknown audio format, bad metadata).
    AgentProtocolError,
    /// The agent went silent (a half-open socket).
    AgentUnresponsive,
    /// The agent ended the conversation; its last words played.
    AgentEnded,
    /// `end_call`; the goodbye played.
    AgentHungUp,
    /// The call reached `MAX_CALL_SECONDS`.
    MaxDuration,
    /// Ended gracefully before the drain deadline.
    ServerDraining,
    /// Still live at the drain deadline.
    ServerShuttingDown,
    /// Twilio took the transfer's `<Dial>`.
    Transferred,
    /// Twilio refused the transfer and no agent is left to tell.
    TransferFailed,
    /// A second stream for a live call.
    Duplicate,
    /// The call registry could not be written at `start`.
    RegistryUnavailable,
    /// The agent plan is full.
    AgentCapacity,
    /// The loop ended without a recorded ending.
    Ended,
}

impl EndReason {
    /// (counted outcome, close code sent to Twilio, constant reason).
    pub const fn parts(self) -> (Outcome, Option<u16>, &'static str) {
        match self {
            Self::StreamStopped => (Outcome::normal, Some(1000), "stream stopped"),
            Self::PeerClosedAfterStop => (Outcome::normal, None, "peer closed"),
            Self::PeerClosed => (Outcome::disconnected, None, "peer closed"),
            Self::PeerGone => (Outcome::disconnected, None, "peer gone"),
            Self::PeerReset => (Outcome::disconnected, None, "peer reset"),
            Self::ReadFailed => (Outcome::disconnected, None, "read failed"),
            Self::InvalidUtf8 => (Outcome::protocol_error, Some(1007), "invalid utf-8"),
            Self::WebSocketProtocol => (
                Outcome::protocol_error,
                Some(1002),
                "websocket protocol error",
            ),
            Self::IdleTimeout => (Outcome::idle, Some(1000), "idle timeout"),
            Self::KeepaliveTimeout => (Outcome::keepalive, Some(1001), "keepalive timeout"),
            Self::PeerTooSlow => (Outcome::backpressure, Some(1013), "peer too slow"),
            Self::AgentUnavailable => (Outcome::agent_error, Some(1000), "agent unavailable"),
            Self::AgentClosed => (Outcome::agent_error, Some(1000), "agent closed"),
            Self::AgentProtocolError => (Outcome::agent_error, Some(1000), "agent protocol error"),
            Self::AgentUnresponsive => (Outcome::agent_error, Some(1000), "agent unresponsive"),
            Self::AgentEnded => (Outcome::normal, Some(1000), "agent ended"),
            Self::AgentHungUp => (Outcome::normal, Some(1000), "agent hung up"),
            Self::MaxDuration => (Outcome::normal, Some(1000), "max duration"),
            Self::ServerDraining => (Outcome::drained, Some(1000), "server draining"),
            Self::ServerShuttingDown => (Outcome::drained, Some(1001), "server shutting down"),
            Self::Transferred => (Outcome::normal, Some(1000), "transferred"),
            Self::TransferFailed => (Outcome::agent_error, Some(1000), "transfer failed"),
            Self::Duplicate => (Outcome::duplicate, Some(1008), "duplicate stream for call"),
            Self::RegistryUnavailable => (
                Outcome::unavailable,
                Some(1013),
                "call registry unavailable",
            ),
            Self::AgentCapacity => (Outcome::overflow, Some(1000), "agent capacity"),
            Self::Ended => (Outcome::normal, None, "ended"),
        }
    }
}

/// Every `ending` a call record can carry ([`EndReason::cause`], and protocol errors'):
/// the `Ending` dimension's values in EMF, which alarms may name.
pub const ENDINGS: &[&str] = &[
    "caller_hangup",
    "caller_gone",
    "protocol_error",
    "idle",
    "keepalive",
    "backpressure",
    "agent_failed",
    "agent_dead",
    "agent_end",
    "end_call",
    "max_duration",
    "drain",
    "transfer",
    "transfer_failed",
    "refused",
    "overflow",
    "ended",
];

impl EndReason {
    /// The call record's `ending`: one constant per cause, fewer than the reasons (a caller
    /// who hangs up is `caller_hangup` whichever way the socket then closes).
    pub const fn cause(self) -> &'static str {
        match self {
            Self::StreamStopped | Self::PeerClosedAfterStop => "caller_hangup",
            Self::PeerClosed | Self::PeerGone | Self::PeerReset | Self::ReadFailed => "caller_gone",
            Self::InvalidUtf8 | Self::WebSocketProtocol => "protocol_error",
            Self::IdleTimeout => "idle",
            Self::KeepaliveTimeout => "keepalive",
            Self::PeerTooSlow => "backpressure",
            Self::AgentUnavailable | Self::AgentClosed | Self::AgentProtocolError => "agent_failed",
            Self::AgentUnresponsive => "agent_dead",
            Self::AgentEnded => "agent_end",
            Self::AgentHungUp => "end_call",
            Self::MaxDuration => "max_duration",
            Self::ServerDraining | Self::ServerShuttingDown => "drain",
            Self::Transferred => "transfer",
            Self::TransferFailed => "transfer_failed",
            Self::Duplicate | Self::RegistryUnavailable => "refused",
            Self::AgentCapacity => "overflow",
            Self::Ended => "ended",
        }
    }
}

impl From<EndReason> for Ending {
    fn from(reason: EndReason) -> Self {
        Self::of(reason)
    }
}

/// How a call ended, for the close frame, the metrics and the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Counted outcome.
    pub outcome: Outcome,
    /// Close code sent to Twilio (`None`: Twilio closed or vanished first).
    pub close_code: Option<u16>,
    /// Constant reason.
    pub reason: &'static str,
    /// The call record's `ending` ([`EndReason::cause`]).
    pub cause: &'static str,
    /// What happens to the call after the relay.
    pub then: Then,
}

impl Ending {
    /// The ending of a call the agent plan has no room for: the overflow TwiML through REST
    /// (a stream that does not control its call only closes: Twilio's fallback).
    pub const fn overflow() -> Self {
        Self {
            then: Then::Overflow,
            ..Self::of(EndReason::AgentCapacity)
        }
    }

    /// The ending for `reason`, closing the stream.
    pub const fn of(reason: EndReason) -> Self {
        let (outcome, close_code, text) = reason.parts();
        Self::new(outcome, close_code, text, reason.cause())
    }

    /// The same ending, then this.
    #[must_use]
    pub const fn then(self, then: Then) -> Self {
        Self { then, ..self }
    }

    /// An ending with these parts that closes the stream (protocol errors carry their own).
    pub(crate) const fn new(
        outcome: Outcome,
        close_code: Option<u16>,
        reason: &'static str,
        cause: &'static str,
    ) -> Self {
        Self {
            outcome,
            close_code,
            reason,
            cause,
            then: Then::Close,
        }
    }
}

impl From<CallError> for Ending {
    fn from(e: CallError) -> Self {
        let cause = match e {
            CallError::Protocol(_) => "protocol_error",
            CallError::CallSidMismatch | CallError::AccountMismatch => "refused",
        };
        Self::new(e.outcome(), Some(e.close_code()), e.reason(), cause)
    }
}

/// Something that happened to the call.
#[derive(Debug)]
pub enum Input<'a> {
    /// A text frame from Twilio.
    TwilioText(&'a str),
    /// A binary frame from Twilio (Twilio sends only text).
    TwilioBinary,
    /// Twilio answered a WebSocket ping.
    TwilioPong,
    /// Twilio's socket ended (closed, reset, failed); see [`twilio_gone`].
    TwilioGone(Ending),
    /// Twilio reads too slowly: audio stayed above the byte limit past the write budget.
    TwilioTooSlow,
    /// The claim on the CallSid was refused (another stream holds it, or the registry failed).
    Refused(Ending),
    /// The agent socket is open.
    AgentConnected,
    /// The agent could not be reached.
    AgentUnreachable,
    /// The agent refused the conversation for concurrency (the plan is full).
    AgentBusy,
    /// A text frame from the agent.
    AgentText(&'a str),
    /// A ping or pong from the agent: it is alive.
    AgentAlive,
    /// The agent socket ended, with its close code when it sent one.
    AgentGone(Option<u16>),
    /// The transfer's REST request (sent for [`Output::Transfer`]) is done; `ok`: Twilio took it.
    TransferDone {
        /// Twilio accepted the `<Dial>`.
        ok: bool,
    },
    /// A deadline passed.
    Tick,
    /// The server started draining: calls must end gracefully before this instant.
    Drain(Instant),
    /// The server is shutting down and the drain deadline passed.
    Shutdown,
}

/// What kind of message a Twilio output is (backpressure may drop only media).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwilioKind {
    /// An audio frame of this many μ-law bytes.
    Media(usize),
    /// A mark, a clear or a pong: never dropped.
    Control,
    /// The `clear` of a barge-in read off the agent socket at this instant.
    Clear(Instant),
}

/// Something the call loop must do now.
#[derive(Debug)]
pub enum Output<'a> {
    /// Send this text to Twilio.
    Twilio(&'a str, TwilioKind),
    /// Send a WebSocket ping to Twilio (keepalive).
    TwilioPing,
    /// Send this text to the agent; `audio`: caller audio, dropped if the agent is behind.
    Agent(&'a str, bool),
    /// Send these bytes to the agent as a binary frame (legacy caller audio).
    AgentBinary(&'a [u8]),
    /// Send a WebSocket ping to the agent (a half-open socket shows as silence).
    AgentPing,
    /// The stream started: with an agent, claim the call, then connect the agent (a remote
    /// one) or tell the relay [`Input::AgentConnected`] (the echo).
    Start(CallStart),
    /// Put this TwiML (a transfer's `<Dial>`) on the call with Twilio's REST API, with the
    /// agent leg still open; then tell the relay [`Input::TransferDone`].
    Transfer(&'a str),
    /// The agent's conversation started with this id (ElevenLabs', to find the transcript;
    /// not content): the driver records it on the call's span.
    ConversationStarted(String),
}

/// How the call ends when Twilio's socket does: `closed` when a close frame arrived
/// (normal after `stop`), else the reason of the failure.
pub fn twilio_gone(stopped: bool, how: TwilioEnd) -> Ending {
    match how {
        TwilioEnd::Closed if stopped => Ending::of(EndReason::PeerClosedAfterStop),
        TwilioEnd::Closed => Ending::of(EndReason::PeerClosed),
        TwilioEnd::Gone => Ending::of(EndReason::PeerGone),
        TwilioEnd::Reset => Ending::of(EndReason::PeerReset),
        TwilioEnd::ReadFailed => Ending::of(EndReason::ReadFailed),
        TwilioEnd::TooLarge => CallError::from(ProtocolError::PayloadTooLarge).into(),
        TwilioEnd::InvalidUtf8 => Ending::of(EndReason::InvalidUtf8),
        TwilioEnd::Protocol => Ending::of(EndReason::WebSocketProtocol),
    }
}

/// How Twilio's socket ended, classified by the call loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwilioEnd {
    /// A close frame.
    Closed,
    /// End of stream without a close frame.
    Gone,
    /// Reset without a closing handshake.
    Reset,
    /// Any other read failure.
    ReadFailed,
    /// A message over the framing cap.
    TooLarge,
    /// A text frame that is not UTF-8.
    InvalidUtf8,
    /// A WebSocket protocol violation.
    Protocol,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_is_a_listed_ending() {
        use EndReason::*;
        let all = [
            StreamStopped,
            PeerClosedAfterStop,
            PeerClosed,
            PeerGone,
            PeerReset,
            ReadFailed,
            InvalidUtf8,
            WebSocketProtocol,
            IdleTimeout,
            KeepaliveTimeout,
            PeerTooSlow,
            AgentUnavailable,
            AgentClosed,
            AgentProtocolError,
            AgentUnresponsive,
            AgentEnded,
            AgentHungUp,
            MaxDuration,
            ServerDraining,
            ServerShuttingDown,
            Transferred,
            TransferFailed,
            Duplicate,
            RegistryUnavailable,
            AgentCapacity,
            Ended,
        ];
        for reason in all {
            assert!(ENDINGS.contains(&reason.cause()), "{reason:?}");
        }
        for e in [CallError::AccountMismatch, CallError::CallSidMismatch] {
            assert!(ENDINGS.contains(&Ending::from(e).cause));
        }
    }
}
