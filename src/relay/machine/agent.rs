//! The agent's side of the relay: the ElevenLabs conversation protocol (initiation, metadata
//! and formats, audio, interruptions, pings, errors) and caller audio in the agent's format.

use super::{count_accepted, Agent, Pending, Relay, Remote};
use crate::audio::AudioFormat;
use crate::elevenlabs::message::{self as el, AgentProtocolError, ServerEvent};
use crate::metrics::Outcome;
use crate::relay::counters::Drop;
use crate::relay::events::{AgentMode, Ending};
use crate::relay::transcode::{FromAgent, ToAgent};
use tokio::time::Instant;

impl Relay {
    pub(super) fn on_agent_connected(&mut self) {
        if let Agent::Remote(remote @ Remote::Connecting) = &mut self.agent {
            *remote = Remote::AwaitingMetadata;
            self.agent_text = self.initiation.take().unwrap_or_default();
            self.pending.push_back(Pending::AgentText);
        }
    }

    pub(super) fn on_agent_text(&mut self, text: &str, now: Instant) {
        let event = match el::parse(text) {
            Ok(e) => e,
            Err(AgentProtocolError::UnknownFormat) => {
                tracing::warn!("agent announced an unknown audio format");
                self.end(Ending::new(
                    Outcome::agent_error,
                    Some(1000),
                    "agent protocol error",
                ));
                return;
            }
            Err(AgentProtocolError::Malformed) => {
                self.counters.agent_events.bump("malformed");
                return;
            }
        };
        match event {
            ServerEvent::Metadata { input, output } => {
                self.counters
                    .agent_events
                    .bump("conversation_initiation_metadata");
                self.on_metadata(input, output);
            }
            ServerEvent::Audio {
                audio_b64,
                event_id,
            } => {
                self.counters.agent_events.bump("audio");
                let Agent::Remote(Remote::Ready(conv)) = &mut self.agent else {
                    self.counters.drop(Drop::AgentAudioBeforeMetadata, 1);
                    return;
                };
                if conv.1.convert(&audio_b64, &mut self.ulaw).is_err() {
                    self.counters.agent_events.bump("malformed");
                    return;
                }
                let accepted = self.playout.push(&self.ulaw, event_id);
                count_accepted(&mut self.counters, accepted);
            }
            ServerEvent::Interruption { event_id } => {
                self.counters.agent_events.bump("interruption");
                let held = self.playout.interrupt(event_id, now);
                tracing::debug!(dropped_frames = held, "barge-in");
                if self.session.stream_sid().is_some() {
                    self.pending.push_back(Pending::Clear(now));
                }
            }
            ServerEvent::Ping { event_id } => {
                self.counters.agent_events.bump("ping");
                self.agent_text = el::pong(event_id);
                self.pending.push_back(Pending::AgentText);
            }
            ServerEvent::Error { code } => {
                self.counters.agent_events.bump("error");
                tracing::warn!(code, "agent reported an error");
            }
            ServerEvent::Other(kind) => {
                self.counters.agent_events.bump(kind);
                tracing::debug!(kind, "agent event");
            }
        }
    }

    fn on_metadata(&mut self, input: AudioFormat, output: AudioFormat) {
        if input != AudioFormat::Ulaw8000 || output != AudioFormat::Ulaw8000 {
            tracing::warn!(
                input = input.name(),
                output = output.name(),
                "agent audio is not ulaw_8000; transcoding (set the agent to mu-law 8000 Hz for telephony)"
            );
        } else {
            tracing::info!(format = "ulaw_8000", "agent audio passes through");
        }
        let AgentMode::Remote { binary } = self.config.agent else {
            return;
        };
        // Legacy binary mode: the agent takes PCM16LE 16 kHz whatever it announces.
        let to = if binary {
            ToAgent::new(AudioFormat::Pcm(16000))
        } else {
            ToAgent::new(input)
        };
        let (Ok(to), Ok(from)) = (to, FromAgent::new(output)) else {
            self.end(Ending::new(
                Outcome::agent_error,
                Some(1000),
                "agent protocol error",
            ));
            return;
        };
        if let Agent::Remote(remote) = &mut self.agent {
            *remote = Remote::Ready(Box::new((to, from)));
        }
    }
}

/// Caller audio rendered for the agent: `{"user_audio_chunk":"<base64>"}`, or raw PCM16LE in
/// the legacy binary mode.
#[derive(Debug, Default)]
pub(super) struct CallerOut {
    pub(super) text: String,
    pub(super) raw: Vec<u8>,
    b64: String,
}

impl CallerOut {
    /// Renders one caller frame in the agent's input format.
    pub(super) fn render(&mut self, to: &mut ToAgent, mode: AgentMode, ulaw: &[u8]) {
        if mode == (AgentMode::Remote { binary: true }) {
            self.raw.clear();
            self.raw.extend_from_slice(to.raw(ulaw));
            return;
        }
        to.base64(ulaw, &mut self.b64);
        el::user_audio_chunk(&self.b64, &mut self.text);
    }
}
