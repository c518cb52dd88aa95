//! The ElevenLabs conversational agent's WebSocket messages ([`message`]).

pub mod message;
