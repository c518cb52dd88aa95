//! The Prometheus metrics of one server instance (`GET /metrics`). Owns names, labels and
//! rendering; callers only increment. One registry per [`Metrics`], no global state.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::relay::{CallCounters, Outcome};

/// Direction of audio and messages.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    /// From Twilio (the caller).
    inbound,
    /// To Twilio (played to the caller).
    outbound,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: Direction,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Debug, Default)]
struct EmfTotals {
    handshake_rejections: AtomicU64,
    registry_errors: AtomicU64,
    rest_errors: AtomicU64,
}

/// A `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The result.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabels {
    op: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestLabels {
    op: &'static str,
    result: &'static str,
    /// Twilio's error code, `none` without one (the catalogue bounds the set).
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    kind: &'static str,
}

/// All counters and gauges of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    active_calls: Gauge<i64, AtomicI64>,
    calls: Family<OutcomeLabels, Counter>,
    frames: Family<DirectionLabels, Counter>,
    audio_bytes: Family<DirectionLabels, Counter>,
    drops: Family<ReasonLabels, Counter>,
    handshake_rejections: Family<ReasonLabels, Counter>,
    events: Family<EventLabels, Counter>,
    agent_events: Family<TypeLabels, Counter>,
    control: Family<EventLabels, Counter>,
    twilio_rest: Family<RestLabels, Counter>,
    call_duration: Histogram,
    bargein: Histogram,
    registry_requests: Family<RegistryLabels, Counter>,
    registry_seconds: Histogram,
    admissions: Family<ResultLabels, Counter>,
    call_events: Family<ResultLabels, Counter>,
    /// Running totals the EMF lines report as per-interval counts.
    totals: EmfTotals,
    agent_slots_in_use: Gauge<i64, AtomicI64>,
    bridge_inbound: Histogram,
    bridge_outbound: Histogram,
    /// Resolved once: the per-call flush adds to these without a family lookup per frame.
    frames_in: Counter,
    frames_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("media");
        let active_calls = Gauge::<i64, AtomicI64>::default();
        let calls = Family::<OutcomeLabels, Counter>::default();
        let frames = Family::<DirectionLabels, Counter>::default();
        let audio_bytes = Family::<DirectionLabels, Counter>::default();
        let drops = Family::<ReasonLabels, Counter>::default();
        let handshake_rejections = Family::<ReasonLabels, Counter>::default();
        let events = Family::<EventLabels, Counter>::default();
        let agent_events = Family::<TypeLabels, Counter>::default();
        let bargein =
            Histogram::new([0.000_1, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]);
        let call_duration = Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
        ]);
        registry.register("active_calls", "Calls in progress", active_calls.clone());
        registry.register("calls", "Calls ended, by outcome", calls.clone());
        registry.register(
            "frames",
            "Audio frames (media messages), by direction",
            frames.clone(),
        );
        registry.register(
            "audio_bytes",
            "Decoded mu-law audio bytes, by direction",
            audio_bytes.clone(),
        );
        registry.register(
            "dropped_frames",
            "Audio frames dropped, by reason",
            drops.clone(),
        );
        registry.register(
            "handshake_rejections",
            "WebSocket upgrades refused, by reason",
            handshake_rejections.clone(),
        );
        registry.register(
            "events",
            "Twilio events received, by event name",
            events.clone(),
        );
        registry.register(
            "agent_events",
            "Agent events received, by type",
            agent_events.clone(),
        );
        let control = Family::<EventLabels, Counter>::default();
        registry.register(
            "call_control_events",
            "Call control: endings by cause (agent_end, end_call, transfer, agent_dead, \
             agent_failed), transfer_refused, transfer_failed, unsupported_tool, \
             final_mark_timeout, goodbye_interrupted, keypad_entry, keypad_dropped",
            control.clone(),
        );
        let twilio_rest = Family::<RestLabels, Counter>::default();
        registry.register(
            "twilio_rest_requests",
            "Twilio REST requests by operation (hang_up, transfer), result (ok, call_gone, \
             refused, server_error, timeout, transport, credentials) and Twilio error code",
            twilio_rest.clone(),
        );
        registry.register(
            "bargein_seconds",
            "Barge-in latency: agent interruption read off its socket to Twilio clear written",
            bargein.clone(),
        );
        registry.register(
            "call_duration_seconds",
            "Duration of ended calls",
            call_duration.clone(),
        );
        let registry_requests = Family::<RegistryLabels, Counter>::default();
        let registry_seconds = Histogram::new([
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
        ]);
        registry.register(
            "call_registry_requests",
            "Call registry (DynamoDB) requests, by operation and result (ok, taken, error)",
            registry_requests.clone(),
        );
        registry.register(
            "call_registry_seconds",
            "Latency of call registry requests",
            registry_seconds.clone(),
        );
        let admissions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admissions against AGENT_CONCURRENCY_LIMIT, by result (admitted, overflow, error)",
            admissions.clone(),
        );
        let call_events = Family::<ResultLabels, Counter>::default();
        registry.register(
            "call_events",
            "Call events for EventBridge (CALL_EVENTS_BUS), by result (published, failed, dropped)",
            call_events.clone(),
        );
        let agent_slots_in_use = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "agent_slots_in_use",
            "Agent slots live across the fleet, as the last admission of this task saw them",
            agent_slots_in_use.clone(),
        );
        let bridge = Family::<DirectionLabels, Histogram, _>::new_with_constructor(|| {
            Histogram::new([
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005,
                0.01,
            ])
        });
        registry.register(
            "bridge_latency_seconds",
            "Latency the bridge adds: a frame read off one socket to what it produced written \
             (inbound: caller frame to the agent; outbound: agent frame to Twilio, pacing excluded)",
            bridge.clone(),
        );
        let bridge_inbound = bridge
            .get_or_create(&DirectionLabels {
                direction: Direction::inbound,
            })
            .clone();
        let bridge_outbound = bridge
            .get_or_create(&DirectionLabels {
                direction: Direction::outbound,
            })
            .clone();
        let counter = |family: &Family<DirectionLabels, Counter>, direction| {
            family.get_or_create(&DirectionLabels { direction }).clone()
        };
        let frames_in = counter(&frames, Direction::inbound);
        let frames_out = counter(&frames, Direction::outbound);
        let bytes_in = counter(&audio_bytes, Direction::inbound);
        let bytes_out = counter(&audio_bytes, Direction::outbound);
        Self {
            registry,
            active_calls,
            calls,
            frames,
            audio_bytes,
            drops,
            handshake_rejections,
            events,
            agent_events,
            control,
            twilio_rest,
            call_duration,
            bargein,
            registry_requests,
            registry_seconds,
            admissions,
            call_events,
            totals: EmfTotals::default(),
            agent_slots_in_use,
            bridge_inbound,
            bridge_outbound,
            frames_in,
            frames_out,
            bytes_in,
            bytes_out,
        }
    }

    /// Adds a call's counters since their last flush (and zeroes them): frames, bytes, drops,
    /// Twilio and agent events. Called once per call, and on a coarse tick for long calls.
    pub fn flush_call(&self, c: &mut CallCounters) {
        let (n, bytes) = std::mem::take(&mut c.pending_in);
        self.frames_in.inc_by(n);
        self.bytes_in.inc_by(bytes);
        let (n, bytes) = std::mem::take(&mut c.pending_out);
        self.frames_out.inc_by(n);
        self.bytes_out.inc_by(bytes);
        for (reason, n) in c.drain_drops() {
            self.dropped(reason, n);
        }
        for (event, n) in c.twilio_events.drain() {
            self.events.get_or_create(&EventLabels { event }).inc_by(n);
        }
        for (kind, n) in c.agent_events.drain() {
            self.agent_events
                .get_or_create(&TypeLabels { kind })
                .inc_by(n);
        }
        for (event, n) in c.control.drain() {
            self.control.get_or_create(&EventLabels { event }).inc_by(n);
        }
    }

    /// Counts one call-control event outside a call's counters.
    pub fn control_event(&self, event: &'static str) {
        self.control.get_or_create(&EventLabels { event }).inc();
    }

    /// Counts one Twilio REST request: `result` is `ok` or the error's label.
    pub fn twilio_rest(&self, op: &'static str, result: &'static str, code: Option<u32>) {
        if result != "ok" && result != "call_gone" {
            self.totals.rest_errors.fetch_add(1, Ordering::Relaxed);
        }
        let code = code.map_or_else(|| "none".to_string(), |c| c.to_string());
        self.twilio_rest
            .get_or_create(&RestLabels { op, result, code })
            .inc();
    }

    /// Records the latency the bridge added to one frame in `direction`.
    pub fn bridge_latency(&self, direction: Direction, elapsed: std::time::Duration) {
        let h = match direction {
            Direction::inbound => &self.bridge_inbound,
            Direction::outbound => &self.bridge_outbound,
        };
        h.observe(elapsed.as_secs_f64());
    }

    /// Counts one call registry request and records its latency.
    pub fn registry_request(&self, op: &'static str, result: &'static str, seconds: f64) {
        if result == "error" {
            self.totals.registry_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.registry_requests
            .get_or_create(&RegistryLabels { op, result })
            .inc();
        self.registry_seconds.observe(seconds);
    }

    /// Totals since start: refused handshakes, call-registry errors, failed Twilio REST
    /// requests (a call already gone is not a failure).
    pub fn emf_totals(&self) -> [u64; 3] {
        [
            self.totals.handshake_rejections.load(Ordering::Relaxed),
            self.totals.registry_errors.load(Ordering::Relaxed),
            self.totals.rest_errors.load(Ordering::Relaxed),
        ]
    }

    /// The call-event counters, for the EventBridge publisher to count into.
    pub fn call_events(&self) -> Family<ResultLabels, Counter> {
        self.call_events.clone()
    }

    /// One admission against the agent plan, with the fleet's live slots when known.
    pub fn admission(&self, result: &'static str, in_use: Option<u32>) {
        self.admissions
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(n) = in_use {
            self.agent_slots_in_use.set(i64::from(n));
        }
    }

    /// A call started; returns the number of calls now active.
    pub fn call_started(&self) -> i64 {
        self.active_calls.inc() + 1
    }

    /// A call ended with `outcome` after `seconds`; returns the number still active.
    pub fn call_ended(&self, outcome: Outcome, seconds: f64) -> i64 {
        self.calls
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
        self.call_duration.observe(seconds);
        self.active_calls.dec() - 1
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> i64 {
        self.active_calls.get()
    }

    /// Counts one audio frame of `bytes` decoded bytes.
    pub fn frame(&self, direction: Direction, bytes: usize) {
        self.frames
            .get_or_create(&DirectionLabels { direction })
            .inc();
        self.audio_bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(bytes as u64);
    }

    /// Counts `n` dropped frames.
    pub fn dropped(&self, reason: &'static str, n: u64) {
        self.drops.get_or_create(&ReasonLabels { reason }).inc_by(n);
    }

    /// Counts a refused handshake.
    pub fn handshake_rejected(&self, reason: &'static str) {
        self.totals
            .handshake_rejections
            .fetch_add(1, Ordering::Relaxed);
        self.handshake_rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a Twilio event by name (`unknown` for unknown events).
    pub fn event(&self, event: &'static str) {
        self.events.get_or_create(&EventLabels { event }).inc();
    }

    /// Counts an agent event by type.
    pub fn agent_event(&self, kind: &'static str) {
        self.agent_events.get_or_create(&TypeLabels { kind }).inc();
    }

    /// Records one barge-in's latency.
    pub fn bargein(&self, seconds: f64) {
        self.bargein.observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        assert_eq!(m.call_started(), 1);
        m.frame(Direction::inbound, 160);
        m.frame(Direction::inbound, 160);
        m.handshake_rejected("token_expired");
        assert_eq!(m.call_ended(Outcome::idle, 3.0), 0);
        let text = m.render();
        assert!(
            text.contains("media_frames_total{direction=\"inbound\"} 2"),
            "{text}"
        );
        assert!(text.contains("media_audio_bytes_total{direction=\"inbound\"} 320"));
        assert!(text.contains("media_calls_total{outcome=\"idle\"} 1"));
        assert!(text.contains("media_handshake_rejections_total{reason=\"token_expired\"} 1"));
        assert!(text.contains("media_active_calls 0"));
        assert!(text.ends_with("# EOF\n"));
    }
}
