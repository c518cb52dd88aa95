//! Playout of agent audio into Twilio, a pure state machine on the caller's clock: 20 ms frames
//! released in real time with a small bounded lead, marks to learn what the caller has heard, and
//! on barge-in everything held (and late audio of the interrupted response) dropped. Twilio plays
//! what it receives back to back, so `playhead` (when all released audio will have played)
//! gates release at `playhead - now <= lead`; echoed marks correct it when Twilio plays late.

use std::collections::VecDeque;
use std::time::Duration;

use std::time::Instant;

/// μ-law bytes in one Twilio frame (20 ms at 8 kHz).
pub const FRAME_BYTES: usize = 160;
/// A mark is placed at least this often while audio flows.
pub const MARK_EVERY: Duration = Duration::from_millis(500);
/// After the queue runs dry, a mark closes the burst this much later.
pub const MARK_IDLE: Duration = Duration::from_millis(100);

fn audio_duration(bytes: usize) -> Duration {
    Duration::from_micros(bytes as u64 * 125)
}

/// What the call loop must send now.
#[derive(PartialEq, Eq)]
pub enum Release {
    /// A media frame (μ-law bytes).
    Frame(Vec<u8>),
    /// A mark; its name is [`mark_name`] of this number.
    Mark(u64),
}

/// Marks awaiting Twilio's echo that are remembered; older ones are forgotten.
const MAX_OUTSTANDING_MARKS: usize = 64;

/// Writes the name of mark `id` into `out` (cleared first): `m<id>`.
pub fn mark_name(id: u64, out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    // Writing into a String cannot fail.
    let _ = write!(out, "m{id}");
}

/// The mark number in a name written by [`mark_name`].
pub fn parse_mark_name(name: &str) -> Option<u64> {
    name.strip_prefix('m')?.parse().ok()
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Frame(b) => write!(f, "Frame({} bytes)", b.len()),
            Self::Mark(id) => write!(f, "Mark(m{id})"),
        }
    }
}

/// Result of offering agent audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Queued.
    Queued,
    /// Dropped: it belongs to a response that was interrupted.
    Stale,
    /// Dropped (in part): the playout buffer is full.
    Overflow(usize),
}

/// Playout state of one stream.
#[derive(Debug)]
pub struct Playout {
    lead: Duration,
    max_bytes: usize,
    frames: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    partial: Vec<u8>,
    playhead: Option<Instant>,
    interrupted_upto: Option<u64>,
    /// Audio released since the last mark.
    unmarked: Duration,
    /// When the last frame was released.
    last_release: Option<Instant>,
    mark_seq: u64,
    /// Marks sent and not yet echoed: (id, audio released up to that mark).
    outstanding: VecDeque<(u64, Duration)>,
    released_total: Duration,
    /// Audio Twilio has confirmed played (by mark echoes).
    heard: Duration,
    spare: Vec<Vec<u8>>,
}

impl Playout {
    /// A playout that keeps at most `lead` of audio in Twilio's buffer and holds at most
    /// `max_buffer` of audio locally.
    pub fn new(lead: Duration, max_buffer: Duration) -> Self {
        Self {
            lead,
            max_bytes: (max_buffer.as_micros() / 125) as usize,
            frames: VecDeque::new(),
            queued_bytes: 0,
            partial: Vec::with_capacity(FRAME_BYTES),
            playhead: None,
            interrupted_upto: None,
            unmarked: Duration::ZERO,
            last_release: None,
            mark_seq: 0,
            outstanding: VecDeque::with_capacity(MAX_OUTSTANDING_MARKS),
            released_total: Duration::ZERO,
            heard: Duration::ZERO,
            spare: Vec::new(),
        }
    }

    /// Audio held locally, not yet released to Twilio.
    pub fn held(&self) -> Duration {
        audio_duration(self.queued_bytes + self.partial.len())
    }

    /// Audio the caller has heard for sure (confirmed by echoed marks).
    pub fn heard(&self) -> Duration {
        self.heard
    }

    /// Offers agent audio of response `event_id`.
    pub fn push(&mut self, ulaw: &[u8], event_id: Option<u64>) -> Accepted {
        if let (Some(cut), Some(id)) = (self.interrupted_upto, event_id) {
            if id <= cut {
                return Accepted::Stale;
            }
        }
        let room = self
            .max_bytes
            .saturating_sub(self.queued_bytes + self.partial.len());
        let (take, dropped) = if ulaw.len() > room {
            (&ulaw[..room], ulaw.len() - room)
        } else {
            (ulaw, 0)
        };
        let mut rest = take;
        while !rest.is_empty() {
            let want = FRAME_BYTES - self.partial.len();
            let n = want.min(rest.len());
            self.partial.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.partial.len() == FRAME_BYTES {
                self.seal_partial();
            }
        }
        // A chunk's tail goes out with it: Twilio plays bytes back to back, so a short frame
        // is seamless, and holding it would delay the end of the response.
        if !self.partial.is_empty() {
            self.seal_partial();
        }
        if dropped > 0 {
            Accepted::Overflow(dropped)
        } else {
            Accepted::Queued
        }
    }

    fn seal_partial(&mut self) {
        let mut next = self.spare.pop().unwrap_or_default();
        next.clear();
        std::mem::swap(&mut next, &mut self.partial);
        self.queued_bytes += next.len();
        self.frames.push_back(next);
    }

    /// Returns a released frame's buffer for reuse (keeps the steady state allocation-free).
    pub fn recycle(&mut self, mut frame: Vec<u8>) {
        if self.spare.len() < 16 {
            frame.clear();
            self.spare.push(frame);
        }
    }

    /// The next thing to send at `now`, if any. Call until it returns `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Release> {
        if self.unmarked >= MARK_EVERY {
            return Some(self.mark());
        }
        let ahead = self
            .playhead
            .map_or(Duration::ZERO, |p| p.saturating_duration_since(now));
        if ahead <= self.lead {
            if let Some(frame) = self.frames.pop_front() {
                self.queued_bytes -= frame.len();
                let d = audio_duration(frame.len());
                let start = self.playhead.filter(|p| *p > now).unwrap_or(now);
                self.playhead = Some(start + d);
                self.unmarked += d;
                self.released_total += d;
                self.last_release = Some(now);
                return Some(Release::Frame(frame));
            }
        }
        let burst_over =
            self.frames.is_empty() && self.last_release.is_some_and(|t| now >= t + MARK_IDLE);
        if self.unmarked > Duration::ZERO && burst_over {
            return Some(self.mark());
        }
        None
    }

    /// Places a mark after everything released so far (the final mark of an ending) and
    /// returns its number; the caller sends it.
    pub fn mark_now(&mut self) -> u64 {
        self.unmarked = Duration::ZERO;
        self.mark_seq += 1;
        if self.outstanding.len() == MAX_OUTSTANDING_MARKS {
            self.outstanding.pop_front();
        }
        self.outstanding
            .push_back((self.mark_seq, self.released_total));
        self.mark_seq
    }

    fn mark(&mut self) -> Release {
        Release::Mark(self.mark_now())
    }

    /// When [`Playout::poll`] may next have something to release (`now`: at once).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let frame = if self.frames.is_empty() {
            None
        } else {
            Some(self.playhead.map_or(now, |p| p - self.lead))
        };
        let mark = if self.unmarked > Duration::ZERO && self.frames.is_empty() {
            self.last_release.map(|t| t + MARK_IDLE)
        } else {
            None
        };
        match (frame, mark) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Twilio echoed mark `name` at `now`: the audio before it has played. Returns whether
    /// the mark was one of ours and still outstanding.
    pub fn on_mark(&mut self, name: &str, now: Instant) -> bool {
        let Some(id) = parse_mark_name(name) else {
            return false;
        };
        let Some(pos) = self.outstanding.iter().position(|(n, _)| *n == id) else {
            return false;
        };
        let (_, released_at_mark) = self
            .outstanding
            .drain(..=pos)
            .next_back()
            .unwrap_or_default();
        self.heard = self.heard.max(released_at_mark);
        // Everything released after the mark is still to play from now on.
        let remaining = self.released_total.saturating_sub(released_at_mark);
        let corrected = now + remaining;
        if self.playhead.is_none_or(|p| p < corrected) {
            self.playhead = Some(corrected);
        }
        true
    }

    /// Barge-in: drops everything held and forgets Twilio's buffer (the caller sends
    /// `clear`); later audio of response `event_id` or earlier is refused. Returns the number
    /// of frames dropped here.
    pub fn interrupt(&mut self, event_id: Option<u64>, now: Instant) -> usize {
        let dropped = self.frames.len() + usize::from(!self.partial.is_empty());
        while let Some(frame) = self.frames.pop_front() {
            self.recycle(frame);
        }
        self.partial.clear();
        self.queued_bytes = 0;
        if let Some(id) = event_id {
            self.interrupted_upto = Some(self.interrupted_upto.map_or(id, |c| c.max(id)));
        }
        // Twilio echoes every pending mark after a clear; they say nothing about playback.
        self.outstanding.clear();
        self.unmarked = Duration::ZERO;
        self.playhead = Some(now);
        dropped
    }
}

#[cfg(test)]
mod tests;
