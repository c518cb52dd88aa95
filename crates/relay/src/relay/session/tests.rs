use base64::Engine as _;

use super::*;

const START: &str =
    r#"{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"},"streamSid":"MZ1"}"#;
const MEDIA: &str = r#"{"event":"media","media":{"payload":"AAEC/w=="},"streamSid":"MZ1"}"#;

fn run(session: &mut Session, text: &str) -> Result<Event, CallError> {
    session.on_text(text, &mut Vec::new()).1
}

#[test]
fn event_table() {
    let mut s = Session::new(None, 160);
    let mut audio = Vec::new();
    assert_eq!(
        s.on_text(r#"{"event":"connected"}"#, &mut audio),
        ("connected", Ok(Event::Nothing))
    );
    assert_eq!(
        run(&mut s, MEDIA),
        Err(ProtocolError::MediaBeforeStart.into())
    );
    assert!(matches!(run(&mut s, START), Ok(Event::Started(_))));
    assert_eq!(s.stream_sid().map(StreamSid::as_str), Some("MZ1"));
    assert_eq!(s.on_text(MEDIA, &mut audio), ("media", Ok(Event::Audio(4))));
    assert_eq!(audio, [0x00, 0x01, 0x02, 0xff]);
    assert_eq!(
        run(&mut s, START),
        Err(ProtocolError::DuplicateStart.into())
    );
    assert_eq!(
        run(
            &mut s,
            r#"{"event":"media","media":{"payload":"AA=="},"streamSid":"MZ2"}"#
        ),
        Err(ProtocolError::StreamSidMismatch.into())
    );
    assert_eq!(
        run(
            &mut s,
            r#"{"event":"mark","mark":{"name":"a"},"streamSid":"MZ1"}"#
        ),
        Ok(Event::Mark("a".into()))
    );
    assert_eq!(
        s.on_text(r#"{"event":"x"}"#, &mut audio),
        ("unknown", Ok(Event::Nothing))
    );
    assert_eq!(s.on_text("nope", &mut audio).0, "invalid");
    assert!(!s.stopped());
    assert_eq!(
        run(&mut s, r#"{"event":"stop","streamSid":"MZ1"}"#),
        Ok(Event::Stopped)
    );
    assert!(s.stopped());
}

#[test]
fn token_bound_call_sid_must_match() {
    let mut s = Session::new(Some("CA2".into()), 160);
    assert_eq!(run(&mut s, START), Err(CallError::CallSidMismatch));
    let mut s = Session::new(Some("CA1".into()), 160);
    assert!(run(&mut s, START).is_ok());
}

#[test]
fn twilio_account_sid_must_match_when_configured() {
    let ours = "AC0123456789abcdef0123456789abcdef";
    let with = |account: &str| {
        format!(
            r#"{{"event":"start","start":{{"streamSid":"MZ1","callSid":"CA1","accountSid":"{account}"}},"streamSid":"MZ1"}}"#
        )
    };
    let mut s = Session::new(None, 160).with_account(Some(ours.into()));
    assert!(run(&mut s, &with(ours)).is_ok());
    let mut s = Session::new(None, 160).with_account(Some(ours.into()));
    let err = run(&mut s, &with("AC00000000000000000000000000000000")).unwrap_err();
    assert_eq!(err, CallError::AccountMismatch);
    assert_eq!((err.close_code(), err.reason()), (1008, "account mismatch"));
    // No accountSid at all is refused too; without the setting any account is accepted.
    let mut s = Session::new(None, 160).with_account(Some(ours.into()));
    assert_eq!(run(&mut s, START), Err(CallError::AccountMismatch));
    let mut s = Session::new(None, 160);
    assert!(run(&mut s, &with("AC00000000000000000000000000000000")).is_ok());
}

#[test]
fn payload_limits_are_checked_before_decoding() {
    let mut out = Vec::new();
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
    assert_eq!(decode_payload(&b64(160), 160, &mut out), Ok(()));
    assert_eq!(out.len(), 160);
    for n in [161, 162, 163, 1000] {
        assert_eq!(
            decode_payload(&b64(n), 160, &mut out),
            Err(ProtocolError::PayloadTooLarge),
            "{n}"
        );
    }
    assert_eq!(
        decode_payload("AAE", 160, &mut out),
        Ok(()),
        "unpadded is accepted"
    );
    assert_eq!(out, [0, 1]);
    assert_eq!(
        decode_payload("A!==", 160, &mut out),
        Err(ProtocolError::PayloadNotBase64)
    );
    assert_eq!(decode_payload("", 160, &mut out), Ok(()));
    assert!(out.is_empty());
}

#[test]
fn close_codes_and_outcomes() {
    use crate::relay::Outcome;
    let e = |p| CallError::Protocol(p);
    assert_eq!(
        (
            e(ProtocolError::PayloadTooLarge).close_code(),
            e(ProtocolError::PayloadTooLarge).outcome()
        ),
        (1009, Outcome::payload)
    );
    assert_eq!(
        (
            e(ProtocolError::PayloadNotBase64).close_code(),
            e(ProtocolError::PayloadNotBase64).outcome()
        ),
        (1007, Outcome::payload)
    );
    assert_eq!(
        (
            e(ProtocolError::MalformedJson).close_code(),
            e(ProtocolError::MalformedJson).outcome()
        ),
        (1002, Outcome::protocol_error)
    );
    assert_eq!(CallError::CallSidMismatch.close_code(), 1008);
}
