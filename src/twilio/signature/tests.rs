// Tests may panic on broken fixtures; the crate denies expect/unwrap only outside tests.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde::Deserialize;

use super::*;

const VECTORS: &str = include_str!("../../../tests/fixtures/twilio-signature.json");

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    auth_token: String,
    signed_url: String,
    validate_url: String,
    content_type: String,
    params: Vec<(String, String)>,
    string_to_sign: String,
    computed_signature: String,
    presented_signature: String,
    validate_result: bool,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    form_body: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_sha256_hex: Option<String>,
}

impl Case {
    fn algorithm(&self) -> SignatureAlgorithm {
        // Go through the header parser, as the webhook does.
        let header = self
            .algorithm
            .as_ref()
            .map(|name| format!("key=KS0123456789abcdef0123456789abcdef,algorithm={name}"));
        SignatureAlgorithm::from_settings_header(header.as_deref())
            .unwrap_or_else(|e| panic!("{}: {e}", self.id))
    }

    fn is_json(&self) -> bool {
        self.content_type == "application/json"
    }
}

fn cases() -> Vec<Case> {
    let vectors: Vectors = serde_json::from_str(VECTORS).expect("fixture parses");
    assert_eq!(vectors.cases.len(), 19, "fixture case count changed");
    vectors.cases
}

fn case(id: &str) -> Case {
    cases()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no case {id}"))
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn vectors_string_to_sign() {
    for c in cases() {
        assert_eq!(
            string_to_sign(&c.signed_url, &c.params),
            c.string_to_sign,
            "{}",
            c.id
        );
    }
}

#[test]
fn vectors_computed_signature() {
    for c in cases() {
        let sig = compute_signature(
            c.auth_token.as_bytes(),
            c.algorithm(),
            &c.signed_url,
            &c.params,
        );
        assert_eq!(sig, c.computed_signature, "{}", c.id);
    }
}

#[test]
fn vectors_validate_result() {
    let mut checked = 0;
    for c in cases() {
        let validator = RequestValidator::new(&c.auth_token);
        let result = if c.is_json() {
            let body = c.body.as_deref().expect("json case has a body");
            validator.validate_json_body(
                &c.validate_url,
                body.as_bytes(),
                &c.presented_signature,
                c.algorithm(),
            )
        } else {
            validator.validate(
                &c.validate_url,
                &c.params,
                &c.presented_signature,
                c.algorithm(),
            )
        };
        assert_eq!(result, c.validate_result, "{}", c.id);
        checked += 1;
    }
    assert_eq!(checked, 19);
}

#[test]
fn vectors_json_body_hash() {
    let json_cases: Vec<Case> = cases().into_iter().filter(Case::is_json).collect();
    assert_eq!(json_cases.len(), 2);
    for c in json_cases {
        let body = c.body.as_deref().expect("json case has a body");
        let hex = c.body_sha256_hex.as_deref().expect("json case has a hash");
        assert_eq!(sha256_hex(body.as_bytes()), hex, "{}", c.id);
        assert!(c.params.is_empty(), "{}", c.id);
    }
}

#[test]
fn sharedkey_case_needs_sha256() {
    let c = case("hmac-sha256-sharedkey");
    assert_eq!(c.algorithm(), SignatureAlgorithm::HmacSha256);
    let validator = RequestValidator::new(&c.auth_token);
    let sig = &c.presented_signature;
    assert_eq!(sig.len(), 44);
    assert!(validator.validate(
        &c.validate_url,
        &c.params,
        sig,
        SignatureAlgorithm::HmacSha256
    ));
    assert!(!validator.validate(
        &c.validate_url,
        &c.params,
        sig,
        SignatureAlgorithm::HmacSha1
    ));
}

#[test]
fn form_body_parses_to_vector_params() {
    let c = case("voice-webhook-form");
    let body = c.form_body.as_deref().expect("case has a form body");
    let params = parse_form(body.as_bytes());
    assert_eq!(params, c.params);
    let validator = RequestValidator::new(&c.auth_token);
    assert!(validator.validate(
        &c.validate_url,
        &params,
        &c.presented_signature,
        SignatureAlgorithm::HmacSha1
    ));
}

#[test]
fn form_decoding_rules() {
    let parsed = parse_form(b"a=1+2&b=%2B1&&c=%zz%4&d&a=x%20y&e=%C3%A9%F0%9F%91%8B&=v");
    assert_eq!(
        parsed,
        pairs(&[
            ("a", "1 2"),
            ("b", "+1"),
            ("c", "%zz%4"),
            ("d", ""),
            ("a", "x y"),
            ("e", "é👋"),
            ("", "v"),
        ])
    );
    assert!(parse_form(b"").is_empty());
    // Invalid UTF-8 does not panic; it becomes U+FFFD.
    assert_eq!(parse_form(b"k=%FF"), pairs(&[("k", "\u{FFFD}")]));
}

#[test]
fn wss_handshake() {
    let c = case("wss-handshake-empty-params");
    let validator = RequestValidator::new(&c.auth_token);
    let sig = &c.presented_signature;
    let sha1 = SignatureAlgorithm::from_settings_header(None).expect("absent header is sha1");
    assert!(validator.validate("wss://media.example.com/twilio/media", &[], sig, sha1));
    // A proxy reporting :443 is still fine (the port-less candidate matches) ...
    assert!(validator.validate("wss://media.example.com:443/twilio/media", &[], sig, sha1));
    // ... but the scheme must be rebuilt as wss, and the path must match exactly.
    assert!(!validator.validate("https://media.example.com/twilio/media", &[], sig, sha1));
    assert!(!validator.validate("wss://media.example.com/twilio/media/", &[], sig, sha1));
    assert!(!validator.validate("wss://media.example.com/twilio/media?x=1", &[], sig, sha1));

    // Signed with :80 (the library's default for every non-https scheme) and validated
    // without a port.
    let signed_80 = compute_signature(
        c.auth_token.as_bytes(),
        sha1,
        "wss://media.example.com:80/twilio/media",
        &[],
    );
    assert!(validator.validate(
        "wss://media.example.com/twilio/media",
        &[],
        &signed_80,
        sha1
    ));
}

#[test]
fn tampered_one_byte_signature_fails() {
    for c in cases()
        .into_iter()
        .filter(|c| c.validate_result && !c.is_json())
    {
        let validator = RequestValidator::new(&c.auth_token);
        let alg = c.algorithm();
        let good = c.presented_signature.clone();
        assert!(validator.validate(&c.validate_url, &c.params, &good, alg));
        for i in 0..good.len() {
            let mut bytes = good.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).expect("ascii");
            assert!(
                !validator.validate(&c.validate_url, &c.params, &tampered, alg),
                "{} byte {i}",
                c.id
            );
        }
    }
}

#[test]
fn wrong_length_signature_fails() {
    let c = case("docs-worked-example");
    let validator = RequestValidator::new(&c.auth_token);
    let alg = SignatureAlgorithm::HmacSha1;
    let good = &c.presented_signature;
    let wrong = [
        String::new(),
        good[..good.len() - 1].to_owned(),
        good.trim_end_matches('=').to_owned(),
        format!("{good}="),
        format!("{good} "),
        format!(" {good}"),
        format!("{good}{good}"),
    ];
    for sig in &wrong {
        assert!(
            !validator.validate(&c.validate_url, &c.params, sig, alg),
            "{sig:?}"
        );
    }
}

#[test]
fn json_body_requires_matching_hash_param() {
    let c = case("json-body-sha256");
    let validator = RequestValidator::new(&c.auth_token);
    let alg = SignatureAlgorithm::HmacSha1;
    let body = c.body.as_deref().expect("json case has a body").as_bytes();
    let hash = sha256_hex(body);

    // The hash matches but the URL has no bodySHA256: rejected.
    let bare = "https://example.com/myapp";
    let sig = compute_signature(c.auth_token.as_bytes(), alg, bare, &[]);
    assert!(!validator.validate_json_body(bare, body, &sig, alg));

    // Uppercase hex is not what Twilio sends: rejected.
    let upper = format!(
        "https://example.com/myapp?bodySHA256={}",
        hash.to_uppercase()
    );
    let sig = compute_signature(c.auth_token.as_bytes(), alg, &upper, &[]);
    assert!(!validator.validate_json_body(&upper, body, &sig, alg));

    // Hash right, signature from another key: rejected.
    let sig = compute_signature(b"other", alg, &c.validate_url, &[]);
    assert!(!validator.validate_json_body(&c.validate_url, body, &sig, alg));

    // Other query parameters around bodySHA256 are fine; the port quirks apply too.
    let url = format!("https://example.com/myapp?a=1&bodySHA256={hash}&b=%2B");
    let sig = compute_signature(c.auth_token.as_bytes(), alg, &url, &[]);
    let with_port = format!("https://example.com:443/myapp?a=1&bodySHA256={hash}&b=%2B");
    assert!(validator.validate_json_body(&with_port, body, &sig, alg));
}

#[test]
fn credentials_are_stripped() {
    let key = b"0123456789abcdef0123456789abcdef";
    let validator = RequestValidator::new(key);
    let alg = SignatureAlgorithm::HmacSha1;
    let params = pairs(&[("CallSid", "CA1")]);
    let sig = compute_signature(key, alg, "https://example.com/voice?x=%2B", &params);
    for url in [
        "https://user:pass@example.com/voice?x=%2B",
        "https://user:p%40ss@example.com:443/voice?x=%2B",
        "https://user@example.com/voice?x=%2B",
    ] {
        assert!(validator.validate(url, &params, &sig, alg), "{url}");
    }
}

#[test]
fn url_candidates_keep_path_and_query_bytes() {
    assert_eq!(
        url_candidates("https://example.com/a%2Fb?q=%2B1+2&r=%zz#frag"),
        [
            "https://example.com/a%2Fb?q=%2B1+2&r=%zz#frag".to_owned(),
            "https://example.com:443/a%2Fb?q=%2B1+2&r=%zz#frag".to_owned(),
        ]
    );
    assert_eq!(
        url_candidates("http://example.com:8080?x=1"),
        [
            "http://example.com?x=1".to_owned(),
            "http://example.com:8080?x=1".to_owned(),
        ]
    );
    assert_eq!(
        url_candidates("wss://h.example/p"),
        [
            "wss://h.example/p".to_owned(),
            "wss://h.example:80/p".to_owned()
        ]
    );
    // A bare `:` counts as no port.
    assert_eq!(
        url_candidates("https://example.com:/p"),
        [
            "https://example.com/p".to_owned(),
            "https://example.com:443/p".to_owned(),
        ]
    );
    // Not a `scheme://authority` URL: used as is.
    for odd in [
        "/voice",
        "example.com/voice",
        "https://example.com:abc/p",
        "1x://h/p",
    ] {
        assert_eq!(url_candidates(odd), [odd.to_owned(), odd.to_owned()]);
    }
}

#[test]
fn ipv6_hosts() {
    assert_eq!(
        url_candidates("http://[::1]:8080/voice?a=1"),
        [
            "http://[::1]/voice?a=1".to_owned(),
            "http://[::1]:8080/voice?a=1".to_owned(),
        ]
    );
    assert_eq!(
        url_candidates("https://u:p@[2001:db8::1]/v"),
        [
            "https://[2001:db8::1]/v".to_owned(),
            "https://[2001:db8::1]:443/v".to_owned(),
        ]
    );
    assert_eq!(
        url_candidates("http://[::1]x/v"),
        ["http://[::1]x/v".to_owned(), "http://[::1]x/v".to_owned()]
    );

    let key = b"k";
    let validator = RequestValidator::new(key);
    let alg = SignatureAlgorithm::HmacSha1;
    let sig = compute_signature(key, alg, "http://[::1]:8080/voice", &[]);
    assert!(validator.validate("http://[::1]:8080/voice", &[], &sig, alg));
    assert!(!validator.validate("http://[::1]/voice", &[], &sig, alg));
    let sig = compute_signature(key, alg, "http://[::1]/voice", &[]);
    assert!(validator.validate("http://[::1]:80/voice", &[], &sig, alg));
}

#[test]
fn settings_header_parsing() {
    use SignatureAlgorithm::{HmacSha1, HmacSha256};
    let parse = SignatureAlgorithm::from_settings_header;
    assert_eq!(parse(None), Ok(HmacSha1));
    assert_eq!(parse(Some("key=KS1,algorithm=HMAC_SHA256")), Ok(HmacSha256));
    assert_eq!(
        parse(Some(" algorithm = hmac_sha256 , key=KS1 ,")),
        Ok(HmacSha256)
    );
    assert_eq!(parse(Some("key=KS1,algorithm=HMAC_SHA1")), Ok(HmacSha1));
    assert_eq!(parse(Some("key=KS1")), Ok(HmacSha1));
    assert_eq!(parse(Some("")), Ok(HmacSha1));
    assert_eq!(
        parse(Some("key=KS1,algorithm=HMAC_MD5")),
        Err(SignatureError::UnsupportedAlgorithm)
    );
    assert_eq!(
        parse(Some("key=KS1,HMAC_SHA256")),
        Err(SignatureError::MalformedSettings)
    );
    assert_eq!(
        parse(Some("algorithm=HMAC_SHA1,algorithm=HMAC_SHA256")),
        Err(SignatureError::MalformedSettings)
    );
    assert_eq!(HmacSha256.to_string(), "HMAC_SHA256");
    assert_eq!("HMAC_SHA1".parse(), Ok(HmacSha1));
}

#[test]
fn long_keys_follow_hmac_rules() {
    // HMAC hashes keys longer than the block size; a 100-byte key must sign like its hash.
    let long_key = [0x5a_u8; 100];
    let hashed = sha1::Sha1::digest(long_key);
    let url = "https://example.com/voice";
    let alg = SignatureAlgorithm::HmacSha1;
    assert_eq!(
        compute_signature(&long_key, alg, url, &[]),
        compute_signature(&hashed, alg, url, &[])
    );
    assert_eq!(compute_signature(&long_key, alg, url, &[]).len(), 28);
}

#[test]
fn debug_redacts_key() {
    let validator = RequestValidator::new("super-secret-token");
    let shown = format!("{validator:?}");
    assert!(!shown.contains("super-secret-token"), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
}
