//! `X-Twilio-Signature` validation, shared by the voice webhook and the WebSocket handshake.
//!
//! Owns the string-to-sign, HMAC-SHA1/SHA256, URL port and credential handling, and form
//! decoding. It does not read HTTP requests or fetch the key.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Header carrying the signature (HTTP/2 and most gateways deliver it lower-cased).
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Header selecting the signature algorithm, e.g. `key=KS…,algorithm=HMAC_SHA256`.
pub const SIGNATURE_SETTINGS_HEADER: &str = "x-twilio-webhooks-signature-settings";

/// Query parameter Twilio appends to the URL of `application/json` requests.
const BODY_SHA256_PARAM: &str = "bodySHA256";

/// Errors from reading the signature settings header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header names an algorithm this module does not implement.
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    /// The header is not a comma-separated list of `name=value` entries.
    #[error("malformed signature settings header")]
    MalformedSettings,
}

/// HMAC used for a request signature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// HMAC-SHA1 keyed with the account Auth Token (the classic scheme, 28-char base64).
    #[default]
    HmacSha1,
    /// HMAC-SHA256 keyed with a SharedKey secret (44-char base64).
    HmacSha256,
}

impl SignatureAlgorithm {
    /// Reads the value of [`SIGNATURE_SETTINGS_HEADER`]; `None` (header absent) means HMAC-SHA1.
    ///
    /// A header without an `algorithm` entry also means HMAC-SHA1. Entry names and algorithm
    /// names are matched ASCII case-insensitively; empty entries are ignored.
    ///
    /// # Errors
    ///
    /// [`SignatureError::MalformedSettings`] when an entry has no `=` or `algorithm` appears
    /// twice; [`SignatureError::UnsupportedAlgorithm`] for an unknown algorithm name.
    pub fn from_settings_header(value: Option<&str>) -> Result<Self, SignatureError> {
        let Some(value) = value else {
            return Ok(Self::default());
        };
        let mut algorithm = None;
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, val) = entry
                .split_once('=')
                .ok_or(SignatureError::MalformedSettings)?;
            if name.trim().eq_ignore_ascii_case("algorithm") {
                if algorithm.is_some() {
                    return Err(SignatureError::MalformedSettings);
                }
                algorithm = Some(val.trim().parse::<Self>()?);
            }
        }
        Ok(algorithm.unwrap_or_default())
    }

    /// The name Twilio uses for this algorithm (`HMAC_SHA1` or `HMAC_SHA256`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha1 => "HMAC_SHA1",
            Self::HmacSha256 => "HMAC_SHA256",
        }
    }
}

impl FromStr for SignatureAlgorithm {
    type Err = SignatureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("HMAC_SHA1") {
            Ok(Self::HmacSha1)
        } else if s.eq_ignore_ascii_case("HMAC_SHA256") {
            Ok(Self::HmacSha256)
        } else {
            Err(SignatureError::UnsupportedAlgorithm)
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds the string Twilio signs: `url`, then `name` + `value` for every parameter.
///
/// Names are sorted by code point (case-sensitive); the values of one name are sorted and
/// de-duplicated, as the official helper library does. `url` is used byte for byte, so pass
/// the query string exactly as received (`%XX` kept). For GET requests and WebSocket
/// upgrades `params` is empty.
#[must_use]
pub fn string_to_sign(url: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    // Byte order of UTF-8 equals code-point order, so sorting the (name, value) pairs sorts
    // names first and the values of each name second; `dedup` then drops repeated values.
    pairs.sort_unstable();
    pairs.dedup();
    let len = url.len() + pairs.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
    let mut out = String::with_capacity(len);
    out.push_str(url);
    for (name, value) in pairs {
        out.push_str(name);
        out.push_str(value);
    }
    out
}

/// Computes the base64 (standard alphabet, padded) signature of `url` and `params`.
///
/// `key` is the Auth Token for [`SignatureAlgorithm::HmacSha1`] or the SharedKey secret for
/// [`SignatureAlgorithm::HmacSha256`], as UTF-8 bytes.
#[must_use]
pub fn compute_signature(
    key: &[u8],
    algorithm: SignatureAlgorithm,
    url: &str,
    params: &[(String, String)],
) -> String {
    // HMAC accepts keys of any length, so `None` cannot happen; an empty string is never a
    // valid signature and `validate` does not go through this function.
    mac_base64(key, algorithm, string_to_sign(url, params).as_bytes()).unwrap_or_default()
}

/// Whether `presented` is Twilio's HMAC-SHA1 signature of `url` and `params` under any Auth
/// Token of `auth_tokens` — `current,previous`, comma separated, so a rotation (Twilio's
/// secondary token promoted) never refuses a webhook while the old token is still cached.
#[must_use]
pub fn valid_for_any_token(
    auth_tokens: &str,
    url: &str,
    params: &[(String, String)],
    presented: &str,
) -> bool {
    auth_tokens
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .any(|token| {
            RequestValidator::new(token.as_bytes()).validate(
                url,
                params,
                presented,
                SignatureAlgorithm::HmacSha1,
            )
        })
}

/// The Auth Token REST requests use: the first of a `current,previous` list.
#[must_use]
pub fn current_token(auth_tokens: &str) -> &str {
    auth_tokens.split(',').next().unwrap_or_default().trim()
}

/// Decodes an `application/x-www-form-urlencoded` body into ordered `(name, value)` pairs.
///
/// `+` becomes a space, `%XX` is decoded, invalid escapes are kept literally, repeated names
/// are kept in order, and invalid UTF-8 becomes U+FFFD.
#[must_use]
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Validates Twilio request signatures with one key.
///
/// The key is never printed: `Debug` is redacted.
#[derive(Clone)]
pub struct RequestValidator {
    key: Box<[u8]>,
}

impl RequestValidator {
    /// Creates a validator for the Auth Token (HMAC-SHA1) or SharedKey secret (HMAC-SHA256).
    #[must_use]
    pub fn new(auth_token: impl AsRef<[u8]>) -> Self {
        Self {
            key: auth_token.as_ref().into(),
        }
    }

    /// Checks `presented` (the `X-Twilio-Signature` value) for a form POST, GET or WebSocket
    /// upgrade.
    ///
    /// `url` is the public URL Twilio requested (`wss://…` for the WebSocket upgrade, exactly
    /// as written in `<Stream url>`); `params` are the decoded form fields (see
    /// [`parse_form`]), empty for GET and upgrades. Like the official library it accepts a
    /// signature over either the URL without its port or the URL with a port (the given one,
    /// else 443 for `https` and 80 for every other scheme); `user:pass@` is removed first.
    /// The comparison is constant-time; a signature of the wrong length is rejected.
    #[must_use]
    pub fn validate(
        &self,
        url: &str,
        params: &[(String, String)],
        presented: &str,
        algorithm: SignatureAlgorithm,
    ) -> bool {
        if presented.is_empty() {
            return false;
        }
        let [without_port, with_port] = url_candidates(url);
        let check = |candidate: &str| {
            mac_base64(
                &self.key,
                algorithm,
                string_to_sign(candidate, params).as_bytes(),
            )
            .map_or(subtle::Choice::from(0), |computed| {
                computed.as_bytes().ct_eq(presented.as_bytes())
            })
        };
        // Both candidates are always checked; `|` on `Choice` does not short-circuit.
        bool::from(check(&without_port) | check(&with_port))
    }

    /// Checks an `application/json` request: the `bodySHA256` query value must equal the
    /// lowercase hex SHA-256 of `raw_body`, and `presented` must sign the URL with no params.
    ///
    /// Unlike the official library, a URL without `bodySHA256` is rejected rather than
    /// skipping the hash check. URL candidates are as in [`RequestValidator::validate`].
    #[must_use]
    pub fn validate_json_body(
        &self,
        url: &str,
        raw_body: &[u8],
        presented: &str,
        algorithm: SignatureAlgorithm,
    ) -> bool {
        let Some(expected_hash) = query_of(url).and_then(|query| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == BODY_SHA256_PARAM)
                .map(|(_, value)| value)
        }) else {
            return false;
        };
        let hash_ok = sha256_hex(raw_body)
            .as_bytes()
            .ct_eq(expected_hash.as_bytes());
        let signature_ok = self.validate(url, &[], presented, algorithm);
        bool::from(hash_ok) && signature_ok
    }
}

impl fmt::Debug for RequestValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestValidator")
            .field("key", &"<redacted>")
            .finish()
    }
}

/// HMAC of `msg` under `key`, base64-encoded; `None` only if the key were rejected, which
/// HMAC never does.
fn mac_base64(key: &[u8], algorithm: SignatureAlgorithm, msg: &[u8]) -> Option<String> {
    let digest = match algorithm {
        SignatureAlgorithm::HmacSha1 => {
            let mut mac = Hmac::<Sha1>::new_from_slice(key).ok()?;
            mac.update(msg);
            BASE64.encode(mac.finalize().into_bytes())
        }
        SignatureAlgorithm::HmacSha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
            mac.update(msg);
            BASE64.encode(mac.finalize().into_bytes())
        }
    };
    Some(digest)
}

/// Lowercase hex SHA-256 of `data`.
fn sha256_hex(data: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// The query string of `url` (after the first `?`, before any `#`).
fn query_of(url: &str) -> Option<&str> {
    let (_, after) = url.split_once('?')?;
    Some(after.split_once('#').map_or(after, |(query, _)| query))
}

/// The two URLs the official library tries: without the port, and with the port (the given
/// one, else the scheme default). Credentials are removed from both. A URL that does not
/// parse as `scheme://authority…` is returned unchanged as both candidates.
fn url_candidates(url: &str) -> [String; 2] {
    let Some(parts) = UrlParts::split(url) else {
        return [url.to_owned(), url.to_owned()];
    };
    let default_port = if parts.scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        "80"
    };
    let port = parts.port.filter(|p| !p.is_empty()).unwrap_or(default_port);
    let without_port = format!("{}://{}{}", parts.scheme, parts.host, parts.rest);
    let with_port = format!("{}://{}:{}{}", parts.scheme, parts.host, port, parts.rest);
    [without_port, with_port]
}

/// `scheme://[userinfo@]host[:port]rest`, borrowed from the original string so the path and
/// query stay byte-exact.
#[derive(Debug, PartialEq, Eq)]
struct UrlParts<'a> {
    scheme: &'a str,
    host: &'a str,
    /// Digits after the `:`; `Some("")` for a bare trailing `:`.
    port: Option<&'a str>,
    /// Path, query and fragment, starting with `/`, `?`, `#` or empty.
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Option<Self> {
        let (scheme, after) = url.split_once("://")?;
        let mut scheme_chars = scheme.chars();
        let scheme_ok = scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return None;
        }
        let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(authority_end);
        // Credentials end at the last `@` of the authority; they are never signed.
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = if host_port.starts_with('[') {
            let close = host_port.find(']')?;
            let (host, tail) = host_port.split_at(close + 1);
            match tail.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if tail.is_empty() => (host, None),
                None => return None,
            }
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() || port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
        Some(Self {
            scheme,
            host,
            port,
            rest,
        })
    }
}

#[cfg(test)]
mod tests;
