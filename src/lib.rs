//! Media Orchestrator: terminates Twilio Media Streams and relays each call's audio to a
//! conversational agent, with the guards a phone-call service needs (auth, idle, size,
//! backpressure, keepalive, drain) and logs that never carry call content.
//!
//! # Layout
//! - [`config`]: typed configuration from the environment ([`config::Config::from_env`]).
//! - [`secret`]: [`secret::Secret`], a value whose `Debug`/`Display` are redacted.
//! - [`secrets`]: secret variables as values or `ssm:` references; one SSM client, TTL cache.
//! - [`auth`]: stream tokens: HS256 JWT verification and minting, static tokens.
//! - [`context`]: an outbound call's agent overrides, dynamic variables and voicemail choice,
//!   sealed (XChaCha20-Poly1305) for the trip through Twilio's URLs and the stream token.
//! - [`twilio`]: request signatures and the REST client; the Media Streams messages and TwiML
//!   are re-exported from the `media-relay` crate.
//! - [`audio`]: G.711 μ-law codec and resampling (re-exported from `media-relay`).
//! - [`agent`]: the agent boundary (one session per call) and the built-in echo agent.
//! - [`elevenlabs`]: the ElevenLabs conversational agent client.
//! - [`aws`]: the AWS SDK configuration the registry and the bus share.
//! - [`bus`]: call events on EventBridge, batched off the call path.
//! - [`record`]: one call record per call (a JSON log line, the `Call Ended` event).
//! - [`registry`]: the fleet-wide call registry on DynamoDB (single-use tokens, one stream
//!   per CallSid across every task).
//! - [`relay`]: the call as a sans-IO state machine: protocol, playout pacing and barge-in,
//!   transcoding, endings, counters (the `media-relay` crate, crates/relay: no tokio).
//! - [`ws`]: a WebSocket with a write budget ([`ws::Conn`]) over any [`ws::Socket`].
//! - [`retry`]: the backoff of every retry loop.
//! - [`call`]: one task per call: both sockets, one `select!`, the call's ports ([`call::Host`],
//!   [`call::AgentConnector`]).
//!
//! Imports run one way (checked by `scripts/check-imports.py`): codecs (`audio`, `twilio`'s
//! messages, `elevenlabs`'s messages) → `relay` → `call` → {`agent`, `server`, `lambda`} →
//! the binaries.
//! - [`ecs`]: ECS task scale-in protection and CloudWatch EMF metrics.
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`.
//! - [`server`]: the HTTP + WebSocket server: routing, handshake, per-call tasks, drain.
//! - [`lambda`]: the `media-lambda` function: `/health`, `/token`, the Twilio voice webhook,
//!   outbound calls (`/calls`, their answer webhook and AMD callback).
//! - [`telemetry`]: one `tracing` setup for every binary.
//! - [`shutdown`]: SIGTERM / SIGINT as a future.

pub mod agent;
pub mod auth;
pub mod aws;
pub mod bus;
pub mod call;
pub mod config;
pub mod context;
pub mod ecs;
pub mod elevenlabs;
pub mod lambda;
pub mod metrics;
pub mod record;
pub mod registry;
pub mod retry;
pub mod secret;
pub mod secrets;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod twilio;
pub mod ws;

pub use media_relay::{audio, relay};
