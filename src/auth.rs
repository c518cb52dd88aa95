//! Stream tokens: HS256 JWT verification and minting (one implementation for `media-ws` and
//! `media-lambda`), and constant-time static tokens. Owns claims and their validation, not
//! where a token is found in a request (see `server::handshake`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::AuthMode;
use crate::context::{Audience, CallContext, Sealer};
use crate::secret::Secret;
use crate::secrets::{SecretHandle, Secrets};

/// The audience every stream token must carry.
pub const AUDIENCE: &str = "media";

/// Claims of a stream token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audience; always [`AUDIENCE`].
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The Twilio CallSid the token is bound to; `start.callSid` must match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Unique token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The call's agent context, sealed for [`Audience::Stream`] and bound to `sub` (see
    /// [`crate::context`]): claims travel in the stream URL, so they are never in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx: Option<String>,
    /// `ctx`, opened by [`JwtVerifier::verify`].
    #[serde(skip)]
    pub context: Option<CallContext>,
}

/// Claims as they arrive: optional, so a missing one is reported as such rather than as a
/// malformed token. `aud` is checked by jsonwebtoken (string or array form).
#[derive(Deserialize)]
struct RawClaims {
    exp: Option<u64>,
    iat: Option<u64>,
    nbf: Option<u64>,
    sub: Option<String>,
    jti: Option<String>,
    ctx: Option<String>,
}

/// Why a token was refused. The variant is for metrics and logs; clients only see 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the path, query or header.
    #[error("token missing")]
    Missing,
    /// Not a well-formed JWT.
    #[error("token malformed")]
    Malformed,
    /// Signed with another algorithm (including `none`).
    #[error("token algorithm not allowed")]
    Algorithm,
    /// No configured secret verifies the signature.
    #[error("token signature invalid")]
    Signature,
    /// `aud` is not `media`.
    #[error("token audience invalid")]
    Audience,
    /// `exp` (or `aud`) missing.
    #[error("token claim missing")]
    MissingClaim,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// The static token does not match.
    #[error("static token mismatch")]
    StaticMismatch,
    /// The secret to check against has no value (an SSM reference never loaded).
    #[error("secret unavailable")]
    SecretUnavailable,
    /// A token bound to no call (no `sub`) that lives longer than [`UNBOUND_MAX_TTL`].
    #[error("unbound token lives too long")]
    UnboundTooLong,
    /// The `ctx` claim does not open for this call (or the token has no `sub` to bind it).
    #[error("token context invalid")]
    Context,
}

impl AuthError {
    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Malformed => "token_malformed",
            Self::Algorithm => "token_algorithm",
            Self::Signature => "token_signature",
            Self::Audience => "token_audience",
            Self::MissingClaim => "token_claim_missing",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::StaticMismatch => "token_static_mismatch",
            Self::SecretUnavailable => "secret_unavailable",
            Self::UnboundTooLong => "token_unbound_lifetime",
            Self::Context => "token_context",
        }
    }
}

/// Seconds since the Unix epoch; injectable so tests can fix time.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A fixed instant (tests).
    Fixed(u64),
}

impl Clock {
    /// Now, in whole seconds since the Unix epoch.
    pub fn now(self) -> u64 {
        match self {
            Self::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            Self::Fixed(t) => t,
        }
    }
}

/// Verifies HS256 stream tokens against one or more secrets (rotation: any verifies).
pub struct JwtVerifier {
    keys: Vec<DecodingKey>,
    sealer: Sealer,
    validation: Validation,
    leeway_s: u64,
    clock: Clock,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("leeway_s", &self.leeway_s)
            .finish()
    }
}

impl JwtVerifier {
    /// A verifier accepting tokens signed by any of `secrets`.
    pub fn new(secrets: &[Secret<String>], leeway: Duration, clock: Clock) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        // Times are checked below against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Self {
            keys: secrets
                .iter()
                .map(|s| DecodingKey::from_secret(s.expose().as_bytes()))
                .collect(),
            sealer: Sealer::new(secrets),
            validation,
            leeway_s: leeway.as_secs(),
            clock,
        }
    }

    /// Verifies `token` and returns its claims.
    ///
    /// # Errors
    /// The [`AuthError`] naming the first check that failed.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| classify_header(token))?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::Algorithm);
        }
        let mut last = AuthError::Signature;
        let mut claims = None;
        for key in &self.keys {
            match jsonwebtoken::decode::<RawClaims>(token, key, &self.validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => {
                    last = map_jwt_error(e.kind());
                    if last != AuthError::Signature {
                        // Signature verified with this key but a claim is wrong.
                        return Err(last);
                    }
                }
            }
        }
        let raw = claims.ok_or(last)?;
        let mut claims = Claims {
            aud: AUDIENCE.to_string(),
            exp: raw.exp.ok_or(AuthError::MissingClaim)?,
            iat: raw.iat,
            nbf: raw.nbf,
            sub: raw.sub,
            jti: raw.jti,
            ctx: raw.ctx,
            context: None,
        };
        let now = self.clock.now();
        if claims.exp.saturating_add(self.leeway_s) <= now {
            return Err(AuthError::Expired);
        }
        let future = |t: Option<u64>| t.is_some_and(|t| t > now.saturating_add(self.leeway_s));
        if future(claims.nbf) || future(claims.iat) {
            return Err(AuthError::NotYetValid);
        }
        if claims.sub.is_none() {
            // Unbound tokens open a stream for any call: keep them short-lived, measured from
            // their issue time when they carry one and from now in any case.
            let max = UNBOUND_MAX_TTL.as_secs();
            let from_iat = claims
                .iat
                .is_some_and(|iat| claims.exp.saturating_sub(iat) > max);
            let remaining = claims.exp.saturating_sub(now) > max.saturating_add(self.leeway_s);
            if from_iat || remaining {
                return Err(AuthError::UnboundTooLong);
            }
        }
        if let Some(sealed) = &claims.ctx {
            // A context only ever travels bound to its call.
            let sub = claims.sub.as_deref().ok_or(AuthError::Context)?;
            let context = self
                .sealer
                .open(Audience::Stream, sub, now, sealed)
                .map_err(|_| AuthError::Context)?;
            claims.context = Some(context);
        }
        Ok(claims)
    }
}

/// A header that jsonwebtoken cannot parse: an unknown `alg` (such as `none`) is an algorithm
/// refusal, anything else is malformed.
fn classify_header(token: &str) -> AuthError {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: Option<String>,
    }
    let Some(segment) = token.split('.').next() else {
        return AuthError::Malformed;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment) else {
        return AuthError::Malformed;
    };
    match serde_json::from_slice::<RawHeader>(&bytes) {
        Ok(RawHeader { alg: Some(alg) }) if alg != "HS256" => AuthError::Algorithm,
        _ => AuthError::Malformed,
    }
}

fn map_jwt_error(kind: &jsonwebtoken::errors::ErrorKind) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => AuthError::Signature,
        K::InvalidAlgorithm | K::InvalidAlgorithmName => AuthError::Algorithm,
        K::InvalidAudience => AuthError::Audience,
        K::MissingRequiredClaim(_) => AuthError::MissingClaim,
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        _ => AuthError::Malformed,
    }
}

/// Longest lifetime of a token bound to no call (no `sub`): such a token opens a stream for
/// any call, so it must not outlive the few seconds a backend needs to hand it to Twilio.
pub const UNBOUND_MAX_TTL: Duration = Duration::from_secs(60);

/// What a handshake's token is checked against.
#[derive(Debug)]
pub enum Authenticator {
    /// No authentication configured.
    Open,
    /// A static token.
    Static(SecretHandle),
    /// HS256 JWTs, verified against the current secret list.
    Jwt(Box<RotatingVerifier>),
}

/// A successful authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The CallSid the token is bound to, if any.
    pub call_sid: Option<String>,
    /// The JWT's `jti` (single use across the fleet with a call registry).
    pub jti: Option<String>,
    /// The JWT's `exp`, seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// The call's agent context (outbound calls), from the token's sealed `ctx` claim.
    pub context: Option<Arc<CallContext>>,
}

impl Authenticator {
    /// Builds the authenticator for `mode`. An `ssm:` reference here is never loaded, so it
    /// refuses every token; use [`Authenticator::with_secrets`] for references.
    pub fn new(mode: &AuthMode, leeway: Duration, clock: Clock) -> Self {
        Self::with_secrets(
            mode,
            leeway,
            clock,
            &Secrets::new(crate::secrets::DEFAULT_TTL),
        )
    }

    /// Builds the authenticator for `mode`, resolving references through `secrets`.
    pub fn with_secrets(
        mode: &AuthMode,
        leeway: Duration,
        clock: Clock,
        secrets: &Secrets,
    ) -> Self {
        match mode {
            AuthMode::Open => Self::Open,
            AuthMode::StaticToken(t) => Self::Static(secrets.handle(t)),
            AuthMode::Jwt(list) => Self::Jwt(Box::new(RotatingVerifier::new(
                secrets.handle(list),
                leeway,
                clock,
            ))),
        }
    }

    /// Whether a token is required at all.
    pub fn required(&self) -> bool {
        !matches!(self, Self::Open)
    }

    /// Checks the token found in the request (if any).
    ///
    /// # Errors
    /// The [`AuthError`] naming why the token was refused.
    pub fn check(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        match self {
            Self::Open => Ok(Grant::default()),
            Self::Static(expected) => {
                let token = token.ok_or(AuthError::Missing)?;
                let expected = expected.current().ok_or(AuthError::SecretUnavailable)?;
                if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) {
                    Ok(Grant::default())
                } else {
                    Err(AuthError::StaticMismatch)
                }
            }
            Self::Jwt(verifier) => {
                let token = token.ok_or(AuthError::Missing)?;
                let claims = verifier.verifier()?.verify(token)?;
                Ok(Grant {
                    call_sid: claims.sub,
                    jti: claims.jti,
                    expires_at: Some(claims.exp),
                    context: claims.context.map(Arc::new),
                })
            }
        }
    }
}

/// Compares two byte strings in time independent of their contents and of the expected
/// length (both sides are hashed first, so only equal digests compare equal).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    bool::from(Sha256::digest(a).ct_eq(&Sha256::digest(b)))
}

mod mint;
mod rotation;

pub use mint::{MintError, MintedToken, TokenIssuer};
pub use rotation::{secret_list, RotatingVerifier};

#[cfg(test)]
mod tests;
