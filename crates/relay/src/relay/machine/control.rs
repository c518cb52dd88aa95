//! Call control inside the relay: endings gated on playout, the client tools `end_call` and
//! `transfer_to_number`, keypad digits to the agent, and the dead-agent timers.
//! An ending waits until the agent is done (closed, or quiet for [`END_QUIET`]) and playout has
//! released everything, then sends a final mark; its echo (or `end_grace`) hangs up, or sends
//! the transfer with the agent leg still open so a refusal can be told to the agent. A barge-in
//! cancels that mark: Twilio echoes marks at once on `clear`, not when their audio has played.

use std::time::Duration;

use std::time::Instant;

use super::{Agent, Pending, Relay, Remote};
use crate::elevenlabs::message::{self as el, ToolCall};
use crate::relay::events::{EndReason, Ending, Then};
use crate::twilio::number::is_e164;

/// With the agent leg open, no agent audio for this long means its goodbye is complete.
pub const END_QUIET: Duration = Duration::from_millis(1500);
/// WebSocket ping to the agent this often (any frame back proves it alive).
pub const AGENT_PING_EVERY: Duration = Duration::from_secs(5);
/// Keypad digits sent in one message at most (the rest starts a new entry).
const KEYPAD_MAX_DIGITS: usize = 32;
/// The tool result of a transfer Twilio refused, in words the agent can say.
const TRANSFER_FAILED: &str =
    "The transfer did not go through. Tell the caller, and offer to help another way.";

/// Why the call is ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// The agent closed its socket with 1000.
    AgentEnd,
    /// The agent asked to hang up (`end_call`).
    EndCall,
    /// An allowed `transfer_to_number`.
    Transfer,
    /// The call reached `MAX_CALL_SECONDS`.
    MaxDuration,
    /// The server is draining.
    Drain,
}

impl Cause {
    fn label(self) -> &'static str {
        match self {
            Self::AgentEnd => "agent_end",
            Self::EndCall => "end_call",
            Self::Transfer => "transfer",
            Self::MaxDuration => "max_duration",
            Self::Drain => "drain",
        }
    }

    /// Endings the agent did not ask for: the caller's audio no longer reaches it (no new
    /// turns), so the ending is bounded.
    fn forced(self) -> bool {
        matches!(self, Self::MaxDuration | Self::Drain)
    }
}

/// An allowed transfer: where to, and the tool call answered once Twilio has the `<Dial>`.
#[derive(Debug)]
pub(super) struct Transfer {
    number: String,
    tool_call_id: String,
}

/// An ending in progress.
#[derive(Debug)]
pub(super) struct Closing {
    cause: Cause,
    /// When agent audio last arrived (or the ending began).
    last_audio: Instant,
    /// The final mark sent, awaiting its echo, and when to stop waiting.
    final_mark: Option<(u64, Instant)>,
    /// The agent has been quiet for [`END_QUIET`] since `last_audio`.
    quiet: bool,
    /// The transfer's REST request is out (after the final mark's echo).
    transferring: bool,
}

/// Keypad digits of the entry being typed.
#[derive(Debug, Default)]
pub(super) struct Keypad {
    digits: String,
    flush_at: Option<Instant>,
}

impl Relay {
    /// Starts ending the call for `cause` (a second request while ending is ignored).
    pub(super) fn begin_closing(&mut self, cause: Cause, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        tracing::info!(
            cause = cause.label(),
            "call ending after the agent's last words"
        );
        self.counters.control.bump(cause.label());
        self.keypad = Keypad::default();
        self.closing = Some(Closing {
            cause,
            last_audio: now,
            final_mark: None,
            quiet: false,
            transferring: false,
        });
    }

    /// Whether caller audio still goes to the agent (not once the final mark is out, nor in
    /// a forced ending).
    pub(super) fn caller_audio_wanted(&self) -> bool {
        self.closing
            .as_ref()
            .is_none_or(|c| c.final_mark.is_none() && !c.transferring && !c.cause.forced())
    }

    /// Agent audio was queued during an ending: the goodbye is longer than thought.
    pub(super) fn on_closing_audio(&mut self, now: Instant) {
        if let Some(c) = self.closing.as_mut().filter(|c| !c.transferring) {
            c.last_audio = now;
            c.final_mark = None;
            c.quiet = false;
        }
    }

    /// A barge-in during an ending: the mark echo the `clear` triggers must not hang up.
    pub(super) fn on_closing_interrupted(&mut self, now: Instant) {
        if let Some(c) = self.closing.as_mut().filter(|c| !c.transferring) {
            if c.final_mark.take().is_some() {
                self.counters.control.bump("goodbye_interrupted");
            }
            c.last_audio = now;
            c.quiet = false;
        }
    }

    /// Twilio echoed mark `id`.
    pub(super) fn on_closing_mark(&mut self, id: Option<u64>) {
        if let (Some(c), Some(id)) = (&self.closing, id) {
            if c.final_mark.is_some_and(|(m, _)| m == id) {
                self.finish_closing();
            }
        }
    }

    /// Moves an ending on at `now`: places the final mark, or gives up waiting for it.
    pub(super) fn advance_closing(&mut self, now: Instant) {
        let agent_open = matches!(self.agent, Agent::Remote(_));
        let Some(c) = &mut self.closing else {
            return;
        };
        if c.transferring {
            return;
        }
        match c.final_mark {
            Some((_, give_up)) if now >= give_up => {
                self.counters.control.bump("final_mark_timeout");
                tracing::info!("final mark not echoed in time; ending anyway");
                self.finish_closing();
            }
            Some(_) => {}
            None => {
                c.quiet |= now >= c.last_audio + END_QUIET;
                let agent_done = !agent_open || c.quiet;
                if agent_done
                    && self.playout.held().is_zero()
                    && self.session.stream_sid().is_some()
                {
                    let id = self.playout.mark_now();
                    c.final_mark = Some((id, now + self.config.control.end_grace));
                    self.pending.push_back(Pending::Mark(id));
                }
            }
        }
    }

    /// When an ending next needs a tick.
    pub(super) fn closing_deadline(&self) -> Option<Instant> {
        let c = self.closing.as_ref().filter(|c| !c.transferring)?;
        match c.final_mark {
            Some((_, give_up)) => Some(give_up),
            // Once quiet (or closed), the playout's own deadlines drive the final mark.
            None if c.quiet || !matches!(self.agent, Agent::Remote(_)) => None,
            None => Some(c.last_audio + END_QUIET),
        }
    }

    fn finish_closing(&mut self) {
        let Some(c) = self.closing.as_mut() else {
            return;
        };
        let reason = match c.cause {
            Cause::Transfer => {
                // Sent with the agent leg still open: a refusal goes back to the agent.
                c.transferring = true;
                c.final_mark = None;
                self.pending.push_back(Pending::Transfer);
                return;
            }
            Cause::AgentEnd => EndReason::AgentEnded,
            Cause::EndCall => EndReason::AgentHungUp,
            Cause::MaxDuration => EndReason::MaxDuration,
            Cause::Drain => EndReason::ServerDraining,
        };
        self.closing = None;
        // Through REST when this stream controls its call (`end` checks), else a close.
        self.end(Ending::of(reason).then(Then::HangUp));
    }

    /// The transfer's REST request is done. Taken: the call is Twilio's now. Refused: the
    /// agent hears why (the tool result) and the call goes on with it.
    pub(super) fn on_transfer_done(&mut self, ok: bool) {
        if !self.closing.as_ref().is_some_and(|c| c.transferring) {
            return;
        }
        self.closing = None;
        let Some(transfer) = self.transfer.take() else {
            return;
        };
        self.facts.transfer = Some(if ok { "accepted" } else { "refused" });
        if ok {
            self.end(Ending::of(EndReason::Transferred));
            return;
        }
        self.counters.control.bump("transfer_failed");
        if matches!(self.agent, Agent::Remote(Remote::Ready(_))) {
            tracing::info!("transfer refused by twilio; the call stays with the agent");
            self.pending
                .push_back(Pending::AgentText(el::client_tool_result(
                    &transfer.tool_call_id,
                    TRANSFER_FAILED,
                    true,
                )));
        } else {
            // No agent left to tell: the stream's close lets Twilio run the fallback.
            self.end(Ending::of(EndReason::TransferFailed));
        }
    }

    /// Answers a `client_tool_call`, every time, with the same `tool_call_id`.
    pub(super) fn on_tool_call(&mut self, call: &ToolCall, now: Instant) {
        if call.tool_name == "transfer_to_number"
            && self
                .transfer_refusal(call.phone_number.as_deref())
                .is_none()
        {
            // Answered once Twilio has taken (or refused) the <Dial>.
            self.transfer = Some(Transfer {
                number: call.phone_number.clone().unwrap_or_default(),
                tool_call_id: call.tool_call_id.clone(),
            });
            self.begin_closing(Cause::Transfer, now);
            return;
        }
        let (result, is_error, cause) = match call.tool_name.as_str() {
            "end_call" if self.closing.is_some() => ("The call is already ending.", false, None),
            "end_call" => (r#"{"status":"ending call"}"#, false, Some(Cause::EndCall)),
            "transfer_to_number" => {
                let reason = self
                    .transfer_refusal(call.phone_number.as_deref())
                    .unwrap_or_default();
                self.counters.control.bump("transfer_refused");
                tracing::info!("transfer refused");
                (reason, true, None)
            }
            _ => {
                self.counters.control.bump("unsupported_tool");
                tracing::info!("unsupported client tool answered with an error");
                ("This tool is not available on this phone line.", true, None)
            }
        };
        self.pending
            .push_back(Pending::AgentText(el::client_tool_result(
                &call.tool_call_id,
                result,
                is_error,
            )));
        if let Some(cause) = cause {
            self.begin_closing(cause, now);
        }
    }

    /// Why `number` may not be dialled, in words the agent can say; `None`: allowed.
    fn transfer_refusal(&self, number: Option<&str>) -> Option<&'static str> {
        let policy = &self.config.control;
        if self.closing.is_some() {
            return Some("The call is already ending.");
        }
        if !policy.rest || policy.transfer_allowlist.is_empty() {
            return Some("Transfers are not enabled on this line.");
        }
        if !self.bound {
            return Some("Transfers are not available on this call.");
        }
        let Some(number) = number.filter(|n| is_e164(n)) else {
            return Some("phone_number must be an E.164 number such as +15551230000.");
        };
        if !policy.transfer_allowlist.allows(number) {
            return Some("That number is not on this line's transfer list.");
        }
        None
    }

    /// The transfer's TwiML, for [`Output::Transfer`](crate::relay::Output::Transfer).
    pub(super) fn transfer_twiml(&self) -> String {
        let number = self.transfer.as_ref().map_or("", |t| t.number.as_str());
        let policy = &self.config.control;
        let caller_id = policy
            .transfer_caller_id
            .as_deref()
            .or(self.call_number.as_deref());
        crate::twilio::twiml::dial(
            number,
            caller_id,
            policy.transfer_timeout_secs,
            policy.transfer_action_url.as_deref(),
        )
    }

    /// A keypad digit: collected into one entry, sent at `#`, after the inter-digit timeout
    /// or at [`KEYPAD_MAX_DIGITS`].
    pub(super) fn on_keypad(&mut self, digit: char, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        self.keypad.digits.push(digit);
        self.keypad.flush_at = Some(now + self.config.control.keypad_timeout);
        if digit == '#' || self.keypad.digits.len() >= KEYPAD_MAX_DIGITS {
            self.flush_keypad();
        }
    }

    /// Sends the entry typed so far to the agent as the caller's turn (never logged).
    pub(super) fn flush_keypad(&mut self) {
        self.keypad.flush_at = None;
        if self.keypad.digits.is_empty() {
            return;
        }
        let text = format!("[keypad] {}", self.keypad.digits);
        self.keypad.digits.clear();
        if matches!(self.agent, Agent::Remote(Remote::Ready(_))) {
            self.counters.control.bump("keypad_entry");
            self.facts.keypad_entries += 1;
            self.pending
                .push_back(Pending::AgentText(el::user_message(&text)));
        } else {
            self.counters.control.bump("keypad_dropped");
        }
    }

    pub(super) fn keypad_deadline(&self) -> Option<Instant> {
        self.keypad.flush_at
    }

    /// The dead-agent timers at `now`: metadata that never came, a silent socket; and the
    /// pings that keep a live one talking.
    pub(super) fn check_agent(&mut self, now: Instant) {
        let connected = matches!(
            self.agent,
            Agent::Remote(Remote::AwaitingMetadata | Remote::Ready(_))
        );
        if !connected {
            return;
        }
        let policy = &self.config.control;
        let no_metadata = matches!(self.agent, Agent::Remote(Remote::AwaitingMetadata))
            && now >= self.agent_connected_at + policy.metadata_timeout;
        let silent = now >= self.agent_seen_at + policy.agent_silence;
        if no_metadata || silent {
            if self.closing.is_some() {
                // The goodbye is as complete as it will get.
                self.agent = Agent::Off;
                return;
            }
            self.counters.control.bump("agent_dead");
            tracing::warn!(
                no_metadata,
                silent_ms = now
                    .saturating_duration_since(self.agent_seen_at)
                    .as_millis() as u64,
                "agent unresponsive; handing the call back to Twilio"
            );
            self.agent = Agent::Off;
            self.end(Ending::of(EndReason::AgentUnresponsive));
            return;
        }
        if now >= self.agent_ping_at {
            self.agent_ping_at = now + AGENT_PING_EVERY;
            self.pending.push_back(Pending::AgentPing);
        }
    }

    /// When the dead-agent timers next need a tick.
    pub(super) fn agent_deadline(&self) -> Option<Instant> {
        let policy = &self.config.control;
        match self.agent {
            Agent::Remote(Remote::AwaitingMetadata) => Some(
                (self.agent_connected_at + policy.metadata_timeout)
                    .min(self.agent_seen_at + policy.agent_silence)
                    .min(self.agent_ping_at),
            ),
            Agent::Remote(Remote::Ready(_)) => {
                Some((self.agent_seen_at + policy.agent_silence).min(self.agent_ping_at))
            }
            _ => None,
        }
    }
}
