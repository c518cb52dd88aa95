//! Minting stream tokens (`media-lambda`): HS256, `aud=media`, `iat`, `exp`, a random `jti`,
//! `sub` when bound to a CallSid, and an outbound call's context sealed in `ctx`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::{Claims, Clock, AUDIENCE, UNBOUND_MAX_TTL};
use crate::context::{Audience, CallContext, Sealer};
use crate::secret::Secret;

/// Mints stream tokens with the first configured secret: HS256, `aud=media`, `iat`, `exp`, a
/// random `jti`, and `sub` when bound to a CallSid.
pub struct TokenIssuer {
    key: EncodingKey,
    sealer: Sealer,
    clock: Clock,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssuer([redacted])")
    }
}

/// A freshly minted token.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The compact JWT.
    pub token: Secret<String>,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Errors minting a token.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The JWT library failed to sign.
    #[error("token signing failed")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// Sealing the call context failed.
    #[error("context sealing failed")]
    Seal(#[source] crate::context::SealError),
}

impl TokenIssuer {
    /// An issuer signing with `secret`.
    pub fn new(secret: &Secret<String>, clock: Clock) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.expose().as_bytes()),
            sealer: Sealer::new(std::slice::from_ref(secret)),
            clock,
        }
    }

    /// Mints a token valid for `ttl`, bound to `call_sid` when given; an unbound token's
    /// lifetime is capped at [`UNBOUND_MAX_TTL`].
    ///
    /// # Errors
    /// [`MintError::Sign`] if signing fails.
    pub fn mint(&self, call_sid: Option<&str>, ttl: Duration) -> Result<MintedToken, MintError> {
        self.mint_claims(call_sid, ttl, None)
    }

    /// Mints a token bound to `call_sid` carrying `context` sealed in its `ctx` claim.
    ///
    /// # Errors
    /// [`MintError`] if sealing or signing fails.
    pub fn mint_with_context(
        &self,
        call_sid: &str,
        ttl: Duration,
        context: &CallContext,
    ) -> Result<MintedToken, MintError> {
        self.mint_claims(Some(call_sid), ttl, Some(context))
    }

    fn mint_claims(
        &self,
        call_sid: Option<&str>,
        ttl: Duration,
        context: Option<&CallContext>,
    ) -> Result<MintedToken, MintError> {
        let now = self.clock.now();
        let ttl = if call_sid.is_none() {
            ttl.min(UNBOUND_MAX_TTL)
        } else {
            ttl
        };
        let exp = now.saturating_add(ttl.as_secs().max(1));
        let ctx = match (call_sid, context) {
            (Some(sid), Some(context)) => Some(
                self.sealer
                    .seal(Audience::Stream, sid, exp, context)
                    .map_err(MintError::Seal)?,
            ),
            _ => None,
        };
        let claims = Claims {
            aud: AUDIENCE.to_string(),
            exp,
            iat: Some(now),
            nbf: None,
            sub: call_sid.map(str::to_string),
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            ctx,
            context: None,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(MintError::Sign)?;
        Ok(MintedToken {
            token: Secret::new(token),
            expires_at: exp,
        })
    }
}
