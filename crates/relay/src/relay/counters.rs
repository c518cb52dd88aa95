//! Per-call counters: plain integers the call's relay bumps per frame, flushed into the
//! server's Prometheus families once per call (and on a coarse tick for long calls), so the
//! hot path never looks a metric up.

/// Why a frame was dropped (the `reason` label of `media_dropped_frames_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Caller audio while the agent socket was behind.
    AgentSlow,
    /// Caller audio beyond what is held while the agent connects.
    AgentNotReady,
    /// Agent audio before its metadata announced a format.
    AgentAudioBeforeMetadata,
    /// Agent audio of an interrupted response.
    Interrupted,
    /// Agent audio beyond the playout buffer.
    PlayoutFull,
    /// Audio to Twilio while Twilio's socket was behind.
    Backpressure,
}

impl Drop {
    const ALL: [Self; 6] = [
        Self::AgentSlow,
        Self::AgentNotReady,
        Self::AgentAudioBeforeMetadata,
        Self::Interrupted,
        Self::PlayoutFull,
        Self::Backpressure,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::AgentSlow => "agent_slow",
            Self::AgentNotReady => "agent_not_ready",
            Self::AgentAudioBeforeMetadata => "agent_audio_before_metadata",
            Self::Interrupted => "interrupted",
            Self::PlayoutFull => "playout_full",
            Self::Backpressure => "backpressure",
        }
    }
}

/// Distinct event names kept per call (Twilio's and the agent's vocabularies are small and
/// fixed; anything beyond is folded into the last slot).
const NAMES: usize = 24;

/// Counts by a `&'static str` label without allocating: a fixed table, linear search.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    entries: Vec<(&'static str, u64)>,
}

impl Tally {
    /// Adds one to `name`.
    pub fn bump(&mut self, name: &'static str) {
        if let Some(e) = self.entries.iter_mut().find(|(n, _)| *n == name) {
            e.1 += 1;
        } else if self.entries.len() < NAMES {
            if self.entries.capacity() == 0 {
                self.entries.reserve_exact(NAMES);
            }
            self.entries.push((name, 1));
        } else if let Some(last) = self.entries.last_mut() {
            last.1 += 1;
        }
    }

    /// The counts since the last drain, then zero.
    pub fn drain(&mut self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.entries
            .iter_mut()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| (*name, std::mem::take(n)))
    }

    /// The current count of `name`.
    pub fn get(&self, name: &str) -> u64 {
        self.entries
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| *c)
    }
}

/// Everything one call counts. Totals (`frames_in` …) are kept for the summary line; the
/// `pending_*` fields are what has not been flushed to the metrics yet.
#[derive(Debug, Default, Clone)]
pub struct CallCounters {
    /// Caller media frames received (whole call).
    pub frames_in: u64,
    /// Media frames sent to Twilio (whole call).
    pub frames_out: u64,
    /// Frames dropped, any reason (whole call).
    pub dropped: u64,
    /// Not yet flushed: caller frames and their decoded bytes.
    pub pending_in: (u64, u64),
    /// Not yet flushed: frames sent to Twilio and their bytes.
    pub pending_out: (u64, u64),
    /// Not yet flushed: drops by reason.
    pub pending_drops: [u64; 6],
    /// Not yet flushed: Twilio events by name.
    pub twilio_events: Tally,
    /// Not yet flushed: agent events by type.
    pub agent_events: Tally,
    /// Not yet flushed: call-control events (endings by cause, tools, keypad, dead agent).
    pub control: Tally,
}

impl CallCounters {
    /// One caller frame of `bytes` decoded bytes.
    pub fn frame_in(&mut self, bytes: usize) {
        self.frames_in += 1;
        self.pending_in.0 += 1;
        self.pending_in.1 += bytes as u64;
    }

    /// One frame of `bytes` sent to Twilio.
    pub fn frame_out(&mut self, bytes: usize) {
        self.frames_out += 1;
        self.pending_out.0 += 1;
        self.pending_out.1 += bytes as u64;
    }

    /// `n` frames dropped for `why`.
    pub fn drop(&mut self, why: Drop, n: u64) {
        self.dropped += n;
        let i = Drop::ALL.iter().position(|d| *d == why).unwrap_or(0);
        self.pending_drops[i] += n;
    }

    /// Drops by reason not yet flushed, then zero.
    pub fn drain_drops(&mut self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Drop::ALL
            .iter()
            .zip(self.pending_drops.iter_mut())
            .filter(|(_, n)| **n > 0)
            .map(|(d, n)| (d.label(), std::mem::take(n)))
    }
}

/// Buckets of a [`LatencyTally`]: upper bounds 20 µs × 2^(i/4), to about 1.1 s.
const LATENCY_BUCKETS: usize = 64;
const LATENCY_FIRST_US: f64 = 20.0;

/// One call's latency distribution in a fixed array (no allocation per sample): each bucket
/// 19 % wider than the last, so a quantile is read to within that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyTally {
    counts: [u32; LATENCY_BUCKETS],
    total: u64,
}

impl Default for LatencyTally {
    fn default() -> Self {
        Self {
            counts: [0; LATENCY_BUCKETS],
            total: 0,
        }
    }
}

impl LatencyTally {
    fn bound_us(i: usize) -> f64 {
        LATENCY_FIRST_US * (i as f64 / 4.0).exp2()
    }

    /// Counts one sample.
    pub fn record(&mut self, latency: std::time::Duration) {
        let us = latency.as_secs_f64() * 1e6;
        let i = if us <= LATENCY_FIRST_US {
            0
        } else {
            ((us / LATENCY_FIRST_US).log2() * 4.0).ceil() as usize
        };
        let slot = &mut self.counts[i.min(LATENCY_BUCKETS - 1)];
        *slot = slot.saturating_add(1);
        self.total += 1;
    }

    /// Samples counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in milliseconds: the upper bound of its bucket; `None` with
    /// no samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        let i = self
            .counts
            .iter()
            .position(|&n| {
                seen += u64::from(n);
                seen >= rank
            })
            .unwrap_or(LATENCY_BUCKETS - 1);
        Some((Self::bound_us(i) / 10.0).round() / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_count_drain_and_stay_bounded() {
        let mut t = Tally::default();
        t.bump("media");
        t.bump("media");
        t.bump("mark");
        assert_eq!(t.get("media"), 2);
        let drained: Vec<_> = t.drain().collect();
        assert_eq!(drained, [("media", 2), ("mark", 1)]);
        assert_eq!(t.drain().count(), 0, "drained to zero");
        const MANY: [&str; 30] = [
            "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q",
            "r", "s", "t", "u", "v", "w", "x", "y", "z", "0", "1", "2", "3",
        ];
        for name in MANY {
            t.bump(name);
        }
        assert_eq!(t.drain().map(|(_, n)| n).sum::<u64>(), 30, "nothing lost");
    }

    #[test]
    fn drops_keep_a_total_and_drain_by_reason() {
        let mut c = CallCounters::default();
        c.drop(Drop::Backpressure, 2);
        c.drop(Drop::AgentSlow, 1);
        assert_eq!(c.dropped, 3);
        let drained: Vec<_> = c.drain_drops().collect();
        assert_eq!(drained, [("agent_slow", 1), ("backpressure", 2)]);
        assert_eq!(c.dropped, 3, "the total stays for the summary");
    }

    #[test]
    fn latency_quantiles_are_read_to_a_bucket() {
        let mut t = LatencyTally::default();
        assert_eq!(t.quantile_ms(0.5), None);
        for _ in 0..98 {
            t.record(std::time::Duration::from_micros(300));
        }
        t.record(std::time::Duration::from_millis(40));
        t.record(std::time::Duration::from_secs(30));
        assert_eq!(t.count(), 100);
        let p50 = t.quantile_ms(0.5).unwrap();
        assert!((0.3..0.36).contains(&p50), "{p50}");
        let p99 = t.quantile_ms(0.99).unwrap();
        assert!((40.0..48.0).contains(&p99), "{p99}");
        // Beyond the last bucket: its bound, not a panic.
        assert!(t.quantile_ms(1.0).unwrap() > 1000.0);
    }
}
