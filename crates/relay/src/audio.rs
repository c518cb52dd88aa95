//! Audio DSP for telephony: the G.711 μ-law codec ([`mulaw`]), band-limited streaming
//! resampling ([`resample`]) and the formats they convert between ([`AudioFormat`]). Pure
//! and synchronous: no tokio, no I/O.

pub mod mulaw;
pub mod resample;

/// An audio format, by the names agents use (`ulaw_8000`, `pcm_16000`, …): what an agent
/// announces in its metadata and what the transcoders convert between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// G.711 μ-law, 8 kHz mono: Twilio's own format, passed through untouched.
    Ulaw8000,
    /// Signed 16-bit little-endian PCM, mono, at this rate.
    Pcm(u32),
}

impl AudioFormat {
    /// Parses the protocol's format names (`ulaw_8000`, `pcm_16000`, …).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ulaw_8000" => Some(Self::Ulaw8000),
            "pcm_8000" => Some(Self::Pcm(8000)),
            "pcm_16000" => Some(Self::Pcm(16000)),
            "pcm_22050" => Some(Self::Pcm(22050)),
            "pcm_24000" => Some(Self::Pcm(24000)),
            "pcm_44100" => Some(Self::Pcm(44100)),
            "pcm_48000" => Some(Self::Pcm(48000)),
            _ => None,
        }
    }

    /// The protocol's name for the format.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ulaw8000 => "ulaw_8000",
            Self::Pcm(8000) => "pcm_8000",
            Self::Pcm(16000) => "pcm_16000",
            Self::Pcm(22050) => "pcm_22050",
            Self::Pcm(24000) => "pcm_24000",
            Self::Pcm(44100) => "pcm_44100",
            Self::Pcm(_) => "pcm_48000",
        }
    }
}
