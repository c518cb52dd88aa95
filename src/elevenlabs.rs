//! The ElevenLabs conversational agent as an [`Agent`](crate::agent::Agent): its settings
//! and the per-call client ([`client`]); its messages are the relay crate's ([`message`]).

pub mod client;
pub use media_relay::elevenlabs::message;

use std::time::Duration;

use crate::secrets::SecretSpec;

/// Default REST base (the signed-URL endpoint lives under it).
pub const DEFAULT_API_BASE: &str = "https://api.elevenlabs.io";

/// Settings of the ElevenLabs agent connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElevenLabsConfig {
    /// An explicit conversation URL (`ELEVENLABS_WS_URL`); wins over the agent id.
    pub ws_url: Option<String>,
    /// The agent id (`ELEVENLABS_AGENT_ID`).
    pub agent_id: Option<String>,
    /// API key (`ELEVENLABS_API_KEY`, a value or an `ssm:` reference): with an agent id, a
    /// signed URL is fetched for each call (private agents); with an explicit URL it is sent
    /// as `xi-api-key`.
    pub api_key: Option<SecretSpec>,
    /// REST base for the signed-URL request (`ELEVENLABS_API_BASE`, overridable for tests).
    pub api_base: String,
    /// Time allowed for one connect attempt (signed URL + WebSocket handshake).
    pub connect_timeout: Duration,
    /// Connect attempts after the first one fails.
    pub connect_retries: u32,
    /// The whole connect, every attempt and backoff included.
    pub connect_deadline: Duration,
    /// First retry delay; doubles each attempt.
    pub retry_backoff: Duration,
    /// Legacy mode (`EL_FORWARD_BINARY=true`): caller audio as raw PCM16LE 16 kHz binary
    /// frames instead of `user_audio_chunk` JSON.
    pub forward_binary: bool,
}

impl ElevenLabsConfig {
    /// Whether enough is set to reach an agent.
    pub fn is_configured(&self) -> bool {
        self.ws_url.is_some() || self.agent_id.is_some()
    }
}

impl Default for ElevenLabsConfig {
    fn default() -> Self {
        Self {
            ws_url: None,
            agent_id: None,
            api_key: None,
            api_base: DEFAULT_API_BASE.to_string(),
            connect_timeout: Duration::from_secs(5),
            connect_retries: 2,
            connect_deadline: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(250),
            forward_binary: false,
        }
    }
}
