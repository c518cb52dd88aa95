//! The audio relay between Twilio and the agent: [`playout`] paces agent audio into the call
//! and handles barge-in; [`transcode`] converts formats per direction.

pub mod playout;
pub mod transcode;
