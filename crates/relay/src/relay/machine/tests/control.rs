//! Endings, tools, keypad and the dead-agent timers, as tables over the pure relay.

use crate::relay::EndReason;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use std::time::Instant;

use super::{agent_audio, config, drain, media, twilio_media, Out, MS};
use crate::relay::events::{ControlPolicy, Ending, Input, Then};
use crate::relay::machine::Relay;
use crate::relay::AgentMode;
use crate::relay::Outcome;
use crate::twilio::number::Allowlist;

const START: &str = r#"{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","accountSid":"AC1","customParameters":{"To":"+15550001111","Direction":"inbound"}},"streamSid":"MZ1"}"#;
const METADATA: &str = r#"{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"conversation_id":"conv_1","agent_output_audio_format":"ulaw_8000","user_input_audio_format":"ulaw_8000"}}"#;

pub(super) fn policy(rest: bool, allow: &str) -> ControlPolicy {
    ControlPolicy {
        rest,
        transfer_allowlist: Arc::new(Allowlist::parse(allow).unwrap()),
        ..ControlPolicy::without_rest()
    }
}

/// A call talking to a ready agent at `t0`.
pub(super) fn talking(control: ControlPolicy, t0: Instant) -> Relay {
    let mut cfg = config(AgentMode::Remote { binary: false });
    cfg.control = control;
    let mut r = Relay::new(cfg, Some("CA1".into()), t0);
    r.handle(Input::TwilioText(START), t0);
    r.handle(Input::AgentConnected, t0);
    r.handle(Input::AgentText(METADATA), t0);
    drain(&mut r, t0);
    r
}

pub(super) fn tool_call(name: &str, id: &str, params: Value) -> String {
    json!({"type":"client_tool_call","client_tool_call":{"tool_name":name,"tool_call_id":id,"parameters":params,"event_id":3}}).to_string()
}

pub(super) fn mark_echo(name: &str) -> String {
    json!({"event":"mark","streamSid":"MZ1","mark":{"name":name}}).to_string()
}

pub(super) fn marks(out: &[Out]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Out::Twilio(v) if v["event"] == "mark" => Some(v["mark"]["name"].as_str()?.to_string()),
            _ => None,
        })
        .collect()
}

pub(super) fn agent_texts(out: &[Out]) -> Vec<Value> {
    out.iter()
        .filter_map(|o| match o {
            Out::Agent(v, false) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

/// Runs the relay's clock from `from` to `until` (ticks at each deadline), like the call
/// loop; returns the audio released, the marks sent, and when each mark was sent.
pub(super) fn run_until(
    r: &mut Relay,
    from: Instant,
    until: Instant,
) -> (Vec<u8>, Vec<(String, Instant)>) {
    let (mut audio, mut sent) = (Vec::new(), Vec::new());
    let mut now = from;
    while now < until && r.ending().is_none() {
        let out = drain(r, now);
        audio.extend(twilio_media(&out));
        sent.extend(marks(&out).into_iter().map(|m| (m, now)));
        now = r.next_deadline(now).min(until).max(now + MS);
        r.handle(Input::Tick, now);
    }
    let out = drain(r, now);
    audio.extend(twilio_media(&out));
    sent.extend(marks(&out).into_iter().map(|m| (m, now)));
    (audio, sent)
}

#[test]
fn a_goodbye_plays_in_full_before_the_hang_up() {
    for rest in [true, false] {
        let t0 = Instant::now();
        let mut r = talking(policy(rest, ""), t0);
        // Three seconds of goodbye, delivered at once, then the agent closes normally.
        r.handle(Input::AgentText(&agent_audio(&[7; 24_000], 1)), t0);
        r.handle(Input::AgentGone(Some(1000)), t0 + MS * 10);
        assert_eq!(r.ending(), None, "not cut off");
        let (audio, sent) = run_until(&mut r, t0, t0 + Duration::from_secs(5));
        assert_eq!(audio.len(), 24_000, "the whole goodbye was released");
        let (last, sent_at) = sent.last().cloned().unwrap();
        assert!(
            sent_at >= t0 + Duration::from_millis(2_780),
            "final mark only after the audio before it is released: {:?}",
            sent_at - t0
        );
        assert_eq!(r.ending(), None, "waits for the echo");
        // Twilio echoes it once played.
        let echo_at = t0 + Duration::from_secs(3);
        r.handle(Input::TwilioText(&mark_echo(&last)), echo_at);
        let ending = r.ending().unwrap();
        assert_eq!(
            (ending.outcome, ending.close_code, ending.reason),
            (Outcome::normal, Some(1000), "agent ended")
        );
        assert_eq!(ending.then, if rest { Then::HangUp } else { Then::Close });
        assert_eq!(r.counters.control.get("agent_end"), 1);
    }
}

#[test]
fn an_unechoed_final_mark_ends_the_call_after_the_grace() {
    let t0 = Instant::now();
    let mut r = talking(policy(true, ""), t0);
    r.handle(Input::AgentGone(Some(1000)), t0);
    let (_, sent) = run_until(&mut r, t0, t0 + Duration::from_secs(30));
    assert_eq!(sent.len(), 1, "one final mark");
    let ending = r.ending().unwrap();
    assert_eq!(ending.then, Then::HangUp);
    assert_eq!(r.counters.control.get("final_mark_timeout"), 1);
}

#[test]
fn an_unbound_stream_never_acts_on_the_call_it_names() {
    // A static-token stream, with REST configured and a transfer list: its `start.callSid`
    // is only the client's word.
    let t0 = Instant::now();
    let mut cfg = config(AgentMode::Remote { binary: false });
    cfg.control = policy(true, "+15557770000");
    let mut r = Relay::new(cfg, None, t0);
    r.handle(Input::TwilioText(START), t0);
    r.handle(Input::AgentConnected, t0);
    r.handle(Input::AgentText(METADATA), t0);
    drain(&mut r, t0);
    assert!(!r.bound() && !r.controls_call());
    assert_eq!(r.counters.control.get("unbound_stream"), 1);
    r.handle(
        Input::AgentText(&tool_call(
            "transfer_to_number",
            "t1",
            json!({"phone_number":"+15557770000"}),
        )),
        t0,
    );
    let texts = agent_texts(&drain(&mut r, t0));
    assert_eq!(
        texts,
        [
            json!({"type":"client_tool_result","tool_call_id":"t1","result":"Transfers are not available on this call.","is_error":true})
        ]
    );
    r.handle(Input::AgentGone(Some(1000)), t0 + MS * 10);
    let (_, sent) = run_until(&mut r, t0, t0 + Duration::from_secs(3));
    let (last, at) = sent.last().cloned().unwrap();
    r.handle(Input::TwilioText(&mark_echo(&last)), at + MS * 20);
    let ending = r.ending().unwrap();
    assert_eq!((ending.reason, ending.then), ("agent ended", Then::Close));
    assert_eq!(r.counters.control.get("unbound_stream"), 1, "once per call");
}

#[test]
fn end_call_is_answered_and_waits_for_the_agent_to_finish() {
    let t0 = Instant::now();
    let mut r = talking(policy(true, ""), t0);
    r.handle(
        Input::AgentText(&tool_call("end_call", "toolu_9", json!({"reason":"done"}))),
        t0,
    );
    let out = drain(&mut r, t0);
    assert_eq!(
        agent_texts(&out),
        [
            json!({"type":"client_tool_result","tool_call_id":"toolu_9","result":"{\"status\":\"ending call\"}","is_error":false})
        ]
    );
    // The goodbye arrives after the tool call; caller audio still reaches the agent.
    r.handle(
        Input::AgentText(&agent_audio(&[1; 8_000], 2)),
        t0 + MS * 300,
    );
    r.handle(Input::TwilioText(&media(&[0; 160])), t0 + MS * 300);
    let first = drain(&mut r, t0 + MS * 300);
    assert!(first.iter().any(|o| matches!(o, Out::Agent(_, true))));
    let (audio, sent) = run_until(&mut r, t0 + MS * 300, t0 + Duration::from_secs(4));
    assert_eq!(
        twilio_media(&first).len() + audio.len(),
        8_000,
        "goodbye released"
    );
    let (last, at) = sent.last().cloned().unwrap();
    assert!(
        at >= t0 + MS * 300 + Duration::from_millis(1_500),
        "after the quiet period"
    );
    r.handle(Input::TwilioText(&mark_echo(&last)), at + MS * 200);
    let ending = r.ending().unwrap();
    assert_eq!(
        (ending.reason, ending.then),
        ("agent hung up", Then::HangUp)
    );
}

#[test]
fn the_end_call_system_tool_ends_like_the_client_tool() {
    let t0 = Instant::now();
    let mut r = talking(policy(true, ""), t0);
    r.handle(
        Input::AgentText(r#"{"type":"agent_tool_response","agent_tool_response":{"tool_name":"end_call","tool_call_id":"t","tool_type":"system","is_error":false,"is_called":true,"event_id":61}}"#),
        t0,
    );
    assert!(
        agent_texts(&drain(&mut r, t0)).is_empty(),
        "system tools need no answer"
    );
    let (_, sent) = run_until(&mut r, t0, t0 + Duration::from_secs(3));
    r.handle(Input::TwilioText(&mark_echo(&sent[0].0)), sent[0].1);
    assert_eq!(r.ending().unwrap().then, Then::HangUp);
    assert_eq!(r.counters.control.get("end_call"), 1);
}

#[test]
fn a_barge_in_during_the_goodbye_cancels_the_hang_up_until_the_agent_finishes() {
    let t0 = Instant::now();
    let mut r = talking(policy(true, ""), t0);
    r.handle(
        Input::AgentText(&tool_call("end_call", "t1", json!({}))),
        t0,
    );
    r.handle(Input::AgentText(&agent_audio(&[1; 1_600], 2)), t0);
    let (_, sent) = run_until(&mut r, t0, t0 + Duration::from_secs(2));
    let (final_mark, at) = sent.last().cloned().unwrap();
    // The caller talks over it: the agent interrupts, we clear, Twilio echoes every mark.
    r.handle(
        Input::AgentText(r#"{"type":"interruption","interruption_event":{"event_id":2}}"#),
        at + MS * 10,
    );
    let out = drain(&mut r, at + MS * 10);
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::Twilio(v) if v["event"] == "clear")));
    r.handle(Input::TwilioText(&mark_echo(&final_mark)), at + MS * 20);
    assert_eq!(r.ending(), None, "the clear's echo does not hang up");
    assert_eq!(r.counters.control.get("goodbye_interrupted"), 1);
    // The agent answers, then closes: that answer plays before the hang-up.
    r.handle(
        Input::AgentText(&agent_audio(&[3; 4_000], 3)),
        at + MS * 500,
    );
    r.handle(Input::AgentGone(Some(1000)), at + MS * 600);
    let (audio, sent) = run_until(&mut r, at + MS * 500, at + Duration::from_secs(3));
    assert_eq!(audio, vec![3; 4_000]);
    let (last, when) = sent.last().cloned().unwrap();
    assert!(when >= at + MS * 780, "after the answer's last frame");
    r.handle(Input::TwilioText(&mark_echo(&last)), when);
    assert_eq!(r.ending().unwrap().then, Then::HangUp);
}

#[test]
fn transfers_are_allowed_only_to_listed_numbers() {
    type Case = (
        &'static str,
        bool,
        &'static str,
        Value,
        Option<&'static str>,
    );
    let cases: [Case; 6] = [
        (
            "allowed exact",
            true,
            "+15551230000",
            json!({"phone_number":"+15551230000","reason":"billing"}),
            None,
        ),
        (
            "allowed prefix",
            true,
            "+4420*",
            json!({"phone_number":"+442079460000"}),
            None,
        ),
        (
            "not listed",
            true,
            "+15551230000",
            json!({"phone_number":"+19005550100"}),
            Some("not on this line's transfer list"),
        ),
        (
            "not e164",
            true,
            "+1555*",
            json!({"phone_number":"555-1234"}),
            Some("E.164"),
        ),
        ("missing", true, "+1555*", json!({}), Some("E.164")),
        (
            "no rest",
            false,
            "",
            json!({"phone_number":"+15551230000"}),
            Some("not enabled"),
        ),
    ];
    for (name, rest, allow, params, refusal) in cases {
        let t0 = Instant::now();
        let mut r = talking(policy(rest, allow), t0);
        r.handle(
            Input::AgentText(&tool_call("transfer_to_number", "tx", params)),
            t0,
        );
        let texts = agent_texts(&drain(&mut r, t0));
        match refusal {
            Some(why) => {
                assert_eq!(texts.len(), 1, "{name}: answered once");
                assert_eq!(texts[0]["tool_call_id"], "tx", "{name}");
                assert_eq!(texts[0]["is_error"], true, "{name}");
                assert!(
                    texts[0]["result"].as_str().unwrap().contains(why),
                    "{name}: {}",
                    texts[0]
                );
                let (_, sent) = run_until(&mut r, t0, t0 + Duration::from_secs(3));
                assert!(
                    sent.is_empty() && r.ending().is_none(),
                    "{name}: the call goes on"
                );
                assert_eq!(r.counters.control.get("transfer_refused"), 1, "{name}");
            }
            None => {
                assert!(
                    texts.is_empty(),
                    "{name}: answered once Twilio has answered"
                );
                let (_, sent) = run_until(&mut r, t0, t0 + Duration::from_secs(3));
                let echoed = sent[0].1;
                r.handle(Input::TwilioText(&mark_echo(&sent[0].0)), echoed);
                let out = drain(&mut r, echoed);
                let [Out::Transfer(twiml)] = &out[..] else {
                    panic!("{name}: the transfer, with the agent still open: {out:?}");
                };
                assert!(
                    twiml.contains(r#"callerId="+15550001111""#),
                    "{name}: the call's own number: {twiml}"
                );
                assert!(twiml.contains("<Number>+"), "{name}");
                assert_eq!(r.ending(), None, "{name}: until Twilio answers");
                assert!(r.agent_active(), "{name}");
                r.handle(Input::TransferDone { ok: true }, echoed + MS * 300);
                let ending = r.ending().unwrap();
                assert_eq!(
                    (ending.then, ending.close_code, ending.reason),
                    (Then::Close, Some(1000), "transferred"),
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn a_transfer_twilio_refuses_goes_back_to_the_agent_and_the_call_goes_on() {
    let t0 = Instant::now();
    let mut control = policy(true, "+1555*");
    control.transfer_action_url = Some(Arc::from("https://api.example.com/transfer/result"));
    let mut r = talking(control, t0);
    r.handle(
        Input::AgentText(&tool_call(
            "transfer_to_number",
            "tx",
            json!({"phone_number":"+15551230000"}),
        )),
        t0,
    );
    let (_, sent) = run_until(&mut r, t0, t0 + Duration::from_secs(3));
    let echoed = sent[0].1;
    r.handle(Input::TwilioText(&mark_echo(&sent[0].0)), echoed);
    let out = drain(&mut r, echoed);
    let [Out::Transfer(twiml)] = &out[..] else {
        panic!("the transfer: {out:?}");
    };
    assert!(
        twiml.contains(r#"action="https://api.example.com/transfer/result""#),
        "{twiml}"
    );
    // While Twilio answers, the caller's audio does not start a new turn.
    r.handle(Input::TwilioText(&media(&[1; 160])), echoed + MS * 10);
    assert!(drain(&mut r, echoed + MS * 10).is_empty());
    r.handle(Input::TransferDone { ok: false }, echoed + MS * 400);
    let texts = agent_texts(&drain(&mut r, echoed + MS * 400));
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0]["tool_call_id"], "tx");
    assert_eq!(texts[0]["is_error"], true);
    assert!(texts[0]["result"]
        .as_str()
        .unwrap()
        .contains("did not go through"));
    assert_eq!(r.ending(), None, "the call stays with the agent");
    assert_eq!(r.counters.control.get("transfer_failed"), 1);
    let later = echoed + MS * 420;
    r.handle(Input::TwilioText(&media(&[2; 160])), later);
    assert!(
        drain(&mut r, later)
            .iter()
            .any(|o| matches!(o, Out::Agent(v, true) if v["user_audio_chunk"].is_string())),
        "caller audio reaches the agent again"
    );
    // A second transfer attempt works like the first.
    r.handle(
        Input::AgentText(&tool_call(
            "transfer_to_number",
            "ty",
            json!({"phone_number":"+15551230000"}),
        )),
        later,
    );
    assert!(agent_texts(&drain(&mut r, later)).is_empty());
}

#[test]
fn other_tools_get_an_error_at_once() {
    let t0 = Instant::now();
    let mut r = talking(policy(true, ""), t0);
    r.handle(
        Input::AgentText(&tool_call("lookup_order", "t5", json!({"id":"42"}))),
        t0,
    );
    assert_eq!(
        agent_texts(&drain(&mut r, t0)),
        [
            json!({"type":"client_tool_result","tool_call_id":"t5","result":"This tool is not available on this phone line.","is_error":true})
        ]
    );
    assert_eq!(r.ending(), None);
    assert_eq!(r.counters.control.get("unsupported_tool"), 1);
}

fn dtmf(digit: &str) -> String {
    json!({"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":digit}})
        .to_string()
}

#[test]
fn keypad_digits_reach_the_agent_as_one_message_per_entry() {
    let t0 = Instant::now();
    let mut r = talking(policy(false, ""), t0);
    for (i, d) in ["1", "2", "#"].iter().enumerate() {
        r.handle(Input::TwilioText(&dtmf(d)), t0 + MS * 100 * i as u32);
    }
    assert_eq!(
        agent_texts(&drain(&mut r, t0 + MS * 200)),
        [json!({"type":"user_message","text":"[keypad] 12#"})],
        "# ends the entry"
    );
    r.handle(Input::TwilioText(&dtmf("4")), t0 + Duration::from_secs(1));
    r.handle(
        Input::TwilioText(&dtmf("5")),
        t0 + Duration::from_millis(2_500),
    );
    r.handle(Input::Tick, t0 + Duration::from_millis(4_400));
    assert!(
        agent_texts(&drain(&mut r, t0 + Duration::from_millis(4_400))).is_empty(),
        "the timeout restarts per digit"
    );
    assert_eq!(
        r.next_deadline(t0 + Duration::from_millis(4_400)),
        t0 + Duration::from_millis(4_500)
    );
    r.handle(Input::Tick, t0 + Duration::from_millis(4_500));
    assert_eq!(
        agent_texts(&drain(&mut r, t0 + Duration::from_millis(4_500))),
        [json!({"type":"user_message","text":"[keypad] 45"})]
    );
    r.handle(Input::TwilioText(&dtmf("x")), t0 + Duration::from_secs(5));
    r.handle(Input::Tick, t0 + Duration::from_secs(8));
    assert!(
        agent_texts(&drain(&mut r, t0 + Duration::from_secs(8))).is_empty(),
        "not a key"
    );
    assert_eq!(r.counters.control.get("keypad_entry"), 2);
}

#[test]
fn a_dead_agent_hands_the_call_back_to_twilio() {
    let agent_dead = Ending::of(EndReason::AgentUnresponsive);
    // No metadata within the timeout.
    let t0 = Instant::now();
    let mut r = Relay::new(config(AgentMode::Remote { binary: false }), None, t0);
    r.handle(Input::TwilioText(START), t0);
    r.handle(Input::AgentConnected, t0);
    drain(&mut r, t0);
    assert_eq!(r.next_deadline(t0), t0 + Duration::from_secs(5));
    r.handle(Input::Tick, t0 + Duration::from_secs(5));
    assert_eq!(r.ending(), Some(agent_dead));
    // Silent after the metadata: pinged every 5 s, any frame keeps it alive, 12 s of nothing ends it.
    let mut r = talking(policy(false, ""), t0);
    let (mut pings, mut now) = (0, t0);
    while r.ending().is_none() && now < t0 + Duration::from_secs(60) {
        now = r.next_deadline(now);
        r.handle(Input::Tick, now);
        pings += drain(&mut r, now)
            .iter()
            .filter(|o| **o == Out::AgentPing)
            .count();
        if now < t0 + Duration::from_secs(10) {
            r.handle(Input::AgentAlive, now + MS);
        }
    }
    assert_eq!(r.ending(), Some(agent_dead));
    assert!(pings >= 2, "pinged while silent: {pings}");
    let dead_after = now - t0;
    assert!(
        dead_after >= Duration::from_secs(12) && dead_after <= Duration::from_secs(23),
        "{dead_after:?}"
    );
    assert_eq!(r.counters.control.get("agent_dead"), 1);
}

#[test]
fn an_agent_failure_hands_the_call_back_at_once() {
    let t0 = Instant::now();
    let mut r = talking(policy(true, ""), t0);
    r.handle(Input::AgentText(&agent_audio(&[7; 8_000], 1)), t0);
    r.handle(Input::AgentGone(Some(1011)), t0 + MS);
    assert_eq!(
        r.ending(),
        Some(Ending::of(EndReason::AgentClosed)),
        "no goodbye wait for a failure: Twilio runs the fallback"
    );
}

#[test]
fn an_agent_refusing_for_concurrency_sends_a_bound_call_to_the_overflow() {
    // Bound, with REST: the overflow TwiML through REST.
    let t0 = Instant::now();
    let mut cfg = config(AgentMode::Remote { binary: false });
    cfg.control = policy(true, "");
    let mut r = Relay::new(cfg.clone(), Some("CA1".into()), t0);
    r.handle(Input::TwilioText(START), t0);
    drain(&mut r, t0);
    r.handle(Input::AgentBusy, t0);
    let ending = r.ending().unwrap();
    assert_eq!(
        (ending.outcome, ending.reason, ending.then),
        (Outcome::overflow, "agent capacity", Then::Overflow)
    );
    assert_eq!(r.counters.agent_events.get("busy"), 1);
    // Unbound: the stream only closes (Twilio runs its fallback).
    let mut r = Relay::new(cfg, None, t0);
    r.handle(Input::TwilioText(START), t0);
    drain(&mut r, t0);
    r.handle(Input::AgentBusy, t0);
    assert_eq!(r.ending().unwrap().then, Then::Close);
}
