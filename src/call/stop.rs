//! How a server tells its calls to stop: first the drain (end gracefully before a deadline),
//! then the close at that deadline. Each call owns its own signal — an atomic state and an
//! [`AtomicWaker`] — so the call loop's `select!` polls it every iteration for two atomic
//! operations, with no lock shared between calls; the server reaches every live call through
//! a registry touched once per call and once per stop.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const CLOSING: u8 = 2;

/// What the server asks of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// End gracefully before this instant.
    Drain(Instant),
    /// The deadline passed: close now.
    Close,
}

#[derive(Debug, Default)]
struct Signal {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl Signal {
    fn raise(&self, to: u8) {
        self.state.fetch_max(to, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// The server's side: every live call's signal.
#[derive(Debug, Default)]
pub struct CallStops {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Signal>>>,
    /// Set once, when the drain begins.
    deadline: OnceLock<Instant>,
    state: AtomicU8,
}

impl CallStops {
    /// A new registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The signal of a new call (already raised if the server drains or closes).
    pub fn register(self: &Arc<Self>) -> Shutdown {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Signal::default());
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&signal));
        // A stop that began before the insert: raised here (raising twice is harmless).
        signal.raise(self.state.load(Ordering::Acquire));
        Shutdown {
            stops: Arc::clone(self),
            id,
            signal,
            told: RUNNING,
        }
    }

    /// Every live call must end gracefully before `deadline`.
    pub fn drain(&self, deadline: Instant) {
        let _ = self.deadline.set(deadline); // a second drain keeps the first deadline
        self.raise(DRAINING);
    }

    /// The drain deadline passed: every call still live closes now.
    pub fn close(&self) {
        self.raise(CLOSING);
    }

    fn raise(&self, to: u8) {
        self.state.fetch_max(to, Ordering::AcqRel);
        for signal in self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            signal.raise(to);
        }
    }
}

/// One call's side: the stops the server asks for, each told once.
#[derive(Debug)]
pub struct Shutdown {
    stops: Arc<CallStops>,
    id: u64,
    signal: Arc<Signal>,
    told: u8,
}

impl Shutdown {
    /// The next stop the server asks for (a drain, then the close); pending while there is
    /// none. Cancel-safe.
    pub async fn next(&mut self) -> Stop {
        poll_fn(|cx| {
            self.signal.waker.register(cx.waker());
            let state = self.signal.state.load(Ordering::Acquire);
            if state <= self.told {
                return Poll::Pending;
            }
            if self.told < DRAINING {
                self.told = DRAINING;
                if let Some(deadline) = self.stops.deadline.get() {
                    return Poll::Ready(Stop::Drain(*deadline));
                }
            }
            self.told = state;
            Poll::Ready(if state == CLOSING {
                Stop::Close
            } else {
                Stop::Drain(Instant::now())
            })
        })
        .await
    }
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        self.stops
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_is_told_the_drain_then_the_close_once_each() {
        let stops = CallStops::new();
        let mut call = stops.register();
        let deadline = Instant::now() + Duration::from_secs(10);
        let waiting = tokio::spawn(async move {
            let first = call.next().await;
            let second = call.next().await;
            (first, second, call)
        });
        tokio::task::yield_now().await;
        stops.drain(deadline);
        tokio::task::yield_now().await;
        stops.close();
        let (first, second, mut call) = waiting.await.unwrap();
        assert_eq!((first, second), (Stop::Drain(deadline), Stop::Close));
        assert!(
            tokio::time::timeout(Duration::from_secs(1), call.next())
                .await
                .is_err(),
            "nothing more"
        );
        drop(call);
        assert!(stops.live.lock().unwrap().is_empty(), "unregistered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_starts_during_a_drain_is_told_at_once() {
        let stops = CallStops::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        stops.drain(deadline);
        let mut late = stops.register();
        assert_eq!(late.next().await, Stop::Drain(deadline));
        stops.close();
        stops.close();
        assert_eq!(late.next().await, Stop::Close);
        // Closed before it was told of the drain: both, in order.
        let mut later = stops.register();
        assert_eq!(later.next().await, Stop::Drain(deadline));
        assert_eq!(later.next().await, Stop::Close);
    }
}
