//! `media-sim`'s library side: simulated Twilio calls against a `media-ws` deployment, a load
//! generator with latency and server-cost measurement, and an echo ElevenLabs endpoint so a
//! whole load test runs on one machine. Owns no server code; the binary only parses flags.
//!
//! # Layout
//! - [`wav`]: WAV files ↔ 8 kHz μ-law (any common rate and channel count, via the core codec
//!   and resampler).
//! - [`caller`]: one simulated Twilio call: Twilio's exact message shapes, real-time pacing,
//!   marks echoed as Twilio does, a timeline of what came back.
//! - [`load`]: N concurrent calls with a ramp; per-call and aggregate statistics.
//! - [`agent_echo`]: the `--agent-listen` echo ElevenLabs endpoint.
//! - [`procstat`]: CPU time and RSS of a local process from `/proc`.
//! - [`stats`] computes latency percentiles.
//! - [`twilio_rest`]: a strict loopback Twilio REST API: call updates (hang-up, transfer) and
//!   creates (outbound calls).
//! - [`outbound`]: Twilio's side of a created call: answer webhook, stream, AMD and status
//!   callbacks, the stream ended by a REST update.

pub mod agent_echo;
pub mod caller;
pub mod load;
pub mod outbound;
pub mod procstat;
pub mod stats;
pub use media_test_support::twilio_rest;
pub mod wav;

use std::path::PathBuf;

/// Why a simulation could not run (one line each; never carries audio).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The input file could not be opened or read.
    #[error("cannot read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O cause.
        #[source]
        source: std::io::Error,
    },
    /// The input file is not a WAV file hound can decode.
    #[error("{path} is not a usable WAV file: {reason}")]
    NotWav {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The WAV sample rate is not one the resampler supports.
    #[error("unsupported WAV sample rate {rate_hz} Hz (supported: 8000, 16000, 22050, 24000, 44100, 48000)")]
    UnsupportedRate {
        /// The rejected rate.
        rate_hz: u32,
    },
    /// The output WAV could not be written.
    #[error("cannot write {path}: {reason}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The URL is not a usable `ws://` or `wss://` URL.
    #[error("invalid url {url}: {reason}")]
    BadUrl {
        /// The URL as given (without any token).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A webhook (answer, AMD, status) could not be delivered, or its answer was unusable.
    #[error("webhook: {0}")]
    Webhook(String),
    /// The TCP/TLS/WebSocket connection failed.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL (without any token).
        url: String,
        /// The cause.
        reason: String,
    },
    /// The server answered the upgrade with an HTTP error status.
    #[error("{url} refused the websocket upgrade: HTTP {status}")]
    Refused {
        /// The URL (without any token).
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The echo agent endpoint could not bind its address.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `--param` is not `key=value`.
    #[error("invalid --param {0:?}: expected key=value")]
    BadParam(String),
}
