//! Twilio's side of the wire: the stream's SIDs, Twilio's message shapes, the commands the
//! server may send, and Twilio's playback buffer (marks echoed once their audio has played).

use super::*;

/// The ids of one simulated stream.
pub(super) struct Sids {
    pub(super) stream: String,
    pub(super) call: String,
    pub(super) account: String,
}

impl Sids {
    pub(super) fn new() -> Self {
        Self {
            stream: format!("MZ{}", uuid::Uuid::new_v4().simple()),
            call: format!("CA{}", uuid::Uuid::new_v4().simple()),
            account: ACCOUNT_SID.to_string(),
        }
    }
}

/// Builds Twilio's messages with a sequence number incremented per message.
pub(super) struct Twilio {
    pub(super) sids: Sids,
    pub(super) seq: u64,
    pub(super) chunk: u64,
}

impl Twilio {
    pub(super) fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    pub(super) fn connected() -> Message {
        Message::text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#)
    }

    pub(super) fn start(&mut self, params: &BTreeMap<String, String>) -> Message {
        let seq = self.next_seq();
        Message::text(
            json!({"event":"start","sequenceNumber":seq,
                "start":{"accountSid":self.sids.account,"streamSid":self.sids.stream,"callSid":self.sids.call,
                    "tracks":["inbound"],"customParameters":params,
                    "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},
                "streamSid":self.sids.stream})
            .to_string(),
        )
    }

    pub(super) fn media(&mut self, frame: &[u8], timestamp_ms: u64) -> Message {
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

    pub(super) fn mark(&mut self, name: &str) -> Message {
        let seq = self.next_seq();
        Message::text(
            json!({"event":"mark","sequenceNumber":seq,"streamSid":self.sids.stream,
                "mark":{"name":name}})
            .to_string(),
        )
    }

    pub(super) fn dtmf(&mut self, digit: char) -> Message {
        let seq = self.next_seq();
        Message::text(
            json!({"event":"dtmf","streamSid":self.sids.stream,"sequenceNumber":seq,
                "dtmf":{"track":"inbound_track","digit":digit.to_string()}})
            .to_string(),
        )
    }

    pub(super) fn stop(&mut self) -> Message {
        let seq = self.next_seq();
        Message::text(
            json!({"event":"stop","sequenceNumber":seq,
                "stop":{"accountSid":self.sids.account,"callSid":self.sids.call},
                "streamSid":self.sids.stream})
            .to_string(),
        )
    }
}

/// What the server sends: exactly Twilio's three commands.
#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum Command {
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
pub(super) struct MediaBody {
    pub(super) payload: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MarkBody {
    pub(super) name: String,
}

/// Twilio's playback buffer: audio plays in real time; a mark is echoed when the audio
/// queued before it has played, or at once on `clear`.
#[derive(Default)]
pub(super) struct Playback {
    pub(super) ends_at: Option<Instant>,
    pub(super) marks: VecDeque<(Instant, String)>,
}

impl Playback {
    pub(super) fn push_audio(&mut self, now: Instant, bytes: usize) {
        let start = self.ends_at.map_or(now, |e| e.max(now));
        self.ends_at = Some(start + Duration::from_micros(125 * bytes as u64));
    }

    pub(super) fn push_mark(&mut self, now: Instant, name: String) {
        let due = self.ends_at.map_or(now, |e| e.max(now));
        self.marks.push_back((due, name));
    }

    pub(super) fn clear(&mut self, now: Instant) {
        self.ends_at = Some(now);
        for m in &mut self.marks {
            m.0 = now;
        }
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        self.marks.front().map(|m| m.0)
    }

    pub(super) fn pop_due(&mut self, now: Instant) -> Option<String> {
        if self.marks.front().is_some_and(|m| m.0 <= now) {
            self.marks.pop_front().map(|m| m.1)
        } else {
            None
        }
    }
}
