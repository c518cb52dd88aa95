//! Per-direction audio conversion between Twilio (μ-law 8 kHz) and the agent's formats, with
//! buffers reused across frames: after warm-up a frame costs no allocation. Buffers start
//! empty and grow to the sizes the call's frames need (μ-law passthrough never touches them),
//! which keeps an idle or passthrough call small. Resampler state carries across frames, so
//! frame edges are seamless.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::audio::mulaw;
use crate::audio::resample::{ResampleError, Resampler};
use crate::audio::AudioFormat;

/// Why agent audio could not be converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The agent's audio was not valid base64.
    #[error("agent audio not base64")]
    NotBase64,
    /// The rate pair is not supported.
    #[error("unsupported sample rate")]
    Rate(#[from] ResampleError),
}

/// Caller audio (μ-law 8 kHz) → the agent's input format.
#[derive(Debug)]
pub struct ToAgent {
    format: AudioFormat,
    resampler: Option<Resampler>,
    pcm: Vec<i16>,
    resampled: Vec<i16>,
    bytes: Vec<u8>,
}

impl ToAgent {
    /// A converter for the agent input `format`.
    ///
    /// # Errors
    /// [`TranscodeError::Rate`] for a rate the resampler does not support.
    pub fn new(format: AudioFormat) -> Result<Self, TranscodeError> {
        let resampler = match format {
            AudioFormat::Pcm(rate) if rate != 8000 => Some(Resampler::new(8000, rate)?),
            _ => None,
        };
        Ok(Self {
            format,
            resampler,
            pcm: Vec::new(),
            resampled: Vec::new(),
            bytes: Vec::new(),
        })
    }

    /// The agent's raw bytes for one caller frame (μ-law itself, or S16LE at the agent rate).
    pub fn raw<'a>(&'a mut self, ulaw: &'a [u8]) -> &'a [u8] {
        if self.format == AudioFormat::Ulaw8000 {
            return ulaw;
        }
        self.pcm.clear();
        mulaw::decode_into(ulaw, &mut self.pcm);
        let samples = resample(&mut self.resampler, &self.pcm, &mut self.resampled);
        self.bytes.clear();
        for s in samples {
            self.bytes.extend_from_slice(&s.to_le_bytes());
        }
        &self.bytes
    }

    /// Appends the base64 of [`ToAgent::raw`] to `out` (cleared first).
    pub fn base64(&mut self, ulaw: &[u8], out: &mut String) {
        out.clear();
        let raw = self.raw(ulaw);
        STANDARD.encode_string(raw, out);
    }
}

/// Agent audio (base64 in its output format) → μ-law 8 kHz for Twilio.
#[derive(Debug)]
pub struct FromAgent {
    format: AudioFormat,
    resampler: Option<Resampler>,
    decoded: Vec<u8>,
    /// An odd byte left over from the previous chunk (S16LE samples split across chunks).
    carry: Option<u8>,
    pcm: Vec<i16>,
    resampled: Vec<i16>,
}

impl FromAgent {
    /// A converter for the agent output `format`.
    ///
    /// # Errors
    /// [`TranscodeError::Rate`] for a rate the resampler does not support.
    pub fn new(format: AudioFormat) -> Result<Self, TranscodeError> {
        let resampler = match format {
            AudioFormat::Pcm(rate) if rate != 8000 => Some(Resampler::new(rate, 8000)?),
            _ => None,
        };
        Ok(Self {
            format,
            resampler,
            decoded: Vec::new(),
            carry: None,
            pcm: Vec::new(),
            resampled: Vec::new(),
        })
    }

    /// Converts one agent chunk, appending μ-law bytes to `out` (cleared first).
    ///
    /// # Errors
    /// [`TranscodeError::NotBase64`] when the chunk does not decode.
    pub fn convert(&mut self, audio_b64: &str, out: &mut Vec<u8>) -> Result<(), TranscodeError> {
        out.clear();
        self.decoded.clear();
        STANDARD
            .decode_vec(audio_b64, &mut self.decoded)
            .map_err(|_| TranscodeError::NotBase64)?;
        if self.format == AudioFormat::Ulaw8000 {
            out.extend_from_slice(&self.decoded);
            return Ok(());
        }
        self.pcm.clear();
        let mut bytes = self.decoded.as_slice();
        if let Some(lo) = self.carry.take() {
            if let Some((&hi, rest)) = bytes.split_first() {
                self.pcm.push(i16::from_le_bytes([lo, hi]));
                bytes = rest;
            } else {
                self.carry = Some(lo);
            }
        }
        let mut pairs = bytes.chunks_exact(2);
        for pair in &mut pairs {
            self.pcm.push(i16::from_le_bytes([pair[0], pair[1]]));
        }
        if let [odd] = pairs.remainder() {
            self.carry = Some(*odd);
        }
        let samples = resample(&mut self.resampler, &self.pcm, &mut self.resampled);
        mulaw::encode_into(samples, out);
        Ok(())
    }
}

/// `pcm` through the resampler into `out`, or `pcm` itself when no rate change is needed.
fn resample<'a>(
    resampler: &mut Option<Resampler>,
    pcm: &'a [i16],
    out: &'a mut Vec<i16>,
) -> &'a [i16] {
    match resampler {
        Some(r) => {
            out.clear();
            r.process(pcm, out);
            out
        }
        None => pcm,
    }
}

#[cfg(test)]
mod tests;
