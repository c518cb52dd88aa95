//! The call loop against a remote agent, moved here from the process tests
//! (tests/it/agent_relay.rs): barge-in, the agent's pings, audio held before its metadata,
//! transcoding both ways, legacy binary audio, an agent that fails or stalls. One call over in-memory pipes on a
//! paused clock; the agent's side is scripted as the ElevenLabs protocol has it.

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::*;
use crate::audio::mulaw;
use crate::audio::resample::Resampler;

/// One call with a remote agent: `twilio` plays Twilio's side, `el` the agent's (over a pipe
/// of `agent_buffer` bytes). The call's summary and flushed metrics come back with both.
async fn agent_call<T, TF, RT, E, EF, RE>(
    binary: bool,
    agent_buffer: usize,
    twilio: T,
    el: E,
) -> (Summary, RT, RE, String)
where
    T: FnOnce(Pipe) -> TF,
    TF: Future<Output = RT>,
    E: FnOnce(Pipe) -> EF,
    EF: Future<Output = RE>,
{
    let (server, tw) = pipe(1 << 16).await;
    let (agent_side, agent_end) = pipe(agent_buffer).await;
    let connector = agent(AgentMode::Remote { binary }, Some(agent_side));
    let host = host(None);
    let cfg = RelayConfig::with_agent(connector.mode);
    let call = run(
        server,
        &connector,
        &host,
        cfg,
        None,
        limits(),
        CallStops::new().register(),
    );
    let (summary, seen, heard) = tokio::time::timeout(Duration::from_secs(300), async {
        tokio::join!(call, twilio(tw), el(agent_end))
    })
    .await
    .expect("the call ended within 5 virtual minutes");
    (summary, seen, heard, host.metrics.render())
}

/// The agent's side up to its metadata: reads the initiation, answers in `format` both ways.
async fn open(el: &mut Pipe, format: &str) {
    let Some(Ok(Message::Text(init))) = el.next().await else {
        panic!("no initiation")
    };
    let init: Value = serde_json::from_str(init.as_str()).unwrap();
    assert_eq!(init["type"], "conversation_initiation_client_data");
    el.send(text(json!({"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"conversation_id":"conv_1","agent_output_audio_format":format,"user_input_audio_format":format}})))
        .await
        .unwrap();
}

fn agent_audio(bytes: &[u8], event_id: u64) -> Message {
    text(
        json!({"type":"audio","audio_event":{"audio_base_64":STANDARD.encode(bytes),"event_id":event_id}}),
    )
}

/// Reads the agent's socket to its end; the loop closes it when the call ends.
async fn until_closed(el: &mut Pipe) {
    while let Some(Ok(msg)) = el.next().await {
        if matches!(msg, Message::Close(_)) {
            break;
        }
    }
}

/// Twilio's side: `start`, the caller's `audio` in 20 ms frames, then in order "media",
/// "mark", "clear" and the audio heard, until `enough` holds; then a `stop` and the rest up
/// to the close.
async fn twilio_until(
    tw: &mut Pipe,
    audio: &[u8],
    enough: impl Fn(&[u8]) -> bool,
) -> (Vec<&'static str>, Vec<u8>, Option<(u16, String)>) {
    tw.send(start()).await.unwrap();
    for frame in audio.chunks(160) {
        tw.send(media(frame)).await.unwrap();
    }
    let (mut items, mut audio, mut stopped) = (Vec::new(), Vec::new(), false);
    while let Some(Ok(msg)) = tw.next().await {
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match v["event"].as_str() {
                    Some("media") => {
                        items.push("media");
                        audio.extend(
                            STANDARD
                                .decode(v["media"]["payload"].as_str().unwrap())
                                .unwrap(),
                        );
                    }
                    Some("mark") => items.push("mark"),
                    Some("clear") => items.push("clear"),
                    _ => {}
                }
            }
            Message::Close(frame) => {
                let close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return (items, audio, close);
            }
            _ => {}
        }
        if !stopped && enough(&audio) {
            stopped = true;
            tw.send(stop()).await.unwrap();
        }
    }
    (items, audio, None)
}

fn count(audio: &[u8], byte: u8) -> usize {
    audio.iter().filter(|b| **b == byte).count()
}

#[tokio::test(start_paused = true)]
async fn barge_in_clears_at_once_and_drops_the_interrupted_response() {
    let (summary, (items, heard, close), (), metrics) = agent_call(
        false,
        1 << 16,
        |mut tw| async move { twilio_until(&mut tw, &[], |a| count(a, 0x22) == 1600).await },
        |mut el| async move {
            open(&mut el, "ulaw_8000").await;
            // Three seconds of response 1 at once: playout keeps Twilio only the lead ahead.
            el.send(agent_audio(&[0x11; 24_000], 1)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            el.send(text(
                json!({"type":"interruption","interruption_event":{"event_id":1}}),
            ))
            .await
            .unwrap();
            // Late audio of the interrupted response, then the next response.
            el.send(agent_audio(&[0x33; 1600], 1)).await.unwrap();
            el.send(agent_audio(&[0x22; 1600], 2)).await.unwrap();
            until_closed(&mut el).await;
        },
    )
    .await;
    let clear = items
        .iter()
        .position(|i| *i == "clear")
        .expect("clear sent");
    let first = count(&heard, 0x11);
    assert!(
        first <= 8 * (500 + 200 + 20),
        "response 1 released at real time plus the 200 ms lead, then cut: {first} bytes"
    );
    assert!(
        items[clear + 1..].iter().filter(|i| **i == "media").count() >= 10,
        "the next response follows the clear"
    );
    assert_eq!(
        count(&heard, 0x33),
        0,
        "late audio of response 1 is dropped"
    );
    assert_eq!(close, Some((1000, "stream stopped".into())));
    assert!(
        metrics.contains("media_bargein_seconds_count 1"),
        "{metrics}"
    );
    // The call record's part: ids, the cause, timings and counts.
    let report = summary.report.expect("a started stream has a record");
    assert_eq!(report.ending, "caller_hangup");
    assert_eq!(report.facts.call_sid.as_deref(), Some("CA1"));
    assert_eq!(report.facts.conversation_id.as_deref(), Some("conv_1"));
    assert_eq!(report.facts.agent_format, Some("ulaw_8000"));
    assert_eq!(report.facts.barge_ins, 1);
    let first = report.facts.first_audio.expect("agent audio was played");
    assert!(first < Duration::from_millis(100), "{first:?}");
    assert!(
        report.bridge[1].count() >= 3,
        "each agent frame read is timed"
    );
}

#[tokio::test(start_paused = true)]
async fn agent_pings_are_answered_with_their_event_ids_and_events_counted() {
    let (summary, (_, _, close), pongs, metrics) = agent_call(
        false,
        1 << 16,
        |mut tw| async move { twilio_until(&mut tw, &[], |_| false).await },
        |mut el| async move {
            open(&mut el, "ulaw_8000").await;
            el.send(text(
                json!({"type":"ping","ping_event":{"event_id":42,"ping_ms":null}}),
            ))
            .await
            .unwrap();
            el.send(text(json!({"type":"user_transcript","user_transcription_event":{"user_transcript":"hello","event_id":3}}))).await.unwrap();
            el.send(text(
                json!({"type":"ping","ping_event":{"event_id":43,"ping_ms":12}}),
            ))
            .await
            .unwrap();
            let mut pongs = Vec::new();
            while pongs.len() < 2 {
                let Some(Ok(Message::Text(t))) = el.next().await else {
                    panic!("agent socket ended")
                };
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "pong" {
                    pongs.push(v["event_id"].as_u64().unwrap());
                }
            }
            el.close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await
            .unwrap();
            pongs
        },
    )
    .await;
    assert_eq!(pongs, [42, 43]);
    assert_eq!(close, Some((1000, "agent ended".into())));
    assert_eq!(summary.outcome, Outcome::normal);
    assert!(
        metrics.contains("media_agent_events_total{kind=\"user_transcript\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn caller_audio_before_the_agent_metadata_reaches_it_whole_and_in_order() {
    let sent: Vec<u8> = (0..15u8).flat_map(|i| [i; 160]).collect();
    let expected = sent.clone();
    let (_, _, got, _) = agent_call(
        false,
        1 << 16,
        |mut tw| async move {
            tw.send(start()).await.unwrap();
            // 300 ms of audio, all of it before the agent is ready.
            for frame in sent.chunks(160) {
                tw.send(media(frame)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            listen(&mut tw).await
        },
        |mut el| async move {
            let _init = el.next().await;
            tokio::time::sleep(Duration::from_millis(400)).await;
            el.send(text(json!({"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"agent_output_audio_format":"ulaw_8000","user_input_audio_format":"ulaw_8000"}})))
                .await
                .unwrap();
            let got = caller_audio(&mut el, 15 * 160).await;
            el.close(None).await.unwrap();
            got
        },
    )
    .await;
    assert_eq!(got, expected);
}

/// What the agent must receive for caller μ-law `audio` in pcm_16000: G.711 decode, the
/// same streaming resampler 8 kHz -> 16 kHz, S16LE.
fn pcm16k_of(audio: &[u8]) -> Vec<u8> {
    let mut pcm = Vec::new();
    mulaw::decode_into(audio, &mut pcm);
    let mut up = Vec::new();
    Resampler::new(8000, 16000).unwrap().process(&pcm, &mut up);
    up.iter().flat_map(|s| s.to_le_bytes()).collect()
}

#[tokio::test(start_paused = true)]
async fn pcm_16000_is_transcoded_sample_accurately_both_ways() {
    let sent: Vec<u8> = (0..30u8).flat_map(|i| [0x30 + i; 160]).collect();
    let to_agent = pcm16k_of(&sent);
    // Agent -> caller: 16 kHz PCM in odd-sized chunks comes out resampled and μ-law encoded.
    let agent: Vec<i16> = (0..16000)
        .map(|i| ((f64::from(i) * 0.2).sin() * 9000.0) as i16)
        .collect();
    let mut down = Vec::new();
    Resampler::new(16000, 8000)
        .unwrap()
        .process(&agent, &mut down);
    let mut to_caller = Vec::new();
    mulaw::encode_into(&down, &mut to_caller);
    let wanted = to_caller.len();
    let (_, (_, heard, _), got, _) = agent_call(
        false,
        1 << 16,
        |mut tw| async move { twilio_until(&mut tw, &sent, |a| a.len() >= wanted).await },
        |mut el| async move {
            open(&mut el, "pcm_16000").await;
            let got = caller_audio(&mut el, 30 * 160 * 4).await;
            let bytes: Vec<u8> = agent.iter().flat_map(|s| s.to_le_bytes()).collect();
            for (i, chunk) in bytes.chunks(3333).enumerate() {
                el.send(agent_audio(chunk, 1 + i as u64)).await.unwrap();
            }
            until_closed(&mut el).await;
            got
        },
    )
    .await;
    assert_eq!(
        got, to_agent,
        "caller audio: G.711 decode, 8 -> 16 kHz, S16LE"
    );
    assert_eq!(
        heard[..wanted],
        to_caller[..],
        "agent audio: 16 -> 8 kHz, G.711"
    );
}

#[tokio::test(start_paused = true)]
async fn legacy_binary_mode_sends_pcm16le_16k_frames() {
    let sent: Vec<u8> = (0..5u8).flat_map(|i| [0x40 + i; 160]).collect();
    let expected = pcm16k_of(&sent);
    let (_, _, (binary, json_audio), _) = agent_call(
        true,
        1 << 16,
        |mut tw| async move {
            tw.send(start()).await.unwrap();
            for frame in sent.chunks(160) {
                tw.send(media(frame)).await.unwrap();
            }
            listen(&mut tw).await
        },
        |mut el| async move {
            open(&mut el, "pcm_16000").await;
            let (mut binary, mut json_audio) = (Vec::new(), 0);
            while binary.len() < 5 * 160 * 4 {
                match el.next().await {
                    Some(Ok(Message::Binary(b))) => binary.extend_from_slice(&b),
                    Some(Ok(Message::Text(t))) if t.as_str().contains("user_audio_chunk") => {
                        json_audio += 1;
                    }
                    Some(Ok(_)) => {}
                    _ => panic!("agent socket ended"),
                }
            }
            el.close(None).await.unwrap();
            (binary, json_audio)
        },
    )
    .await;
    assert_eq!(binary, expected);
    assert_eq!(json_audio, 0, "no user_audio_chunk in binary mode");
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_fails_mid_call_ends_it_as_an_agent_error() {
    let (summary, (_, _, close), _, _) = agent_call(
        false,
        1 << 16,
        |mut tw| async move {
            tw.send(start()).await.unwrap();
            listen(&mut tw).await
        },
        |mut el| async move {
            open(&mut el, "ulaw_8000").await;
            el.close(Some(CloseFrame {
                code: CloseCode::Error,
                reason: "".into(),
            }))
            .await
            .unwrap();
        },
    )
    .await;
    assert_eq!(close, Some((1000, "agent closed".into())));
    assert_eq!(summary.outcome, Outcome::agent_error);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_agent_costs_bounded_memory_and_drops_are_counted() {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let (summary, (pong, close), _, metrics) = agent_call(
        false,
        4096,
        |mut tw| async move {
            tw.send(start()).await.unwrap();
            // A minute of audio as fast as it goes; the agent reads none of it.
            for i in 0..3000u32 {
                tw.send(media(&[(i % 251) as u8; 160])).await.unwrap();
            }
            // Twilio is still served while the agent is stuck.
            tw.send(Message::text("ping")).await.unwrap();
            let mut pong = false;
            while let Some(Ok(msg)) = tw.next().await {
                if let Message::Text(t) = &msg {
                    if t.as_str().contains("\"pong\"") || t.as_str() == "pong" {
                        pong = true;
                        break;
                    }
                }
            }
            tw.send(stop()).await.unwrap();
            let (_, _, close) = listen(&mut tw).await;
            let _ = done_tx.send(());
            (pong, close)
        },
        |mut el| async move {
            open(&mut el, "ulaw_8000").await;
            // Stalled: holds its socket open and reads nothing until the call is over.
            let _ = done_rx.await;
            drop(el);
        },
    )
    .await;
    assert!(pong, "the call answered Twilio's ping");
    assert_eq!(close, Some((1000, "stream stopped".into())));
    assert_eq!(summary.frames_in, 3000);
    assert!(summary.dropped > 2000, "dropped {}", summary.dropped);
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("media_dropped_frames_total{reason=\"agent_slow\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(dropped > 2000, "agent_slow drops counted: {dropped}");
}
