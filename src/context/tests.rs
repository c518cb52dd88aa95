#![allow(clippy::unwrap_used)]

use super::*;

const SID: &str = "CA0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;

fn sealer(list: &[&str]) -> Sealer {
    let secrets: Vec<Secret<String>> = list.iter().map(|s| Secret::new((*s).to_string())).collect();
    Sealer::new(&secrets)
}

fn context() -> CallContext {
    CallContext {
        dynamic_variables: [("patient_name".to_string(), "Ada Lovelace".to_string())].into(),
        overrides: AgentOverrides {
            prompt: Some("Remind Ada of her appointment".into()),
            first_message: Some("Hello Ada".into()),
            ..AgentOverrides::default()
        },
    }
}

#[test]
fn a_sealed_context_opens_only_for_its_audience_binding_and_time() {
    let s = sealer(&["shared-secret"]);
    let sealed = s.seal(Audience::Stream, SID, NOW + 60, &context()).unwrap();
    assert!(sealed.starts_with("v1."));
    assert!(
        sealed[3..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "URL- and path-safe"
    );
    let opened: CallContext = s.open(Audience::Stream, SID, NOW, &sealed).unwrap();
    assert_eq!(opened, context());

    let other_sid = "CA0123456789abcdef0123456789abcdee";
    assert_eq!(
        s.open::<CallContext>(Audience::Stream, other_sid, NOW, &sealed),
        Err(SealError::Invalid)
    );
    assert_eq!(
        s.open::<CallContext>(Audience::Answer, SID, NOW, &sealed),
        Err(SealError::Invalid)
    );
    assert_eq!(
        s.open::<CallContext>(Audience::Stream, SID, NOW + 60, &sealed),
        Err(SealError::Expired)
    );
}

#[test]
fn nothing_of_the_context_is_readable_and_every_seal_differs() {
    let s = sealer(&["shared-secret"]);
    let a = s.seal(Audience::Answer, "", NOW + 60, &context()).unwrap();
    let b = s.seal(Audience::Answer, "", NOW + 60, &context()).unwrap();
    assert_ne!(a, b, "random nonce per seal");
    let raw = URL_SAFE_NO_PAD.decode(&a[3..]).unwrap();
    let text = String::from_utf8_lossy(&raw);
    for clear in ["Ada", "patient_name", "appointment", "media.call"] {
        assert!(!text.contains(clear), "{clear} readable in the seal");
    }
    assert!(
        !format!("{:?}", context()).contains("Ada"),
        "Debug shows names only"
    );
}

#[test]
fn altered_foreign_or_malformed_seals_are_refused() {
    let s = sealer(&["shared-secret"]);
    let sealed = s
        .seal(Audience::Amd, "", NOW + 60, &Voicemail::Hangup)
        .unwrap();
    // Flip one ciphertext character.
    let mut altered = sealed.clone().into_bytes();
    let last = altered.len() - 2;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    assert_eq!(
        s.open::<Voicemail>(Audience::Amd, "", NOW, &altered),
        Err(SealError::Invalid)
    );
    assert_eq!(
        sealer(&["another-secret"]).open::<Voicemail>(Audience::Amd, "", NOW, &sealed),
        Err(SealError::Invalid)
    );
    for bad in [
        "",
        "v1.",
        "v2.AAAA",
        "v1.!!!!",
        "v1.AAAA",
        &"v1.A".repeat(2000),
    ] {
        assert_eq!(
            s.open::<Voicemail>(Audience::Amd, "", NOW, bad),
            Err(SealError::Malformed),
            "{bad:.12}"
        );
    }
    assert_eq!(
        sealer(&[]).seal(Audience::Amd, "", NOW, &Voicemail::Hangup),
        Err(SealError::NoKey)
    );
}

#[test]
fn rotation_the_new_secret_seals_and_the_old_one_still_opens() {
    let old = sealer(&["old-secret"]);
    let rotated = sealer(&["new-secret", "old-secret"]);
    let before = old
        .seal(
            Audience::Amd,
            "",
            NOW + 60,
            &Voicemail::Message("Call us back".into()),
        )
        .unwrap();
    let opened: Voicemail = rotated.open(Audience::Amd, "", NOW, &before).unwrap();
    assert_eq!(opened, Voicemail::Message("Call us back".into()));
    let after = rotated
        .seal(Audience::Amd, "", NOW + 60, &Voicemail::Hangup)
        .unwrap();
    assert_eq!(
        old.open::<Voicemail>(Audience::Amd, "", NOW, &after),
        Err(SealError::Invalid)
    );
}
