//! Micro benchmarks of the per-frame hot path (one 20 ms frame = 160 μ-law bytes at 8 kHz):
//! the μ-law codec, resampling both ways, and one message end to end in each direction
//! (parse → transcode → the message the server writes). `cargo bench --bench hot_path`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use media_orchestrator::audio::mulaw;
use media_orchestrator::audio::resample::Resampler;
use media_orchestrator::elevenlabs::message::{self, AudioFormat, ServerEvent};
use media_orchestrator::relay::session::{Event, Session};
use media_orchestrator::relay::transcode::{FromAgent, ToAgent};
use media_orchestrator::twilio::message::write_media;

/// A 20 ms frame of a tone, μ-law.
fn ulaw_frame() -> Vec<u8> {
    (0..160)
        .map(|i| {
            let x = (f64::from(i) * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin();
            mulaw::encode((x * 8000.0) as i16)
        })
        .collect()
}

fn pcm(len: usize, rate: f64) -> Vec<i16> {
    (0..len)
        .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / rate).sin() * 8000.0) as i16)
        .collect()
}

fn codec(c: &mut Criterion) {
    let frame = ulaw_frame();
    let samples = pcm(160, 8000.0);
    let mut g = c.benchmark_group("mulaw");
    g.throughput(Throughput::Elements(1));
    let mut out16 = Vec::with_capacity(160);
    g.bench_function("decode_20ms_frame", |b| {
        b.iter(|| {
            out16.clear();
            mulaw::decode_into(black_box(&frame), &mut out16);
            black_box(&out16);
        });
    });
    let mut out8 = Vec::with_capacity(160);
    g.bench_function("encode_20ms_frame", |b| {
        b.iter(|| {
            out8.clear();
            mulaw::encode_into(black_box(&samples), &mut out8);
            black_box(&out8);
        });
    });
    g.finish();
}

fn resample(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample");
    for (from, to) in [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000)] {
        let input = pcm((from / 50) as usize, f64::from(from));
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = Vec::with_capacity(2048);
        g.bench_function(format!("{from}_to_{to}_20ms_frame"), |b| {
            b.iter(|| {
                out.clear();
                r.process(black_box(&input), &mut out);
                black_box(&out);
            });
        });
    }
    g.finish();
}

/// Twilio `media` → parse → decode → transcode → `user_audio_chunk` JSON.
fn caller_to_agent(c: &mut Criterion) {
    let frame = ulaw_frame();
    let media = format!(
        r#"{{"event":"media","sequenceNumber":"5","media":{{"track":"inbound","chunk":"4","timestamp":"80","payload":"{}"}},"streamSid":"MZ1"}}"#,
        STANDARD.encode(&frame)
    );
    let mut g = c.benchmark_group("caller_to_agent");
    for format in [AudioFormat::Ulaw8000, AudioFormat::Pcm(16000)] {
        let mut session = Session::new(None, 16_000);
        let mut audio = Vec::with_capacity(1024);
        let (_, started) = session.on_text(
            r#"{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"},"streamSid":"MZ1"}"#,
            &mut audio,
        );
        assert!(started.is_ok());
        let mut to_agent = ToAgent::new(format).unwrap();
        let (mut b64, mut json) = (String::with_capacity(2048), String::with_capacity(2048));
        g.bench_function(format.name(), |b| {
            b.iter(|| {
                let (_, event) = session.on_text(black_box(&media), &mut audio);
                assert_eq!(event, Ok(Event::Audio(160)));
                to_agent.base64(&audio, &mut b64);
                message::user_audio_chunk(&b64, &mut json);
                black_box(&json);
            });
        });
    }
    g.finish();
}

/// Agent `audio` (one 20 ms frame) → parse → transcode → Twilio `media` JSON, written into a
/// reused buffer as the relay does.
fn agent_to_caller(c: &mut Criterion) {
    let frame = ulaw_frame();
    let mut g = c.benchmark_group("agent_to_caller");
    for format in [AudioFormat::Ulaw8000, AudioFormat::Pcm(16000)] {
        let agent_raw = ToAgent::new(format).unwrap().raw(&frame).to_vec();
        let agent_msg = format!(
            r#"{{"type":"audio","audio_event":{{"audio_base_64":"{}","event_id":3}}}}"#,
            STANDARD.encode(&agent_raw)
        );
        let mut from_agent = FromAgent::new(format).unwrap();
        let mut ulaw = Vec::with_capacity(4096);
        let mut out_b64 = String::with_capacity(256);
        let mut json = String::with_capacity(512);
        g.bench_function(format.name(), |b| {
            b.iter(|| {
                let Ok(ServerEvent::Audio { audio_b64, .. }) =
                    message::parse(black_box(&agent_msg))
                else {
                    panic!("agent audio")
                };
                from_agent.convert(&audio_b64, &mut ulaw).unwrap();
                out_b64.clear();
                STANDARD.encode_string(&ulaw, &mut out_b64);
                write_media("MZ1", &out_b64, &mut json);
                black_box(&json);
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = codec, resample, caller_to_agent, agent_to_caller
}
criterion_main!(benches);
