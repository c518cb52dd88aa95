//! One simulated Twilio call in Twilio's exact shapes: token in the path, `connected`, `start`,
//! real-time 20 ms `media`, `stop` (string `sequenceNumber`/`chunk`/`timestamp`), and `mark`s
//! echoed when their audio has played (at once on `clear`). Records what came back, with
//! round-trip latency by audio position; what counts as a failure is for its users to decide.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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

mod report;
mod wire;

pub use report::{add_rest_requests, ending};
use wire::{Command, Playback, Sids, Twilio};

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
    /// The call's CallSid and AccountSid in `start` (default: a random `CA…`, [`ACCOUNT_SID`]),
    /// e.g. those of a call Twilio's REST API created.
    pub sids: Option<(String, String)>,
    /// Twilio ends the stream when this is notified (the call's TwiML was replaced or it
    /// was hung up through the REST API): `stop` goes out at once.
    pub hang_up: Option<Arc<tokio::sync::Notify>>,
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
            sids: None,
            hang_up: None,
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
    /// Twilio's REST API ended the stream (a redirect or hang-up of the call).
    HungUpByRest,
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
    let mut sids = Sids::new();
    if let Some((call, account)) = &opts.sids {
        sids.call.clone_from(call);
        sids.account.clone_from(account);
    }
    let mut tw = Twilio {
        sids,
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
            () = async { hang_up_signal(opts).await }, if opts.hang_up.is_some() && phase != Phase::Stopped => {
                step(&mut report, Step::HungUpByRest);
                send_stop = true;
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

/// Resolves when [`CallOptions::hang_up`] is notified (never without one).
async fn hang_up_signal(opts: &CallOptions) {
    match &opts.hang_up {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
