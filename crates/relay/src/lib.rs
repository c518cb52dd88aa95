//! The call, without I/O: Twilio's and the agent's wire formats, the audio codecs, and the
//! per-call [`relay::Relay`] that turns their messages and the time into what to send.
//!
//! This is quinn-proto's split. The crate has no tokio, no sockets and no clock: the driver
//! (`media_orchestrator::call`) reads both sockets and `Instant::now()`, hands each event to
//! [`relay::Relay::handle`] with the time, and carries out the [`relay::Output`]s it returns
//! (frames to write, the claim, the agent connect, endings, events for spans and metrics).
//! So every timing rule of a call is a plain function test here, on a made-up clock. The
//! relay logs event names and counts through `tracing` (never call content) and owns no span.
//!
//! Modules, in import order: [`audio`] and `json` (codecs) → [`twilio`], [`elevenlabs`],
//! [`context`] (wire formats and call data) → [`relay`].

pub mod audio;
pub mod context;
pub mod elevenlabs;
mod json;
pub mod relay;
pub mod twilio;
