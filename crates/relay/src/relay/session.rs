//! One Twilio stream's protocol state, as a pure state machine: text frame in, [`Event`] or
//! [`CallError`] out. No I/O, no clock; the call loop owns those.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::relay::Outcome;
use crate::twilio::message::{self, Inbound, ProtocolError, Start};
use crate::twilio::StreamSid;

/// Standard alphabet; padding optional on input (Twilio pads, other senders may not).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a call must end, with the close code sent to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The peer broke the Media Streams protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// `start.callSid` differs from the token's `sub`.
    #[error("call sid does not match token")]
    CallSidMismatch,
    /// `start.accountSid` is missing or not `TWILIO_ACCOUNT_SID`.
    #[error("account sid not accepted")]
    AccountMismatch,
}

impl CallError {
    /// The outcome counted for this error.
    pub fn outcome(self) -> Outcome {
        match self {
            Self::Protocol(ProtocolError::PayloadTooLarge | ProtocolError::PayloadNotBase64) => {
                Outcome::payload
            }
            Self::Protocol(_) => Outcome::protocol_error,
            Self::CallSidMismatch | Self::AccountMismatch => Outcome::auth,
        }
    }

    /// The WebSocket close code (see docs/calls.md, "Close codes").
    pub fn close_code(self) -> u16 {
        match self {
            Self::Protocol(ProtocolError::PayloadTooLarge) => 1009,
            Self::Protocol(ProtocolError::PayloadNotBase64) => 1007,
            Self::Protocol(ProtocolError::BinaryFrame) => 1003,
            Self::Protocol(_) => 1002,
            Self::CallSidMismatch | Self::AccountMismatch => 1008,
        }
    }

    /// The close reason: a constant, never peer data.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Protocol(p) => p.close_reason(),
            Self::CallSidMismatch => "call sid mismatch",
            Self::AccountMismatch => "account mismatch",
        }
    }
}

/// What a frame meant, for the call loop.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// `connected`, or an unknown event: nothing to do.
    Nothing,
    /// The stream started.
    Started(Box<Start>),
    /// Caller audio: this many μ-law bytes were decoded into the audio buffer.
    Audio(usize),
    /// Twilio echoed a mark.
    Mark(String),
    /// The caller pressed a key (`0`–`9`, `*`, `#`; anything else is ignored).
    Dtmf(Option<char>),
    /// The stream stopped.
    Stopped,
}

/// Protocol state of one stream.
#[derive(Debug)]
pub struct Session {
    bound_call_sid: Option<String>,
    account_sid: Option<String>,
    max_payload_bytes: usize,
    stream_sid: Option<StreamSid>,
    stopped: bool,
}

impl Session {
    /// A session for a handshake whose token was bound to `bound_call_sid` (JWT `sub`).
    pub fn new(bound_call_sid: Option<String>, max_payload_bytes: usize) -> Self {
        Self {
            bound_call_sid,
            account_sid: None,
            max_payload_bytes,
            stream_sid: None,
            stopped: false,
        }
    }

    /// Accepts only streams whose `start.accountSid` is `account_sid` (`TWILIO_ACCOUNT_SID`).
    #[must_use]
    pub fn with_account(mut self, account_sid: Option<String>) -> Self {
        self.account_sid = account_sid;
        self
    }

    /// The stream's SID once `start` has arrived.
    pub fn stream_sid(&self) -> Option<&StreamSid> {
        self.stream_sid.as_ref()
    }

    /// Whether `stop` has arrived.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Handles one text frame. Caller audio is decoded into `audio` (cleared first).
    ///
    /// Returns the event name (for metrics) and what happened.
    ///
    /// # Errors
    /// [`CallError`] when the call must end.
    pub fn on_text(
        &mut self,
        text: &str,
        audio: &mut Vec<u8>,
    ) -> (&'static str, Result<Event, CallError>) {
        let inbound = match message::parse(text) {
            Ok(m) => m,
            Err(e) => return ("invalid", Err(e.into())),
        };
        let name = inbound.name();
        (name, self.on_inbound(inbound, audio))
    }

    fn on_inbound(
        &mut self,
        inbound: Inbound<'_>,
        audio: &mut Vec<u8>,
    ) -> Result<Event, CallError> {
        if let (Some(ours), Some(theirs)) = (&self.stream_sid, inbound.stream_sid()) {
            if ours.as_str() != theirs {
                return Err(ProtocolError::StreamSidMismatch.into());
            }
        }
        match inbound {
            Inbound::Connected | Inbound::Unknown => Ok(Event::Nothing),
            Inbound::Start(start) => {
                if self.stream_sid.is_some() {
                    return Err(ProtocolError::DuplicateStart.into());
                }
                if let Some(bound) = &self.bound_call_sid {
                    if bound != start.call_sid.as_str() {
                        return Err(CallError::CallSidMismatch);
                    }
                }
                if let Some(expected) = &self.account_sid {
                    if start.account_sid.as_ref().map(|a| a.as_str()) != Some(expected.as_str()) {
                        return Err(CallError::AccountMismatch);
                    }
                }
                self.stream_sid = Some(start.stream_sid.clone());
                Ok(Event::Started(Box::new(start)))
            }
            Inbound::Media(media) => {
                self.require_started()?;
                decode_payload(&media.payload, self.max_payload_bytes, audio)?;
                Ok(Event::Audio(audio.len()))
            }
            Inbound::Mark(mark) => {
                self.require_started()?;
                Ok(Event::Mark(mark.name))
            }
            Inbound::Dtmf(dtmf) => {
                self.require_started()?;
                let mut chars = dtmf.digit.chars();
                let digit = match (chars.next(), chars.next()) {
                    (Some(c @ ('0'..='9' | '*' | '#')), None) => Some(c),
                    _ => None,
                };
                Ok(Event::Dtmf(digit))
            }
            Inbound::Stop(_) => {
                self.stopped = true;
                Ok(Event::Stopped)
            }
        }
    }

    fn require_started(&self) -> Result<(), ProtocolError> {
        if self.stream_sid.is_none() {
            return Err(ProtocolError::MediaBeforeStart);
        }
        Ok(())
    }
}

/// Decodes a base64 payload into `out` (cleared first), refusing more than `max` bytes before
/// decoding anything.
///
/// # Errors
/// [`ProtocolError::PayloadTooLarge`] or [`ProtocolError::PayloadNotBase64`].
pub fn decode_payload(payload: &str, max: usize, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    out.clear();
    let trimmed = payload.trim_end_matches('=');
    let decoded_len = trimmed.len() / 4 * 3 + (trimmed.len() % 4).saturating_sub(1);
    if decoded_len > max {
        return Err(ProtocolError::PayloadTooLarge);
    }
    out.resize(decoded_len + 3, 0);
    match BASE64.decode_slice(payload.as_bytes(), out) {
        Ok(n) => {
            out.truncate(n);
            Ok(())
        }
        Err(_) => {
            out.clear();
            Err(ProtocolError::PayloadNotBase64)
        }
    }
}

#[cfg(test)]
mod tests;
