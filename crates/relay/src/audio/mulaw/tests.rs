use super::{decode, decode_into, encode, encode_into};

/// The shared G.711 vectors (audioop primary, ITU-T G.191 cross-check).
const FIXTURE: &str = include_str!("../../../../../tests/fixtures/g711-ulaw.json");

fn fixture() -> serde_json::Value {
    serde_json::from_str(FIXTURE).expect("fixture is valid JSON")
}

fn as_i64(v: &serde_json::Value) -> i64 {
    v.as_i64().expect("fixture number")
}

#[test]
fn decode_matches_all_256_fixture_codes() {
    let f = fixture();
    let values = f["decode_table"]["values"]
        .as_array()
        .expect("decode_table.values");
    assert_eq!(values.len(), 256);
    for (code, want) in values.iter().enumerate() {
        let code = u8::try_from(code).expect("index < 256");
        assert_eq!(i64::from(decode(code)), as_i64(want), "code {code:#04x}");
    }
}

#[test]
fn decode_extremes_and_zeros() {
    assert_eq!(decode(0x00), -32124);
    assert_eq!(decode(0x80), 32124);
    assert_eq!(decode(0x7F), 0);
    assert_eq!(decode(0xFF), 0);
}

#[test]
fn encode_matches_every_audioop_case_exactly() {
    let f = fixture();
    let cases = f["encode_cases"].as_array().expect("encode_cases");
    assert!(cases.len() > 100, "fixture has {} cases", cases.len());
    let mut disagreements = 0;
    for case in cases {
        let input = i16::try_from(as_i64(&case["int16"])).expect("int16 input");
        let audioop = as_i64(&case["code"]);
        let itu = as_i64(&case["itu_t_g191_stl_code"]);
        let got = i64::from(encode(input));
        assert_eq!(got, audioop, "encode({input})");
        if case["implementations_agree"].as_bool() == Some(false) {
            disagreements += 1;
            // The documented difference: audioop is one code below ITU for negative inputs.
            assert!(input < 0, "disagreement on non-negative input {input}");
            assert_eq!(audioop - itu, -1, "input {input}");
        } else {
            assert_eq!(got, itu, "encode({input}) vs ITU-T G.191");
        }
    }
    assert!(disagreements > 0, "fixture lists disagreeing cases");
}

#[test]
fn encode_clipping_and_zero_rules() {
    for s in [31612, 32124, 32635, 32636, 32767] {
        assert_eq!(encode(s), 0x80, "encode({s})");
    }
    assert_eq!(encode(31611), 0x81);
    for s in [-31609, -32124, -32767, -32768] {
        assert_eq!(encode(s), 0x00, "encode({s})");
    }
    assert_eq!(encode(-31608), 0x01);
    for s in -6..=-1 {
        assert_eq!(encode(s), 0x7E, "encode({s})");
    }
    for s in 0..=3 {
        assert_eq!(encode(s), 0xFF, "encode({s})");
    }
}

#[test]
fn encode_never_emits_negative_zero() {
    assert!((i16::MIN..=i16::MAX).all(|s| encode(s) != 0x7F));
}

#[test]
fn encode_is_monotonic_over_all_inputs() {
    // Higher linear values never decode to a lower level.
    let mut previous = decode(encode(i16::MIN));
    for s in i16::MIN..=i16::MAX {
        let level = decode(encode(s));
        assert!(
            level >= previous,
            "decode(encode({s})) = {level} < {previous}"
        );
        previous = level;
    }
}

#[test]
fn encode_error_is_within_one_quantization_step() {
    // The step of segment `seg` is 8 << seg in 16-bit units; audioop's flooring shift for
    // negative inputs can add up to 3 more. Clipped inputs are excluded.
    let mut worst_ratio = 0.0f64;
    for s in -31608..=31611_i16 {
        let code = encode(s);
        let segment = ((!code) >> 4) & 0x07;
        let step = 8_i32 << segment;
        let err = (i32::from(decode(code)) - i32::from(s)).abs();
        assert!(
            err <= step + 3,
            "sample {s}: code {code:#04x}, error {err} > {step} + 3"
        );
        worst_ratio = worst_ratio.max(f64::from(err) / f64::from(step));
    }
    assert!(
        worst_ratio > 0.4,
        "error ratio {worst_ratio} suspiciously small"
    );
}

#[test]
fn round_trip_is_idempotent_except_negative_zero() {
    for code in 0..=255u8 {
        let level = decode(code);
        let again = encode(level);
        if code == 0x7F {
            // Negative zero decodes to 0, which encodes to positive zero.
            assert_eq!(again, 0xFF);
        } else {
            assert_eq!(again, code, "code {code:#04x} -> {level}");
        }
        assert_eq!(decode(again), level, "code {code:#04x}");
    }
}

#[test]
fn frame_example_encodes_to_fixture_bytes() {
    let f = fixture();
    let example = &f["frame_example"];
    let samples: Vec<i16> = example["int16_samples"]
        .as_array()
        .expect("int16_samples")
        .iter()
        .map(|v| i16::try_from(as_i64(v)).expect("int16 sample"))
        .collect();
    assert_eq!(samples.len(), 160);
    let hex = example["ulaw_hex"].as_str().expect("ulaw_hex");
    let want: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex byte"))
        .collect();

    let mut encoded = vec![0xAA];
    encode_into(&samples, &mut encoded);
    assert_eq!(encoded[0], 0xAA, "encode_into appends");
    assert_eq!(&encoded[1..], want.as_slice());

    let mut decoded = vec![7];
    decode_into(&want, &mut decoded);
    assert_eq!(decoded[0], 7, "decode_into appends");
    assert_eq!(decoded.len(), 161);
    for (i, (&d, &s)) in decoded[1..].iter().zip(&samples).enumerate() {
        // |s| <= 1000 stays in segments 0..=3, whose step is at most 64.
        assert!(
            (i32::from(d) - i32::from(s)).abs() <= 64,
            "sample {i}: {d} vs {s}"
        );
    }
}

/// Transcription of ITU-T G.191 STL `ulaw_compress`, the fixture's cross-check column.
fn itu_g191_compress(sample: i16) -> u8 {
    let s = i32::from(sample);
    let absno = if s < 0 {
        ((!s) >> 2) + 33
    } else {
        (s >> 2) + 33
    }
    .min(0x1FFF);
    let mut i = absno >> 6;
    let mut segno = 1;
    while i != 0 {
        segno += 1;
        i >>= 1;
    }
    let high_nibble = 0x08 - segno;
    let low_nibble = 0x0F - ((absno >> segno) & 0x0F);
    let code = (high_nibble << 4) | low_nibble;
    let code = if s >= 0 { code | 0x80 } else { code };
    u8::try_from(code).expect("7-bit code plus sign")
}

#[test]
fn differs_from_itu_g191_exactly_as_the_fixture_summarizes() {
    let f = fixture();
    let summary = &f["encode_disagreement_summary"];
    let mut differing = Vec::new();
    for s in i16::MIN..=i16::MAX {
        let ours = i32::from(encode(s));
        let itu = i32::from(itu_g191_compress(s));
        if ours != itu {
            assert!(s < 0, "difference on non-negative input {s}");
            assert_eq!(ours - itu, -1, "input {s}");
            differing.push(i64::from(s));
        }
    }
    let total =
        usize::try_from(as_i64(&summary["inputs_where_audioop_and_itu_differ"])).expect("count");
    assert_eq!(differing.len(), total);
    for example in summary["example_differing_inputs"]
        .as_array()
        .expect("example_differing_inputs")
    {
        assert!(differing.contains(&as_i64(example)), "{example}");
    }
}

#[test]
fn encode_table_matches_the_formula_for_every_input() {
    for s in i16::MIN..=i16::MAX {
        assert_eq!(encode(s), super::encode_formula(s), "sample {s}");
    }
}
