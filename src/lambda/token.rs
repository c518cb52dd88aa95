//! `POST /token`: a stream token for backend callers holding `MINT_API_KEY`.

use std::time::Duration;

use lambda_http::http::header::AUTHORIZATION;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::{body_bytes, json, valid_call_sid, LambdaError, LambdaState};
use crate::auth::{constant_time_eq, secret_list, TokenIssuer};

/// The request body; every field optional, unknown fields ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequest {
    call_sid: Option<String>,
    ttl_seconds: Option<u64>,
}

/// Checks the bearer key, mints, answers `{"token","expiresAt","streamUrl"}`.
pub(super) fn mint(state: &LambdaState, req: &Request) -> Result<Response<Body>, LambdaError> {
    bearer_key(state, req)?;
    let body = body_bytes(req);
    let request: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|_| LambdaError::BadJson)?
    };
    if let Some(sid) = &request.call_sid {
        if !valid_call_sid(sid) {
            return Err(LambdaError::InvalidCallSid);
        }
    }
    let ttl = match request.ttl_seconds {
        Some(0) => return Err(LambdaError::InvalidTtl),
        Some(s) => Duration::from_secs(s).min(state.config.token_max_ttl),
        None => state.config.token_ttl,
    };

    let minted = issuer(state)?.mint(request.call_sid.as_deref(), ttl)?;
    let stream_url = stream_url(&state.config.stream_url_base, minted.token.expose());
    json(
        StatusCode::OK,
        &serde_json::json!({
            "token": minted.token.expose(),
            "expiresAt": minted.expires_at,
            "streamUrl": stream_url,
        }),
    )
}

/// Checks `Authorization: Bearer <MINT_API_KEY>` (constant time).
///
/// # Errors
/// [`LambdaError::Unauthorized`], or 503 while the key is unavailable.
pub(super) fn bearer_key(state: &LambdaState, req: &Request) -> Result<(), LambdaError> {
    bearer_key_of(&state.mint_api_key, "MINT_API_KEY", req)
}

/// Checks `Authorization: Bearer <key>` against `handle` (constant time).
///
/// # Errors
/// [`LambdaError::Unauthorized`], or 503 while the key is unavailable.
pub(super) fn bearer_key_of(
    handle: &crate::secrets::SecretHandle,
    name: &'static str,
    req: &Request,
) -> Result<(), LambdaError> {
    let key = LambdaState::secret(handle, name)?;
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or(LambdaError::Unauthorized)?;
    if !constant_time_eq(presented.as_bytes(), key.expose().as_bytes()) {
        return Err(LambdaError::Unauthorized);
    }
    Ok(())
}

/// The issuer for the current first secret of `MEDIA_SHARED_SECRET`.
pub(super) fn issuer(state: &LambdaState) -> Result<TokenIssuer, LambdaError> {
    let list = LambdaState::secret(&state.shared_secret, "MEDIA_SHARED_SECRET")?;
    let first = secret_list(&list)
        .into_iter()
        .next()
        .ok_or(LambdaError::SecretUnavailable("MEDIA_SHARED_SECRET"))?;
    Ok(TokenIssuer::new(&first, state.clock))
}

/// `STREAM_URL_BASE/jwt/<token>` (JWTs are URL-safe: base64url and dots).
pub(super) fn stream_url(base: &str, token: &str) -> String {
    format!("{base}/jwt/{token}")
}

/// The credentials of an `Authorization: Bearer <key>` header (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}
