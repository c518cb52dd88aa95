//! Load generation: N simulated calls started evenly over `ramp`, each playing a tone in real
//! time to an echo, then `stop`. Aggregates outcomes, frames, latency and, for a local server,
//! CPU per relayed frame and RSS per call as `docs/media-sim.md` defines them (the CPU window
//! is the whole run when the steady-state one would be under a second).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::caller::{self, CallOptions, CallReport, Live, FRAME_BYTES};
use super::procstat::{self, ProcSample};
use super::stats::Percentiles;
use media_orchestrator::audio::mulaw;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The `media-ws` WebSocket URL (loopback for tests and benches).
    pub url: String,
    /// Token for the path (`/jwt/<token>`).
    pub token: Option<String>,
    /// Concurrent calls.
    pub calls: usize,
    /// Calls start evenly over this time.
    pub ramp: Duration,
    /// Audio each call plays.
    pub duration: Duration,
    /// A local server process to measure.
    pub server_pid: Option<u32>,
    /// Per-call options (`expect_echo` is what makes a call end when its audio is back).
    pub call: CallOptions,
}

/// Live progress, readable while [`run`] runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Calls whose socket is open or done.
    pub started: AtomicU64,
    /// Calls finished ok.
    pub ok: AtomicU64,
    /// Calls failed.
    pub failed: AtomicU64,
    /// Frame counters.
    pub live: Live,
}

/// CPU and memory of one process over the measurement window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessCost {
    /// Length of the CPU window, s.
    pub window_s: f64,
    /// User CPU in the window, s.
    pub cpu_user_s: f64,
    /// Kernel CPU in the window, s.
    pub cpu_system_s: f64,
    /// CPU in the window as a share of one core (1.0 = one core busy).
    pub cores_busy: f64,
    /// Frames relayed in the window.
    pub frames_in_window: u64,
    /// User CPU per relayed frame, µs.
    pub cpu_user_us_per_frame: f64,
    /// Kernel CPU per relayed frame, µs.
    pub cpu_system_us_per_frame: f64,
    /// Total CPU per relayed frame, µs.
    pub cpu_us_per_frame: f64,
    /// RSS before the first call, KiB.
    pub rss_idle_kib: u64,
    /// Largest RSS seen, KiB.
    pub rss_peak_kib: u64,
    /// (peak − idle) / calls, KiB.
    pub rss_per_call_kib: f64,
    /// Calls one core could relay in real time at this CPU per frame (100 frames/s per call).
    pub calls_per_core: f64,
}

/// The result of a load run (also the `--json` document).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Calls attempted.
    pub calls: usize,
    /// Calls closed with 1000 after `stop`.
    pub ok: u64,
    /// Calls that were not ok.
    pub failed: u64,
    /// Failures by kind (`http_401`, `connect`, `close_1011`, `lost`).
    pub failures: BTreeMap<String, u64>,
    /// `media` frames the callers sent.
    pub frames_sent: u64,
    /// `media` frames the callers received.
    pub frames_received: u64,
    /// Frames short per call (sent − received, counted per call, never negative).
    pub frames_dropped: u64,
    /// μ-law bytes sent.
    pub bytes_sent: u64,
    /// μ-law bytes received.
    pub bytes_received: u64,
    /// Marks received (and echoed).
    pub marks: u64,
    /// Messages that were not valid Twilio commands.
    pub malformed: u64,
    /// Round-trip audio latency (by audio position).
    pub latency: Percentiles,
    /// Largest delay of a frame behind its real-time schedule, ms.
    pub max_send_lag_ms: f64,
    /// Frames sent more than 20 ms late (the generator could not keep real time).
    pub late_frames: u64,
    /// Wall time of the run, s.
    pub wall_s: f64,
    /// The server process (`--server-pid`).
    pub server: Option<ProcessCost>,
    /// This process (the load generator, and the echo agent when it plays it).
    pub generator: Option<ProcessCost>,
}

/// Distinct tones in a run.
const TONES: usize = 16;

/// A tone distinct per call (so a mixed-up stream would not correlate), 8 kHz μ-law.
pub fn tone(call: usize, duration: Duration) -> Vec<u8> {
    let n = (duration.as_millis() as usize * 8).div_ceil(FRAME_BYTES) * FRAME_BYTES;
    let hz = 300.0 + 7.0 * (call % 100) as f64;
    (0..n)
        .map(|i| {
            let x = (i as f64 * 2.0 * std::f64::consts::PI * hz / 8000.0).sin();
            mulaw::encode((x * 8000.0) as i16)
        })
        .collect()
}

fn classify(result: &Result<CallReport, super::SimError>) -> Result<(), String> {
    match result {
        Err(super::SimError::Refused { status, .. }) => Err(format!("http_{status}")),
        Err(_) => Err("connect".into()),
        Ok(r) => match r.close_code {
            Some(1000) => Ok(()),
            Some(code) => Err(format!("close_{code}")),
            None => Err("lost".into()),
        },
    }
}

/// A CPU window: snapshots at its start and end.
type Window = Option<(Snapshot, Snapshot)>;

struct Snapshot {
    proc: Option<ProcSample>,
    frames: u64,
    at: Instant,
}

fn snapshot(pid: Option<u32>, progress: &Progress) -> Snapshot {
    Snapshot {
        proc: pid.and_then(procstat::sample),
        frames: progress.live.frames_sent.load(Ordering::Relaxed)
            + progress.live.frames_received.load(Ordering::Relaxed),
        at: Instant::now(),
    }
}

fn cost(a: &Snapshot, b: &Snapshot, rss_peak_kib: u64, calls: usize) -> Option<ProcessCost> {
    let (pa, pb) = (a.proc?, b.proc?);
    let window_s = (b.at - a.at).as_secs_f64();
    let user = pb.user.saturating_sub(pa.user).as_secs_f64();
    let system = pb.system.saturating_sub(pa.system).as_secs_f64();
    let frames = b.frames.saturating_sub(a.frames);
    let per = |s: f64| {
        if frames == 0 {
            0.0
        } else {
            s * 1e6 / frames as f64
        }
    };
    let total = per(user + system);
    Some(ProcessCost {
        window_s,
        cpu_user_s: user,
        cpu_system_s: system,
        cores_busy: if window_s > 0.0 {
            (user + system) / window_s
        } else {
            0.0
        },
        frames_in_window: frames,
        cpu_user_us_per_frame: per(user),
        cpu_system_us_per_frame: per(system),
        cpu_us_per_frame: total,
        rss_idle_kib: pa.rss_kib,
        rss_peak_kib: rss_peak_kib.max(pb.rss_kib),
        rss_per_call_kib: rss_peak_kib.max(pb.rss_kib).saturating_sub(pa.rss_kib) as f64
            / calls.max(1) as f64,
        // A call relays 50 frames/s each way.
        calls_per_core: if total > 0.0 {
            1e6 / (total * 100.0)
        } else {
            0.0
        },
    })
}

/// Runs the load and returns the aggregate. Never fails as a whole: every call's outcome is
/// counted in the report.
pub async fn run(opts: &LoadOptions, progress: Arc<Progress>) -> LoadReport {
    let calls = opts.calls.max(1);
    let server_pid = opts.server_pid;
    let self_pid = Some(std::process::id());
    let t0 = Instant::now();
    let (window_start, window_end) = {
        let s = opts.ramp + Duration::from_secs(1);
        let e = opts.duration.saturating_sub(Duration::from_millis(500));
        if e > s + Duration::from_secs(1) {
            (Some(t0 + s), t0 + e)
        } else {
            (None, t0)
        }
    };
    let server_before = snapshot(server_pid, &progress);
    let self_before = snapshot(self_pid, &progress);
    // RSS sampler + windowed CPU snapshots.
    let sampler_progress = Arc::clone(&progress);
    let stop_sampling = tokio_util::sync::CancellationToken::new();
    let sampler_stop = stop_sampling.clone();
    let sampler = tokio::spawn(async move {
        let mut peaks = (0u64, 0u64);
        let mut window: (Window, Window) = (None, None);
        let mut begin: Option<(Snapshot, Snapshot)> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                () = sampler_stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            if let Some(s) = server_pid.and_then(procstat::sample) {
                peaks.0 = peaks.0.max(s.rss_kib);
            }
            if let Some(s) = self_pid.and_then(procstat::sample) {
                peaks.1 = peaks.1.max(s.rss_kib);
            }
            if let Some(ws) = window_start {
                if begin.is_none() && now >= ws {
                    begin = Some((
                        snapshot(server_pid, &sampler_progress),
                        snapshot(self_pid, &sampler_progress),
                    ));
                } else if window.0.is_none() && now >= window_end {
                    if let Some((a, b)) = begin.take() {
                        window = (
                            Some((a, snapshot(server_pid, &sampler_progress))),
                            Some((b, snapshot(self_pid, &sampler_progress))),
                        );
                    }
                }
            }
        }
        (peaks, window)
    });

    // A few distinct tones, shared: neighbouring calls differ, memory stays flat in N.
    let tones: Vec<Arc<[u8]>> = (0..TONES).map(|i| tone(i, opts.duration).into()).collect();
    let mut set = JoinSet::new();
    for i in 0..calls {
        let at = t0 + opts.ramp.mul_f64(i as f64 / calls as f64);
        let audio = Arc::clone(&tones[i % TONES]);
        let (url, token, call_opts, progress) = (
            opts.url.clone(),
            opts.token.clone(),
            opts.call.clone(),
            Arc::clone(&progress),
        );
        set.spawn(async move {
            tokio::time::sleep_until(at).await;
            progress.started.fetch_add(1, Ordering::Relaxed);
            let result = match caller::connect(&url, token.as_deref()).await {
                Ok(ws) => Ok(caller::run(ws, &audio, &call_opts, &progress.live).await),
                Err(e) => Err(e),
            };
            match classify(&result) {
                Ok(()) => progress.ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => progress.failed.fetch_add(1, Ordering::Relaxed),
            };
            result
        });
    }
    let mut report = LoadReport {
        calls,
        ..LoadReport::default()
    };
    let mut latencies = Vec::new();
    let mut max_lag = Duration::ZERO;
    while let Some(joined) = set.join_next().await {
        let Ok(result) = joined else {
            *report.failures.entry("panic".into()).or_default() += 1;
            report.failed += 1;
            continue;
        };
        match classify(&result) {
            Ok(()) => report.ok += 1,
            Err(kind) => {
                report.failed += 1;
                *report.failures.entry(kind).or_default() += 1;
            }
        }
        if let Ok(r) = result {
            report.frames_sent += r.frames_sent;
            report.frames_received += r.frames_received;
            report.frames_dropped += r.frames_sent.saturating_sub(r.frames_received);
            report.bytes_sent += r.bytes_sent;
            report.bytes_received += r.bytes_received;
            report.marks += r.marks;
            report.malformed += r.malformed;
            report.late_frames += r.late_frames;
            max_lag = max_lag.max(r.max_send_lag);
            latencies.extend_from_slice(&r.latencies_us);
        }
    }
    let server_after = snapshot(server_pid, &progress);
    let self_after = snapshot(self_pid, &progress);
    stop_sampling.cancel();
    let ((server_peak, self_peak), window) = sampler.await.unwrap_or_default();
    report.wall_s = t0.elapsed().as_secs_f64();
    report.max_send_lag_ms = max_lag.as_secs_f64() * 1000.0;
    report.latency = Percentiles::from_micros(&mut latencies);
    report.server = match &window.0 {
        Some((a, b)) => cost(a, b, server_peak, calls),
        None => cost(&server_before, &server_after, server_peak, calls),
    };
    // RSS idle is always the figure before the first call.
    if let (Some(s), Some(before)) = (report.server.as_mut(), server_before.proc) {
        s.rss_idle_kib = before.rss_kib;
        s.rss_per_call_kib = s.rss_peak_kib.saturating_sub(before.rss_kib) as f64 / calls as f64;
    }
    report.generator = match &window.1 {
        Some((a, b)) => cost(a, b, self_peak, calls),
        None => cost(&self_before, &self_after, self_peak, calls),
    };
    report
}

/// The report as an aligned text table.
pub fn table(r: &LoadReport) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<28} {v}\n"));
    row("calls", format!("{} ok, {} failed", r.ok, r.failed));
    for (kind, n) in &r.failures {
        row(&format!("  failed: {kind}"), n.to_string());
    }
    row(
        "frames",
        format!(
            "{} sent, {} received, {} dropped",
            r.frames_sent, r.frames_received, r.frames_dropped
        ),
    );
    row(
        "round trip (ms)",
        format!(
            "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  ({} samples)",
            r.latency.p50_ms, r.latency.p90_ms, r.latency.p99_ms, r.latency.max_ms, r.latency.count
        ),
    );
    row(
        "sender lag",
        format!(
            "max {:.1} ms, {} frames > 20 ms late",
            r.max_send_lag_ms, r.late_frames
        ),
    );
    for (name, cost) in [("server", &r.server), ("generator", &r.generator)] {
        if let Some(c) = cost {
            row(
                &format!("{name} cpu / relayed frame"),
                format!(
                    "{:.2} µs (user {:.2}, system {:.2}) over {:.1} s, {:.2} cores busy",
                    c.cpu_us_per_frame,
                    c.cpu_user_us_per_frame,
                    c.cpu_system_us_per_frame,
                    c.window_s,
                    c.cores_busy
                ),
            );
            row(
                &format!("{name} rss / call"),
                format!(
                    "{:.1} KiB (idle {} KiB, peak {} KiB)",
                    c.rss_per_call_kib, c.rss_idle_kib, c.rss_peak_kib
                ),
            );
        }
    }
    if let Some(c) = &r.server {
        row("server calls / core", format!("{:.0}", c.calls_per_core));
    }
    row("wall time", format!("{:.1} s", r.wall_s));
    s
}
