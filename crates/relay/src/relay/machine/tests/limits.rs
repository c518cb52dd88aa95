//! The call's time limit and the server's drain, over the pure relay.

use std::time::Duration;

use serde_json::json;
use std::time::Instant;

use super::control::{agent_texts, mark_echo, policy, run_until, talking, tool_call};
use super::{agent_audio, drain, media, Out, MS};
use crate::relay::events::{Input, Then};
use crate::relay::Outcome;

const SECOND: Duration = Duration::from_secs(1);

fn contextual_updates(out: &[Out]) -> Vec<String> {
    agent_texts(out)
        .into_iter()
        .filter(|v| v["type"] == "contextual_update")
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect()
}

/// The caller talking and both peers alive at `now` (no idle, keepalive or dead-agent end).
fn alive(r: &mut crate::relay::machine::Relay, now: Instant) {
    r.handle(Input::TwilioText(&media(&[0xff; 160])), now);
    r.handle(Input::TwilioPong, now);
    r.handle(Input::AgentAlive, now);
}

/// Runs the clock from `from` to `until` with both peers alive and returns every contextual
/// update sent.
fn updates_until(
    r: &mut crate::relay::machine::Relay,
    from: Instant,
    until: Instant,
) -> Vec<String> {
    let mut now = from;
    let mut updates = Vec::new();
    while now < until && r.ending().is_none() {
        alive(r, now);
        updates.extend(contextual_updates(&drain(r, now)));
        now = r
            .next_deadline(now)
            .min(until)
            .min(now + SECOND)
            .max(now + MS);
        r.handle(Input::Tick, now);
    }
    updates.extend(contextual_updates(&drain(r, now)));
    updates
}

#[test]
fn a_call_at_its_limit_is_asked_to_wrap_up_then_ends_after_its_last_words() {
    for rest in [true, false] {
        let t0 = Instant::now();
        let mut control = policy(rest, "");
        control.max_call = Some(Duration::from_secs(90));
        let mut r = talking(control, t0);
        // A minute before the limit (a third of 90 s is 30 s: the shorter lead), the wrap-up.
        let updates = updates_until(&mut r, t0, t0 + SECOND * 59);
        assert!(updates.is_empty(), "{updates:?}");
        let updates = updates_until(&mut r, t0 + SECOND * 59, t0 + SECOND * 61);
        assert_eq!(updates.len(), 1, "once: {updates:?}");
        assert!(updates[0].contains("about 30 seconds"), "{}", updates[0]);
        assert_eq!(r.counters.control.get("wrap_up"), 1);
        // The agent is mid-goodbye at the limit: two seconds of it still arriving.
        let at_limit = t0 + SECOND * 90;
        updates_until(&mut r, t0 + SECOND * 61, at_limit - MS * 100);
        r.handle(
            Input::AgentText(&agent_audio(&[7; 16_000], 4)),
            at_limit - MS * 100,
        );
        let (audio, sent) = run_until(&mut r, at_limit - MS * 100, at_limit + SECOND * 5);
        assert_eq!(audio.len(), 16_000, "its last words were released in full");
        assert_eq!(r.counters.control.get("max_duration"), 1);
        // Caller audio no longer starts a turn once the ending is forced.
        r.handle(Input::TwilioText(&media(&[1; 160])), at_limit + SECOND);
        assert!(!drain(&mut r, at_limit + SECOND)
            .iter()
            .any(|o| matches!(o, Out::Agent(_, true))));
        let (mark, sent_at) = sent.last().cloned().unwrap();
        assert!(
            sent_at >= at_limit + SECOND,
            "after the audio: {:?}",
            sent_at - at_limit
        );
        assert_eq!(r.ending(), None, "until the echo");
        r.handle(Input::TwilioText(&mark_echo(&mark)), sent_at + SECOND);
        let ending = r.ending().unwrap();
        assert_eq!(
            (ending.outcome, ending.close_code, ending.reason),
            (Outcome::normal, Some(1000), "max duration")
        );
        assert_eq!(ending.then, if rest { Then::HangUp } else { Then::Close });
    }
}

#[test]
fn an_agent_that_keeps_talking_past_the_limit_is_cut_after_ten_seconds() {
    let t0 = Instant::now();
    let mut control = policy(true, "");
    control.max_call = Some(Duration::from_secs(30));
    let mut r = talking(control, t0);
    let limit = t0 + SECOND * 30;
    updates_until(&mut r, t0, limit);
    // Half a second of new audio every half second, forever.
    let mut now = limit;
    let mut last_mark = None;
    while r.ending().is_none() && now < limit + SECOND * 40 {
        alive(&mut r, now);
        r.handle(Input::AgentText(&agent_audio(&[5; 4_000], 9)), now);
        let (_, sent) = run_until(&mut r, now, now + MS * 500);
        if let Some((m, at)) = sent.last().cloned() {
            r.handle(Input::TwilioText(&mark_echo(&m)), at + MS * 600);
            last_mark = Some(at);
        }
        now += MS * 500;
    }
    assert!(r.ending().is_some(), "ended");
    assert_eq!(r.counters.control.get("goodbye_cut"), 1);
    let at = last_mark.unwrap();
    assert!(at < limit + SECOND * 22, "bounded: {:?}", at - limit);
}

#[test]
fn a_drain_asks_the_agent_to_wrap_up_at_once_and_ends_the_call_before_its_deadline() {
    let t0 = Instant::now();
    let mut r = talking(policy(true, ""), t0);
    let deadline = t0 + SECOND * 20;
    r.handle(Input::Drain(deadline), t0);
    let updates = contextual_updates(&drain(&mut r, t0));
    assert_eq!(updates.len(), 1);
    assert!(updates[0].contains("end the call now"), "{}", updates[0]);
    // The agent says goodbye (3 s) and calls end_call.
    r.handle(Input::AgentText(&agent_audio(&[7; 24_000], 2)), t0 + SECOND);
    r.handle(
        Input::AgentText(&tool_call("end_call", "te", json!({}))),
        t0 + SECOND,
    );
    let (audio, sent) = run_until(&mut r, t0 + SECOND, deadline);
    assert_eq!(audio.len(), 24_000);
    let (mark, at) = sent.last().cloned().unwrap();
    r.handle(Input::TwilioText(&mark_echo(&mark)), at + MS * 100);
    let ending = r.ending().unwrap();
    assert_eq!(
        (ending.reason, ending.then),
        ("agent hung up", Then::HangUp)
    );
    assert!(at < deadline);
}

#[test]
fn a_drained_call_whose_agent_ignores_the_wrap_up_still_ends_gracefully_in_time() {
    // Twilio never echoes the final mark, the agent never stops: the call still ends before
    // the deadline with the REST hang-up, not 1001.
    let t0 = Instant::now();
    let mut r = talking(policy(true, ""), t0);
    let deadline = t0 + SECOND * 16;
    r.handle(Input::Drain(deadline), t0);
    let mut now = t0;
    let mut heard = 0;
    while r.ending().is_none() && now < deadline {
        r.handle(Input::AgentText(&agent_audio(&[5; 4_000], 3)), now);
        let (audio, _) = run_until(&mut r, now, now + MS * 500);
        heard += audio.len();
        now += MS * 500;
    }
    let ending = r.ending().unwrap();
    assert_eq!(
        (ending.outcome, ending.close_code, ending.then),
        (Outcome::drained, Some(1000), Then::HangUp)
    );
    assert!(now <= t0 + SECOND * 14 + MS * 500, "{:?}", now - t0);
    assert!(
        heard >= 8 * 8_000,
        "the agent was heard until the cut: {heard}"
    );
    assert_eq!(r.counters.control.get("drain"), 1);
}

#[test]
fn a_drain_with_no_agent_talking_ends_halfway_to_the_deadline() {
    let t0 = Instant::now();
    let mut r = talking(policy(false, ""), t0);
    r.handle(Input::Drain(t0 + SECOND * 10), t0);
    let (_, sent) = run_until(&mut r, t0, t0 + SECOND * 10);
    let (mark, at) = sent.last().cloned().unwrap();
    assert!(
        at >= t0 + SECOND * 5 && at < t0 + SECOND * 7,
        "{:?}",
        at - t0
    );
    r.handle(Input::TwilioText(&mark_echo(&mark)), at + MS * 50);
    let ending = r.ending().unwrap();
    assert_eq!(
        (ending.outcome, ending.reason, ending.then),
        (Outcome::drained, "server draining", Then::Close)
    );
}
