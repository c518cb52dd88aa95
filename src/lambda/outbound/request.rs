//! The `POST /calls` body and its validation: E.164 numbers, bounded variables and
//! overrides, a voicemail choice that can be carried out. Refusals carry constant reasons
//! that never quote the values.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::super::LambdaError;
use crate::context::{AgentOverrides, CallContext, Voicemail};
use crate::twilio::number::is_e164;
use crate::twilio::twiml::say_then_hang_up;

/// Longest inline TwiML of a call update (error 32018).
const MAX_TWIML_CHARS: usize = 4000;
/// Most dynamic variables per call.
const MAX_VARIABLES: usize = 32;
/// Longest variable name.
const MAX_VARIABLE_NAME: usize = 64;
/// Longest variable value.
const MAX_VARIABLE_VALUE: usize = 512;
/// Longest prompt (the whole context must also seal within
/// [`crate::context::MAX_SEALED_CHARS`]).
const MAX_PROMPT: usize = 1500;
/// Longest first message and voicemail message.
const MAX_MESSAGE: usize = 1000;

/// The `POST /calls` body. Unknown fields are refused: a misspelt override must not be
/// silently dropped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CallRequest {
    to: String,
    from: Option<String>,
    dynamic_variables: Option<BTreeMap<String, String>>,
    first_message: Option<String>,
    prompt: Option<String>,
    language: Option<String>,
    voice_id: Option<String>,
    voicemail: Option<VoicemailChoice>,
    voicemail_message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum VoicemailChoice {
    Hangup,
    Message,
}

/// A validated request.
pub(super) struct Outbound {
    pub to: String,
    pub from: String,
    pub context: CallContext,
    pub voicemail: Voicemail,
}

pub(super) fn validate(
    request: CallRequest,
    default_from: Option<&str>,
) -> Result<Outbound, LambdaError> {
    use LambdaError::InvalidRequest as Bad;
    if !is_e164(&request.to) {
        return Err(Bad("to must be an E.164 number (+ and at most 15 digits)"));
    }
    let from = match request.from {
        Some(from) if is_e164(&from) => from,
        Some(_) => {
            return Err(Bad(
                "from must be an E.164 number (+ and at most 15 digits)",
            ))
        }
        None => default_from
            .map(str::to_string)
            .ok_or(Bad("from is required (OUTBOUND_FROM is not set)"))?,
    };
    let vars = request.dynamic_variables.unwrap_or_default();
    if vars.len() > MAX_VARIABLES {
        return Err(Bad("at most 32 dynamicVariables"));
    }
    for (name, value) in &vars {
        let well_formed = !name.is_empty()
            && name.len() <= MAX_VARIABLE_NAME
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !well_formed {
            return Err(Bad(
                "dynamicVariables names are 1 to 64 letters, digits or _",
            ));
        }
        if name.starts_with("system__") {
            return Err(Bad(
                "dynamicVariables names starting with system__ are reserved",
            ));
        }
        if value.chars().count() > MAX_VARIABLE_VALUE {
            return Err(Bad("dynamicVariables values are at most 512 characters"));
        }
    }
    let within =
        |text: &Option<String>, max: usize| text.as_ref().is_none_or(|t| t.chars().count() <= max);
    if !within(&request.prompt, MAX_PROMPT) {
        return Err(Bad("prompt is at most 1500 characters"));
    }
    if !within(&request.first_message, MAX_MESSAGE) {
        return Err(Bad("firstMessage is at most 1000 characters"));
    }
    if request.language.as_deref().is_some_and(|l| !is_language(l)) {
        return Err(Bad(
            "language must be one of ElevenLabs' agent languages, such as en, pt-br or zh",
        ));
    }
    if request.voice_id.as_deref().is_some_and(|v| {
        v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric())
    }) {
        return Err(Bad("voiceId must be 1 to 64 letters or digits"));
    }
    let voicemail = match (request.voicemail, request.voicemail_message) {
        (Some(VoicemailChoice::Message), Some(message)) => {
            if message.trim().is_empty() || message.chars().count() > MAX_MESSAGE {
                return Err(Bad("voicemailMessage is 1 to 1000 characters"));
            }
            if say_then_hang_up(&message).chars().count() > MAX_TWIML_CHARS {
                return Err(Bad("voicemailMessage is too long once written as TwiML"));
            }
            Voicemail::Message(message)
        }
        (Some(VoicemailChoice::Message), None) => {
            return Err(Bad("voicemail \"message\" needs voicemailMessage"))
        }
        (Some(VoicemailChoice::Hangup) | None, Some(_)) => {
            return Err(Bad("voicemailMessage needs voicemail \"message\""))
        }
        (Some(VoicemailChoice::Hangup) | None, None) => Voicemail::Hangup,
    };
    Ok(Outbound {
        to: request.to,
        from,
        context: CallContext {
            dynamic_variables: vars,
            overrides: AgentOverrides {
                first_message: request.first_message,
                prompt: request.prompt,
                language: request.language,
                voice_id: request.voice_id,
            },
        },
        voicemail,
    })
}

/// The languages a `conversation_config_override.agent.language` may name: the `Language`
/// enum of ElevenLabs' agent contract (elevenlabs/packages `agent.asyncapi.yaml`). Anything
/// else ends the call in the agent's refusal, so it is refused before Twilio dials.
const LANGUAGES: &[&str] = &[
    "en", "ja", "zh", "de", "hi", "fr", "ko", "pt", "pt-br", "it", "es", "id", "nl", "tr", "pl",
    "sv", "bg", "ro", "ar", "cs", "el", "fi", "ms", "da", "ta", "uk", "ru", "hu", "hr", "sk", "no",
    "vi", "tl", "af", "hy", "as", "az", "be", "bn", "bs", "ca", "et", "gl", "ka", "gu", "ha", "he",
    "is", "ga", "jv", "kn", "kk", "ky", "lv", "lt", "lb", "mk", "ml", "mr", "ne", "ps", "fa", "pa",
    "sr", "sd", "sl", "so", "sw", "te", "th", "ur", "cy",
];

/// Whether `code` is one of ElevenLabs' agent languages (exactly as the contract spells it).
pub(super) fn is_language(code: &str) -> bool {
    LANGUAGES.contains(&code)
}
