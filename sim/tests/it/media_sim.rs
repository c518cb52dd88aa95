//! `media-sim` end to end: the real binary against the real `media-ws` on loopback.
//! `call` with a WAV against the echo agent (the reply correlates with what was sent), its
//! error lines for bad input, and `load` at CI size: through the built-in echo, and through
//! `--agent-listen` (media-ws dials media-sim's echo ElevenLabs endpoint, pcm_16000 so both
//! directions are transcoded).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::media_ws as support;

use std::path::{Path, PathBuf};
use std::process::Output;

use media_orchestrator::audio::mulaw;
use media_sim::wav;
use support::Server;

const SIM: &str = env!("CARGO_BIN_EXE_media-sim");

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "media-sim-test-{}-{}-{name}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

async fn sim(args: &[&str]) -> Output {
    tokio::process::Command::new(SIM)
        .args(args)
        .env_remove("MEDIA_SIM_TOKEN")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run media-sim")
}

/// 2 s at 16 kHz stereo: 440 Hz + 1000 Hz under a rising envelope (so alignment is unique).
fn write_test_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..32_000 {
        let t = f64::from(i) / 16_000.0;
        let tau = 2.0 * std::f64::consts::PI;
        let env = 0.2 + 0.8 * (t / 2.0);
        let x = env * (0.3 * (tau * 440.0 * t).sin() + 0.3 * (tau * 1000.0 * t).sin());
        let s = (x * 32767.0) as i16;
        w.write_sample(s).unwrap();
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// Largest normalized cross-correlation of `b` against `a` over lags in ±`max_lag` samples.
fn best_correlation(a: &[f64], b: &[f64], max_lag: isize) -> (f64, isize) {
    let mut best = (f64::MIN, 0);
    for lag in -max_lag..=max_lag {
        let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
        for (i, &x) in a.iter().enumerate() {
            let j = i as isize + lag;
            if j < 0 || j as usize >= b.len() {
                continue;
            }
            let y = b[j as usize];
            dot += x * y;
            na += x * x;
            nb += y * y;
        }
        let c = if na > 0.0 && nb > 0.0 {
            dot / (na * nb).sqrt()
        } else {
            0.0
        };
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

fn stderr_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one stderr line, got {err:?}");
    assert!(lines[0].starts_with("media-sim: "), "{err:?}");
    lines[0].to_string()
}

/// Asserts that media-sim exited 0 (showing both streams if not) and returns its stdout.
fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn call_against_the_echo_records_the_callers_audio() {
    let s = Server::start(&[("AGENT", "echo"), ("ECHO_DELAY_MS", "20")]).await;
    let (input, reply) = (temp_path("in.wav"), temp_path("reply.wav"));
    write_test_wav(&input);
    let out = sim(&[
        "call",
        &s.url("/rtm/voice"),
        "--wav",
        input.to_str().unwrap(),
        "--out",
        reply.to_str().unwrap(),
        "--param",
        "lang=en",
        "--linger",
        "0.5",
    ])
    .await;
    let stdout = succeeded(&out);
    for needle in [
        "connected",
        "first audio back",
        "close 1000",
        "summary: sent 100 frames",
    ] {
        assert!(
            stdout.contains(needle),
            "timeline lacks {needle:?}:\n{stdout}"
        );
    }
    let sent: Vec<f64> = wav::read_ulaw(&input)
        .unwrap()
        .iter()
        .map(|&c| f64::from(mulaw::decode(c)))
        .collect();
    let mut r = hound::WavReader::open(&reply).unwrap();
    assert_eq!((r.spec().sample_rate, r.spec().channels), (8000, 1));
    let got: Vec<f64> = r.samples::<i16>().map(|s| f64::from(s.unwrap())).collect();
    assert!(
        got.len() >= sent.len() * 9 / 10,
        "reply holds {} of {} samples",
        got.len(),
        sent.len()
    );
    let (corr, lag) = best_correlation(&sent, &got, 400);
    assert!(corr > 0.9, "correlation {corr} at lag {lag}");
    for p in [input, reply] {
        let _ = std::fs::remove_file(p);
    }
}

#[tokio::test]
async fn bad_input_is_one_error_line_and_a_failure_exit() {
    // Missing file.
    let missing = temp_path("missing.wav");
    let out = sim(&[
        "call",
        "ws://127.0.0.1:9/rtm/voice",
        "--wav",
        missing.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    let line = stderr_line(&out);
    assert!(
        line.contains("cannot read") && line.contains("missing.wav"),
        "{line}"
    );

    // Not a WAV.
    let text = temp_path("notes.wav");
    std::fs::write(&text, "these are not samples\n").unwrap();
    let out = sim(&[
        "call",
        "ws://127.0.0.1:9/rtm/voice",
        "--wav",
        text.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(stderr_line(&out).contains("not a usable WAV"));

    // Unreachable: a port nothing listens on.
    let wav_in = temp_path("ok.wav");
    write_test_wav(&wav_in);
    let refused = support::refused_port();
    let url = format!("ws://127.0.0.1:{}/rtm/voice", refused.port);
    let out = sim(&["call", &url, "--wav", wav_in.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(stderr_line(&out).contains("cannot connect"));

    // 401: auth on, no token and a wrong token.
    let s = Server::start(&[("AGENT", "echo"), ("MEDIA_AUTH_TOKEN", "right-token")]).await;
    let url = s.url("/rtm/voice");
    for extra in [&[][..], &["--token", "wrong-token"][..]] {
        let mut args = vec!["call", url.as_str(), "--wav", wav_in.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = sim(&args).await;
        assert!(!out.status.success());
        let line = stderr_line(&out);
        assert!(line.contains("HTTP 401"), "{line}");
        assert!(
            !line.contains("wrong-token"),
            "the token must not be printed: {line}"
        );
    }
    // And the right token gets through.
    let out = sim(&[
        "call",
        &url,
        "--wav",
        wav_in.to_str().unwrap(),
        "--token",
        "right-token",
        "--linger",
        "0.3",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in [text, wav_in] {
        let _ = std::fs::remove_file(p);
    }
}

fn read_report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn load_through_the_builtin_echo_delivers_every_frame() {
    let s = Server::start(&[
        ("AGENT", "echo"),
        ("ECHO_DELAY_MS", "20"),
        ("RUST_LOG", "info"),
    ])
    .await;
    let json = temp_path("load.json");
    let pid = s.pid().to_string();
    let out = sim(&[
        "load",
        &s.url("/rtm/voice"),
        "--calls",
        "20",
        "--ramp",
        "1",
        "--duration",
        "5",
        "--json",
        json.to_str().unwrap(),
        "--server-pid",
        &pid,
        "--quiet",
    ])
    .await;
    let stdout = succeeded(&out);
    assert!(stdout.contains("20 ok, 0 failed"), "{stdout}");
    let r = read_report(&json);
    assert_eq!(
        (r["ok"].as_u64(), r["failed"].as_u64()),
        (Some(20), Some(0)),
        "{r}"
    );
    assert_eq!(r["frames_sent"].as_u64(), Some(20 * 250), "{r}");
    assert_eq!(r["frames_received"], r["frames_sent"], "{r}");
    assert_eq!(r["bytes_received"], r["bytes_sent"], "{r}");
    assert_eq!(r["frames_dropped"].as_u64(), Some(0));
    assert!(r["latency"]["count"].as_u64().unwrap() >= 20 * 250, "{r}");
    assert!(r["server"]["rss_idle_kib"].as_u64().unwrap() > 0, "{r}");
    assert!(r["server"]["frames_in_window"].as_u64().unwrap() > 0, "{r}");
    let _ = std::fs::remove_file(json);
}

#[tokio::test]
async fn load_through_agent_listen_transcodes_both_ways_and_delivers_every_frame() {
    // A port for media-sim's echo agent: free now; media-ws dials it only at each call's start.
    let port = support::port_for_child();
    let agent = format!("127.0.0.1:{port}");
    let agent_url = format!("ws://{agent}/v1/convai/conversation");
    let s = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ALLOW_UNAUTHENTICATED", "true"),
        ("ELEVENLABS_WS_URL", agent_url.as_str()),
        ("RUST_LOG", "info"),
    ])
    .await;
    let json = temp_path("load-agent.json");
    let out = sim(&[
        "load",
        &s.url("/rtm/voice"),
        "--calls",
        "20",
        "--ramp",
        "1",
        "--duration",
        "5",
        "--agent-listen",
        &agent,
        "--agent-format",
        "pcm_16000",
        "--json",
        json.to_str().unwrap(),
        "--quiet",
    ])
    .await;
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("echo agent (pcm_16000) listening on"),
        "{stdout}"
    );
    let r = read_report(&json);
    assert_eq!(
        (r["ok"].as_u64(), r["failed"].as_u64()),
        (Some(20), Some(0)),
        "{r}"
    );
    assert_eq!(r["frames_sent"].as_u64(), Some(20 * 250), "{r}");
    // 8 kHz → 16 kHz → 8 kHz returns exactly one output sample per input sample (the
    // resamplers' filter delay shifts the content, not the count): complete delivery.
    assert_eq!(r["bytes_received"], r["bytes_sent"], "{r}");
    assert_eq!(r["frames_received"], r["frames_sent"], "{r}");
    let logs = s.logs();
    assert!(
        logs.contains("pcm_16000"),
        "media-ws should have transcoded pcm_16000"
    );
    let _ = std::fs::remove_file(json);
}

#[tokio::test]
async fn call_reports_a_server_that_ends_the_call_early() {
    // The agent is unreachable: media-ws ends the stream with 1000 "agent unavailable" while
    // the caller is still talking; the call stops sending and reports the close, not a loss.
    let refused = support::refused_port();
    let agent_url = format!("ws://127.0.0.1:{}/v1/convai/conversation", refused.port);
    let s = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ALLOW_UNAUTHENTICATED", "true"),
        ("ELEVENLABS_WS_URL", agent_url.as_str()),
        ("ELEVENLABS_CONNECT_RETRIES", "0"),
    ])
    .await;
    let input = temp_path("early.wav");
    write_test_wav(&input);
    let out = sim(&[
        "call",
        &s.url("/rtm/voice"),
        "--wav",
        input.to_str().unwrap(),
    ])
    .await;
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("close 1000 \"agent unavailable\""),
        "{stdout}"
    );
    assert!(!stdout.contains("connection lost"), "{stdout}");
    assert!(!stdout.contains("all audio sent"), "{stdout}");
    let _ = std::fs::remove_file(input);
}
