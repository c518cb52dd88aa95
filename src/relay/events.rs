//! What goes into the relay and what comes out of it: the call's settings, the inputs the
//! call loop feeds it, the outputs it hands back, and how a call ends.

use std::time::Duration;

use tokio::time::Instant;

use super::session::CallError;
use crate::agent::CallStart;
use crate::metrics::Outcome;
use crate::twilio::message::ProtocolError;

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

/// What the relay needs to know about the call's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Largest decoded media payload.
    pub max_payload_bytes: usize,
    /// Playout lead and buffer.
    pub playout_lead: Duration,
    /// Most agent audio held.
    pub playout_max: Duration,
    /// No Twilio message for this long ends the call.
    pub idle_timeout: Duration,
    /// WebSocket ping interval to Twilio.
    pub keepalive: Duration,
    /// Only this account's streams are accepted.
    pub account_sid: Option<String>,
    /// The agent.
    pub agent: AgentMode,
}

#[cfg(test)]
impl RelayConfig {
    /// The defaults of `media-ws` (30 s idle, 15 s keepalive, 200 ms lead) for `agent`.
    pub fn for_tests(agent: AgentMode) -> Self {
        Self {
            max_payload_bytes: 16_000,
            playout_lead: Duration::from_millis(200),
            playout_max: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
            account_sid: None,
            agent,
        }
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
}

impl Ending {
    /// An ending with these parts.
    pub const fn new(outcome: Outcome, close_code: Option<u16>, reason: &'static str) -> Self {
        Self {
            outcome,
            close_code,
            reason,
        }
    }
}

impl From<CallError> for Ending {
    fn from(e: CallError) -> Self {
        Self::new(e.outcome(), Some(e.close_code()), e.reason())
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
    /// A text frame from the agent.
    AgentText(&'a str),
    /// The agent socket ended, with its close code when it sent one.
    AgentGone(Option<u16>),
    /// A deadline passed.
    Tick,
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
    /// The stream started: with an agent, claim the call, then connect the agent (a remote
    /// one) or tell the relay [`Input::AgentConnected`] (the echo).
    Start(CallStart),
}

/// How the call ends when Twilio's socket does: `closed` when a close frame arrived
/// (normal after `stop`), else the reason of the failure.
pub fn twilio_gone(stopped: bool, how: TwilioEnd) -> Ending {
    match how {
        TwilioEnd::Closed if stopped => Ending::new(Outcome::normal, None, "peer closed"),
        TwilioEnd::Closed => Ending::new(Outcome::disconnected, None, "peer closed"),
        TwilioEnd::Gone => Ending::new(Outcome::disconnected, None, "peer gone"),
        TwilioEnd::Reset => Ending::new(Outcome::disconnected, None, "peer reset"),
        TwilioEnd::ReadFailed => Ending::new(Outcome::disconnected, None, "read failed"),
        TwilioEnd::TooLarge => CallError::from(ProtocolError::PayloadTooLarge).into(),
        TwilioEnd::InvalidUtf8 => Ending::new(Outcome::protocol_error, Some(1007), "invalid utf-8"),
        TwilioEnd::Protocol => Ending::new(
            Outcome::protocol_error,
            Some(1002),
            "websocket protocol error",
        ),
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
