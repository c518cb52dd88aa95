use super::*;

fn closed(reason: &str, extra: Vec<Step>) -> CallReport {
    let mut timeline: Vec<TimelineEntry> = extra
        .into_iter()
        .map(|step| TimelineEntry {
            at: Duration::ZERO,
            step,
        })
        .collect();
    timeline.push(TimelineEntry {
        at: Duration::from_secs(1),
        step: Step::Closed {
            code: 1000,
            reason: reason.into(),
        },
    });
    CallReport {
        timeline,
        ..CallReport::default()
    }
}

#[test]
fn endings_are_told_apart_by_reason_and_rest_request() {
    let rest = |s: &str| Step::Rest(s.to_string());
    assert_eq!(
        ending(&closed(
            "transferred",
            vec![rest("transfer to +15551230000 requested")]
        )),
        "transferred (transfer to +15551230000 requested)"
    );
    assert_eq!(
        ending(&closed(
            "agent hung up",
            vec![rest("hang-up requested (Status=completed)")]
        )),
        "hang-up by the agent, after its last words played"
    );
    assert!(ending(&closed("agent ended", vec![])).starts_with("the agent ended"));
    assert_eq!(
        ending(&closed("agent unresponsive", vec![])),
        "fallback: handed back to Twilio (agent unresponsive)"
    );
    assert_eq!(
        ending(&closed("stream stopped", vec![Step::StopSent])),
        "the caller hung up"
    );
    assert_eq!(
        ending(&closed(
            "max duration",
            vec![rest("hang-up requested (Status=completed)")]
        )),
        "hang-up at the call's time limit (MAX_CALL_SECONDS), after the agent's last words played"
    );
    assert!(ending(&closed("server draining", vec![])).contains("server's drain"));
    let transfer = crate::twilio_rest::RestRequest {
        at: Instant::now(),
        call_sid: "CA1".into(),
        created: false,
        form: vec![(
            "Twiml".into(),
            "<Response><Dial><Number>+15551230000</Number></Dial></Response>".into(),
        )],
    };
    assert_eq!(transfer.describe(), "transfer to +15551230000 requested");
}

#[test]
fn token_goes_into_the_path() {
    assert_eq!(with_token("ws://h:1/rtm/voice", None), "ws://h:1/rtm/voice");
    assert_eq!(
        with_token("ws://h:1/rtm/voice/", Some("abc")),
        "ws://h:1/rtm/voice/jwt/abc"
    );
    assert_eq!(
        with_token("ws://h:1/rtm/voice?x=1", Some("abc")),
        "ws://h:1/rtm/voice/jwt/abc?x=1"
    );
}

#[test]
fn twilio_shapes_and_sequence_numbers() {
    let mut tw = Twilio {
        sids: Sids::new(),
        seq: 0,
        chunk: 0,
    };
    let start: serde_json::Value =
        serde_json::from_str(tw.start(&BTreeMap::new()).to_text().unwrap()).unwrap();
    assert_eq!(start["sequenceNumber"], "1");
    assert_eq!(start["start"]["mediaFormat"]["sampleRate"], 8000);
    let media: serde_json::Value =
        serde_json::from_str(tw.media(&[0xff; 160], 20).to_text().unwrap()).unwrap();
    assert_eq!(media["sequenceNumber"], "2");
    assert_eq!(media["media"]["chunk"], "1");
    assert_eq!(media["media"]["timestamp"], "20");
    assert_eq!(media["media"]["track"], "inbound");
    assert_eq!(media["media"]["payload"], STANDARD.encode([0xff; 160]));
    assert_eq!(media["streamSid"], start["streamSid"]);
    assert_eq!(media.as_object().unwrap().len(), 4);
    let stop: serde_json::Value = serde_json::from_str(tw.stop().to_text().unwrap()).unwrap();
    assert_eq!(stop["sequenceNumber"], "3");
    assert_eq!(stop["streamSid"], start["streamSid"]);
    // The server's own messages parse as Twilio commands.
    let text = media.to_string();
    let parsed = media_orchestrator::twilio::message::parse(&text).unwrap();
    assert_eq!(parsed.name(), "media");
}

#[test]
fn playback_echoes_marks_after_their_audio_or_on_clear() {
    let t0 = Instant::now();
    let mut p = Playback::default();
    p.push_audio(t0, 1600); // 200 ms
    p.push_mark(t0, "m1".into());
    assert_eq!(p.next_due(), Some(t0 + Duration::from_millis(200)));
    assert_eq!(p.pop_due(t0), None);
    p.clear(t0 + Duration::from_millis(50));
    assert_eq!(
        p.pop_due(t0 + Duration::from_millis(50)).as_deref(),
        Some("m1")
    );
}
