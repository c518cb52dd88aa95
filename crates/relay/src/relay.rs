//! The per-call relay between Twilio and the agent, as pure state machines with no I/O: [`Relay`]
//! ties [`session`] (Twilio's protocol), [`playout`], [`transcode`] and [`echo`] into one call.
//! The call loop (`crate::call`) owns the sockets; nothing here imports it, the agent or the
//! metrics (the import graph is a DAG: codecs → relay → call).

pub mod counters;
pub mod echo;
mod events;
mod machine;
mod outcome;
pub mod playout;
pub mod record;
pub mod session;
pub mod transcode;

pub use counters::{CallCounters, Drop, LatencyTally};
pub use events::{
    twilio_gone, AgentMode, CallStart, ControlPolicy, EndReason, Ending, Input, Output,
    RelayConfig, StreamConfig, Then, TwilioEnd, TwilioKind, ENDINGS,
};
pub use machine::{Relay, PRE_METADATA_FRAMES};
pub use outcome::Outcome;
pub use record::{CallFacts, Direction};
