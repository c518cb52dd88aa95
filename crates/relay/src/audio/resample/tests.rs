use super::{ResampleError, Resampler, SUPPORTED_RATES_HZ};
use std::f64::consts::PI;
use std::time::Duration;

/// Requirement: images and aliases at least this far below the wanted tone.
const MIN_REJECTION_DB: f64 = 60.0;
/// Requirement: passband gain within this many dB of unity.
const MAX_PASSBAND_DEVIATION_DB: f64 = 0.5;
/// Requirement: group delay budget.
const MAX_DELAY: Duration = Duration::from_millis(2);
/// Telephony passband test tones, Hz.
const PASSBAND_HZ: [u32; 6] = [300, 500, 1000, 2000, 3000, 3400];
/// Tones above the 8 kHz Nyquist whose aliases would land in the passband, Hz.
const STOPBAND_HZ: [u32; 5] = [4600, 5000, 6000, 7000, 7900];
/// Test tone amplitude (about -6 dBFS).
const AMPLITUDE: f64 = 16_000.0;

fn resampler(from_hz: u32, to_hz: u32) -> Resampler {
    Resampler::new(from_hz, to_hz).expect("supported pair")
}

fn all_pairs() -> impl Iterator<Item = (u32, u32)> {
    SUPPORTED_RATES_HZ
        .iter()
        .flat_map(|&a| SUPPORTED_RATES_HZ.iter().map(move |&b| (a, b)))
}

fn telephony_pairs() -> impl Iterator<Item = (u32, u32)> {
    SUPPORTED_RATES_HZ
        .iter()
        .filter(|&&r| r != 8_000)
        .flat_map(|&r| [(8_000, r), (r, 8_000)])
}

/// `seconds` of a sine at `freq_hz`, sampled at `rate_hz`, rounded to i16.
fn tone(freq_hz: f64, rate_hz: u32, amplitude: f64, seconds: f64) -> Vec<i16> {
    let len = (seconds * f64::from(rate_hz)).round() as usize;
    (0..len)
        .map(|n| {
            let t = n as f64 / f64::from(rate_hz);
            (amplitude * (2.0 * PI * freq_hz * t).sin()).round() as i16
        })
        .collect()
}

/// Deterministic pseudo-random full-range samples (xorshift).
fn noise(len: usize, seed: u64) -> Vec<i16> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 48) as u16 as i16
        })
        .collect()
}

/// Runs `input` through a fresh resampler in 20 ms frames.
fn convert(from_hz: u32, to_hz: u32, input: &[i16]) -> Vec<i16> {
    let mut r = resampler(from_hz, to_hz);
    let frame = from_hz as usize / 50;
    let mut out = Vec::new();
    for chunk in input.chunks(frame) {
        r.process(chunk, &mut out);
    }
    out
}

/// Output samples to skip before measuring: the filter's warm-up plus slack.
fn warm_up(from_hz: u32, to_hz: u32) -> usize {
    let r = resampler(from_hz, to_hz);
    2 * r.delay_samples().ceil() as usize + 16
}

/// Amplitude and phase (radians, of a sine) of the `freq_hz` component of `samples`, by a
/// single-bin DFT (a Goertzel evaluation). Exact for whole cycles in the window.
fn measure(samples: &[i16], freq_hz: f64, rate_hz: u32) -> (f64, f64) {
    let w = 2.0 * PI * freq_hz / f64::from(rate_hz);
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &s) in samples.iter().enumerate() {
        let x = f64::from(s);
        re += x * (w * n as f64).cos();
        im += x * (w * n as f64).sin();
    }
    let len = samples.len() as f64;
    let amplitude = 2.0 * re.hypot(im) / len;
    (amplitude, re.atan2(im))
}

/// RMS of `samples`.
fn rms(samples: &[i16]) -> f64 {
    let power: f64 = samples.iter().map(|&s| f64::from(s).powi(2)).sum();
    (power / samples.len() as f64).sqrt()
}

/// Analysis window: 0.2 s (whole cycles for every multiple of 5 Hz) after the warm-up.
fn analysis_window(out: &[i16], from_hz: u32, to_hz: u32) -> &[i16] {
    let start = warm_up(from_hz, to_hz);
    let len = to_hz as usize / 5;
    assert!(out.len() >= start + len, "signal too short");
    &out[start..start + len]
}

fn db(ratio: f64) -> f64 {
    20.0 * ratio.log10()
}

/// Level, in dB relative to the tone at `freq_hz`, of everything else in `window`.
fn residual_db(window: &[i16], freq_hz: f64, rate_hz: u32) -> f64 {
    let (amp, _) = measure(window, freq_hz, rate_hz);
    let total = rms(window).powi(2);
    let rest = (total - amp * amp / 2.0).max(1e-12).sqrt();
    db(rest / (amp / 2.0_f64.sqrt()))
}

#[test]
fn upsample_8k_to_16k_images_are_60_db_down() {
    let mut worst = f64::INFINITY;
    for f in PASSBAND_HZ {
        let out = convert(8_000, 16_000, &tone(f64::from(f), 8_000, AMPLITUDE, 0.5));
        let window = analysis_window(&out, 8_000, 16_000);
        let (wanted, _) = measure(window, f64::from(f), 16_000);
        let (image, _) = measure(window, f64::from(8_000 - f), 16_000);
        let rejection = db(wanted / image.max(1e-9));
        eprintln!(
            "8k->16k: {f} Hz image at {} Hz: {rejection:.1} dB down",
            8_000 - f
        );
        assert!(
            rejection >= MIN_REJECTION_DB,
            "{f} Hz: image only {rejection:.1} dB down"
        );
        worst = worst.min(rejection);
    }
    // The example from the issue: 1 kHz tone, image at 7 kHz.
    let out = convert(8_000, 16_000, &tone(1_000.0, 8_000, AMPLITUDE, 0.5));
    let window = analysis_window(&out, 8_000, 16_000);
    let rejection = db(measure(window, 1_000.0, 16_000).0 / measure(window, 7_000.0, 16_000).0);
    assert!(
        rejection >= MIN_REJECTION_DB,
        "7 kHz image {rejection:.1} dB down"
    );
    eprintln!("8k->16k worst image rejection {worst:.1} dB");
}

#[test]
fn downsample_16k_to_8k_aliases_are_60_db_down() {
    let reference = convert(16_000, 8_000, &tone(1_000.0, 16_000, AMPLITUDE, 0.5));
    let (reference_amp, _) = measure(analysis_window(&reference, 16_000, 8_000), 1_000.0, 8_000);
    assert!((db(reference_amp / AMPLITUDE)).abs() < 0.5);
    let mut worst = f64::INFINITY;
    for f in STOPBAND_HZ {
        let out = convert(16_000, 8_000, &tone(f64::from(f), 16_000, AMPLITUDE, 0.5));
        let window = analysis_window(&out, 16_000, 8_000);
        let (alias, _) = measure(window, f64::from(16_000 - f) % 8_000.0, 8_000);
        let at_alias = db(reference_amp / alias.max(1e-9));
        // Everything that came out, not just the alias bin.
        let overall = db(reference_amp / 2.0_f64.sqrt() / rms(window).max(1e-9));
        if rms(window) == 0.0 {
            eprintln!("16k->8k: {f} Hz -> output silent (below half an LSB)");
        } else {
            eprintln!("16k->8k: {f} Hz -> alias {at_alias:.1} dB down, total {overall:.1} dB down");
        }
        assert!(
            at_alias >= MIN_REJECTION_DB,
            "{f} Hz: alias only {at_alias:.1} dB down"
        );
        assert!(
            overall >= MIN_REJECTION_DB,
            "{f} Hz: output only {overall:.1} dB down"
        );
        worst = worst.min(at_alias.min(overall));
    }
    eprintln!("16k->8k worst alias rejection {worst:.1} dB");
}

#[test]
fn passband_300_to_3400_hz_is_flat_within_half_a_db_both_ways() {
    for (from_hz, to_hz) in telephony_pairs() {
        let mut gains = Vec::new();
        for f in PASSBAND_HZ {
            let out = convert(from_hz, to_hz, &tone(f64::from(f), from_hz, AMPLITUDE, 0.5));
            let window = analysis_window(&out, from_hz, to_hz);
            let gain = db(measure(window, f64::from(f), to_hz).0 / AMPLITUDE);
            assert!(
                gain.abs() <= MAX_PASSBAND_DEVIATION_DB,
                "{from_hz}->{to_hz}: {f} Hz gain {gain:.3} dB"
            );
            gains.push(gain);
        }
        let spread = gains.iter().copied().fold(f64::MIN, f64::max)
            - gains.iter().copied().fold(f64::MAX, f64::min);
        eprintln!("{from_hz}->{to_hz}: passband gains {gains:.3?} dB, spread {spread:.3} dB");
        assert!(
            spread <= MAX_PASSBAND_DEVIATION_DB,
            "{from_hz}->{to_hz}: spread {spread}"
        );
    }
}

#[test]
fn upsampling_from_8k_leaves_only_the_tone_at_every_rate() {
    // Images of every passband tone, wherever they land, and all other output energy.
    for to_hz in SUPPORTED_RATES_HZ.into_iter().filter(|&r| r > 8_000) {
        let mut worst = f64::INFINITY;
        for f in PASSBAND_HZ {
            let out = convert(8_000, to_hz, &tone(f64::from(f), 8_000, AMPLITUDE, 0.5));
            let window = analysis_window(&out, 8_000, to_hz);
            let rejection = -residual_db(window, f64::from(f), to_hz);
            assert!(
                rejection >= MIN_REJECTION_DB,
                "8k->{to_hz}, {f} Hz: {rejection:.1} dB"
            );
            worst = worst.min(rejection);
        }
        eprintln!("8k->{to_hz}: worst image/noise rejection {worst:.1} dB");
    }
}

#[test]
fn downsampling_to_8k_rejects_everything_above_4600_hz_at_every_rate() {
    for from_hz in SUPPORTED_RATES_HZ.into_iter().filter(|&r| r > 8_000) {
        let reference = convert(from_hz, 8_000, &tone(1_000.0, from_hz, AMPLITUDE, 0.5));
        let window = analysis_window(&reference, from_hz, 8_000);
        let reference_rms = measure(window, 1_000.0, 8_000).0 / 2.0_f64.sqrt();
        let nyquist = from_hz / 2;
        let mut probes: Vec<u32> = STOPBAND_HZ.to_vec();
        probes.extend([nyquist / 2, nyquist * 3 / 4, nyquist - 100]);
        let mut worst = f64::INFINITY;
        for f in probes
            .into_iter()
            .filter(|&f| (4_600..nyquist).contains(&f))
        {
            let out = convert(from_hz, 8_000, &tone(f64::from(f), from_hz, AMPLITUDE, 0.5));
            let window = analysis_window(&out, from_hz, 8_000);
            let rejection = db(reference_rms / rms(window).max(1e-9));
            assert!(
                rejection >= MIN_REJECTION_DB,
                "{from_hz}->8k, {f} Hz: {rejection:.1} dB"
            );
            worst = worst.min(rejection);
        }
        eprintln!("{from_hz}->8k: worst alias rejection {worst:.1} dB");
    }
}

#[test]
fn other_pairs_meet_the_same_spec_scaled_to_the_lower_rate() {
    for (from_hz, to_hz) in all_pairs().filter(|&(a, b)| a != b && a != 8_000 && b != 8_000) {
        let low = from_hz.min(to_hz);
        // 10 Hz grid: whole cycles in the 0.2 s window.
        let pass = |fraction: f64| (fraction * f64::from(low) / 10.0).floor() * 10.0;
        let stop = |fraction: f64| (fraction * f64::from(low) / 10.0).ceil() * 10.0;
        for f in [pass(0.0375), pass(0.25), pass(0.425)] {
            let out = convert(from_hz, to_hz, &tone(f, from_hz, AMPLITUDE, 0.3));
            let window = analysis_window(&out, from_hz, to_hz);
            let gain = db(measure(window, f, to_hz).0 / AMPLITUDE);
            assert!(
                gain.abs() <= MAX_PASSBAND_DEVIATION_DB,
                "{from_hz}->{to_hz} {f}: {gain}"
            );
            let rejection = -residual_db(window, f, to_hz);
            assert!(
                rejection >= MIN_REJECTION_DB,
                "{from_hz}->{to_hz} {f}: {rejection:.1}"
            );
        }
        if from_hz > to_hz {
            let nyquist = f64::from(from_hz / 2);
            for f in [stop(0.575), stop(0.8)]
                .into_iter()
                .filter(|&f| f < nyquist - 10.0)
            {
                let out = convert(from_hz, to_hz, &tone(f, from_hz, AMPLITUDE, 0.3));
                let window = analysis_window(&out, from_hz, to_hz);
                let rejection = db(AMPLITUDE / 2.0_f64.sqrt() / rms(window).max(1e-9));
                assert!(
                    rejection >= MIN_REJECTION_DB,
                    "{from_hz}->{to_hz} {f}: {rejection:.1}"
                );
            }
        }
    }
}

#[test]
fn latency_from_the_design_is_within_2_ms() {
    for (from_hz, to_hz) in all_pairs() {
        let r = resampler(from_hz, to_hz);
        let latency = r.latency();
        assert!(latency <= MAX_DELAY, "{from_hz}->{to_hz}: {latency:?}");
        if from_hz == to_hz {
            assert_eq!(latency, Duration::ZERO);
        }
        let from_len = r.filter_len() as f64 / (f64::from(from_hz) * r.filter.up as f64);
        assert!((latency.as_secs_f64() - from_len / 2.0).abs() < 1.0 / f64::from(to_hz));
    }
    let r = resampler(8_000, 16_000);
    assert_eq!(r.delay_samples(), 29.0);
    assert_eq!(
        r.latency(),
        Duration::from_micros(1_812) + Duration::from_nanos(500)
    );
}

#[test]
fn measured_pulse_delay_matches_latency_and_is_within_2_ms() {
    // A Gaussian pulse (sigma 0.5 ms, nothing above 3 kHz) centred at 10 ms; the centroid
    // of the output pulse gives the group delay of a linear-phase filter.
    let sigma_s = 0.000_5;
    let centre_s = 0.010;
    for (from_hz, to_hz) in all_pairs() {
        let input: Vec<i16> = (0..from_hz as usize / 25)
            .map(|n| {
                let t = n as f64 / f64::from(from_hz) - centre_s;
                (30_000.0 * (-0.5 * (t / sigma_s).powi(2)).exp()).round() as i16
            })
            .collect();
        let out = convert(from_hz, to_hz, &input);
        let (weighted, total) = out.iter().enumerate().fold((0.0, 0.0), |(w, s), (n, &y)| {
            let t = n as f64 / f64::from(to_hz);
            (w + t * f64::from(y), s + f64::from(y))
        });
        let delay_s = weighted / total - centre_s;
        let r = resampler(from_hz, to_hz);
        let expected_s = r.latency().as_secs_f64();
        if (from_hz, to_hz) == (8_000, 16_000) || (from_hz, to_hz) == (16_000, 8_000) {
            eprintln!("{from_hz}->{to_hz}: measured delay {:.4} ms", delay_s * 1e3);
        }
        assert!(
            delay_s <= MAX_DELAY.as_secs_f64(),
            "{from_hz}->{to_hz}: {delay_s}"
        );
        assert!(
            (delay_s - expected_s).abs() < 10e-6,
            "{from_hz}->{to_hz}: measured {delay_s} s, design {expected_s} s"
        );
    }
}

#[test]
fn impulse_response_8k_to_16k_is_symmetric_around_the_delay() {
    let mut input = vec![0_i16; 80];
    input[0] = 16_384;
    let out = convert(8_000, 16_000, &input);
    let r = resampler(8_000, 16_000);
    let centre = r.delay_samples() as usize;
    let peak = (0..out.len()).max_by_key(|&i| out[i]).expect("non-empty");
    assert_eq!(peak, centre);
    assert_eq!(out[centre], 16_384);
    // Linear phase: symmetric up to the one-LSB sum correction of the quantized taps.
    for k in 1..=centre {
        let (before, after) = (i32::from(out[centre - k]), i32::from(out[centre + k]));
        assert!(
            (before - after).abs() <= 1,
            "tap offset {k}: {before} vs {after}"
        );
    }
    assert!(out[2 * centre + 1..].iter().all(|&y| y == 0));
}

#[test]
fn chunked_processing_is_bit_identical_to_whole_for_every_pair() {
    let input = noise(4_000, 7);
    let pattern = [160, 37, 1, 0, 311, 2, 999, 3, 160, 64];
    for (from_hz, to_hz) in all_pairs() {
        let mut whole = Vec::new();
        resampler(from_hz, to_hz).process(&input, &mut whole);

        let mut r = resampler(from_hz, to_hz);
        let mut chunked = Vec::new();
        let mut rest = input.as_slice();
        for &len in pattern.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(len.min(rest.len()));
            r.process(chunk, &mut chunked);
            rest = tail;
        }
        assert_eq!(whole.len(), chunked.len(), "{from_hz}->{to_hz}");
        assert!(whole == chunked, "{from_hz}->{to_hz}: outputs differ");

        let mut one_by_one = Vec::new();
        let mut r = resampler(from_hz, to_hz);
        for s in &input {
            r.process(std::slice::from_ref(s), &mut one_by_one);
        }
        assert!(
            whole == one_by_one,
            "{from_hz}->{to_hz}: sample-wise output differs"
        );
    }
}

/// Direct-form reference: zero-stuff by L, convolve with the prototype rebuilt from the
/// phase tables in i64 (no overflow possible), keep every M-th sample, round, clamp.
fn reference_convert(r: &Resampler, input: &[i16]) -> Vec<i16> {
    let (up, down, taps) = (r.filter.up, r.filter.down, r.filter.taps);
    let mut prototype = vec![0_i64; up * taps];
    for p in 0..up {
        for k in 0..taps {
            prototype[p + k * up] = i64::from(r.filter.coeffs[p * taps + taps - 1 - k]);
        }
    }
    let virtual_len = input.len() * up;
    let round = (1_i64 << r.filter.shift) >> 1;
    (0..virtual_len.div_ceil(down))
        .map(|n| {
            let t = n * down;
            // Only taps j ≡ t (mod L) meet a non-stuffed (input) sample.
            let acc: i64 = (t % up..prototype.len().min(t + 1))
                .step_by(up)
                .map(|j| prototype[j] * i64::from(input[(t - j) / up]))
                .sum();
            ((acc + round) >> r.filter.shift).clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
        })
        .collect()
}

#[test]
fn polyphase_matches_a_direct_form_reference_including_saturation() {
    // Full-scale noise overshoots the i16 range after filtering, so both rails are hit.
    let input = noise(600, 99);
    for (from_hz, to_hz) in all_pairs() {
        let r = resampler(from_hz, to_hz);
        let want = reference_convert(&r, &input);
        let got = convert(from_hz, to_hz, &input);
        assert!(got == want, "{from_hz}->{to_hz}: differs from reference");
        if (from_hz, to_hz) == (8_000, 16_000) {
            assert!(
                got.contains(&i16::MAX) && got.contains(&i16::MIN),
                "no saturation hit"
            );
        }
    }
}

#[test]
fn full_scale_square_wave_saturates_instead_of_wrapping() {
    let half_period = 80;
    let input: Vec<i16> = (0..1_600)
        .map(|n| {
            if (n / half_period) % 2 == 0 {
                i16::MAX
            } else {
                i16::MIN
            }
        })
        .collect();
    let out = convert(8_000, 16_000, &input);
    let taps = resampler(8_000, 16_000).filter.taps;
    // Output n reads inputs n/2 - K + 1 ..= n/2; inside one plateau it equals the input.
    let mut checked = 0;
    for (n, &y) in out.iter().enumerate() {
        let newest = n / 2;
        if newest + 1 >= taps && (newest + 1 - taps) / half_period == newest / half_period {
            assert_eq!(y, input[newest], "output {n}");
            checked += 1;
        }
    }
    assert!(checked > 1_000, "only {checked} plateau samples");
    // Gibbs overshoot past the rails must clamp: a wrapped sample would jump by ~65535.
    let max_step = out
        .windows(2)
        .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
        .max()
        .unwrap_or(0);
    assert!(max_step < 60_000, "step {max_step}: wrapped");
    assert!(out.contains(&i16::MAX) && out.contains(&i16::MIN));
}

#[test]
fn constant_input_passes_exactly_after_warm_up() {
    for (from_hz, to_hz) in all_pairs() {
        for level in [1_234_i16, -32_768, 32_767] {
            let out = convert(from_hz, to_hz, &vec![level; from_hz as usize / 10]);
            let skip = warm_up(from_hz, to_hz);
            assert!(
                out[skip..].iter().all(|&y| y == level),
                "{from_hz}->{to_hz} level {level}"
            );
        }
    }
}

#[test]
fn output_len_hint_is_exact_per_call() {
    for (from_hz, to_hz) in all_pairs() {
        let mut r = resampler(from_hz, to_hz);
        let mut out = Vec::new();
        let mut total_in = 0_usize;
        for len in [160, 37, 1, 0, 311, 2, 441, 80, 147, 1] {
            let hint = r.output_len_hint(len);
            let before = out.len();
            r.process(&vec![100; len], &mut out);
            assert_eq!(out.len() - before, hint, "{from_hz}->{to_hz}, len {len}");
            total_in += len;
        }
        let expected_total = (total_in * to_hz as usize).div_ceil(from_hz as usize);
        assert_eq!(out.len(), expected_total, "{from_hz}->{to_hz}");
    }
    // 20 ms frames: 160 samples at 8 kHz become exactly 20 ms at the other rate, on average.
    let mut r = resampler(8_000, 22_050);
    let mut out = Vec::new();
    for _ in 0..50 {
        r.process(&[0; 160], &mut out);
    }
    assert_eq!(out.len(), 22_050);
}

#[test]
fn reset_restores_the_initial_state() {
    let input = noise(1_000, 3);
    for (from_hz, to_hz) in [
        (8_000, 16_000),
        (16_000, 8_000),
        (8_000, 44_100),
        (22_050, 8_000),
    ] {
        let mut r = resampler(from_hz, to_hz);
        let mut first = Vec::new();
        r.process(&input, &mut first);
        r.process(&input[..333], &mut Vec::new());
        r.reset();
        let mut second = Vec::new();
        r.process(&input, &mut second);
        assert!(first == second, "{from_hz}->{to_hz}");
    }
}

#[test]
fn reused_output_vec_does_not_reallocate_after_warm_up() {
    let frame = tone(1_000.0, 8_000, AMPLITUDE, 0.02);
    for to_hz in SUPPORTED_RATES_HZ {
        let mut r = resampler(8_000, to_hz);
        let mut out = Vec::new();
        r.process(&frame, &mut out);
        out.clear();
        r.process(&frame, &mut out);
        let (ptr, capacity) = (out.as_ptr(), out.capacity());
        for _ in 0..500 {
            out.clear();
            r.process(&frame, &mut out);
            assert_eq!(
                (out.as_ptr(), out.capacity()),
                (ptr, capacity),
                "8k->{to_hz}"
            );
        }
    }
}

#[test]
fn identity_is_a_bit_exact_copy() {
    for rate in SUPPORTED_RATES_HZ {
        let input = noise(500, u64::from(rate));
        let mut r = resampler(rate, rate);
        let mut out = vec![42];
        r.process(&input[..123], &mut out);
        r.process(&input[123..], &mut out);
        assert_eq!(out[0], 42, "appends");
        assert_eq!(&out[1..], input.as_slice());
        assert_eq!(r.delay_samples(), 0.0);
        assert_eq!(r.output_len_hint(77), 77);
    }
}

#[test]
fn empty_input_produces_nothing_and_keeps_state() {
    let mut r = resampler(8_000, 16_000);
    let mut out = Vec::new();
    r.process(&[], &mut out);
    assert!(out.is_empty());
    assert_eq!(r.output_len_hint(0), 0);
    assert_eq!(r.output_len_hint(160), 320);
}

#[test]
fn unsupported_rates_are_rejected() {
    for (from_hz, to_hz, bad) in [
        (0, 8_000, 0),
        (8_000, 11_025, 11_025),
        (96_000, 8_000, 96_000),
    ] {
        let err = Resampler::new(from_hz, to_hz).expect_err("unsupported");
        assert_eq!(err, ResampleError::UnsupportedRate { rate_hz: bad });
        let message = err.to_string();
        assert_eq!(message, format!("unsupported sample rate {bad} Hz"));
    }
}

#[test]
fn accessors_report_the_configuration() {
    let r = resampler(8_000, 22_050);
    assert_eq!((r.from_hz(), r.to_hz()), (8_000, 22_050));
    assert_eq!((r.filter.up, r.filter.down), (441, 160));
    assert!(r.filter.taps <= 32);
    let debug = format!("{r:?}");
    assert!(debug.contains("22050") && debug.len() < 200, "{debug}");
}
