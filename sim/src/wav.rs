//! WAV files ↔ 8 kHz μ-law, the format Twilio carries. Reading mixes any channel count down
//! to mono and resamples any [`SUPPORTED_RATES_HZ`] rate with the core's resampler; writing
//! produces 16-bit PCM mono 8 kHz (what a person can open in any player).

use std::path::Path;

use media_orchestrator::audio::mulaw;
use media_orchestrator::audio::resample::{Resampler, SUPPORTED_RATES_HZ};

use super::SimError;

/// Twilio's sample rate.
pub const TWILIO_RATE_HZ: u32 = 8_000;

/// Reads a WAV file and converts it to 8 kHz mono μ-law bytes.
///
/// # Errors
///
/// [`SimError::ReadFile`] if the file cannot be opened, [`SimError::NotWav`] if it is not a
/// decodable WAV, [`SimError::UnsupportedRate`] for a rate the resampler does not handle.
pub fn read_ulaw(path: &Path) -> Result<Vec<u8>, SimError> {
    let file = std::fs::File::open(path).map_err(|source| SimError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let not_wav = |e: hound::Error| SimError::NotWav {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut reader = hound::WavReader::new(std::io::BufReader::new(file)).map_err(not_wav)?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(SimError::NotWav {
            path: path.to_path_buf(),
            reason: "zero channels".into(),
        });
    }
    let interleaved: Vec<i16> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.map(|x| (x.clamp(-1.0, 1.0) * 32767.0) as i16))
            .collect::<Result<_, _>>()
            .map_err(not_wav)?,
        hound::SampleFormat::Int => {
            let bits = u32::from(spec.bits_per_sample);
            reader
                .samples::<i32>()
                .map(|s| s.map(|x| scale_to_i16(x, bits)))
                .collect::<Result<_, _>>()
                .map_err(not_wav)?
        }
    };
    pcm_to_ulaw(&interleaved, spec.channels, spec.sample_rate)
}

/// Scales an integer sample of `bits` bits to 16 bits.
fn scale_to_i16(x: i32, bits: u32) -> i16 {
    if bits >= 16 {
        (x >> (bits - 16)) as i16
    } else {
        (x << (16 - bits)) as i16
    }
}

/// Converts interleaved 16-bit PCM (`channels`, `rate_hz`) to 8 kHz mono μ-law.
///
/// The resampler's filter delay is flushed with trailing zeros, so the output holds the
/// whole signal (its length is the input duration at 8 kHz, rounded up).
///
/// # Errors
///
/// [`SimError::UnsupportedRate`] for a rate outside [`SUPPORTED_RATES_HZ`].
pub fn pcm_to_ulaw(interleaved: &[i16], channels: u16, rate_hz: u32) -> Result<Vec<u8>, SimError> {
    if !SUPPORTED_RATES_HZ.contains(&rate_hz) {
        return Err(SimError::UnsupportedRate { rate_hz });
    }
    let channels = usize::from(channels.max(1));
    let mono: Vec<i16> = interleaved
        .chunks_exact(channels)
        .map(|frame| {
            let sum: i32 = frame.iter().map(|&s| i32::from(s)).sum();
            (sum / channels as i32) as i16
        })
        .collect();
    let pcm = if rate_hz == TWILIO_RATE_HZ {
        mono
    } else {
        let mut resampler = Resampler::new(rate_hz, TWILIO_RATE_HZ)
            .map_err(|_| SimError::UnsupportedRate { rate_hz })?;
        let delay = resampler.delay_samples().round() as usize;
        let want = (mono.len() as u64 * u64::from(TWILIO_RATE_HZ)).div_ceil(u64::from(rate_hz));
        let mut out = Vec::with_capacity(want as usize + delay);
        resampler.process(&mono, &mut out);
        // Flush the filter so the tail of the signal comes out, then drop the leading delay.
        let flush = (delay + 1) * rate_hz as usize / TWILIO_RATE_HZ as usize + 1;
        resampler.process(&vec![0; flush], &mut out);
        out.into_iter().skip(delay).take(want as usize).collect()
    };
    let mut ulaw = Vec::with_capacity(pcm.len());
    mulaw::encode_into(&pcm, &mut ulaw);
    Ok(ulaw)
}

/// Writes 8 kHz μ-law bytes as a 16-bit PCM mono 8 kHz WAV file.
///
/// # Errors
///
/// [`SimError::WriteFile`] if the file cannot be created or written.
pub fn write_ulaw(path: &Path, ulaw: &[u8]) -> Result<(), SimError> {
    let fail = |e: hound::Error| SimError::WriteFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: TWILIO_RATE_HZ,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(fail)?;
    for &code in ulaw {
        writer.write_sample(mulaw::decode(code)).map_err(fail)?;
    }
    writer.finalize().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, secs: f64, channels: u16) -> Vec<i16> {
        let n = (f64::from(rate) * secs) as usize;
        (0..n)
            .flat_map(|i| {
                let t = i as f64 / f64::from(rate);
                let s = (0.4 * (2.0 * std::f64::consts::PI * 440.0 * t).sin() * 32767.0) as i16;
                std::iter::repeat_n(s, usize::from(channels))
            })
            .collect()
    }

    #[test]
    fn any_supported_rate_becomes_the_same_duration_at_8k() {
        for rate in SUPPORTED_RATES_HZ {
            let ulaw = pcm_to_ulaw(&tone(rate, 0.5, 2), 2, rate).unwrap();
            assert_eq!(ulaw.len(), 4000, "{rate} Hz");
        }
    }

    #[test]
    fn resampled_tone_keeps_its_phase_and_level() {
        let direct = pcm_to_ulaw(&tone(8000, 0.5, 1), 1, 8000).unwrap();
        let resampled = pcm_to_ulaw(&tone(48000, 0.5, 1), 1, 48000).unwrap();
        let (a, b): (Vec<f64>, Vec<f64>) = direct[100..3900]
            .iter()
            .zip(&resampled[100..3900])
            .map(|(&x, &y)| (f64::from(mulaw::decode(x)), f64::from(mulaw::decode(y))))
            .unzip();
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let norm =
            (a.iter().map(|x| x * x).sum::<f64>() * b.iter().map(|y| y * y).sum::<f64>()).sqrt();
        // The filter delay is removed in whole samples: up to half a sample of phase remains.
        assert!(dot / norm > 0.98, "correlation {}", dot / norm);
    }

    #[test]
    fn unsupported_rate_is_an_error() {
        assert!(matches!(
            pcm_to_ulaw(&[0; 100], 1, 11025),
            Err(SimError::UnsupportedRate { rate_hz: 11025 })
        ));
    }
}
