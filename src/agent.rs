//! The agent boundary: which agent answers calls, built once from the configuration, and how a
//! call reaches it. The echo runs inside the call as a delay line ([`crate::relay::echo`]);
//! a remote agent (ElevenLabs, [`crate::elevenlabs`]) is a WebSocket the call's own task
//! opens and owns. Nothing here knows the server; the call loop uses it as its
//! [`AgentConnector`].

use std::time::Duration;

use crate::call::AgentConnector;
use crate::config::AgentKind;
use crate::elevenlabs::client::{AgentSocket, ConnectError, ElevenLabs};
use crate::relay::AgentMode;
use crate::secrets::Secrets;

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
    type Error = ConnectError;

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

    fn plan_full(error: &ConnectError) -> bool {
        matches!(error, ConnectError::Busy)
    }
}
