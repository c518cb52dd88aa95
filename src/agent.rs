//! The agent boundary: one call = one agent session that takes the caller's audio and emits
//! the agent's audio, interruptions and its end. Implementations: the built-in [`echo`]
//! agent and the ElevenLabs client ([`crate::elevenlabs`]). Audio crosses this boundary as
//! Twilio's own format, μ-law 8 kHz; each implementation transcodes for its peer.

pub mod echo;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::server::AppState;

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

/// How an agent session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEnd {
    /// The agent ended the conversation normally (close 1000).
    Finished,
    /// The agent closed with an error code, or its socket failed mid-call.
    Closed(Option<u16>),
    /// The agent could not be reached (all connect attempts failed).
    Unreachable,
    /// The agent broke its protocol (unparseable frames, unknown formats).
    ProtocolError,
}

/// An event from the agent to the call.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// Agent voice, already μ-law 8 kHz.
    Audio {
        /// μ-law bytes (any length).
        ulaw: Bytes,
        /// The response this audio belongs to (ElevenLabs `event_id`).
        event_id: Option<u64>,
    },
    /// The caller barged in: stop the response `event_id` (and earlier) now.
    Interruption {
        /// The interrupted response.
        event_id: Option<u64>,
        /// When the agent session received it (barge-in latency starts here).
        received_at: Instant,
    },
    /// The session is over; no more events follow.
    Ended(AgentEnd),
}

/// The channels between a call and its agent session.
#[derive(Debug)]
pub struct AgentIo {
    /// Caller audio, μ-law 8 kHz, in Twilio's frames. Closed when the call ends: the session
    /// then closes its peer and returns.
    pub audio_in: mpsc::Receiver<Bytes>,
    /// Events to the call. A send error means the call is gone: return.
    pub events: mpsc::Sender<AgentEvent>,
    /// Server state, for metrics.
    pub state: Arc<AppState>,
}

/// A boxed agent session future.
pub type SessionFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Starts agent sessions. One implementation per kind of agent.
pub trait Agent: Send + Sync + std::fmt::Debug {
    /// A short name for logs (`echo`, `elevenlabs`).
    fn name(&self) -> &'static str;

    /// The session for one call; runs until the call drops `io.audio_in`'s sender or the
    /// agent ends (after sending [`AgentEvent::Ended`]).
    fn session(&self, call: CallStart, io: AgentIo) -> SessionFuture;
}

/// The call side of a running session.
#[derive(Debug)]
pub struct AgentHandle {
    audio: mpsc::Sender<Bytes>,
    events: mpsc::Receiver<AgentEvent>,
}

/// Caller audio frames the agent session may hold before the call drops them (20 ms each):
/// covers connecting and waiting for the agent's metadata, so the caller's first words are
/// not lost, while a stalled agent never costs unbounded memory.
pub const INPUT_QUEUE_FRAMES: usize = 50;

/// Agent events the call may hold.
const EVENT_QUEUE: usize = 256;

/// Wires a session: returns the call's handle and the session's [`AgentIo`].
pub fn channels(state: Arc<AppState>) -> (AgentHandle, AgentIo) {
    let (audio_tx, audio_rx) = mpsc::channel(INPUT_QUEUE_FRAMES);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    (
        AgentHandle {
            audio: audio_tx,
            events: events_rx,
        },
        AgentIo {
            audio_in: audio_rx,
            events: events_tx,
            state,
        },
    )
}

impl AgentHandle {
    /// Hands a caller frame to the session without waiting. Returns `false` when it was
    /// dropped because the session is behind (or gone).
    pub fn send_audio(&self, ulaw: &[u8]) -> bool {
        self.audio.try_send(Bytes::copy_from_slice(ulaw)).is_ok()
    }

    /// The next event; cancel-safe. A session that vanished without a word reads as
    /// [`AgentEnd::Closed`].
    pub async fn next_event(&mut self) -> AgentEvent {
        self.events
            .recv()
            .await
            .unwrap_or(AgentEvent::Ended(AgentEnd::Closed(None)))
    }
}

/// Exponential backoff for connect attempts: `base * 2^attempt`, capped at 2 s.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(4))
        .min(Duration::from_secs(2))
}
