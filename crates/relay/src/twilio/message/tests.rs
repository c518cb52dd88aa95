use super::*;

const START: &str = r#"{"event":"start","sequenceNumber":"1",
 "start":{"accountSid":"AC0123456789abcdef0123456789abcdef",
          "streamSid":"MZ5f1c7e0b9a2d4c3e8f6a1b2c3d4e5f60",
          "callSid":"CAfedcba9876543210fedcba9876543210",
          "tracks":["inbound"],
          "customParameters":{"callSid":"CAfedcba9876543210fedcba9876543210","token":"3q2-7wAAAAB0b2tlbg"},
          "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},
 "streamSid":"MZ5f1c7e0b9a2d4c3e8f6a1b2c3d4e5f60"}"#;

#[test]
fn parses_every_documented_event() {
    assert_eq!(
        parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#),
        Ok(Inbound::Connected)
    );
    let Ok(Inbound::Start(s)) = parse(START) else {
        panic!("start")
    };
    assert_eq!(s.stream_sid.as_str(), "MZ5f1c7e0b9a2d4c3e8f6a1b2c3d4e5f60");
    assert_eq!(s.call_sid.as_str(), "CAfedcba9876543210fedcba9876543210");
    assert_eq!(s.tracks, ["inbound"]);
    assert_eq!(s.custom_parameters.0.len(), 2);

    let media = r#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"52","payload":"/+LX0A=="},"streamSid":"MZ1"}"#;
    let Ok(Inbound::Media(m)) = parse(media) else {
        panic!("media")
    };
    assert_eq!(m.payload, "/+LX0A==");
    assert!(
        matches!(m.payload, Cow::Borrowed(_)),
        "no copy of the payload"
    );

    assert_eq!(
        parse(
            r#"{"event":"stop","sequenceNumber":"9","stop":{"accountSid":"AC1","callSid":"CA1"},"streamSid":"MZ1"}"#
        ),
        Ok(Inbound::Stop(Stop {
            stream_sid: StreamSid::new("MZ1")
        }))
    );
    assert_eq!(
        parse(
            r#"{"event":"mark","sequenceNumber":"103","streamSid":"MZ1","mark":{"name":"resp-42"}}"#
        ),
        Ok(Inbound::Mark(Mark {
            stream_sid: StreamSid::new("MZ1"),
            name: "resp-42".into()
        }))
    );
    assert_eq!(
        parse(
            r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"57","dtmf":{"track":"inbound_track","digit":"1"}}"#
        ),
        Ok(Inbound::Dtmf(Dtmf {
            stream_sid: StreamSid::new("MZ1"),
            digit: "1".into()
        }))
    );
}

#[test]
fn escaped_payload_still_parses() {
    let media = r#"{"event":"media","media":{"payload":"\/+LX0A=="},"streamSid":"MZ1"}"#;
    let Ok(Inbound::Media(m)) = parse(media) else {
        panic!("media")
    };
    assert_eq!(m.payload, "/+LX0A==");
}

#[test]
fn unknown_events_and_fields_are_tolerated() {
    assert_eq!(
        parse(r#"{"event":"future_thing","x":{"y":1}}"#),
        Ok(Inbound::Unknown)
    );
    assert_eq!(
        parse(r#"{"event":"stop","streamSid":"MZ1","newField":[1,2]}"#),
        Ok(Inbound::Stop(Stop {
            stream_sid: StreamSid::new("MZ1")
        }))
    );
    // Start without customParameters or mediaFormat.
    let bare = r#"{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"},"streamSid":"MZ1"}"#;
    let Ok(Inbound::Start(s)) = parse(bare) else {
        panic!("start")
    };
    assert!(s.custom_parameters.0.is_empty());
}

#[test]
fn malformed_input_is_a_typed_error() {
    for (text, want) in [
        ("not json", ProtocolError::MalformedJson),
        ("{}", ProtocolError::MalformedJson),
        (r#"{"event":7}"#, ProtocolError::MalformedJson),
        (
            r#"{"event":"media","streamSid":"MZ1"}"#,
            ProtocolError::MissingField("media"),
        ),
        (
            r#"{"event":"media","media":{},"streamSid":"MZ1"}"#,
            ProtocolError::MissingField("media.payload"),
        ),
        (
            r#"{"event":"media","media":{"payload":"AA=="}}"#,
            ProtocolError::MissingField("streamSid"),
        ),
        (
            r#"{"event":"media","media":{"payload":5},"streamSid":"MZ1"}"#,
            ProtocolError::MalformedJson,
        ),
        (
            r#"{"event":"start","start":{"streamSid":"MZ1"}}"#,
            ProtocolError::MissingField("start.callSid"),
        ),
        (
            r#"{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"},"streamSid":"MZ2"}"#,
            ProtocolError::StreamSidMismatch,
        ),
        (
            r#"{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":{"encoding":"audio/x-l16","sampleRate":16000,"channels":1}}}"#,
            ProtocolError::UnsupportedFormat,
        ),
        (
            r#"{"event":"mark","streamSid":"MZ1"}"#,
            ProtocolError::MissingField("mark"),
        ),
    ] {
        assert_eq!(parse(text), Err(want), "{text}");
    }
}

#[test]
fn debug_output_hides_payload_parameters_and_digits() {
    let Ok(Inbound::Start(s)) = parse(START) else {
        panic!("start")
    };
    let dbg = format!("{s:?}");
    assert!(dbg.contains("token"), "names are shown");
    assert!(!dbg.contains("3q2-7wAAAAB0b2tlbg"), "values are not");
    let media = r#"{"event":"media","media":{"payload":"SECRETPAYLOAD"},"streamSid":"MZ1"}"#;
    assert!(!format!("{:?}", parse(media)).contains("SECRETPAYLOAD"));
    let dtmf = r#"{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":"7"}}"#;
    assert!(!format!("{:?}", parse(dtmf)).contains('7'));
}

#[test]
fn outbound_messages_have_exactly_the_documented_shape() {
    let sid = "MZ5f1c7e0b9a2d4c3e8f6a1b2c3d4e5f60";
    let media = Outbound::Media {
        stream_sid: sid,
        media: OutboundMedia { payload: "AAA=" },
    };
    let v: serde_json::Value = serde_json::from_str(&media.to_json()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"event":"media","streamSid":sid,"media":{"payload":"AAA="}})
    );
    let mark = Outbound::Mark {
        stream_sid: sid,
        mark: OutboundMark { name: "m-1" },
    };
    let v: serde_json::Value = serde_json::from_str(&mark.to_json()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"event":"mark","streamSid":sid,"mark":{"name":"m-1"}})
    );
    let clear = Outbound::Clear { stream_sid: sid };
    let v: serde_json::Value = serde_json::from_str(&clear.to_json()).unwrap();
    assert_eq!(v, serde_json::json!({"event":"clear","streamSid":sid}));
}

#[test]
fn media_fast_path_writes_exactly_what_serde_writes() {
    for (sid, payload) in [
        (
            "MZ5f1c7e0b9a2d4c3e8f6a1b2c3d4e5f60",
            "/+LX0M7O0Nfg+2RYUU5OT1Zfd+bZ0s7Oz9Xe82haUk5OT1Vd==",
        ),
        ("MZ\"quoted\\", "AAA="),
        ("MZ\u{1}ctl", ""),
    ] {
        let media = Outbound::Media {
            stream_sid: sid,
            media: OutboundMedia { payload },
        };
        assert_eq!(
            media.to_json(),
            serde_json::to_string(&media).unwrap(),
            "{sid:?}"
        );
    }
}

#[test]
fn written_messages_are_what_serde_writes() {
    let mut out = String::new();
    for (sid, payload) in [("MZ1", "AAEC/w=="), ("MZ\"odd", "x\\y")] {
        write_media(sid, payload, &mut out);
        let expected = serde_json::to_string(&Outbound::Media {
            stream_sid: sid,
            media: OutboundMedia { payload },
        })
        .unwrap();
        assert_eq!(out, expected);
        write_mark(sid, "m7", &mut out);
        let expected = serde_json::to_string(&Outbound::Mark {
            stream_sid: sid,
            mark: OutboundMark { name: "m7" },
        })
        .unwrap();
        assert_eq!(out, expected);
        write_clear(sid, &mut out);
        let expected = serde_json::to_string(&Outbound::Clear { stream_sid: sid }).unwrap();
        assert_eq!(out, expected);
    }
}
