//! How calls end and are controlled: Twilio's REST API (hang-up, transfer), the final-mark
//! grace, the transfer allowlist, the dead-agent timers and the keypad.

use std::sync::Arc;
use std::time::Duration;

use super::env::*;
use super::parse::{invalid, millis};
use super::{number, secret_spec, twilio_account_sid, ConfigError, Source};
use crate::relay::ControlPolicy;
use crate::twilio::number::{is_e164, Allowlist};
use crate::twilio::rest::{RestConfig, RestCredentials, DEFAULT_API_BASE};

/// Call-control settings of `media-ws`: the REST client's, and the relay's policy as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallControlConfig {
    /// Twilio's REST API, when `TWILIO_ACCOUNT_SID` and a credential are set.
    pub rest: Option<RestConfig>,
    /// Endings, transfers, the dead-agent timers, the keypad and `MAX_CALL_SECONDS`, as every
    /// call's relay gets them (`rest` is set when [`Self::rest`] is).
    pub policy: ControlPolicy,
}

impl CallControlConfig {
    /// Reads the call-control variables.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first unusable variable.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let transfer_allowlist = Allowlist::parse(&src.get(TRANSFER_ALLOWLIST).unwrap_or_default())
            .map_err(|e| invalid(TRANSFER_ALLOWLIST, e))?;
        let transfer_caller_id = src.get(TRANSFER_CALLER_ID).map(|s| s.trim().to_string());
        if transfer_caller_id.as_deref().is_some_and(|c| !is_e164(c)) {
            return Err(invalid(TRANSFER_CALLER_ID, "expected an E.164 number"));
        }
        let transfer_timeout_secs = number(
            src,
            TRANSFER_TIMEOUT_SECONDS,
            TRANSFER_TIMEOUT_SECONDS_DEFAULT,
            5,
        )?;
        if transfer_timeout_secs > 600 {
            return Err(invalid(TRANSFER_TIMEOUT_SECONDS, "must be at most 600"));
        }
        let transfer_action_url = src.get(TRANSFER_ACTION_URL).map(|s| s.trim().to_string());
        if let Some(url) = &transfer_action_url {
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .and_then(|rest| rest.split(['/', '?']).next())
                .unwrap_or_default();
            if host.is_empty() || url.contains([' ', '#']) {
                return Err(invalid(
                    TRANSFER_ACTION_URL,
                    "expected an absolute URL such as https://api.example.com/transfer/result",
                ));
            }
        }
        let rest = rest(src)?;
        if rest.is_none() && !transfer_allowlist.is_empty() {
            return Err(invalid(
                TRANSFER_ALLOWLIST,
                "transfers need Twilio's REST API: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN \
                 (or TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET)",
            ));
        }
        let policy = ControlPolicy {
            rest: rest.is_some(),
            end_grace: millis(src, END_GRACE_MS, END_GRACE_MS_DEFAULT)?,
            transfer_allowlist: Arc::new(transfer_allowlist),
            transfer_caller_id: transfer_caller_id.as_deref().map(Arc::from),
            transfer_timeout_secs,
            agent_silence: millis(src, AGENT_SILENCE_MS, AGENT_SILENCE_MS_DEFAULT)?,
            metadata_timeout: millis(
                src,
                AGENT_METADATA_TIMEOUT_MS,
                AGENT_METADATA_TIMEOUT_MS_DEFAULT,
            )?,
            keypad_timeout: millis(src, KEYPAD_TIMEOUT_MS, KEYPAD_TIMEOUT_MS_DEFAULT)?,
            max_call: match number(src, MAX_CALL_SECONDS, MAX_CALL_SECONDS_DEFAULT, 0)? {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            transfer_action_url: transfer_action_url.as_deref().map(Arc::from),
        };
        Ok(Self { rest, policy })
    }
}

/// Twilio's REST API settings: an account and an Auth Token or API key, or none at all.
///
/// # Errors
/// [`ConfigError::Invalid`] for a half-configured key, a bad base URL or SID.
pub fn rest(src: &dyn Source) -> Result<Option<RestConfig>, ConfigError> {
    let api_base = src
        .get(TWILIO_API_BASE)
        .unwrap_or_else(|| DEFAULT_API_BASE.to_string());
    let api_base = api_base.trim().trim_end_matches('/').to_string();
    if api_base.contains(['?', '#', ' ']) {
        return Err(invalid(
            TWILIO_API_BASE,
            "expected an https:// origin such as https://api.dublin.ie1.twilio.com",
        ));
    }
    // The Auth Token rides in every request: in clear only to a loopback host (a fake).
    super::parse::secure_origin(TWILIO_API_BASE, &api_base, "https://", "http://")?;
    let credentials = match (src.get(TWILIO_API_KEY_SID), src.get(TWILIO_API_KEY_SECRET)) {
        (Some(sid), Some(secret)) => {
            let sid = sid.trim().to_string();
            if !sid.starts_with("SK") || sid.len() != 34 {
                return Err(invalid(
                    TWILIO_API_KEY_SID,
                    "expected SK followed by 32 hex digits",
                ));
            }
            Some(RestCredentials::ApiKey {
                sid,
                secret: secret_spec(TWILIO_API_KEY_SECRET, &secret)?,
            })
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid(
                TWILIO_API_KEY_SID,
                "TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET go together",
            ))
        }
        (None, None) => src
            .get(TWILIO_AUTH_TOKEN)
            .map(|raw| secret_spec(TWILIO_AUTH_TOKEN, &raw))
            .transpose()?
            .map(RestCredentials::AuthToken),
    };
    let account_sid = twilio_account_sid(src)?;
    match (account_sid, credentials) {
        (Some(account_sid), Some(credentials)) => Ok(Some(RestConfig {
            api_base,
            account_sid,
            credentials,
            timeout: millis(src, TWILIO_REST_TIMEOUT_MS, TWILIO_REST_TIMEOUT_MS_DEFAULT)?,
            retries: number(src, TWILIO_REST_RETRIES, TWILIO_REST_RETRIES_DEFAULT, 0)?,
        })),
        (None, Some(RestCredentials::ApiKey { .. })) => Err(invalid(
            TWILIO_ACCOUNT_SID,
            "required with an API key: the REST path names the account",
        )),
        _ => Ok(None),
    }
}
