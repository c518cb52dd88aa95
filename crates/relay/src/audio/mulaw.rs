//! G.711 μ-law (PCMU) codec for Twilio Media Streams: one code byte per 16-bit linear sample.
//! Owns only the sample mapping; base64 framing and resampling live elsewhere.
//!
//! The codes are the on-the-wire bytes (already bit-inverted per G.711). Decoding is a
//! 256-entry `const` table built at compile time, encoding a 16 Ki-entry one (indexed by the
//! 14-bit sample). Encoding follows CPython's `audioop.lin2ulaw`
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

/// Encode table: index is the 14-bit sample (`sample >> 2`) offset by 8192, value the code
/// byte. 16 KiB, built at compile time from [`encode_formula`]; one load per sample instead of
/// the segment search (the encoder's output depends only on the 14-bit value).
const ENCODE_TABLE: [u8; 16_384] = build_encode_table();

/// Builds [`ENCODE_TABLE`].
const fn build_encode_table() -> [u8; 16_384] {
    let mut table = [0u8; 16_384];
    let mut i = 0usize;
    while i < 16_384 {
        // The 16-bit sample whose 14-bit value is `i - 8192`.
        table[i] = encode_formula(((i as i32 - 8192) << 2) as i16);
        i += 1;
    }
    table
}

/// Encodes one linear 16-bit sample to a μ-law code byte, exactly as `audioop.lin2ulaw`.
///
/// Never returns `0x7F`; saturates at `0x80` (positive) and `0x00` (negative).
#[inline]
#[must_use]
pub fn encode(sample: i16) -> u8 {
    // `sample >> 2` is in -8192..=8191, so the index is in 0..16384.
    ENCODE_TABLE[((i32::from(sample) >> 2) + 8192) as usize]
}

/// The G.711 encoding formula behind [`ENCODE_TABLE`] (the `audioop.lin2ulaw` algorithm).
const fn encode_formula(sample: i16) -> u8 {
    // 16-bit to 14-bit with an arithmetic (flooring) shift, as audioop does.
    let pcm = (sample as i32) >> 2;
    let (magnitude, mask) = if pcm < 0 { (-pcm, 0x7F) } else { (pcm, 0xFF) };
    let clipped = if magnitude < CLIP_14 {
        magnitude
    } else {
        CLIP_14
    };
    let biased = clipped + (BIAS >> 2);
    // biased is in 33..=8192; the segment is the position of its highest set bit above bit 5,
    // i.e. the first `seg` with `biased <= (0x40 << seg) - 1`.
    let top = 31 - biased.leading_zeros() as i32 - 5;
    let segment = if top > 0 { top } else { 0 };
    // biased == 8192 (a clipped magnitude) lands in "segment 8": audioop returns the top
    // code 0x7F there, which the clamp yields because that computed code is 0x80.
    let raw = (segment << 4) | ((biased >> (segment + 1)) & 0x0F);
    let code = if raw < 0x7F { raw } else { 0x7F };
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
