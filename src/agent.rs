//! The agent boundary: which agent answers calls, built once from the configuration, and how a
//! call reaches it. The echo runs inside the call as a delay line ([`crate::relay::echo`]);
//! a remote agent (ElevenLabs, [`crate::elevenlabs`]) is a WebSocket the call's own task
//! opens and owns. Nothing here knows the server; the call loop uses [`AgentConnector`].

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::call::Socket;
use crate::config::AgentKind;
use crate::elevenlabs::client::{AgentSocket, ConnectError, ElevenLabs};
use crate::relay::AgentMode;
use crate::secrets::Secrets;

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

/// How a call reaches its agent.
pub trait AgentConnector: Send + Sync {
    /// The agent socket.
    type Socket: Socket + 'static;

    /// How the relay treats the agent.
    fn mode(&self) -> AgentMode;

    /// Opens the agent socket (remote agents only), with the agent's retries and timeouts.
    fn connect(&self) -> impl Future<Output = Result<Self::Socket, ConnectError>> + Send;
}

/// The agent of this server.
#[derive(Debug)]
pub enum Agent {
    /// No agent: frames are counted only (the seed's behaviour).
    None,
    /// The built-in echo, after this delay.
    Echo(Duration),
    /// An ElevenLabs conversational agent.
    ElevenLabs(Box<ElevenLabs>),
}

impl Agent {
    /// The agent for `kind`; secrets (the API key) resolve through `secrets`.
    ///
    /// # Errors
    /// An I/O error when the ElevenLabs client's TLS roots cannot be loaded.
    pub fn from_config(kind: &AgentKind, secrets: &Secrets) -> std::io::Result<Self> {
        Ok(match kind {
            AgentKind::None => Self::None,
            AgentKind::Echo(delay) => Self::Echo(*delay),
            AgentKind::ElevenLabs(el) => {
                let key = el.api_key.as_ref().map(|spec| secrets.handle(spec));
                Self::ElevenLabs(Box::new(ElevenLabs::new(el.clone(), key)?))
            }
        })
    }
}

impl AgentConnector for Agent {
    type Socket = AgentSocket;

    fn mode(&self) -> AgentMode {
        match self {
            Self::None => AgentMode::None,
            Self::Echo(delay) => AgentMode::Echo(*delay),
            Self::ElevenLabs(el) => AgentMode::Remote {
                binary: el.forward_binary(),
            },
        }
    }

    async fn connect(&self) -> Result<AgentSocket, ConnectError> {
        match self {
            Self::ElevenLabs(el) => el.connect().await,
            Self::None | Self::Echo(_) => Err(ConnectError::Url),
        }
    }
}

/// Exponential backoff for connect attempts: `base * 2^attempt`, capped at 2 s.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(4))
        .min(Duration::from_secs(2))
}
