//! Twilio's wire formats: Media Streams messages in both directions ([`message`]), SID
//! newtypes, phone numbers ([`number`]) and TwiML ([`twiml`]).

pub mod message;
pub mod number;
pub mod twiml;

use std::fmt;

pub use message::{Inbound, Media, Outbound, ProtocolError, Start};

macro_rules! sid {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a SID. SIDs are opaque: the format is not validated.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The SID as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

sid!(
    /// A Media Stream's SID (`MZ…`), echoed in every message the server sends.
    StreamSid
);
sid!(
    /// A call's SID (`CA…`).
    CallSid
);
sid!(
    /// An account's SID (`AC…`).
    AccountSid
);
