//! The WebSocket upgrade on the stream path: RFC 6455 request checks, the drain and call-limit
//! gates, token lookup (path, then `?token=`, then `x-media-auth`) and verification — all
//! before anything is upgraded. Refusals are plain HTTP with no detail; the reason goes to
//! metrics and the log.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::response::{error_json, Body};
use super::{call, AppState};
use crate::auth::{Authenticator, Grant};
use crate::registry::{CallRegistry, ClaimError};

/// Header carrying a token for legacy clients.
pub const AUTH_HEADER: &str = "x-media-auth";

/// Handles a request on the stream path; `path_token` is the `/jwt/<token>` segment.
pub async fn upgrade(
    mut req: Request<Incoming>,
    state: &Arc<AppState>,
    path_token: Option<String>,
    peer: SocketAddr,
) -> Response<Body> {
    let reject = |status: StatusCode, reason: &'static str| {
        state.metrics.handshake_rejected(reason);
        tracing::info!(reason, status = status.as_u16(), "handshake rejected");
        error_json(status, "rejected")
    };
    if req.method() != Method::GET {
        return reject(StatusCode::METHOD_NOT_ALLOWED, "bad_method");
    }
    let headers = req.headers();
    if req.version() != Version::HTTP_11
        || !header_has_token(headers, CONNECTION, "upgrade")
        || !header_has_token(headers, UPGRADE, "websocket")
    {
        let mut resp = reject(StatusCode::UPGRADE_REQUIRED, "not_websocket");
        resp.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return resp;
    }
    if headers
        .get("sec-websocket-version")
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut resp = reject(StatusCode::UPGRADE_REQUIRED, "bad_version");
        resp.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return resp;
    }
    let Some(key) = headers
        .get("sec-websocket-key")
        .filter(|k| valid_key(k.as_bytes()))
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return reject(StatusCode::BAD_REQUEST, "bad_key");
    };
    if state.is_draining() {
        return reject(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    let token = path_token
        .or_else(|| query_token(req.uri().query()))
        .or_else(|| {
            headers
                .get(AUTH_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        });
    let grant = match state.auth.check(token.as_deref()) {
        Ok(grant) => grant,
        Err(e) => return reject(StatusCode::UNAUTHORIZED, e.label()),
    };
    if let Some(verifier) = &state.stream_signature {
        let host = headers
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok());
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let presented = headers
            .get(crate::twilio::signature::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        if verifier.verify(host, path, presented).is_err() {
            return reject(StatusCode::UNAUTHORIZED, "twilio_signature");
        }
    }
    let Ok(permit) = Arc::clone(&state.call_slots).try_acquire_owned() else {
        return reject(StatusCode::SERVICE_UNAVAILABLE, "capacity");
    };
    if let Some(registry) = &state.registry {
        if let Err(reason) = claim_token(state, registry, &grant).await {
            let status = if reason == "registry_unavailable" {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNAUTHORIZED
            };
            return reject(status, reason);
        }
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    super::spawn_call(
        state,
        call::accept(on_upgrade, Arc::clone(state), grant, permit, peer),
    );
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Single use across the fleet: the token's `jti` is written once; a replay on any task is
/// refused. A JWT without `jti` cannot be single-use and is refused; static-token and open
/// modes have no token id (their streams are still one per CallSid at `start`).
async fn claim_token(
    state: &AppState,
    registry: &CallRegistry,
    grant: &Grant,
) -> Result<(), &'static str> {
    if !matches!(state.auth, Authenticator::Jwt(_)) {
        return Ok(());
    }
    let (Some(jti), Some(exp)) = (grant.jti.as_deref(), grant.expires_at) else {
        return Err("token_no_jti");
    };
    let until = exp.saturating_add(state.config.server.jwt_leeway.as_secs());
    match registry.claim_token(jti, until, &state.metrics).await {
        Ok(()) => Ok(()),
        Err(ClaimError::Taken) => Err("token_replayed"),
        Err(ClaimError::Unavailable(cause)) => {
            tracing::error!(
                error = %cause,
                table = registry.table(),
                "call registry unavailable, refusing new calls"
            );
            Err("registry_unavailable")
        }
    }
}

/// Whether a comma-separated header contains `token` (case-insensitive).
fn header_has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// RFC 6455: the key is base64 of 16 bytes.
fn valid_key(key: &[u8]) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16)
}

/// The `token` query parameter, percent-decoded.
fn query_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, v)| k == "token" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_token_is_decoded_and_optional() {
        assert_eq!(query_token(Some("a=1&token=x%2Ey")), Some("x.y".into()));
        assert_eq!(query_token(Some("token=")), None);
        assert_eq!(query_token(None), None);
    }

    #[test]
    fn websocket_key_must_be_16_bytes() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZQ=="));
        assert!(!valid_key(b"!!"));
    }
}
