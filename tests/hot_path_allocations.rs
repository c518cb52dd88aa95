//! The per-frame hot path allocates nothing in steady state: a counting global allocator
//! watches parse → decode → transcode → re-encode in both directions, and the playout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use media_orchestrator::elevenlabs::message::{self, AudioFormat, ServerEvent};
use media_orchestrator::relay::playout::{Playout, Release};
use media_orchestrator::relay::transcode::{FromAgent, ToAgent};
use media_orchestrator::server::session::{Event, Session};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn count<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let region = Region::new(GLOBAL);
    let r = f();
    let stats = region.change();
    (stats.allocations + stats.reallocations, r)
}

#[test]
fn steady_state_frames_allocate_nothing() {
    for format in [
        AudioFormat::Ulaw8000,
        AudioFormat::Pcm(16000),
        AudioFormat::Pcm(24000),
    ] {
        let frame: Vec<u8> = (0..160u32).map(|i| (i * 37 % 251) as u8).collect();
        let media = format!(
            r#"{{"event":"media","sequenceNumber":"5","media":{{"track":"inbound","chunk":"4","timestamp":"80","payload":"{}"}},"streamSid":"MZ1"}}"#,
            STANDARD.encode(&frame)
        );
        let mut session = Session::new(None, 16_000);
        let mut audio = Vec::with_capacity(1024);
        let (_, started) = session.on_text(
            r#"{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"},"streamSid":"MZ1"}"#,
            &mut audio,
        );
        assert!(started.is_ok());
        let mut to_agent = ToAgent::new(format).unwrap();
        let mut from_agent = FromAgent::new(format).unwrap();
        let (mut b64, mut json) = (String::with_capacity(2048), String::with_capacity(2048));
        let mut ulaw = Vec::with_capacity(4096);
        let agent_raw = to_agent.raw(&frame).to_vec();
        let agent_msg = format!(
            r#"{{"type":"audio","audio_event":{{"audio_base_64":"{}","event_id":3}}}}"#,
            STANDARD.encode(&agent_raw)
        );
        let mut playout = Playout::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut out_b64 = String::with_capacity(256);
        let mut frame_once =
            |session: &mut Session, playout: &mut Playout, t: tokio::time::Instant| {
                // Caller -> agent.
                let (_, event) = session.on_text(&media, &mut audio);
                assert_eq!(event, Ok(Event::Audio(160)));
                to_agent.base64(&audio, &mut b64);
                message::user_audio_chunk(&b64, &mut json);
                // Agent -> caller.
                let Ok(ServerEvent::Audio {
                    audio_b64,
                    event_id,
                }) = message::parse(&agent_msg)
                else {
                    panic!("agent audio")
                };
                from_agent.convert(&audio_b64, &mut ulaw).unwrap();
                playout.push(&ulaw, event_id);
                while let Some(r) = playout.poll(t) {
                    if let Release::Frame(f) = r {
                        out_b64.clear();
                        STANDARD.encode_string(&f, &mut out_b64);
                        playout.recycle(f);
                    }
                }
            };
        let t0 = tokio::time::Instant::now();
        // Warm-up: buffers grow to their working size.
        for i in 0..50u64 {
            frame_once(
                &mut session,
                &mut playout,
                t0 + Duration::from_millis(20 * i),
            );
        }
        let (allocations, ()) = count(|| {
            for i in 50..150u64 {
                frame_once(
                    &mut session,
                    &mut playout,
                    t0 + Duration::from_millis(20 * i),
                );
            }
        });
        assert_eq!(
            allocations, 0,
            "{format:?}: allocations in 100 steady-state frames"
        );
    }
}
