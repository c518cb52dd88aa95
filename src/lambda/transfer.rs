//! `POST /transfer/result`: Twilio's `<Dial action>` request once a transfer's dialled leg
//! ended. Answered or completed: the call is over (`<Hangup />`). Busy, no answer, failed or
//! canceled: the caller hears `TRANSFER_FAILED_SAY`, then the call hangs up. It does not go
//! back to the agent: the transfer ended the stream and with it the agent's conversation, and
//! a new one would start over without what the caller said.

use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::http::{HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};

use super::outbound::{number, signed_url};
use super::outcome::{self, dial_status_label, Outcome};
use super::webhook::verified_form;
use super::{LambdaError, LambdaState};
use crate::twilio::twiml::{hang_up, say_then_hang_up};

/// Route of the transfer's `<Dial action>`, below the API's base URL.
pub const RESULT_ROUTE: &str = "/transfer/result";
/// Said when a transfer was not answered, unless `TRANSFER_FAILED_SAY` says otherwise.
pub const FAILED_SAY_DEFAULT: &str =
    "Sorry, the transfer did not go through. Please call again later. Goodbye.";

/// Whether the dialled party took the call.
fn answered(dial_status: &str) -> bool {
    matches!(dial_status, "completed" | "answered")
}

/// `POST /transfer/result` (signed by Twilio over exactly its URL).
pub(super) fn result(state: &LambdaState, req: &Request) -> Result<Response<Body>, LambdaError> {
    let url = signed_url(state, req, RESULT_ROUTE)?;
    let form = verified_form(state, req, &url)?;
    let dial_status = dial_status_label(form.field("DialCallStatus").unwrap_or_default());
    let duration_s = number(form.field("DialCallDuration"));
    tracing::info!(
        call_sid = form.call_sid(),
        dial_status,
        duration_s,
        "transfer result"
    );
    outcome::publish(
        &state.config.metric_namespace,
        Outcome::Transfer {
            dial_status,
            duration_s,
        },
    );
    let xml = if answered(dial_status) {
        hang_up()
    } else {
        say_then_hang_up(&state.config.transfer_failed_say)
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, HeaderValue::from_static("text/xml"))
        .body(Body::Text(xml))?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lambda::tests::{event, request, state, text};
    use crate::lambda::{handle, LambdaError};

    /// `events/transfer-result.json` with `DialCallStatus` set to `status`, re-signed as
    /// Twilio would.
    fn with_status(status: &str) -> serde_json::Value {
        use base64::Engine as _;
        let mut e = event("transfer-result");
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = String::from_utf8(b64.decode(e["body"].as_str().unwrap()).unwrap()).unwrap();
        let body = body.replace(
            "DialCallStatus=no-answer",
            &format!("DialCallStatus={status}"),
        );
        let params: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let url = "https://abc123defg.execute-api.us-east-1.amazonaws.com/transfer/result";
        e["headers"]["x-twilio-signature"] = crate::twilio::signature::compute_signature(
            crate::lambda::tests::AUTH_TOKEN.as_bytes(),
            crate::twilio::signature::SignatureAlgorithm::HmacSha1,
            url,
            &params,
        )
        .into();
        e["body"] = b64.encode(&body).into();
        e
    }

    #[tokio::test]
    async fn an_unanswered_transfer_is_told_then_hung_up_an_answered_one_just_ends() {
        let s = state(&[]);
        let resp = handle(&s, request(&event("transfer-result")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let xml = text(&resp);
        assert!(
            xml.ends_with(&format!(
                "<Say>{FAILED_SAY_DEFAULT}</Say><Hangup /></Response>"
            )),
            "{xml}"
        );
        for status in ["busy", "failed", "canceled", "something-new"] {
            let resp = handle(&s, request(&with_status(status))).await.unwrap();
            assert!(text(&resp).contains("<Say>"), "{status}");
        }
        for status in ["completed", "answered"] {
            let resp = handle(&s, request(&with_status(status))).await.unwrap();
            assert_eq!(text(&resp), hang_up(), "{status}");
        }
        let s = state(&[("TRANSFER_FAILED_SAY", "Our team is busy. Goodbye.")]);
        let resp = handle(&s, request(&event("transfer-result")))
            .await
            .unwrap();
        assert!(text(&resp).contains("<Say>Our team is busy. Goodbye.</Say>"));
    }

    #[tokio::test]
    async fn a_forged_transfer_result_is_refused() {
        let s = state(&[]);
        let mut forged = event("transfer-result");
        forged["headers"]["x-twilio-signature"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
        assert!(matches!(
            handle(&s, request(&forged)).await,
            Err(LambdaError::BadSignature)
        ));
    }
}
