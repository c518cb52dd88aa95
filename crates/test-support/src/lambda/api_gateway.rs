//! An API Gateway HTTP API in front of the [`RuntimeApi`] on loopback: each HTTP request
//! becomes a payload 2.0 event (`rawPath`, raw query, lower-case headers with the `Host` as
//! sent, the body base64-encoded) and the function's answer goes back as the HTTP response.
//! What lets a real HTTP client — `media-sim twilio`, curl — talk to the function offline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::RuntimeApi;

/// Serves `api`'s function on 127.0.0.1:0; the address. Runs until the test ends.
pub async fn start(api: Arc<RuntimeApi>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let api = Arc::clone(&api);
                    async move { Ok::<_, Infallible>(forward(req, &api).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn forward(req: Request<Incoming>, api: &RuntimeApi) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        headers.insert(
            name.as_str().to_ascii_lowercase(),
            value.to_str().unwrap_or_default().into(),
        );
    }
    let host = headers
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "offline",
            "domainName": host,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": ""},
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "02/Dec/2026:12:00:00 +0000",
            "timeEpoch": 1_796_212_800_000u64
        },
        "body": base64::engine::general_purpose::STANDARD.encode(&body),
        "isBase64Encoded": true
    });
    let answer = api.call(&event).await;
    let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
    *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap();
    for (name, value) in &answer.headers {
        if let Some(value) = value.as_str() {
            resp.headers_mut().insert(
                hyper::header::HeaderName::try_from(name.as_str()).unwrap(),
                value.parse().unwrap(),
            );
        }
    }
    resp
}
