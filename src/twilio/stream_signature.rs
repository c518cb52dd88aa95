//! Twilio's `x-twilio-signature` on the WebSocket upgrade: rebuilds the `wss://` URL Twilio
//! signed (configured public origin, else the `Host` header, plus the request path) and checks
//! it with [`super::signature::RequestValidator`] and no params. Does not read requests.

use super::signature::valid_for_any_token;
use crate::secrets::SecretHandle;

/// Checks upgrade signatures with the account Auth Token (HMAC-SHA1).
#[derive(Debug, Clone)]
pub struct StreamSignatureVerifier {
    auth_token: SecretHandle,
    public_base: Option<String>,
}

/// Why an upgrade signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamSignatureError {
    /// No `x-twilio-signature` header.
    #[error("signature missing")]
    Missing,
    /// Neither a configured origin nor a `Host` header to rebuild the URL from.
    #[error("no host to rebuild the signed url")]
    NoHost,
    /// The signature does not match.
    #[error("signature invalid")]
    Invalid,
    /// The Auth Token has no value (an SSM reference never loaded).
    #[error("auth token unavailable")]
    KeyUnavailable,
}

impl StreamSignatureVerifier {
    /// A verifier keyed with `auth_token`; `public_base` is `wss://host[:port]` or `None` to
    /// use the request's `Host` header.
    pub fn new(auth_token: SecretHandle, public_base: Option<String>) -> Self {
        Self {
            auth_token,
            public_base,
        }
    }

    /// The URL Twilio signed: the public origin (or `wss://` + `host`) + `path_and_query`.
    pub fn signed_url(&self, host: Option<&str>, path_and_query: &str) -> Option<String> {
        match (&self.public_base, host) {
            (Some(base), _) => Some(format!("{base}{path_and_query}")),
            (None, Some(host)) if !host.is_empty() => Some(format!("wss://{host}{path_and_query}")),
            (None, _) => None,
        }
    }

    /// Checks the `x-twilio-signature` value `presented` of an upgrade to `path_and_query`.
    ///
    /// # Errors
    /// The [`StreamSignatureError`] naming why the signature was refused.
    pub fn verify(
        &self,
        host: Option<&str>,
        path_and_query: &str,
        presented: Option<&str>,
    ) -> Result<(), StreamSignatureError> {
        let presented = presented
            .filter(|p| !p.is_empty())
            .ok_or(StreamSignatureError::Missing)?;
        let url = self
            .signed_url(host, path_and_query)
            .ok_or(StreamSignatureError::NoHost)?;
        let key = self
            .auth_token
            .current()
            .ok_or(StreamSignatureError::KeyUnavailable)?;
        if valid_for_any_token(key.expose(), &url, &[], presented) {
            Ok(())
        } else {
            Err(StreamSignatureError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::twilio::signature::{compute_signature, SignatureAlgorithm};

    const PATH: &str = "/rtm/voice/jwt/abc.def.ghi";

    fn verifier(base: Option<&str>) -> StreamSignatureVerifier {
        StreamSignatureVerifier::new(
            SecretHandle::from_value(Secret::new("test-auth-token".into())),
            base.map(str::to_string),
        )
    }

    fn sign(url: &str) -> String {
        compute_signature(b"test-auth-token", SignatureAlgorithm::HmacSha1, url, &[])
    }

    #[test]
    fn a_rotated_auth_token_keeps_the_previous_one_valid_until_it_is_dropped() {
        let url = format!("wss://media.example.com{PATH}");
        let old = compute_signature(b"old-token", SignatureAlgorithm::HmacSha1, &url, &[]);
        let new = compute_signature(b"new-token", SignatureAlgorithm::HmacSha1, &url, &[]);
        let both = StreamSignatureVerifier::new(
            SecretHandle::from_value(Secret::new("new-token, old-token".into())),
            Some("wss://media.example.com".into()),
        );
        assert_eq!(both.verify(None, PATH, Some(&new)), Ok(()));
        assert_eq!(both.verify(None, PATH, Some(&old)), Ok(()));
        let only_new = StreamSignatureVerifier::new(
            SecretHandle::from_value(Secret::new("new-token".into())),
            Some("wss://media.example.com".into()),
        );
        assert_eq!(
            only_new.verify(None, PATH, Some(&old)),
            Err(StreamSignatureError::Invalid)
        );
        assert_eq!(
            crate::twilio::signature::current_token(" new-token, old-token"),
            "new-token"
        );
    }

    #[test]
    fn url_from_configured_origin_or_host_header() {
        let v = verifier(Some("wss://media.example.com"));
        assert_eq!(
            v.signed_url(Some("internal:8080"), PATH).as_deref(),
            Some("wss://media.example.com/rtm/voice/jwt/abc.def.ghi")
        );
        let v = verifier(None);
        assert_eq!(
            v.signed_url(Some("media.example.com"), PATH).as_deref(),
            Some("wss://media.example.com/rtm/voice/jwt/abc.def.ghi")
        );
        assert_eq!(v.signed_url(None, PATH), None);
        assert_eq!(v.signed_url(Some(""), PATH), None);
    }

    #[test]
    fn verifies_wss_signatures_only() {
        let v = verifier(None);
        let good = sign("wss://media.example.com/rtm/voice/jwt/abc.def.ghi");
        assert_eq!(
            v.verify(Some("media.example.com"), PATH, Some(&good)),
            Ok(())
        );
        // The default port is tolerated like the official library does.
        assert_eq!(
            v.verify(Some("media.example.com:80"), PATH, Some(&good)),
            Ok(())
        );
        let https = sign("https://media.example.com/rtm/voice/jwt/abc.def.ghi");
        assert_eq!(
            v.verify(Some("media.example.com"), PATH, Some(&https)),
            Err(StreamSignatureError::Invalid)
        );
        assert_eq!(
            v.verify(
                Some("media.example.com"),
                "/rtm/voice/jwt/other",
                Some(&good)
            ),
            Err(StreamSignatureError::Invalid)
        );
        assert_eq!(
            v.verify(Some("media.example.com"), PATH, None),
            Err(StreamSignatureError::Missing)
        );
        assert_eq!(
            v.verify(None, PATH, Some(&good)),
            Err(StreamSignatureError::NoHost)
        );
    }
}
