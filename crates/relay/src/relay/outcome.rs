//! How a call ended, as counted (`media_calls_total{outcome}`) and logged.

/// How a call ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Twilio sent `stop` (or the server ended the call on purpose).
    normal,
    /// The peer closed or vanished without `stop`.
    disconnected,
    /// No message for the idle timeout.
    idle,
    /// No pong for a whole keepalive interval.
    keepalive,
    /// The token's `sub` did not match `start.callSid`, or the call was refused by policy.
    auth,
    /// A payload over the size limit or not base64.
    payload,
    /// The peer read too slowly.
    backpressure,
    /// Malformed JSON, media before start, and other protocol violations.
    protocol_error,
    /// Closed by the server's drain on shutdown.
    drained,
    /// The agent failed (connect, mid-call close).
    agent_error,
    /// A second stream for a call that already has a live agent session.
    duplicate,
    /// A bug panicked inside the call's task.
    panic,
    /// The call registry could not be written at `start`: refused (fails closed).
    unavailable,
    /// Over the agent plan (`AGENT_CONCURRENCY_LIMIT`, or ElevenLabs refused for
    /// concurrency): sent to the overflow TwiML.
    overflow,
}

impl Outcome {
    /// The metric label and log value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::normal => "normal",
            Self::disconnected => "disconnected",
            Self::idle => "idle",
            Self::keepalive => "keepalive",
            Self::auth => "auth",
            Self::payload => "payload",
            Self::backpressure => "backpressure",
            Self::protocol_error => "protocol_error",
            Self::drained => "drained",
            Self::agent_error => "agent_error",
            Self::duplicate => "duplicate",
            Self::panic => "panic",
            Self::unavailable => "unavailable",
            Self::overflow => "overflow",
        }
    }
}
