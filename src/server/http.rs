//! Plain HTTP routes of `media-ws` (`/`, `/health`, `/metrics`, JSON 404/405) and the hand-off
//! of WebSocket upgrades on the stream path to [`super::handshake`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::response::{error_json, json_response, Body};
use super::{handshake, AppState};

/// Service name reported by `/` and `/health`.
pub const SERVICE: &str = "media";

/// Routes one request. Never fails: every problem is a status code.
pub async fn route(
    req: Request<Incoming>,
    state: &Arc<AppState>,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path();
    if let Some(path_token) = stream_route(path, &state.config.server.ws_path) {
        let path_token = path_token.map(str::to_string);
        return handshake::upgrade(req, state, path_token, peer).await;
    }
    let method_ok = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        "/" | "/health" | "/metrics" if !method_ok => {
            error_json(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        }
        "/" => json_response(
            StatusCode::OK,
            &json!({"ok": true, "service": SERVICE, "wsPath": state.config.server.ws_path, "time": now_rfc3339()}),
        ),
        "/health" => {
            let ok = !state.is_draining();
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_response(
                status,
                &json!({"ok": ok, "service": SERVICE, "time": now_rfc3339()}),
            )
        }
        "/metrics" => {
            let mut resp = Response::new(Body::new(Bytes::from(state.metrics.render())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        _ => error_json(StatusCode::NOT_FOUND, "not_found"),
    }
}

/// Matches the stream path: `Some(None)` for `WS_PATH`, `Some(Some(token))` for
/// `WS_PATH/jwt/<token>`, `None` for anything else.
pub fn stream_route<'a>(path: &'a str, ws_path: &str) -> Option<Option<&'a str>> {
    let rest = path.strip_prefix(ws_path)?;
    if rest.is_empty() {
        return Some(None);
    }
    let token = rest.strip_prefix("/jwt/")?;
    if token.is_empty() || token.contains('/') {
        return None;
    }
    Some(Some(token))
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::stream_route;

    #[test]
    fn stream_paths() {
        let ws = "/rtm/voice";
        assert_eq!(stream_route("/rtm/voice", ws), Some(None));
        assert_eq!(
            stream_route("/rtm/voice/jwt/abc.def.ghi", ws),
            Some(Some("abc.def.ghi"))
        );
        assert_eq!(stream_route("/rtm/voice/jwt/", ws), None);
        assert_eq!(stream_route("/rtm/voice/jwt/a/b", ws), None);
        assert_eq!(stream_route("/rtm/voice/", ws), None);
        assert_eq!(stream_route("/rtm/voicemail", ws), None);
        assert_eq!(stream_route("/rtm", ws), None);
        assert_eq!(stream_route("/health", ws), None);
    }
}
