//! The stream's protocol and guards, moved here from the process tests (tests/media_ws.rs):
//! one call over in-memory pipes on a paused clock, so a 30 s idle timeout takes no time.

use super::*;

/// One call with no agent over a fresh pipe; `talk` plays Twilio's side and returns what it
/// saw. The call's summary, and the metrics it flushed, come back with it.
async fn call_with<F, Fut, R>(cfg: RelayConfig, talk: F) -> (Summary, R, String)
where
    F: FnOnce(Pipe) -> Fut,
    Fut: Future<Output = R>,
{
    let (server, twilio) = pipe(1 << 16).await;
    let agent = agent(AgentMode::None, None);
    let host = host(None);
    let call = run(
        server,
        &agent,
        &host,
        cfg,
        None,
        limits(),
        CallStops::new().register(),
    );
    // Bounded on the paused clock (so at no cost): a guard that never fires fails the test
    // instead of hanging it.
    let (summary, seen) = tokio::time::timeout(Duration::from_secs(300), async {
        tokio::join!(call, talk(twilio))
    })
    .await
    .expect("the call ended within 5 virtual minutes");
    (summary, seen, host.metrics.render())
}

fn no_agent() -> RelayConfig {
    RelayConfig::with_agent(AgentMode::None)
}

#[tokio::test(start_paused = true)]
async fn a_text_ping_gets_a_pong() {
    let (_, reply, _) = call_with(no_agent(), |mut twilio| async move {
        twilio.send(Message::text("ping")).await.unwrap();
        let reply = twilio.next().await.unwrap().unwrap();
        twilio.send(stop()).await.unwrap();
        reply
    })
    .await;
    assert_eq!(reply, Message::text("pong"));
}

#[tokio::test(start_paused = true)]
async fn unknown_events_are_counted_and_ignored() {
    let (summary, (_, _, close), metrics) = call_with(no_agent(), |mut twilio| async move {
        twilio.send(start()).await.unwrap();
        twilio
            .send(Message::text(
                r#"{"event":"brand_new","streamSid":"x","y":{}}"#,
            ))
            .await
            .unwrap();
        twilio.send(media(&[0xff; 160])).await.unwrap();
        twilio.send(stop()).await.unwrap();
        listen(&mut twilio).await
    })
    .await;
    assert_eq!(close, Some((1000, "stream stopped".into())));
    assert_eq!(summary.frames_in, 1);
    assert!(
        metrics.contains("media_events_total{event=\"unknown\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_peer_is_closed_after_the_idle_timeout() {
    let started = Instant::now();
    let (summary, (_, _, close), _) = call_with(no_agent(), |mut twilio| async move {
        twilio.send(start()).await.unwrap();
        listen(&mut twilio).await
    })
    .await;
    assert_eq!(close, Some((1000, "idle timeout".into())));
    assert_eq!(summary.outcome, Outcome::idle);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn bad_payloads_close_with_their_codes() {
    let big = STANDARD.encode([0u8; 161]);
    let bad_media = |payload: &str| {
        text(json!({"event":"media","media":{"payload":payload},"streamSid":"MZ1"}))
    };
    let cases = [
        (
            Some(bad_media(&big)),
            1009,
            "payload too large",
            Outcome::payload,
        ),
        (
            Some(bad_media("not*base64!")),
            1007,
            "payload not base64",
            Outcome::payload,
        ),
        (
            Some(Message::text("{not json")),
            1002,
            "malformed json",
            Outcome::protocol_error,
        ),
        (
            Some(Message::binary(vec![1u8, 2, 3])),
            1003,
            "binary frames not supported",
            Outcome::protocol_error,
        ),
        // Media before start.
        (None, 1002, "media before start", Outcome::protocol_error),
    ];
    for (msg, code, reason, outcome) in cases {
        let mut cfg = no_agent();
        cfg.stream.max_payload_bytes = 160;
        let (summary, (_, _, close), _) = call_with(cfg, |mut twilio| async move {
            match msg {
                Some(msg) => {
                    twilio.send(start()).await.unwrap();
                    twilio.send(msg).await.unwrap();
                }
                None => twilio.send(media(&[0xff; 160])).await.unwrap(),
            }
            listen(&mut twilio).await
        })
        .await;
        assert_eq!(close, Some((code, reason.to_string())), "{reason}");
        assert_eq!(summary.outcome, outcome, "{reason}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_answers_pings_is_closed_by_the_keepalive() {
    // Idle only after 2 minutes: the keepalive (15 s) is what must act.
    let mut cfg = no_agent();
    cfg.stream.idle_timeout = Duration::from_secs(120);
    // A peer that never reads never answers pings: no pong a whole interval after the ping,
    // 1001 (without the keepalive, the call would last until the peer left at 40 s).
    let (summary, (), _) = call_with(cfg.clone(), |mut twilio| async move {
        twilio.send(start()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(40)).await;
        drop(twilio);
    })
    .await;
    assert_eq!(summary.outcome, Outcome::keepalive);
    assert_eq!(summary.close_code, Some(1001));
    // A peer that reads (and so answers pings) outlives many intervals.
    let (summary, pings, _) = call_with(cfg, |mut twilio| async move {
        twilio.send(start()).await.unwrap();
        let mut pings = 0;
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_secs(1), twilio.next()).await {
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(_) => {}
                Err(_) => twilio.send(media(&[0xff; 160])).await.unwrap(),
            }
        }
        twilio.send(stop()).await.unwrap();
        listen(&mut twilio).await;
        pings
    })
    .await;
    assert!(pings >= 3, "saw {pings} pings");
    assert_eq!(summary.outcome, Outcome::normal);
}
