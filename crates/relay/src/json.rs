//! Zero-copy access to JSON strings inside a frame, shared by the Twilio and agent parsers:
//! base64 audio and SIDs never contain escapes, so they are borrowed from the frame as is.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// The string `raw` holds: borrowed when it has no escapes, decoded otherwise; `None` when
/// `raw` is not a JSON string.
pub fn str_of(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Some(Cow::Borrowed(inner)),
        _ => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_plain_strings_and_decodes_escaped_ones() {
        let raw: Box<RawValue> = serde_json::from_str(r#""ab+/=""#).unwrap();
        assert!(matches!(str_of(&raw), Some(Cow::Borrowed("ab+/="))));
        let raw: Box<RawValue> = serde_json::from_str(r#""a\/b""#).unwrap();
        assert_eq!(str_of(&raw).as_deref(), Some("a/b"));
        let raw: Box<RawValue> = serde_json::from_str("12").unwrap();
        assert_eq!(str_of(&raw), None);
    }
}
