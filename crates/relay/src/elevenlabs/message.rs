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
        /// ElevenLabs' id of the conversation (to find its transcript; not content).
        conversation_id: Option<String>,
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
        /// Its `error_type` (`max_duration_exceeded`, `override_error`, …), at most 64 chars.
        error_type: Option<String>,
    },
    /// The agent calls a client tool: the bridge must answer with `client_tool_result`.
    ClientToolCall(ToolCall),
    /// A tool the agent ran itself finished (`end_call` among the system tools).
    AgentToolResponse {
        /// The tool's name.
        tool_name: String,
        /// Whether it failed.
        is_error: bool,
    },
    /// Anything else (transcripts, responses, VAD, tool calls, future types): counted by type.
    Other(&'static str),
}

impl fmt::Debug for ServerEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Metadata { input, output, .. } => write!(f, "Metadata({input:?}, {output:?})"),
            Self::Audio {
                audio_b64,
                event_id,
            } => {
                write!(f, "Audio({} b64 chars, {event_id:?})", audio_b64.len())
            }
            Self::Interruption { event_id } => write!(f, "Interruption({event_id:?})"),
            Self::Ping { event_id } => write!(f, "Ping({event_id})"),
            Self::Error { code, error_type } => write!(f, "Error({code:?}, {error_type:?})"),
            Self::ClientToolCall(call) => write!(f, "ClientToolCall({})", call.tool_name),
            Self::AgentToolResponse {
                tool_name,
                is_error,
            } => {
                write!(f, "AgentToolResponse({tool_name}, {is_error})")
            }
            Self::Other(t) => write!(f, "Other({t})"),
        }
    }
}

/// A `client_tool_call`. `Debug` shows the tool's name only: arguments may carry PHI.
#[derive(PartialEq, Eq, Clone)]
pub struct ToolCall {
    /// The tool's name (case-sensitive, as configured on the agent).
    pub tool_name: String,
    /// Echoed in the result.
    pub tool_call_id: String,
    /// `parameters.phone_number`, when it is a string.
    pub phone_number: Option<String>,
}

impl fmt::Debug for ToolCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolCall")
            .field("tool_name", &self.tool_name)
            .finish_non_exhaustive()
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
    #[serde(borrow, default)]
    client_tool_call: Option<&'a RawValue>,
    #[serde(borrow, default)]
    agent_tool_response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawMetadata {
    agent_output_audio_format: Option<String>,
    user_input_audio_format: Option<String>,
    conversation_id: Option<String>,
}

#[derive(Deserialize)]
struct RawToolCall {
    tool_name: String,
    tool_call_id: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct RawToolResponse {
    tool_name: String,
    #[serde(default)]
    is_error: bool,
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
    error_type: Option<String>,
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
                conversation_id: meta.conversation_id.map(|mut id| {
                    truncate_chars(&mut id, 128);
                    id
                }),
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
        "error" => {
            // Defensive: an error frame without error_event is still an error.
            let raw = sub::<RawError>(env.error_event).ok().flatten();
            ServerEvent::Error {
                code: raw.as_ref().and_then(|e| e.code),
                error_type: raw.and_then(|e| e.error_type).map(|mut t| {
                    truncate_chars(&mut t, 64);
                    t
                }),
            }
        }
        "client_tool_call" => {
            let raw: RawToolCall =
                sub(env.client_tool_call)?.ok_or(AgentProtocolError::Malformed)?;
            let phone_number = raw
                .parameters
                .as_ref()
                .and_then(|p| p.get("phone_number"))
                .and_then(|v| v.as_str())
                .map(|s| s.trim().to_string());
            ServerEvent::ClientToolCall(ToolCall {
                tool_name: raw.tool_name,
                tool_call_id: raw.tool_call_id,
                phone_number,
            })
        }
        "agent_tool_response" => {
            let raw: RawToolResponse =
                sub(env.agent_tool_response)?.ok_or(AgentProtocolError::Malformed)?;
            ServerEvent::AgentToolResponse {
                tool_name: raw.tool_name,
                is_error: raw.is_error,
            }
        }
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
    /// Per-call overrides; unset fields are left out (never `null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_config_override: Option<ConfigOverride<'a>>,
    source_info: SourceInfo,
}

#[derive(Serialize)]
struct ConfigOverride<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<AgentOverride<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tts: Option<TtsOverride<'a>>,
}

#[derive(Serialize)]
struct AgentOverride<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    first_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<PromptOverride<'a>>,
}

#[derive(Serialize)]
struct PromptOverride<'a> {
    prompt: &'a str,
}

#[derive(Serialize)]
struct TtsOverride<'a> {
    voice_id: &'a str,
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
            conversation_config_override: None,
            source_info: SourceInfo {
                source: "media-orchestrator",
                version: env!("CARGO_PKG_VERSION"),
            },
        }
    }

    /// Adds `conversation_config_override`: `agent.first_message`, `agent.language`,
    /// `agent.prompt.prompt` and `tts.voice_id`, each only when set.
    #[must_use]
    pub fn with_overrides(mut self, overrides: &'a crate::context::AgentOverrides) -> Self {
        let agent = AgentOverride {
            first_message: overrides.first_message.as_deref(),
            language: overrides.language.as_deref(),
            prompt: overrides
                .prompt
                .as_deref()
                .map(|prompt| PromptOverride { prompt }),
        };
        let agent =
            (agent.first_message.is_some() || agent.language.is_some() || agent.prompt.is_some())
                .then_some(agent);
        let tts = overrides
            .voice_id
            .as_deref()
            .map(|voice_id| TtsOverride { voice_id });
        self.conversation_config_override =
            (agent.is_some() || tts.is_some()).then_some(ConfigOverride { agent, tts });
        self
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn truncate_chars(s: &mut String, max: usize) {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
}

/// `{"type":"client_tool_result",…}`: the answer to `tool_call_id` (echoed exactly; `result`
/// is a string, as the contract requires).
pub fn client_tool_result(tool_call_id: &str, result: &str, is_error: bool) -> String {
    serde_json::json!({
        "type": "client_tool_result",
        "tool_call_id": tool_call_id,
        "result": result,
        "is_error": is_error,
    })
    .to_string()
}

/// `{"type":"user_message","text":…}`: text the agent treats as the caller's turn.
pub fn user_message(text: &str) -> String {
    serde_json::json!({"type": "user_message", "text": text}).to_string()
}

/// `{"type":"contextual_update","text":…}`: background information for the agent that does
/// not start a turn of its own.
pub fn contextual_update(text: &str) -> String {
    serde_json::json!({"type": "contextual_update", "text": text}).to_string()
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
