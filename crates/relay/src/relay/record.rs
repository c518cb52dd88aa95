//! What the relay saw of one call, for the call record the driver writes when the stream
//! ends: ids, timings and counts, gathered as the call runs (no work per frame beyond a
//! first-time check) — never audio, phone numbers, parameter values, digits or transcripts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The longest tool name kept (agent-defined, so bounded; never arguments).
const TOOL_NAME_CHARS: usize = 64;
/// Distinct tool names kept per call.
const TOOL_NAMES: usize = 16;

/// Which way the call was placed, from Twilio's `Direction` (a `<Parameter>` the webhooks
/// pass): `inbound`, or `outbound-api` / `outbound-dial` for calls we or a `<Dial>` made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Direction {
    /// A caller dialled in.
    Inbound,
    /// The call was placed outward.
    Outbound,
    /// The stream carried no `Direction`.
    #[default]
    Unknown,
}

impl Direction {
    /// From a `Direction` parameter's value; the value itself is not kept.
    pub fn of(value: Option<&str>) -> Self {
        match value {
            Some("inbound") => Self::Inbound,
            Some(v) if v.starts_with("outbound") => Self::Outbound,
            _ => Self::Unknown,
        }
    }

    /// `inbound`, `outbound` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Unknown => "unknown",
        }
    }
}

/// A call's facts so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFacts {
    /// `start.streamSid`.
    pub stream_sid: Option<String>,
    /// `start.callSid`.
    pub call_sid: Option<String>,
    /// `start.accountSid`.
    pub account_sid: Option<String>,
    /// The agent's conversation id (ElevenLabs': where the transcript is).
    pub conversation_id: Option<String>,
    /// Inbound or outbound.
    pub direction: Direction,
    /// `start` to the agent's metadata.
    pub agent_connect: Option<Duration>,
    /// `start` to the first agent audio released to Twilio.
    pub first_audio: Option<Duration>,
    /// Interruptions the agent reported.
    pub barge_ins: u64,
    /// Keypad entries sent to the agent.
    pub keypad_entries: u64,
    /// Client tool calls by tool name.
    pub tool_calls: BTreeMap<String, u64>,
    /// A transfer Twilio was asked for: `accepted` or `refused`.
    pub transfer: Option<&'static str>,
    /// The agent's output format (`ulaw_8000`, `pcm_16000`, …).
    pub agent_format: Option<&'static str>,
    started_at: Option<Instant>,
}

impl CallFacts {
    /// The stream started at `now`.
    pub(crate) fn started(&mut self, start: &crate::twilio::Start, now: Instant) {
        self.stream_sid = Some(start.stream_sid.as_str().to_string());
        self.call_sid = Some(start.call_sid.as_str().to_string());
        self.account_sid = start.account_sid.as_ref().map(|a| a.as_str().to_string());
        self.direction = Direction::of(
            start
                .custom_parameters
                .0
                .get("Direction")
                .map(String::as_str),
        );
        self.started_at = Some(now);
    }

    fn since_start(&self, now: Instant) -> Option<Duration> {
        self.started_at.map(|s| now.saturating_duration_since(s))
    }

    /// The agent's metadata arrived at `now`.
    pub(crate) fn agent_ready(&mut self, format: &'static str, now: Instant) {
        if self.agent_connect.is_none() {
            self.agent_connect = self.since_start(now);
        }
        self.agent_format = Some(format);
    }

    /// Agent audio went to Twilio at `now`.
    pub(crate) fn audio_out(&mut self, now: Instant) {
        if self.first_audio.is_none() {
            self.first_audio = self.since_start(now);
        }
    }

    /// The agent called `tool`.
    pub(crate) fn tool_call(&mut self, tool: &str) {
        let name: String = tool.chars().take(TOOL_NAME_CHARS).collect();
        if let Some(n) = self.tool_calls.get_mut(&name) {
            *n += 1;
        } else if self.tool_calls.len() < TOOL_NAMES {
            self.tool_calls.insert(name, 1);
        }
    }
}
