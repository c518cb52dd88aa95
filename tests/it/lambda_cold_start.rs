//! Cold-start benchmark of `media-lambda` (ignored by default; run by
//! `scripts/bench-lambda-cold-start.sh`): N fresh processes against the loopback Runtime API,
//! secrets from moto on loopback or plain values. Reports median and p90 of
//! - ready: process spawn → first `GET /runtime/invocation/next`;
//! - first event: event handed out → response posted (the first `/token`, which uses every
//!   secret, after the SSM-backed ones were loaded at init).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::lambda as lambda_support;

use std::time::{Duration, Instant};

use lambda_support::{event, LambdaProcess, Moto, RuntimeApi, TEST_AUTH_TOKEN, TEST_MINT_API_KEY};

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank]
}

fn summary(name: &str, mut samples: Vec<f64>) -> String {
    samples.sort_by(f64::total_cmp);
    format!(
        "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        samples[0],
        samples[samples.len() - 1]
    )
}

async fn run_once(bin: &str, env: &[(String, String)]) -> (f64, f64) {
    let api = RuntimeApi::start().await;
    let spawned = Instant::now();
    let mut lambda = LambdaProcess::start_bin(bin, &api, env);
    let ready = api.wait_ready(Duration::from_secs(30)).await;
    let invocation = api.invoke(&event("token")).await;
    assert_eq!(invocation.http().status, 200);
    assert!(lambda.is_running());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(ready - spawned), ms(invocation.latency()))
}

#[tokio::test]
#[ignore = "benchmark: scripts/bench-lambda-cold-start.sh"]
async fn cold_start() {
    let bin = std::env::var("MEDIA_LAMBDA_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_media-lambda").to_string());
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let moto = Moto::start().await;
    moto.put("/bench/mint-api-key", TEST_MINT_API_KEY).await;
    moto.put("/bench/shared-secret", "bench-shared-secret")
        .await;
    moto.put("/bench/twilio-auth-token", TEST_AUTH_TOKEN).await;
    let common = owned(&[
        ("STREAM_URL_BASE", "wss://media.example.com/rtm/voice"),
        ("RUST_LOG", "info"),
    ]);
    let mut ssm = common.clone();
    ssm.extend(owned(&[
        ("MINT_API_KEY", "ssm:/bench/mint-api-key"),
        ("MEDIA_SHARED_SECRET", "ssm:/bench/shared-secret"),
        ("TWILIO_AUTH_TOKEN", "ssm:/bench/twilio-auth-token"),
    ]));
    ssm.extend(moto.env());
    // What template.yaml ships: secrets from SSM, and Twilio's REST API on (outbound calls),
    // which loads the system's TLS roots at start.
    let mut ssm_rest = ssm.clone();
    ssm_rest.extend(owned(&[
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
        ("OUTBOUND_FROM", "+15551230000"),
    ]));
    let mut plain = common;
    plain.extend(owned(&[
        ("MINT_API_KEY", TEST_MINT_API_KEY),
        ("MEDIA_SHARED_SECRET", "bench-shared-secret"),
        ("TWILIO_AUTH_TOKEN", TEST_AUTH_TOKEN),
    ]));

    // One warm-up of each so the binary and moto are in the page cache.
    run_once(&bin, &ssm).await;
    run_once(&bin, &plain).await;
    let mut rows = Vec::new();
    run_once(&bin, &ssm_rest).await;
    for (name, env) in [
        ("ssm (moto on loopback)", &ssm),
        ("ssm + Twilio REST (template.yaml)", &ssm_rest),
        ("plain values", &plain),
    ] {
        let (mut ready, mut first) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (r, f) = run_once(&bin, env).await;
            ready.push(r);
            first.push(f);
        }
        rows.push(summary(&format!("ready, secrets: {name}"), ready));
        rows.push(summary(&format!("first event, secrets: {name}"), first));
    }
    println!("binary: {bin}, runs per row: {runs}");
    println!("| measurement (ms) | median | p90 | min | max |");
    println!("| --- | --- | --- | --- | --- |");
    for row in rows {
        println!("{row}");
    }
}
