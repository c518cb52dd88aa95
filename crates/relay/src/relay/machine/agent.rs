//! The agent's side of the relay: the ElevenLabs conversation protocol (initiation, metadata
//! and formats, audio, interruptions, pings, errors) and caller audio in the agent's format.

use super::{count_accepted, Agent, Pending, Relay, Remote};
use crate::audio::AudioFormat;
use crate::elevenlabs::message::{self as el, AgentProtocolError, ServerEvent};
use crate::relay::counters::Drop;
use crate::relay::events::{AgentMode, EndReason, Ending};
use crate::relay::transcode::{FromAgent, ToAgent};
use std::time::Instant;

impl Relay {
    pub(super) fn on_agent_connected(&mut self, now: Instant) {
        if let Agent::Remote(remote @ Remote::Connecting) = &mut self.agent {
            *remote = Remote::AwaitingMetadata;
            self.agent_connected_at = now;
            self.agent_seen_at = now;
            self.agent_ping_at = now + super::control::AGENT_PING_EVERY;
            let init = self.initiation.take().unwrap_or_default();
            self.pending.push_back(Pending::AgentText(init));
        }
    }

    pub(super) fn on_agent_text(&mut self, text: &str, now: Instant) {
        let event = match el::parse(text) {
            Ok(e) => e,
            Err(AgentProtocolError::UnknownFormat) => {
                tracing::warn!("agent announced an unknown audio format");
                self.end(Ending::of(EndReason::AgentProtocolError));
                return;
            }
            Err(AgentProtocolError::Malformed) => {
                self.counters.agent_events.bump("malformed");
                return;
            }
        };
        match event {
            ServerEvent::Metadata {
                input,
                output,
                conversation_id,
            } => {
                self.counters
                    .agent_events
                    .bump("conversation_initiation_metadata");
                if let Some(id) = conversation_id {
                    self.facts.conversation_id = Some(id.clone());
                    self.pending.push_back(Pending::ConversationStarted(id));
                }
                self.facts.agent_ready(output.name(), now);
                self.on_metadata(input, output);
            }
            ServerEvent::Audio {
                audio_b64,
                event_id,
            } => {
                self.counters.agent_events.bump("audio");
                let conv = match &mut self.agent {
                    Agent::Remote(Remote::Ready(conv)) => conv,
                    // The agent leg is done (its goodbye cut at a limit): not played.
                    Agent::Off => {
                        self.counters.drop(Drop::Interrupted, 1);
                        return;
                    }
                    _ => {
                        self.counters.drop(Drop::AgentAudioBeforeMetadata, 1);
                        return;
                    }
                };
                if conv.1.convert(&audio_b64, &mut self.ulaw).is_err() {
                    self.counters.agent_events.bump("malformed");
                    return;
                }
                let accepted = self.playout.push(&self.ulaw, event_id);
                if self.closing.is_some() && accepted != crate::relay::playout::Accepted::Stale {
                    self.on_closing_audio(now);
                }
                count_accepted(&mut self.counters, accepted);
            }
            ServerEvent::Interruption { event_id } => {
                self.counters.agent_events.bump("interruption");
                self.facts.barge_ins += 1;
                let held = self.playout.interrupt(event_id, now);
                tracing::debug!(dropped_frames = held, "barge-in");
                if self.session.stream_sid().is_some() {
                    self.pending.push_back(Pending::Clear(now));
                }
                self.on_closing_interrupted(now);
            }
            ServerEvent::Ping { event_id } => {
                self.counters.agent_events.bump("ping");
                self.pending
                    .push_back(Pending::AgentText(el::pong(event_id)));
            }
            ServerEvent::Error { code, error_type } => {
                self.counters.agent_events.bump("error");
                tracing::warn!(
                    code,
                    error_type = error_type.as_deref(),
                    "agent reported an error"
                );
                if error_type.as_deref() == Some("override_error") {
                    // Configuration drift, not a call fault: say where to fix it.
                    tracing::error!(
                        "agent refused a per-call override: enable it in the agent's Security settings"
                    );
                }
            }
            ServerEvent::ClientToolCall(call) => {
                self.counters.agent_events.bump("client_tool_call");
                tracing::info!(tool = %call.tool_name.chars().take(64).collect::<String>(), "client tool call");
                self.facts.tool_call(&call.tool_name);
                self.on_tool_call(&call, now);
            }
            ServerEvent::AgentToolResponse {
                tool_name,
                is_error,
            } => {
                self.counters.agent_events.bump("agent_tool_response");
                if tool_name == "end_call" && !is_error {
                    self.begin_closing(super::control::Cause::EndCall, now);
                }
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
            self.end(Ending::of(EndReason::AgentProtocolError));
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
