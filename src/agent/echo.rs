//! The built-in echo agent: plays the caller's own audio back after a short delay, so a fresh
//! machine can take a call with no credentials. Sample-exact: the bytes that come back are
//! the bytes that went in.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{Agent, AgentEvent, AgentIo, CallStart, SessionFuture};

/// Most audio the echo holds (beyond it, the oldest frames are dropped): 10 s.
const MAX_HELD_BYTES: usize = 80_000;

/// Echoes caller audio after `delay`.
#[derive(Debug, Clone)]
pub struct Echo {
    delay: Duration,
}

impl Echo {
    /// An echo agent with the given playback delay.
    pub fn new(delay: Duration) -> Self {
        Self { delay }
    }
}

impl Agent for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn session(&self, _call: CallStart, io: AgentIo) -> SessionFuture {
        Box::pin(run(self.delay, io))
    }
}

async fn run(delay: Duration, mut io: AgentIo) {
    let mut held: VecDeque<(Instant, Bytes)> = VecDeque::new();
    let mut held_bytes = 0usize;
    loop {
        let due = held.front().map(|(at, _)| *at);
        tokio::select! {
            frame = io.audio_in.recv() => match frame {
                Some(frame) => {
                    held_bytes += frame.len();
                    held.push_back((Instant::now() + delay, frame));
                    while held_bytes > MAX_HELD_BYTES {
                        match held.pop_front() {
                            Some((_, old)) => held_bytes -= old.len(),
                            None => break,
                        }
                    }
                }
                // The call ended.
                None => return,
            },
            () = sleep_until(due) => {
                if let Some((_, frame)) = held.pop_front() {
                    held_bytes -= frame.len();
                    let event = AgentEvent::Audio { ulaw: frame, event_id: None };
                    if io.events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
