//! The built-in echo agent as a delay line inside the call: the caller's own audio comes back
//! after a fixed delay, byte for byte, so a fresh machine can take a call with no
//! credentials. Pure: frames in with the time, frames out when due.

use std::collections::VecDeque;
use std::time::Duration;

use std::time::Instant;

/// Most audio the echo holds (beyond it, the oldest frames are dropped): 10 s.
pub const MAX_HELD_BYTES: usize = 80_000;

/// Caller frames waiting to be played back.
#[derive(Debug)]
pub struct EchoLine {
    delay: Duration,
    held: VecDeque<(Instant, Vec<u8>)>,
    held_bytes: usize,
    spare: Vec<Vec<u8>>,
}

impl EchoLine {
    /// An echo that plays audio back `delay` after it arrived.
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            held: VecDeque::new(),
            held_bytes: 0,
            spare: Vec::new(),
        }
    }

    /// Takes a caller frame that arrived at `now`.
    pub fn push(&mut self, frame: &[u8], now: Instant) {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        self.held_bytes += buf.len();
        self.held.push_back((now + self.delay, buf));
        while self.held_bytes > MAX_HELD_BYTES {
            match self.held.pop_front() {
                Some((_, old)) => {
                    self.held_bytes -= old.len();
                    self.recycle(old);
                }
                None => break,
            }
        }
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.front().map(|(at, _)| *at)
    }

    /// The next frame due at `now`, if any; hand it back with [`EchoLine::recycle`].
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_due()? > now {
            return None;
        }
        let (_, frame) = self.held.pop_front()?;
        self.held_bytes -= frame.len();
        Some(frame)
    }

    /// Returns a frame's buffer for reuse (the steady state allocates nothing).
    pub fn recycle(&mut self, frame: Vec<u8>) {
        if self.spare.len() < 16 {
            self.spare.push(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_back_after_the_delay_in_order_and_bounded() {
        let t0 = Instant::now();
        let mut e = EchoLine::new(Duration::from_millis(200));
        e.push(&[1; 160], t0);
        e.push(&[2; 160], t0 + Duration::from_millis(20));
        assert_eq!(e.pop_due(t0 + Duration::from_millis(199)), None);
        assert_eq!(e.next_due(), Some(t0 + Duration::from_millis(200)));
        let f = e.pop_due(t0 + Duration::from_millis(200)).unwrap();
        assert_eq!(f, vec![1; 160]);
        e.recycle(f);
        assert_eq!(e.pop_due(t0 + Duration::from_millis(210)), None);
        assert_eq!(
            e.pop_due(t0 + Duration::from_millis(220)),
            Some(vec![2; 160])
        );
        for _ in 0..1000 {
            e.push(&[3; 160], t0);
        }
        assert!(e.held_bytes <= MAX_HELD_BYTES);
    }
}
