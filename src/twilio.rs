//! Twilio: request signatures ([`signature`], [`stream_signature`]) and the REST API
//! ([`rest`]) here; the Media Streams messages, SIDs, numbers and TwiML are the relay
//! crate's ([`media_relay::twilio`]), re-exported.

pub mod rest;
pub mod signature;
pub mod stream_signature;

pub use media_relay::twilio::{
    message, number, twiml, AccountSid, CallSid, Inbound, Media, Outbound, ProtocolError, Start,
    StreamSid,
};
