//! What the agent gets for one call beyond its stored configuration (overrides, dynamic
//! variables) and the voicemail choice: plain data here; sealing it for the trip through
//! Twilio's URLs is the server's (`media_orchestrator::context`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Per-call overrides of the agent's configuration (each needs its permission enabled in the
/// agent's Security settings). Unset fields are not sent.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentOverrides {
    /// `agent.first_message` (empty: the agent waits for the callee to speak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_message: Option<String>,
    /// `agent.prompt.prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// `agent.language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `tts.voice_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_id: Option<String>,
}

impl AgentOverrides {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }

    /// The names of the overridden fields (for logs: never their values).
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("first_message", self.first_message.is_some()),
            ("prompt", self.prompt.is_some()),
            ("language", self.language.is_some()),
            ("voice_id", self.voice_id.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

impl std::fmt::Debug for AgentOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AgentOverrides")
            .field(&self.names())
            .finish()
    }
}

/// What the agent gets for one call beyond its stored configuration.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContext {
    /// `dynamic_variables`; they win over the stream's `<Parameter>`s of the same name.
    #[serde(default, rename = "vars", skip_serializing_if = "BTreeMap::is_empty")]
    pub dynamic_variables: BTreeMap<String, String>,
    /// `conversation_config_override`.
    #[serde(default, skip_serializing_if = "AgentOverrides::is_empty")]
    pub overrides: AgentOverrides,
}

impl CallContext {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.dynamic_variables.is_empty() && self.overrides.is_empty()
    }
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field(
                "dynamic_variables",
                &self.dynamic_variables.keys().collect::<Vec<_>>(),
            )
            .field("overrides", &self.overrides)
            .finish()
    }
}

/// What the AMD callback does when a machine answered.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "on_machine", content = "message", rename_all = "snake_case")]
pub enum Voicemail {
    /// Hang up.
    Hangup,
    /// Say this message (after the beep), then hang up.
    Message(String),
}

impl Voicemail {
    /// `hangup` or `message`, for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Hangup => "hangup",
            Self::Message(_) => "message",
        }
    }
}

impl std::fmt::Debug for Voicemail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
