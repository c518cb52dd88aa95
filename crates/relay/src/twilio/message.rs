//! Media Streams messages: what Twilio sends ([`Inbound`], parsed leniently: unknown fields and
//! unknown events are tolerated) and the three messages the server sends ([`Outbound`], with
//! exactly the documented fields). `Debug` of anything carrying audio or custom parameters
//! is redacted.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{AccountSid, CallSid, StreamSid};

/// Why a message from Twilio was refused. Messages carry no content from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed json")]
    MalformedJson,
    /// A required field is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A `media` (or `mark`, `dtmf`) arrived before `start`.
    #[error("media before start")]
    MediaBeforeStart,
    /// A second `start` on one stream.
    #[error("duplicate start")]
    DuplicateStart,
    /// A message names another stream than the one started on this socket.
    #[error("stream sid mismatch")]
    StreamSidMismatch,
    /// `start.mediaFormat` is not μ-law, 8000 Hz, mono.
    #[error("unsupported media format")]
    UnsupportedFormat,
    /// A binary WebSocket frame (Twilio sends only text).
    #[error("binary frame")]
    BinaryFrame,
    /// `media.payload` is not valid base64.
    #[error("payload not base64")]
    PayloadNotBase64,
    /// `media.payload` decodes to more bytes than allowed.
    #[error("payload too large")]
    PayloadTooLarge,
}

impl ProtocolError {
    /// The reason of the stream's close frame: a constant, never peer data.
    pub const fn close_reason(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed json",
            Self::MissingField(_) => "missing field",
            Self::MediaBeforeStart => "media before start",
            Self::DuplicateStart => "duplicate start",
            Self::StreamSidMismatch => "stream sid mismatch",
            Self::UnsupportedFormat => "unsupported media format",
            Self::BinaryFrame => "binary frames not supported",
            Self::PayloadNotBase64 => "payload not base64",
            Self::PayloadTooLarge => "payload too large",
        }
    }
}

/// A message from Twilio.
#[derive(Debug, PartialEq)]
pub enum Inbound<'a> {
    /// First message on the socket.
    Connected,
    /// Stream metadata; once, before any media.
    Start(Start),
    /// A chunk of caller audio.
    Media(Media<'a>),
    /// The stream ended.
    Stop(Stop),
    /// Echo of a mark the server sent: the audio before it was played (or cleared).
    Mark(Mark),
    /// The caller pressed a key.
    Dtmf(Dtmf),
    /// An event this version does not know; counted and ignored.
    Unknown,
}

impl Inbound<'_> {
    /// The event name, for logs and metrics (`unknown` for unknown events).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Start(_) => "start",
            Self::Media(_) => "media",
            Self::Stop(_) => "stop",
            Self::Mark(_) => "mark",
            Self::Dtmf(_) => "dtmf",
            Self::Unknown => "unknown",
        }
    }

    /// The stream the message belongs to (absent on `connected` and unknown events).
    pub fn stream_sid(&self) -> Option<&str> {
        match self {
            Self::Start(s) => Some(s.stream_sid.as_str()),
            Self::Media(m) => Some(&m.stream_sid),
            Self::Stop(s) => Some(s.stream_sid.as_str()),
            Self::Mark(m) => Some(m.stream_sid.as_str()),
            Self::Dtmf(d) => Some(d.stream_sid.as_str()),
            Self::Connected | Self::Unknown => None,
        }
    }
}

/// `start`: who is calling which stream, and the audio format.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// The stream's SID.
    pub stream_sid: StreamSid,
    /// The account's SID.
    pub account_sid: Option<AccountSid>,
    /// The call's SID.
    pub call_sid: CallSid,
    /// Tracks sent (`["inbound"]` on bidirectional streams).
    pub tracks: Vec<String>,
    /// `<Parameter>` values from the TwiML.
    pub custom_parameters: CustomParameters,
}

/// `start.customParameters`. `Debug` lists names only: values may carry PHI or tokens.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CustomParameters(pub BTreeMap<String, String>);

impl fmt::Debug for CustomParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// `media`: one chunk of caller audio, borrowed from the message text.
#[derive(PartialEq)]
pub struct Media<'a> {
    /// The stream's SID.
    pub stream_sid: Cow<'a, str>,
    /// Base64 of raw μ-law bytes.
    pub payload: Cow<'a, str>,
}

impl fmt::Debug for Media<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Media")
            .field("stream_sid", &self.stream_sid)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// `stop`: the stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// The stream's SID.
    pub stream_sid: StreamSid,
}

/// `mark`: a mark the server sent has been reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The stream's SID.
    pub stream_sid: StreamSid,
    /// The mark's name as the server sent it.
    pub name: String,
}

/// `dtmf`: a key press. `Debug` hides the digit (it may be part of an account number).
#[derive(Clone, PartialEq, Eq)]
pub struct Dtmf {
    /// The stream's SID.
    pub stream_sid: StreamSid,
    /// The digit (`0`-`9`, `*`, `#`).
    pub digit: String,
}

impl fmt::Debug for Dtmf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dtmf")
            .field("stream_sid", &self.stream_sid)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    stream_sid: Option<&'a RawValue>,
    #[serde(borrow, default)]
    start: Option<&'a RawValue>,
    #[serde(borrow, default)]
    media: Option<&'a RawValue>,
    #[serde(borrow, default)]
    mark: Option<&'a RawValue>,
    #[serde(borrow, default)]
    dtmf: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStart {
    stream_sid: Option<String>,
    account_sid: Option<String>,
    call_sid: Option<String>,
    #[serde(default)]
    tracks: Vec<String>,
    #[serde(default)]
    custom_parameters: Option<CustomParameters>,
    media_format: Option<RawMediaFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMediaFormat {
    encoding: Option<String>,
    sample_rate: Option<u32>,
    channels: Option<u32>,
}

#[derive(Deserialize)]
struct RawMedia<'a> {
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

fn json_str(raw: &RawValue) -> Result<Cow<'_, str>, ProtocolError> {
    crate::json::str_of(raw).ok_or(ProtocolError::MalformedJson)
}

#[derive(Deserialize)]
struct RawMark {
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawDtmf {
    digit: Option<String>,
}

fn sub<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<T, ProtocolError> {
    let raw = raw.ok_or(ProtocolError::MissingField(field))?;
    serde_json::from_str(raw.get()).map_err(|_| ProtocolError::MalformedJson)
}

/// Parses one text frame from Twilio.
///
/// # Errors
/// [`ProtocolError`] when the text is not JSON, lacks `event`, or a known event lacks a
/// required field. Unknown events are [`Inbound::Unknown`], not errors.
pub fn parse(text: &str) -> Result<Inbound<'_>, ProtocolError> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|_| ProtocolError::MalformedJson)?;
    let top_sid = env.stream_sid.map(json_str).transpose()?;
    let stream_sid = || {
        top_sid
            .as_deref()
            .map(StreamSid::new)
            .ok_or(ProtocolError::MissingField("streamSid"))
    };
    Ok(match env.event.as_ref() {
        "connected" => Inbound::Connected,
        "start" => {
            let raw: RawStart = sub(env.start, "start")?;
            if let Some(fmt) = &raw.media_format {
                let mulaw = fmt.encoding.as_deref().is_none_or(|e| e == "audio/x-mulaw");
                if !mulaw
                    || fmt.sample_rate.is_some_and(|r| r != 8000)
                    || fmt.channels.is_some_and(|c| c != 1)
                {
                    return Err(ProtocolError::UnsupportedFormat);
                }
            }
            let stream_sid = match (raw.stream_sid, top_sid.as_deref()) {
                (Some(inner), Some(top)) if inner != top => {
                    return Err(ProtocolError::StreamSidMismatch)
                }
                (Some(inner), _) => StreamSid::new(inner),
                (None, Some(top)) => StreamSid::new(top),
                (None, None) => return Err(ProtocolError::MissingField("streamSid")),
            };
            Inbound::Start(Start {
                stream_sid,
                account_sid: raw.account_sid.map(AccountSid::new),
                call_sid: CallSid::new(
                    raw.call_sid
                        .ok_or(ProtocolError::MissingField("start.callSid"))?,
                ),
                tracks: raw.tracks,
                custom_parameters: raw.custom_parameters.unwrap_or_default(),
            })
        }
        "media" => {
            let raw: RawMedia<'_> = sub(env.media, "media")?;
            Inbound::Media(Media {
                stream_sid: top_sid.ok_or(ProtocolError::MissingField("streamSid"))?,
                payload: json_str(
                    raw.payload
                        .ok_or(ProtocolError::MissingField("media.payload"))?,
                )?,
            })
        }
        "stop" => Inbound::Stop(Stop {
            stream_sid: stream_sid()?,
        }),
        "mark" => {
            let raw: RawMark = sub(env.mark, "mark")?;
            Inbound::Mark(Mark {
                stream_sid: stream_sid()?,
                name: raw.name.ok_or(ProtocolError::MissingField("mark.name"))?,
            })
        }
        "dtmf" => {
            let raw: RawDtmf = sub(env.dtmf, "dtmf")?;
            Inbound::Dtmf(Dtmf {
                stream_sid: stream_sid()?,
                digit: raw.digit.ok_or(ProtocolError::MissingField("dtmf.digit"))?,
            })
        }
        _ => Inbound::Unknown,
    })
}

/// A message to Twilio: exactly the documented fields, nothing more (Twilio flags extras).
#[derive(Serialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Outbound<'a> {
    /// Audio to play: base64 of raw μ-law 8 kHz mono.
    Media {
        /// The stream's SID from `start`.
        #[serde(rename = "streamSid")]
        stream_sid: &'a str,
        /// The payload object.
        media: OutboundMedia<'a>,
    },
    /// Ask Twilio to echo `name` once the audio queued before it has played.
    Mark {
        /// The stream's SID from `start`.
        #[serde(rename = "streamSid")]
        stream_sid: &'a str,
        /// The mark object.
        mark: OutboundMark<'a>,
    },
    /// Drop all audio Twilio has buffered (barge-in).
    Clear {
        /// The stream's SID from `start`.
        #[serde(rename = "streamSid")]
        stream_sid: &'a str,
    },
}

/// `media` object of an outbound media message.
#[derive(Serialize, PartialEq, Eq)]
pub struct OutboundMedia<'a> {
    /// Base64 of raw μ-law bytes.
    pub payload: &'a str,
}

/// `mark` object of an outbound mark message.
#[derive(Serialize, PartialEq, Eq)]
pub struct OutboundMark<'a> {
    /// The mark's name (unique per stream).
    pub name: &'a str,
}

impl fmt::Debug for Outbound<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Media { media, .. } => write!(f, "Media({} b64 chars)", media.payload.len()),
            Self::Mark { mark, .. } => write!(f, "Mark({})", mark.name),
            Self::Clear { .. } => f.write_str("Clear"),
        }
    }
}

impl Outbound<'_> {
    /// Serializes to the JSON text Twilio expects.
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        write_into(&mut s, self);
        s
    }
}

/// Writes a `media` message carrying `payload_b64` into `out` (cleared first): the same
/// bytes as [`Outbound::to_json`], without allocating once `out` has grown.
pub fn write_media(stream_sid: &str, payload_b64: &str, out: &mut String) {
    write_into(
        out,
        &Outbound::Media {
            stream_sid,
            media: OutboundMedia {
                payload: payload_b64,
            },
        },
    );
}

/// Writes a `mark` message named `name` into `out` (cleared first).
pub fn write_mark(stream_sid: &str, name: &str, out: &mut String) {
    write_into(
        out,
        &Outbound::Mark {
            stream_sid,
            mark: OutboundMark { name },
        },
    );
}

/// Writes a `clear` message into `out` (cleared first).
pub fn write_clear(stream_sid: &str, out: &mut String) {
    write_into(out, &Outbound::Clear { stream_sid });
}

fn write_into(out: &mut String, msg: &Outbound<'_>) {
    out.clear();
    // Twilio's SIDs are alphanumeric, base64 and mark names need no escaping: the common case
    // is written directly, byte for byte what serde writes.
    let plain = |s: &str| !needs_escape(s);
    match msg {
        Outbound::Media { stream_sid, media } if plain(stream_sid) && plain(media.payload) => {
            out.push_str(r#"{"event":"media","streamSid":""#);
            out.push_str(stream_sid);
            out.push_str(r#"","media":{"payload":""#);
            out.push_str(media.payload);
            out.push_str(r#""}}"#);
        }
        Outbound::Mark { stream_sid, mark } if plain(stream_sid) && plain(mark.name) => {
            out.push_str(r#"{"event":"mark","streamSid":""#);
            out.push_str(stream_sid);
            out.push_str(r#"","mark":{"name":""#);
            out.push_str(mark.name);
            out.push_str(r#""}}"#);
        }
        Outbound::Clear { stream_sid } if plain(stream_sid) => {
            out.push_str(r#"{"event":"clear","streamSid":""#);
            out.push_str(stream_sid);
            out.push_str(r#""}"#);
        }
        // Serializing these plain structs of strings cannot fail.
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// Whether `s` has a character JSON strings must escape.
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

#[cfg(test)]
mod tests;
