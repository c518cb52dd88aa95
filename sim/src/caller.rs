//! One simulated Twilio call: connects like Twilio (token in the path), sends `connected`,
//! `start` (sequence "1"), real-time 20 ms `media` frames and `stop` in Twilio's exact shapes
//! (string `sequenceNumber`/`chunk`/`timestamp`, incremented for every message sent), models
//! Twilio's playback buffer to echo `mark`s when their audio has played (at once on `clear`),
//! and records what came back: audio, marks, clears, the close code, and round-trip latency
//! measured on audio position. Does not judge the result; callers decide what is a failure.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::SimError;

/// A connected Twilio-side socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// μ-law bytes per 20 ms frame.
pub const FRAME_BYTES: usize = 160;
/// Duration of one frame.
pub const FRAME: Duration = Duration::from_millis(20);
/// The account SID every simulated call carries.
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";

/// How long to wait for the TCP + WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time between two keypad presses.
const DTMF_GAP: Duration = Duration::from_millis(150);
/// How long to wait for the server's close after `stop`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one call does besides playing its audio.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// `<Parameter>`s, sent as `start.customParameters`.
    pub params: BTreeMap<String, String>,
    /// After the last frame, `stop` waits until this long passes with no audio coming back.
    pub linger: Duration,
    /// … but never longer than this after the last frame.
    pub max_linger: Duration,
    /// Send `stop` as soon as as many bytes came back as were sent (echo agents).
    pub expect_echo: bool,
    /// Keep the received audio in the report (for `--out`).
    pub record: bool,
    /// Keypad digits sent as `dtmf` events, 150 ms apart, from [`CallOptions::dtmf_at`].
    pub dtmf: String,
    /// When the first digit is pressed, after the first frame.
    pub dtmf_at: Duration,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            params: BTreeMap::new(),
            linger: Duration::from_millis(1500),
            max_linger: Duration::from_secs(10),
            expect_echo: false,
            record: false,
            dtmf: String::new(),
            dtmf_at: Duration::from_secs(1),
        }
    }
}

/// Something that happened during the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The WebSocket opened (and `connected` + `start` were sent).
    Connected,
    /// The first `media` came back.
    FirstAudio,
    /// A `mark` arrived.
    Mark(String),
    /// A `clear` arrived.
    Clear,
    /// A mark was echoed: the audio before it has played (or was cleared).
    MarkPlayed(String),
    /// Keypad digits were sent (this many).
    KeypadSent(usize),
    /// `media-ws` asked Twilio's REST API (the fake one) to do this.
    Rest(String),
    /// All audio was sent.
    AudioSent,
    /// `stop` was sent.
    StopSent,
    /// The server closed the socket.
    Closed {
        /// Close code (1005 when the frame had none).
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The connection broke without a close frame.
    Lost(String),
}

/// When something happened, from the WebSocket opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// Time since the socket opened.
    pub at: Duration,
    /// What happened.
    pub step: Step,
}

/// What one call sent and received.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    /// Events in order.
    pub timeline: Vec<TimelineEntry>,
    /// `media` messages sent.
    pub frames_sent: u64,
    /// μ-law bytes sent.
    pub bytes_sent: u64,
    /// `media` messages received.
    pub frames_received: u64,
    /// μ-law bytes received.
    pub bytes_received: u64,
    /// `mark`s received (each echoed back).
    pub marks: u64,
    /// `clear`s received.
    pub clears: u64,
    /// Messages from the server that were not valid Twilio commands.
    pub malformed: u64,
    /// The server's close code, if it sent one.
    pub close_code: Option<u16>,
    /// The received audio (only with [`CallOptions::record`]).
    pub received: Vec<u8>,
    /// Round-trip latency per received `media`, µs: arrival time minus the send time of the
    /// frame holding the same audio position (valid when the agent returns the caller's audio
    /// in order, as the echo agents do; re-chunking does not change positions).
    pub latencies_us: Vec<u32>,
    /// Time to the first audio back, from the first frame sent.
    pub first_audio: Option<Duration>,
    /// Largest delay of a frame behind its real-time schedule.
    pub max_send_lag: Duration,
    /// Frames sent more than one frame (20 ms) behind schedule.
    pub late_frames: u64,
}

/// Live counters shared with a progress display.
#[derive(Debug, Default)]
pub struct Live {
    /// Frames sent so far, all calls.
    pub frames_sent: AtomicU64,
    /// Frames received so far, all calls.
    pub frames_received: AtomicU64,
}

/// Appends `/jwt/<token>` to the URL's path (where Twilio can carry it).
fn with_token(url: &str, token: Option<&str>) -> String {
    match token {
        None => url.to_string(),
        Some(t) => {
            let (base, query) = url
                .split_once('?')
                .map_or((url, None), |(b, q)| (b, Some(q)));
            let mut s = format!("{}/jwt/{t}", base.trim_end_matches('/'));
            if let Some(q) = query {
                s.push('?');
                s.push_str(q);
            }
            s
        }
    }
}

/// WebSocket buffers for 20 ms frames.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(4 << 20))
        .max_frame_size(Some(4 << 20))
}

/// Opens the Twilio-side WebSocket.
///
/// # Errors
///
/// [`SimError::BadUrl`], [`SimError::Refused`] (an HTTP status instead of 101), or
/// [`SimError::Connect`] (network, TLS, timeout). Messages name `url` but never the token.
pub async fn connect(url: &str, token: Option<&str>) -> Result<Ws, SimError> {
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(SimError::BadUrl {
            url: url.to_string(),
            reason: "expected ws:// or wss://".into(),
        });
    }
    let request = with_token(url, token)
        .into_client_request()
        .map_err(|e| SimError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    let attempt =
        tokio_tungstenite::connect_async_with_config(request, Some(websocket_config()), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(SimError::Connect {
            url: url.to_string(),
            reason: "timed out".into(),
        }),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => Err(SimError::Refused {
            url: url.to_string(),
            status: resp.status().as_u16(),
        }),
        Ok(Err(e)) => Err(SimError::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// The ids of one simulated stream.
struct Sids {
    stream: String,
    call: String,
}

impl Sids {
    fn new() -> Self {
        Self {
            stream: format!("MZ{}", uuid::Uuid::new_v4().simple()),
            call: format!("CA{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// Builds Twilio's messages with a sequence number incremented per message.
struct Twilio {
    sids: Sids,
    seq: u64,
    chunk: u64,
}

impl Twilio {
    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    fn connected() -> Message {
        Message::text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#)
    }

    fn start(&mut self, params: &BTreeMap<String, String>) -> Message {
        let seq = self.next_seq();
        Message::text(
            json!({"event":"start","sequenceNumber":seq,
                "start":{"accountSid":ACCOUNT_SID,"streamSid":self.sids.stream,"callSid":self.sids.call,
                    "tracks":["inbound"],"customParameters":params,
                    "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},
                "streamSid":self.sids.stream})
            .to_string(),
        )
    }

    fn media(&mut self, frame: &[u8], timestamp_ms: u64) -> Message {
        self.seq += 1;
        self.chunk += 1;
        // Hand-built (the load generator sends thousands per second); same bytes as
        // serde_json would produce for these plain strings, field order as Twilio's.
        let mut s = String::with_capacity(300);
        s.push_str(r#"{"event":"media","sequenceNumber":""#);
        s.push_str(&self.seq.to_string());
        s.push_str(r#"","media":{"track":"inbound","chunk":""#);
        s.push_str(&self.chunk.to_string());
        s.push_str(r#"","timestamp":""#);
        s.push_str(&timestamp_ms.to_string());
        s.push_str(r#"","payload":""#);
        STANDARD.encode_string(frame, &mut s);
        s.push_str(r#""},"streamSid":""#);
        s.push_str(&self.sids.stream);
        s.push_str(r#""}"#);
        Message::text(s)
    }

    fn mark(&mut self, name: &str) -> Message {
        let seq = self.next_seq();
        Message::text(
            json!({"event":"mark","sequenceNumber":seq,"streamSid":self.sids.stream,
                "mark":{"name":name}})
            .to_string(),
        )
    }

    fn dtmf(&mut self, digit: char) -> Message {
        let seq = self.next_seq();
        Message::text(
            json!({"event":"dtmf","streamSid":self.sids.stream,"sequenceNumber":seq,
                "dtmf":{"track":"inbound_track","digit":digit.to_string()}})
            .to_string(),
        )
    }

    fn stop(&mut self) -> Message {
        let seq = self.next_seq();
        Message::text(
            json!({"event":"stop","sequenceNumber":seq,
                "stop":{"accountSid":ACCOUNT_SID,"callSid":self.sids.call},
                "streamSid":self.sids.stream})
            .to_string(),
        )
    }
}

/// What the server sends: exactly Twilio's three commands.
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "lowercase", deny_unknown_fields)]
enum Command {
    Media {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        media: MediaBody,
    },
    Mark {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        mark: MarkBody,
    },
    Clear {
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaBody {
    payload: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkBody {
    name: String,
}

/// Twilio's playback buffer: audio plays in real time; a mark is echoed when the audio
/// queued before it has played, or at once on `clear`.
#[derive(Default)]
struct Playback {
    ends_at: Option<Instant>,
    marks: VecDeque<(Instant, String)>,
}

impl Playback {
    fn push_audio(&mut self, now: Instant, bytes: usize) {
        let start = self.ends_at.map_or(now, |e| e.max(now));
        self.ends_at = Some(start + Duration::from_micros(125 * bytes as u64));
    }

    fn push_mark(&mut self, now: Instant, name: String) {
        let due = self.ends_at.map_or(now, |e| e.max(now));
        self.marks.push_back((due, name));
    }

    fn clear(&mut self, now: Instant) {
        self.ends_at = Some(now);
        for m in &mut self.marks {
            m.0 = now;
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.marks.front().map(|m| m.0)
    }

    fn pop_due(&mut self, now: Instant) -> Option<String> {
        if self.marks.front().is_some_and(|m| m.0 <= now) {
            self.marks.pop_front().map(|m| m.1)
        } else {
            None
        }
    }
}

/// Adds the REST requests a fake Twilio saw to the timeline, in time order (`opened`: when
/// the call's socket opened).
pub fn add_rest_requests(
    report: &mut CallReport,
    opened: Instant,
    requests: &[crate::twilio_rest::RestRequest],
) {
    for r in requests {
        report.timeline.push(TimelineEntry {
            at: r.at.saturating_duration_since(opened),
            step: Step::Rest(r.describe()),
        });
    }
    report.timeline.sort_by_key(|e| e.at);
}

/// How the call ended, in words, from `media-ws`'s close reason and what the REST API saw.
pub fn ending(report: &CallReport) -> String {
    let rest = report.timeline.iter().rev().find_map(|e| match &e.step {
        Step::Rest(what) => Some(what.as_str()),
        _ => None,
    });
    let stopped = report.timeline.iter().any(|e| e.step == Step::StopSent);
    let closed = report.timeline.iter().find_map(|e| match &e.step {
        Step::Closed { code, reason } => Some((*code, reason.as_str())),
        _ => None,
    });
    match (closed, rest) {
        (Some((1000, "transferred")), Some(what)) => format!("transferred ({what})"),
        (Some((1000, "transferred")), None) => "transferred".to_string(),
        (Some((1000, "agent ended" | "agent hung up")), Some(_)) => {
            "hang-up by the agent, after its last words played".to_string()
        }
        (Some((1000, "agent ended" | "agent hung up")), None) => {
            "the agent ended; stream closed after its last words (Twilio runs what follows \
             <Connect>)"
                .to_string()
        }
        (
            Some((
                1000,
                reason @ ("agent closed"
                | "agent unavailable"
                | "agent unresponsive"
                | "agent protocol error"),
            )),
            _,
        ) => {
            format!("fallback: handed back to Twilio ({reason})")
        }
        _ if stopped => "the caller hung up".to_string(),
        (Some((code, reason)), _) => format!("closed by media-ws: {code} {reason:?}"),
        (None, _) => "connection lost".to_string(),
    }
}

/// A duration in whole microseconds, saturating at `u32::MAX` (71 minutes).
fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Sending,
    Lingering,
    Stopped,
}

/// Plays `audio` (8 kHz μ-law) as one call on `ws` in real time and records the answer.
///
/// Returns when the server closed the socket (or `stop` went unanswered for 5 s, or the
/// connection broke: see [`Step::Lost`]).
pub async fn run(mut ws: Ws, audio: &[u8], opts: &CallOptions, live: &Live) -> CallReport {
    let opened = Instant::now();
    let mut report = CallReport::default();
    let mut tw = Twilio {
        sids: Sids::new(),
        seq: 0,
        chunk: 0,
    };
    let step = |report: &mut CallReport, step: Step| {
        report.timeline.push(TimelineEntry {
            at: opened.elapsed(),
            step,
        });
    };
    step(&mut report, Step::Connected);
    let start = tw.start(&opts.params);
    if ws.send(Twilio::connected()).await.is_err() || ws.send(start).await.is_err() {
        step(&mut report, Step::Lost("send failed".into()));
        return report;
    }
    let mut frames = audio.chunks(FRAME_BYTES);
    // Send time of each frame, µs after the first (small: a load run holds one per frame).
    let mut send_times: Vec<u32> = Vec::with_capacity(audio.len() / FRAME_BYTES + 1);
    let first_send = Instant::now();
    let mut tick = tokio::time::interval_at(first_send, FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut playback = Playback::default();
    let mut phase = Phase::Sending;
    let mut audio_done_at = first_send;
    let mut last_audio_at = first_send;
    let mut stop_deadline = first_send;
    let far = Duration::from_secs(86_400);
    let digits: Vec<char> = opts.dtmf.chars().collect();
    let mut dtmf_next = 0;
    let mut dtmf_at = first_send + opts.dtmf_at;
    loop {
        let linger_until =
            (last_audio_at.max(audio_done_at) + opts.linger).min(audio_done_at + opts.max_linger);
        let mark_due = playback.next_due().unwrap_or(opened + far);
        let mut send_stop = false;
        tokio::select! {
            scheduled = tick.tick(), if phase == Phase::Sending => {
                if let Some(frame) = frames.next() {
                    let now = Instant::now();
                    let lag = now.saturating_duration_since(scheduled);
                    report.max_send_lag = report.max_send_lag.max(lag);
                    report.late_frames += u64::from(lag > FRAME);
                    let ts = (now - first_send).as_millis() as u64;
                    let msg = tw.media(frame, ts);
                    send_times.push(micros(now - first_send));
                    if let Err(e) = ws.send(msg).await {
                        if report.close_code.is_none() {
                            step(&mut report, Step::Lost(e.to_string()));
                        }
                        return report;
                    }
                    report.frames_sent += 1;
                    report.bytes_sent += frame.len() as u64;
                    live.frames_sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    phase = Phase::Lingering;
                    audio_done_at = Instant::now();
                    step(&mut report, Step::AudioSent);
                    send_stop = opts.expect_echo && report.bytes_received >= report.bytes_sent;
                }
            },
            () = tokio::time::sleep_until(linger_until), if phase == Phase::Lingering => {
                send_stop = true;
            },
            () = tokio::time::sleep_until(stop_deadline), if phase == Phase::Stopped => {
                step(&mut report, Step::Lost("no close after stop".into()));
                // We owe a close frame; the server may be gone already.
                let _ = ws.close(None).await;
                return report;
            },
            () = tokio::time::sleep_until(mark_due), if playback.next_due().is_some() => {
                let now = Instant::now();
                while let Some(name) = playback.pop_due(now) {
                    step(&mut report, Step::MarkPlayed(name.clone()));
                    if ws.send(tw.mark(&name)).await.is_err() {
                        break;
                    }
                }
            },
            () = tokio::time::sleep_until(dtmf_at), if dtmf_next < digits.len() && phase != Phase::Stopped => {
                let digit = digits[dtmf_next];
                dtmf_next += 1;
                dtmf_at += DTMF_GAP;
                if ws.send(tw.dtmf(digit)).await.is_err() {
                    step(&mut report, Step::Lost("send failed".into()));
                    return report;
                }
                if dtmf_next == digits.len() {
                    step(&mut report, Step::KeypadSent(digits.len()));
                }
            },
            msg = ws.next() => {
                let now = Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<Command>(text.as_str()) {
                        Ok(Command::Media { stream_sid, media }) if stream_sid == tw.sids.stream => {
                            let Ok(bytes) = STANDARD.decode(media.payload.as_bytes()) else {
                                report.malformed += 1;
                                continue;
                            };
                            if report.frames_received == 0 {
                                report.first_audio = Some(now - first_send);
                                step(&mut report, Step::FirstAudio);
                            }
                            let end = report.bytes_received + bytes.len() as u64;
                            if let Some(sent) = end
                                .checked_sub(1)
                                .and_then(|last| send_times.get(last as usize / FRAME_BYTES))
                            {
                                let us = micros(now - first_send).saturating_sub(*sent);
                                report.latencies_us.push(us);
                            }
                            report.bytes_received = end;
                            report.frames_received += 1;
                            live.frames_received.fetch_add(1, Ordering::Relaxed);
                            last_audio_at = now;
                            playback.push_audio(now, bytes.len());
                            if opts.record {
                                report.received.extend_from_slice(&bytes);
                            }
                            send_stop = phase == Phase::Lingering
                                && opts.expect_echo
                                && report.bytes_received >= report.bytes_sent;
                        }
                        Ok(Command::Mark { stream_sid, mark }) if stream_sid == tw.sids.stream => {
                            report.marks += 1;
                            step(&mut report, Step::Mark(mark.name.clone()));
                            playback.push_mark(now, mark.name);
                        }
                        Ok(Command::Clear { stream_sid }) if stream_sid == tw.sids.stream => {
                            report.clears += 1;
                            step(&mut report, Step::Clear);
                            playback.clear(now);
                        }
                        _ => report.malformed += 1,
                    },
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        });
                        report.close_code = Some(code);
                        step(&mut report, Step::Closed { code, reason });
                        // The server ended the call (perhaps before our audio did): send
                        // nothing more, wait for the socket to end.
                        phase = Phase::Stopped;
                        stop_deadline = now + CLOSE_TIMEOUT;
                    }
                    Some(Ok(Message::Binary(_))) => report.malformed += 1,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        if report.close_code.is_none() {
                            step(&mut report, Step::Lost(e.to_string()));
                        }
                        return report;
                    }
                    None => {
                        if report.close_code.is_none() {
                            step(&mut report, Step::Lost("socket ended without a close frame".into()));
                        }
                        return report;
                    }
                }
            },
        }
        if send_stop && phase != Phase::Stopped {
            if phase == Phase::Sending {
                audio_done_at = Instant::now();
            }
            phase = Phase::Stopped;
            stop_deadline = Instant::now() + CLOSE_TIMEOUT;
            step(&mut report, Step::StopSent);
            if ws.send(tw.stop()).await.is_err() && report.close_code.is_none() {
                step(&mut report, Step::Lost("send failed".into()));
                return report;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(reason: &str, extra: Vec<Step>) -> CallReport {
        let mut timeline: Vec<TimelineEntry> = extra
            .into_iter()
            .map(|step| TimelineEntry {
                at: Duration::ZERO,
                step,
            })
            .collect();
        timeline.push(TimelineEntry {
            at: Duration::from_secs(1),
            step: Step::Closed {
                code: 1000,
                reason: reason.into(),
            },
        });
        CallReport {
            timeline,
            ..CallReport::default()
        }
    }

    #[test]
    fn endings_are_told_apart_by_reason_and_rest_request() {
        let rest = |s: &str| Step::Rest(s.to_string());
        assert_eq!(
            ending(&closed(
                "transferred",
                vec![rest("transfer to +15551230000 requested")]
            )),
            "transferred (transfer to +15551230000 requested)"
        );
        assert_eq!(
            ending(&closed(
                "agent hung up",
                vec![rest("hang-up requested (Status=completed)")]
            )),
            "hang-up by the agent, after its last words played"
        );
        assert!(ending(&closed("agent ended", vec![])).starts_with("the agent ended"));
        assert_eq!(
            ending(&closed("agent unresponsive", vec![])),
            "fallback: handed back to Twilio (agent unresponsive)"
        );
        assert_eq!(
            ending(&closed("stream stopped", vec![Step::StopSent])),
            "the caller hung up"
        );
        let transfer = crate::twilio_rest::RestRequest {
            at: Instant::now(),
            call_sid: "CA1".into(),
            form: vec![(
                "Twiml".into(),
                "<Response><Dial><Number>+15551230000</Number></Dial></Response>".into(),
            )],
        };
        assert_eq!(transfer.describe(), "transfer to +15551230000 requested");
    }

    #[test]
    fn token_goes_into_the_path() {
        assert_eq!(with_token("ws://h:1/rtm/voice", None), "ws://h:1/rtm/voice");
        assert_eq!(
            with_token("ws://h:1/rtm/voice/", Some("abc")),
            "ws://h:1/rtm/voice/jwt/abc"
        );
        assert_eq!(
            with_token("ws://h:1/rtm/voice?x=1", Some("abc")),
            "ws://h:1/rtm/voice/jwt/abc?x=1"
        );
    }

    #[test]
    fn twilio_shapes_and_sequence_numbers() {
        let mut tw = Twilio {
            sids: Sids::new(),
            seq: 0,
            chunk: 0,
        };
        let start: serde_json::Value =
            serde_json::from_str(tw.start(&BTreeMap::new()).to_text().unwrap()).unwrap();
        assert_eq!(start["sequenceNumber"], "1");
        assert_eq!(start["start"]["mediaFormat"]["sampleRate"], 8000);
        let media: serde_json::Value =
            serde_json::from_str(tw.media(&[0xff; 160], 20).to_text().unwrap()).unwrap();
        assert_eq!(media["sequenceNumber"], "2");
        assert_eq!(media["media"]["chunk"], "1");
        assert_eq!(media["media"]["timestamp"], "20");
        assert_eq!(media["media"]["track"], "inbound");
        assert_eq!(media["media"]["payload"], STANDARD.encode([0xff; 160]));
        assert_eq!(media["streamSid"], start["streamSid"]);
        assert_eq!(media.as_object().unwrap().len(), 4);
        let stop: serde_json::Value = serde_json::from_str(tw.stop().to_text().unwrap()).unwrap();
        assert_eq!(stop["sequenceNumber"], "3");
        assert_eq!(stop["streamSid"], start["streamSid"]);
        // The server's own messages parse as Twilio commands.
        let text = media.to_string();
        let parsed = media_orchestrator::twilio::message::parse(&text).unwrap();
        assert_eq!(parsed.name(), "media");
    }

    #[test]
    fn playback_echoes_marks_after_their_audio_or_on_clear() {
        let t0 = Instant::now();
        let mut p = Playback::default();
        p.push_audio(t0, 1600); // 200 ms
        p.push_mark(t0, "m1".into());
        assert_eq!(p.next_due(), Some(t0 + Duration::from_millis(200)));
        assert_eq!(p.pop_due(t0), None);
        p.clear(t0 + Duration::from_millis(50));
        assert_eq!(
            p.pop_due(t0 + Duration::from_millis(50)).as_deref(),
            Some("m1")
        );
    }
}
