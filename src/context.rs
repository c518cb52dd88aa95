//! The per-call context of an outbound call (agent overrides, dynamic variables, the voicemail
//! choice), sealed so it travels through Twilio unread: the Lambda is stateless and Twilio's call
//! logs keep every request URL, where a prompt may name a patient. XChaCha20-Poly1305 under keys
//! HKDF derives from `MEDIA_SHARED_SECRET`; the associated data binds the audience (and, for
//! the stream, the CallSid), so a sealed value is useless anywhere else.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

pub use media_relay::context::{AgentOverrides, CallContext, Voicemail};

/// Prefix of a sealed value (the format version).
const PREFIX: &str = "v1.";
/// XChaCha20's nonce length.
const NONCE_LEN: usize = 24;
/// Largest sealed value (a request URL carries it, and the stream token carries it again:
/// with it the `<Stream url>` stays under Twilio's 4000-character URL limit).
pub const MAX_SEALED_CHARS: usize = 2400;
/// HKDF `info`: the key is for sealing call contexts and nothing else.
const KDF_INFO: &[u8] = b"media-orchestrator call-context v1";
/// HKDF salt (fixed; the shared secret is the only input keying material).
const KDF_SALT: &[u8] = b"media-orchestrator";

/// What a sealed value is for; part of the associated data and checked inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The answer webhook's URL (`/calls/answer?ctx=`): the agent context.
    Answer,
    /// The AMD callback's URL (`/calls/amd?ctx=`): the voicemail choice.
    Amd,
    /// The stream token's `ctx` claim, bound to the CallSid.
    Stream,
}

impl Audience {
    fn as_str(self) -> &'static str {
        match self {
            Self::Answer => "media.call.answer",
            Self::Amd => "media.call.amd",
            Self::Stream => "media.stream",
        }
    }
}

/// Why a sealed value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not `v1.` + base64url of a nonce and ciphertext, or too long.
    #[error("sealed context malformed")]
    Malformed,
    /// No key opens it: another secret, another audience or binding, or altered.
    #[error("sealed context invalid")]
    Invalid,
    /// Its expiry has passed.
    #[error("sealed context expired")]
    Expired,
    /// No secret to seal or open with.
    #[error("no secret for sealing")]
    NoKey,
    /// Encryption or serialization failed.
    #[error("sealing failed")]
    Seal,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    aud: String,
    exp: u64,
    body: T,
}

/// Seals and opens with keys derived from a secret list: the first seals, any opens
/// (rotation, as for stream tokens).
pub struct Sealer {
    ciphers: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.ciphers.len())
            .finish()
    }
}

impl Sealer {
    /// A sealer for `secrets` (the `MEDIA_SHARED_SECRET` entries, first one sealing).
    pub fn new(secrets: &[Secret<String>]) -> Self {
        let ciphers = secrets
            .iter()
            .map(|secret| {
                let hk =
                    hkdf::Hkdf::<sha2::Sha256>::new(Some(KDF_SALT), secret.expose().as_bytes());
                let mut key = [0u8; 32];
                // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
                let _ = hk.expand(KDF_INFO, &mut key);
                XChaCha20Poly1305::new(&key.into())
            })
            .collect();
        Self { ciphers }
    }

    /// Seals `body` for `audience`, bound to `binding` (a CallSid, or `""`), until `exp`
    /// (seconds since the Unix epoch).
    ///
    /// # Errors
    /// [`SealError::NoKey`] without secrets, [`SealError::Seal`] if encryption fails.
    pub fn seal<T: Serialize>(
        &self,
        audience: Audience,
        binding: &str,
        exp: u64,
        body: &T,
    ) -> Result<String, SealError> {
        let cipher = self.ciphers.first().ok_or(SealError::NoKey)?;
        let plaintext = serde_json::to_vec(&Envelope {
            aud: audience.as_str().to_string(),
            exp,
            body,
        })
        .map_err(|_| SealError::Seal)?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(audience, binding);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut raw = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ciphertext);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)))
    }

    /// Opens a sealed value for `audience` and `binding`, valid at `now`.
    ///
    /// # Errors
    /// The [`SealError`] naming the first check that failed.
    pub fn open<T: DeserializeOwned>(
        &self,
        audience: Audience,
        binding: &str,
        now: u64,
        sealed: &str,
    ) -> Result<T, SealError> {
        if self.ciphers.is_empty() {
            return Err(SealError::NoKey);
        }
        if sealed.len() > MAX_SEALED_CHARS {
            return Err(SealError::Malformed);
        }
        let encoded = sealed.strip_prefix(PREFIX).ok_or(SealError::Malformed)?;
        let raw = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SealError::Malformed)?;
        if raw.len() <= NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
        let nonce = XNonce::from(nonce);
        let aad = associated_data(audience, binding);
        let plaintext = self
            .ciphers
            .iter()
            .find_map(|cipher| {
                cipher
                    .decrypt(
                        &nonce,
                        Payload {
                            msg: ciphertext,
                            aad: &aad,
                        },
                    )
                    .ok()
            })
            .ok_or(SealError::Invalid)?;
        let envelope: Envelope<T> =
            serde_json::from_slice(&plaintext).map_err(|_| SealError::Invalid)?;
        if envelope.aud != audience.as_str() {
            return Err(SealError::Invalid);
        }
        if envelope.exp <= now {
            return Err(SealError::Expired);
        }
        Ok(envelope.body)
    }
}

fn associated_data(audience: Audience, binding: &str) -> Vec<u8> {
    format!("{PREFIX}{}|{binding}", audience.as_str()).into_bytes()
}

#[cfg(test)]
mod tests;
