//! G.711 μ-law (PCMU) codec for Twilio Media Streams: one code byte per 16-bit linear sample.
//! Owns only the sample mapping; base64 framing and resampling live elsewhere.
//!
//! The codes are the on-the-wire bytes (already bit-inverted per G.711). Decoding is a
//! 256-entry `const` table built at compile time. Encoding follows CPython's `audioop.lin2ulaw`
//! (the Sun Microsystems `g711.c` reference) bit for bit, the primary column of
//! `tests/fixtures/g711-ulaw.json`:
//!
//! - the 16-bit sample is first reduced to 14 bits with an arithmetic shift (`>> 2`, which
//!   floors, so negative inputs round their magnitude up);
//! - magnitudes are clipped at 8159 (14-bit), so every input `>= 31612` encodes to `0x80` and
//!   every input `<= -31609` to `0x00`;
//! - it never emits `0x7F` (negative zero): `-1..=-6` encode to `0x7E`, `0..=3` to `0xFF`.
//!
//! The ITU-T G.191 `ulaw_compress` formula differs by one code step for 508 negative inputs
//! (for example `-1..=-4` map to `0x7F` there); both decode to within one quantization step.

/// Bias added to the magnitude before the segment search (0x84 in 16-bit scale, 33 in 14-bit).
const BIAS: i32 = 0x84;

/// Largest 14-bit magnitude the encoder represents; larger inputs are clipped to it.
const CLIP_14: i32 = 8159;

/// Decode table: index is the μ-law code byte, value the linear sample.
const DECODE_TABLE: [i16; 256] = build_decode_table();

/// Builds [`DECODE_TABLE`] with the G.711 expansion formula.
const fn build_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0usize;
    while code < 256 {
        let u = !(code as u8);
        let mantissa = (u & 0x0F) as i32;
        let exponent = ((u & 0x70) >> 4) as i32;
        let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
        table[code] = if u & 0x80 != 0 {
            -magnitude as i16
        } else {
            magnitude as i16
        };
        code += 1;
    }
    table
}

/// Decodes one μ-law code byte to a linear 16-bit sample.
///
/// The result lies in `-32124..=32124`; `0x7F` and `0xFF` both decode to 0.
#[inline]
#[must_use]
pub fn decode(code: u8) -> i16 {
    DECODE_TABLE[usize::from(code)]
}

/// Encodes one linear 16-bit sample to a μ-law code byte, exactly as `audioop.lin2ulaw`.
///
/// Never returns `0x7F`; saturates at `0x80` (positive) and `0x00` (negative).
#[inline]
#[must_use]
pub fn encode(sample: i16) -> u8 {
    // 16-bit to 14-bit with an arithmetic (flooring) shift, as audioop does.
    let pcm = i32::from(sample) >> 2;
    let (magnitude, mask) = if pcm < 0 { (-pcm, 0x7F) } else { (pcm, 0xFF) };
    let biased = magnitude.min(CLIP_14) + (BIAS >> 2);
    // biased is in 33..=8192; the segment is the position of its highest set bit above bit 5,
    // i.e. the first `seg` with `biased <= (0x40 << seg) - 1`.
    let segment = (31 - biased.leading_zeros() as i32 - 5).max(0);
    // biased == 8192 (a clipped magnitude) lands in "segment 8": audioop returns the top
    // code 0x7F there, which `min` yields because that computed code is 0x80.
    let code = ((segment << 4) | ((biased >> (segment + 1)) & 0x0F)).min(0x7F);
    (code ^ mask) as u8
}

/// Decodes every code byte in `codes` and appends the samples to `out`.
pub fn decode_into(codes: &[u8], out: &mut Vec<i16>) {
    out.extend(codes.iter().map(|&c| decode(c)));
}

/// Encodes every sample in `samples` and appends the code bytes to `out`.
pub fn encode_into(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode(s)));
}

#[cfg(test)]
mod tests;
