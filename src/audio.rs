//! Audio DSP for telephony: the G.711 μ-law codec ([`mulaw`]) and band-limited streaming
//! resampling ([`resample`]). Pure and synchronous: no tokio, no I/O.

pub mod mulaw;
pub mod resample;
