//! Twilio's side of an outbound call that [`crate::twilio_rest`] created: it rings, fetches the
//! call's `Url`, streams to the TwiML's `<Stream url>` through [`crate::caller`], posts the AMD
//! verdict and the final status, and ends the stream on a REST update. Webhooks go over plain
//! HTTP to `webhook_base` with the `Host` of the URL the call was created with: the signature
//! covers that URL exactly as given.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use media_orchestrator::twilio::signature::{compute_signature, SignatureAlgorithm};
use tokio::time::Instant;

use crate::caller::{self, CallOptions, CallReport, Live};
use crate::twilio_rest::{FakeTwilioRest, RestRequest};
use crate::SimError;

/// How Twilio plays an outbound call.
#[derive(Debug, Clone)]
pub struct OutboundOptions {
    /// The account the calls belong to (`AccountSid` of every webhook).
    pub account_sid: String,
    /// The Auth Token webhooks are signed with.
    pub auth_token: String,
    /// Where requests for the API's `https://host` really go: `http://ADDR[/prefix]`.
    pub webhook_base: String,
    /// Where the `<Stream url>`'s `wss://host` really is: `ws://ADDR`.
    pub stream_origin: String,
    /// Ring time before the callee answers.
    pub ring: Duration,
    /// The AMD verdict (`human`, `machine_end_beep`, …).
    pub answered_by: String,
    /// When the verdict is posted, after the answer.
    pub amd_after: Duration,
    /// The callee's audio, 8 kHz μ-law.
    pub audio: Arc<Vec<u8>>,
    /// How the callee behaves on the stream (linger, keypad, …).
    pub call: CallOptions,
}

/// What happened to one outbound call.
#[derive(Debug, Clone, Default)]
pub struct OutboundReport {
    /// The CallSid the REST API assigned.
    pub call_sid: String,
    /// HTTP status of the answer webhook.
    pub answer_status: u16,
    /// The stream, when the TwiML connected one.
    pub call: Option<CallReport>,
    /// HTTP status of the AMD callback, when one was posted.
    pub amd_status: Option<u16>,
    /// HTTP status of the status callback, when one was posted.
    pub status_callback: Option<u16>,
    /// The REST requests made for this call after its creation (`describe()`d).
    pub rest: Vec<String>,
}

/// Plays Twilio's side of the call `create` describes.
///
/// # Errors
/// [`SimError::Webhook`] when a webhook cannot be delivered or the TwiML has no stream; the
/// stream's own errors ([`SimError::Connect`], …).
pub async fn play(
    opts: &OutboundOptions,
    rest: &FakeTwilioRest,
    create: &RestRequest,
) -> Result<OutboundReport, SimError> {
    let call_sid = create.call_sid.clone();
    let mut report = OutboundReport {
        call_sid: call_sid.clone(),
        ..OutboundReport::default()
    };
    tokio::time::sleep(opts.ring).await;
    let url = create
        .field("Url")
        .ok_or_else(|| webhook_error("the create had no Url"))?;
    let to = create.field("To").unwrap_or_default();
    let from = create.field("From").unwrap_or_default();
    let answer = [
        ("AccountSid", opts.account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid.as_str()),
        ("CallStatus", "in-progress"),
        ("Called", to),
        ("Caller", from),
        ("Direction", "outbound-api"),
        ("From", from),
        ("To", to),
    ];
    let (status, twiml) = post_signed(opts, url, &answer).await?;
    report.answer_status = status;
    if status != 200 {
        return Ok(report);
    }
    let (stream_url, params) = stream_of(&twiml)?;
    let stream_url = match stream_url.strip_prefix("wss://") {
        Some(rest) => {
            let path = rest.find('/').map_or("/", |i| &rest[i..]);
            format!("{}{path}", opts.stream_origin.trim_end_matches('/'))
        }
        None => stream_url,
    };
    let answered = Instant::now();
    let ws = caller::connect(&stream_url, None).await?;
    let hang_up = Arc::new(tokio::sync::Notify::new());
    let mut call_opts = opts.call.clone();
    call_opts.params = params;
    call_opts.sids = Some((call_sid.clone(), opts.account_sid.clone()));
    call_opts.hang_up = Some(Arc::clone(&hang_up));
    let live = Live::default();
    let stream = caller::run(ws, &opts.audio, &call_opts, &live);
    let verdict = async {
        let callback = create.field("AsyncAmdStatusCallback")?;
        tokio::time::sleep(opts.amd_after).await;
        let detection_ms = opts.amd_after.as_millis().to_string();
        let fields = [
            ("AccountSid", opts.account_sid.as_str()),
            ("AnsweredBy", opts.answered_by.as_str()),
            ("CallSid", call_sid.as_str()),
            ("MachineDetectionDuration", detection_ms.as_str()),
        ];
        Some(post_signed(opts, callback, &fields).await.map(|(s, _)| s))
    };
    // A REST update of the live call replaces its TwiML: Twilio ends the stream.
    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if updates(rest, &call_sid).next().is_some() {
                hang_up.notify_one();
                std::future::pending::<()>().await;
            }
        }
    };
    let (call, amd) = tokio::select! {
        both = async { tokio::join!(stream, verdict) } => both,
        () = watch => unreachable!("the watch never ends"),
    };
    report.amd_status = amd.transpose()?;
    report.call = Some(call);
    report.rest = updates(rest, &call_sid).map(|r| r.describe()).collect();
    if let Some(callback) = create.field("StatusCallback") {
        let duration = answered.elapsed().as_secs().to_string();
        let fields = [
            ("AccountSid", opts.account_sid.as_str()),
            ("CallDuration", duration.as_str()),
            ("CallSid", call_sid.as_str()),
            ("CallStatus", "completed"),
            ("Direction", "outbound-api"),
            ("From", from),
            ("To", to),
        ];
        report.status_callback = Some(post_signed(opts, callback, &fields).await?.0);
    }
    Ok(report)
}

/// The REST requests that changed the live call `call_sid`.
fn updates<'a>(rest: &FakeTwilioRest, call_sid: &'a str) -> impl Iterator<Item = RestRequest> + 'a {
    rest.requests()
        .into_iter()
        .filter(move |r| !r.created && r.call_sid == call_sid)
}

fn webhook_error(reason: &str) -> SimError {
    SimError::Webhook(reason.to_string())
}

/// The `<Stream url>` and its `<Parameter>`s of a TwiML document.
fn stream_of(
    twiml: &str,
) -> Result<(String, std::collections::BTreeMap<String, String>), SimError> {
    let doc = roxmltree::Document::parse(twiml)
        .map_err(|e| webhook_error(&format!("the answer is not TwiML: {e}")))?;
    let stream = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .ok_or_else(|| webhook_error("the TwiML connects no <Stream>"))?;
    let url = stream
        .attribute("url")
        .ok_or_else(|| webhook_error("<Stream> has no url"))?;
    let params = stream
        .children()
        .filter(|n| n.has_tag_name("Parameter"))
        .filter_map(|p| {
            Some((
                p.attribute("name")?.to_string(),
                p.attribute("value")?.to_string(),
            ))
        })
        .collect();
    Ok((url.to_string(), params))
}

/// POSTs `fields` to `url` as Twilio does: form-encoded, `X-Twilio-Signature` over `url`
/// exactly as given, the `Host` of `url`; delivered to `webhook_base`. (status, body).
async fn post_signed(
    opts: &OutboundOptions,
    url: &str,
    fields: &[(&str, &str)],
) -> Result<(u16, String), SimError> {
    let params: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    let signature = compute_signature(
        opts.auth_token.as_bytes(),
        SignatureAlgorithm::HmacSha1,
        url,
        &params,
    );
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| webhook_error("webhook URL is not http(s)"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let base = opts
        .webhook_base
        .strip_prefix("http://")
        .ok_or_else(|| webhook_error("--webhook-base must be http://ADDR[/prefix]"))?;
    let (addr, prefix) = base.split_at(base.find('/').unwrap_or(base.len()));
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let request = hyper::Request::post(format!(
        "{}{}",
        prefix.trim_end_matches('/'),
        if path.is_empty() { "/" } else { path }
    ))
    .header("host", host)
    .header("content-type", "application/x-www-form-urlencoded")
    .header("x-twilio-signature", signature)
    .header(
        "i-twilio-idempotency-token",
        uuid::Uuid::new_v4().to_string(),
    )
    .header("user-agent", "TwilioProxy/1.1")
    .body(Full::new(Bytes::from(body)))
    .map_err(|e| webhook_error(&e.to_string()))?;
    let deliver = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        // The connection's driver; it ends with the connection.
        let driver = tokio::spawn(conn);
        let response = send
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        driver.abort();
        Ok::<_, std::io::Error>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    // Twilio gives a webhook 15 s.
    tokio::time::timeout(Duration::from_secs(15), deliver)
        .await
        .map_err(|_| webhook_error("webhook timed out (15 s)"))?
        .map_err(|e| webhook_error(&format!("webhook to {addr} failed: {e}")))
}
