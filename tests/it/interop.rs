//! Independent clients against the real server: Python `websockets` and PyJWT (installed by
//! scripts/test.sh) play a Twilio call with the echo agent and try refused tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::media_ws as support;

use support::Server;

#[tokio::test]
async fn python_websockets_and_pyjwt_clients_interoperate() {
    let secret = "interop-secret-0123456789abcdef";
    let s = Server::start(&[
        ("MEDIA_SHARED_SECRET", secret),
        ("AGENT", "echo"),
        ("ECHO_DELAY_MS", "20"),
    ])
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/twilio_call.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(s.url("/rtm/voice"))
        .arg(secret)
        .output()
        .await
        .expect("python3 runs (scripts/test.sh installs websockets and pyjwt)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "interop client failed: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("interop: ok"));
}
