//! ElevenLabs agent WebSocket messages: the server events the bridge acts on (parsed without
//! copying the audio), and the client messages it sends. Unknown event types are tolerated.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::audio::AudioFormat;

/// A server event the bridge handles. Audio stays base64 and borrowed from the frame.
#[derive(PartialEq)]
pub enum ServerEvent<'a> {
    /// The conversation's audio formats.
    Metadata {
        /// Format of `user_audio_chunk` the agent expects.
        input: AudioFormat,
        /// Format of the agent's `audio` events.
        output: AudioFormat,
    },
    /// A chunk of the agent's voice.
    Audio {
        /// Base64 audio in the output format.
        audio_b64: Cow<'a, str>,
        /// The response it belongs to.
        event_id: Option<u64>,
    },
    /// The caller talked over the agent: stop playing response `event_id` and earlier.
    Interruption {
        /// The interrupted response.
        event_id: Option<u64>,
    },
    /// Keepalive; must be answered with a `pong` carrying the same id.
    Ping {
        /// The ping's id.
        event_id: u64,
    },
    /// The agent reports an error (a close usually follows).
    Error {
        /// The error's close-style code, if given.
        code: Option<u16>,
    },
    /// Anything else (transcripts, responses, VAD, tool calls, future types): counted by type.
    Other(&'static str),
}

impl fmt::Debug for ServerEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Metadata { input, output } => write!(f, "Metadata({input:?}, {output:?})"),
            Self::Audio {
                audio_b64,
                event_id,
            } => {
                write!(f, "Audio({} b64 chars, {event_id:?})", audio_b64.len())
            }
            Self::Interruption { event_id } => write!(f, "Interruption({event_id:?})"),
            Self::Ping { event_id } => write!(f, "Ping({event_id})"),
            Self::Error { code } => write!(f, "Error({code:?})"),
            Self::Other(t) => write!(f, "Other({t})"),
        }
    }
}

/// Why an agent frame could not be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AgentProtocolError {
    /// Not JSON or not the documented shape.
    #[error("malformed agent message")]
    Malformed,
    /// A format name this bridge does not know.
    #[error("unknown audio format")]
    UnknownFormat,
}

/// Known other types, so the metric label set stays bounded.
const OTHER_TYPES: &[&str] = &[
    "agent_response",
    "user_transcript",
    "tentative_user_transcript",
    "agent_response_correction",
    "client_tool_call",
    "agent_tool_request",
    "agent_tool_response",
    "vad_score",
    "internal_tentative_agent_response",
    "internal_turn_probability",
    "agent_chat_response_part",
    "asr_initiation_metadata",
    "context_usage",
    "mcp_tool_call",
    "mcp_connection_status",
];

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    conversation_initiation_metadata_event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    audio_event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    interruption_event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ping_event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error_event: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawMetadata {
    agent_output_audio_format: Option<String>,
    user_input_audio_format: Option<String>,
}

#[derive(Deserialize)]
struct RawAudio<'a> {
    #[serde(borrow)]
    audio_base_64: &'a RawValue,
    event_id: Option<u64>,
}

#[derive(Deserialize)]
struct RawEventId {
    event_id: Option<u64>,
}

#[derive(Deserialize)]
struct RawError {
    code: Option<u16>,
}

fn sub<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Result<Option<T>, AgentProtocolError> {
    raw.map(|r| serde_json::from_str(r.get()))
        .transpose()
        .map_err(|_| AgentProtocolError::Malformed)
}

fn json_str(raw: &RawValue) -> Result<Cow<'_, str>, AgentProtocolError> {
    crate::json::str_of(raw).ok_or(AgentProtocolError::Malformed)
}

/// Parses one text frame from the agent.
///
/// # Errors
/// [`AgentProtocolError`] when the frame is not JSON with a `type`, or a handled event lacks
/// its payload.
pub fn parse(text: &str) -> Result<ServerEvent<'_>, AgentProtocolError> {
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|_| AgentProtocolError::Malformed)?;
    Ok(match env.kind.as_ref() {
        "conversation_initiation_metadata" => {
            let meta: RawMetadata = sub(env.conversation_initiation_metadata_event)?
                .ok_or(AgentProtocolError::Malformed)?;
            // The JS client assumes pcm_16000 when a format is missing; so do we.
            let format = |f: Option<String>| match f {
                None => Ok(AudioFormat::Pcm(16000)),
                Some(name) => AudioFormat::parse(&name).ok_or(AgentProtocolError::UnknownFormat),
            };
            ServerEvent::Metadata {
                input: format(meta.user_input_audio_format)?,
                output: format(meta.agent_output_audio_format)?,
            }
        }
        "audio" => {
            let raw: RawAudio<'_> = sub(env.audio_event)?.ok_or(AgentProtocolError::Malformed)?;
            ServerEvent::Audio {
                audio_b64: json_str(raw.audio_base_64)?,
                event_id: raw.event_id,
            }
        }
        "interruption" => ServerEvent::Interruption {
            event_id: sub::<RawEventId>(env.interruption_event)?.and_then(|e| e.event_id),
        },
        "ping" => ServerEvent::Ping {
            event_id: sub::<RawEventId>(env.ping_event)?
                .and_then(|e| e.event_id)
                .ok_or(AgentProtocolError::Malformed)?,
        },
        "error" => ServerEvent::Error {
            // Defensive: an error frame without error_event is still an error.
            code: sub::<RawError>(env.error_event)
                .ok()
                .flatten()
                .and_then(|e| e.code),
        },
        other => ServerEvent::Other(
            OTHER_TYPES
                .iter()
                .find(|t| **t == other)
                .copied()
                .unwrap_or("other"),
        ),
    })
}

/// `conversation_initiation_client_data`, sent first on every conversation.
#[derive(Serialize)]
pub struct InitiationClientData<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Variables the agent's prompt may reference (`{{name}}`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dynamic_variables: BTreeMap<&'a str, &'a str>,
    source_info: SourceInfo,
}

#[derive(Serialize)]
struct SourceInfo {
    source: &'static str,
    version: &'static str,
}

impl<'a> InitiationClientData<'a> {
    /// Init data carrying `dynamic_variables`.
    pub fn new(dynamic_variables: BTreeMap<&'a str, &'a str>) -> Self {
        Self {
            kind: "conversation_initiation_client_data",
            dynamic_variables,
            source_info: SourceInfo {
                source: "media-orchestrator",
                version: env!("CARGO_PKG_VERSION"),
            },
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `{"type":"pong","event_id":…}`.
pub fn pong(event_id: u64) -> String {
    format!(r#"{{"type":"pong","event_id":{event_id}}}"#)
}

/// Appends `{"user_audio_chunk":"<b64>"}` to `out` (cleared first); no other allocation.
pub fn user_audio_chunk(b64: &str, out: &mut String) {
    out.clear();
    out.reserve(b64.len() + 24);
    out.push_str(r#"{"user_audio_chunk":""#);
    out.push_str(b64);
    out.push_str(r#""}"#);
}

#[cfg(test)]
mod tests;
