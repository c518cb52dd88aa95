//! The responses every route shares: the body type and JSON answers.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;

/// The response body type of every route.
pub type Body = Full<Bytes>;

/// A JSON response.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A JSON error `{"ok":false,"error":code}`; `code` is a constant, never request data.
pub fn error_json(status: StatusCode, code: &'static str) -> Response<Body> {
    json_response(status, &json!({"ok": false, "error": code}))
}
