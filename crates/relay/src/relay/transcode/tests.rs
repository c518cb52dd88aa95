use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::*;

#[test]
fn ulaw_passes_through_untouched_both_ways() {
    let frame: Vec<u8> = (0..=255u8).cycle().take(160).collect();
    let mut to = ToAgent::new(AudioFormat::Ulaw8000).unwrap();
    let mut b64 = String::new();
    to.base64(&frame, &mut b64);
    assert_eq!(b64, STANDARD.encode(&frame));
    let mut from = FromAgent::new(AudioFormat::Ulaw8000).unwrap();
    let mut out = Vec::new();
    from.convert(&b64, &mut out).unwrap();
    assert_eq!(out, frame);
}

#[test]
fn pcm_8000_is_exact_g711_both_ways() {
    let frame: Vec<u8> = (0..160u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut to = ToAgent::new(AudioFormat::Pcm(8000)).unwrap();
    let raw = to.raw(&frame).to_vec();
    assert_eq!(raw.len(), 320);
    for (i, pair) in raw.chunks_exact(2).enumerate() {
        assert_eq!(
            i16::from_le_bytes([pair[0], pair[1]]),
            mulaw::decode(frame[i])
        );
    }
    // Back: decode(code) re-encodes to the same code (except the -0 code 0x7F).
    let mut from = FromAgent::new(AudioFormat::Pcm(8000)).unwrap();
    let mut out = Vec::new();
    from.convert(&STANDARD.encode(&raw), &mut out).unwrap();
    for (a, b) in frame.iter().zip(&out) {
        assert!(a == b || (*a == 0x7f && *b == 0xff), "{a:#x} {b:#x}");
    }
}

#[test]
fn pcm_16000_doubles_the_samples_and_odd_chunks_are_carried() {
    let mut to = ToAgent::new(AudioFormat::Pcm(16000)).unwrap();
    assert_eq!(
        to.raw(&[0xffu8; 160]).len(),
        640,
        "160 samples at 8 kHz -> 320 at 16 kHz"
    );
    // A 16 kHz stream split at an odd byte boundary converts like the whole.
    let samples: Vec<i16> = (0..640)
        .map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16)
        .collect();
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut whole = FromAgent::new(AudioFormat::Pcm(16000)).unwrap();
    let mut expect = Vec::new();
    whole
        .convert(&STANDARD.encode(&bytes), &mut expect)
        .unwrap();
    let mut split = FromAgent::new(AudioFormat::Pcm(16000)).unwrap();
    let mut got = Vec::new();
    let mut part = Vec::new();
    for chunk in [&bytes[..301], &bytes[301..777], &bytes[777..]] {
        split.convert(&STANDARD.encode(chunk), &mut part).unwrap();
        got.extend_from_slice(&part);
    }
    assert_eq!(got, expect);
    assert_eq!(expect.len(), 320);
    let mut out = Vec::new();
    assert_eq!(
        split.convert("***", &mut out),
        Err(TranscodeError::NotBase64)
    );
}
