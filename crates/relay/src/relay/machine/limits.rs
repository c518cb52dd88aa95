//! A call's time limits: its longest life (`MAX_CALL_SECONDS`) and the server's drain. Before
//! either, the agent is asked to wrap up (a `contextual_update`); at it, the call ends through
//! the playout-gated ending ([`super::control`]) as a forced one: the caller's audio no longer
//! reaches the agent, the agent's goodbye may run [`CUT_AFTER`] at most, and a drain's ending
//! is finished before the drain deadline whatever Twilio echoes.

use std::time::Duration;

use std::time::Instant;

use super::control::Cause;
use super::{Agent, Pending, Relay, Remote};
use crate::elevenlabs::message as el;
use crate::relay::events::{EndReason, Ending, Then};

/// The agent is asked to wrap up this long before `MAX_CALL_SECONDS` (a third of the limit
/// when that is shorter).
pub const WRAP_UP_LEAD: Duration = Duration::from_secs(60);
/// In a forced ending the agent's goodbye may run this long; then the agent leg counts as done
/// and what it already sent plays out.
pub const CUT_AFTER: Duration = Duration::from_secs(10);

/// Why the agent is asked to wrap up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WrapUp {
    MaxDuration,
    Drain,
}

/// The instants at which the call's limits act.
#[derive(Debug, Default)]
pub(super) struct Limits {
    /// Ask the agent to wrap up.
    wrap_up: Option<(Instant, WrapUp)>,
    /// Begin the forced ending.
    end: Option<(Instant, Cause)>,
    /// The agent leg counts as done (its goodbye is as complete as it will get).
    cut: Option<Instant>,
    /// End the call whatever the ending is waiting for (the drain's last moment).
    stop: Option<Instant>,
}

impl Limits {
    /// The limits of a call started at `now` whose longest life is `max_call`.
    pub(super) fn new(max_call: Option<Duration>, now: Instant) -> Self {
        let Some(max) = max_call else {
            return Self::default();
        };
        let lead = WRAP_UP_LEAD.min(max / 3);
        Self {
            wrap_up: Some((now + (max - lead), WrapUp::MaxDuration)),
            end: Some((now + max, Cause::MaxDuration)),
            cut: None,
            stop: None,
        }
    }

    /// When a limit next needs a tick.
    pub(super) fn next(&self) -> Option<Instant> {
        [
            self.wrap_up.map(|(at, _)| at),
            self.end.map(|(at, _)| at),
            self.cut,
            self.stop,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Relay {
    /// The server drains: the call must be over by `deadline`. The agent is asked to wrap up
    /// now; the forced ending begins halfway, the agent's goodbye is cut at three quarters,
    /// and the call ends at seven eighths, leaving the rest for the hang-up and the close.
    pub(super) fn on_drain(&mut self, deadline: Instant, now: Instant) {
        let budget = deadline.saturating_duration_since(now);
        let limits = &mut self.limits;
        limits.stop = Some(now + budget * 7 / 8);
        limits.cut = earliest(limits.cut, now + budget * 3 / 4);
        let end_at = now + budget / 2;
        if limits.end.is_none_or(|(at, _)| at > end_at) {
            limits.end = Some((end_at, Cause::Drain));
        }
        limits.wrap_up = None;
        tracing::info!(
            budget_ms = budget.as_millis() as u64,
            "draining: the call ends before the deadline"
        );
        if self.closing.is_none() {
            self.wrap_up(WrapUp::Drain, budget);
        }
    }

    /// Acts on the limits due at `now`.
    pub(super) fn check_limits(&mut self, now: Instant) {
        if let Some((at, why)) = self.limits.wrap_up {
            if now >= at {
                self.limits.wrap_up = None;
                let left = self.limits.end.map_or(Duration::ZERO, |(end, _)| {
                    end.saturating_duration_since(now)
                });
                if self.closing.is_none() {
                    self.wrap_up(why, left);
                }
            }
        }
        if let Some((at, cause)) = self.limits.end {
            if now >= at {
                self.limits.end = None;
                self.limits.cut = earliest(self.limits.cut, now + CUT_AFTER);
                self.begin_closing(cause, now);
            }
        }
        if self.limits.cut.is_some_and(|at| now >= at) && self.closing.is_some() {
            self.limits.cut = None;
            if matches!(self.agent, Agent::Remote(_)) {
                self.counters.control.bump("goodbye_cut");
                tracing::info!("agent still talking at the limit; its goodbye ends here");
                self.agent = Agent::Off;
            }
        }
        if self.limits.stop.is_some_and(|at| now >= at) {
            self.limits.stop = None;
            self.counters.control.bump("drain_deadline");
            tracing::info!("drain: ending the call before the deadline");
            self.closing = None;
            self.end(Ending::of(EndReason::ServerDraining).then(Then::HangUp));
        }
    }

    /// Asks a talking agent to wrap up within `left` (background information, not a turn).
    fn wrap_up(&mut self, why: WrapUp, left: Duration) {
        if !matches!(self.agent, Agent::Remote(Remote::Ready(_))) {
            return;
        }
        let text = match why {
            WrapUp::MaxDuration => format!(
                "This call reaches its time limit in about {} seconds. Wrap up now: briefly \
                 tell the caller what happens next, say goodbye, and end the call.",
                ((left.as_millis() + 500) / 1000).max(1)
            ),
            WrapUp::Drain => "This phone line is closing for maintenance. Politely tell the \
                              caller that you have to end the call now, say goodbye briefly, \
                              and end the call."
                .to_string(),
        };
        self.counters.control.bump("wrap_up");
        self.pending
            .push_back(Pending::AgentText(el::contextual_update(&text)));
    }
}
