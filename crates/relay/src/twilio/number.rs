//! Phone numbers: E.164 validation and the transfer allowlist (`TRANSFER_ALLOWLIST`), so an
//! agent talked into dialling a premium or foreign number cannot.

/// Whether `s` is an E.164 number: `+`, a non-zero digit, at most 15 digits in all.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Exact(String),
    /// `+4420*`: any E.164 number starting with `+4420`.
    Prefix(String),
}

/// Numbers a call may be transferred to: exact E.164 numbers, or prefixes ending in `*`.
/// Empty: no transfers at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Vec<Entry>);

impl Allowlist {
    /// Parses a comma-separated list (`+15551230000,+4420*`).
    ///
    /// # Errors
    /// A message naming the position of the first entry that is neither an E.164 number nor
    /// `+` digits `*` (never the entry itself: the list is configuration, but keep logs clean).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (i, part) in raw.split(',').map(str::trim).enumerate() {
            if part.is_empty() {
                continue;
            }
            let entry = match part.strip_suffix('*') {
                Some(prefix)
                    if prefix.len() >= 2
                        && prefix.starts_with('+')
                        && prefix[1..].bytes().all(|b| b.is_ascii_digit())
                        && !prefix[1..].starts_with('0')
                        && prefix.len() <= 16 =>
                {
                    Entry::Prefix(prefix.to_string())
                }
                None if is_e164(part) => Entry::Exact(part.to_string()),
                _ => {
                    return Err(format!(
                        "entry {} is neither an E.164 number (+15551230000) nor a prefix ending \
                         in * (+1555*)",
                        i + 1
                    ))
                }
            };
            entries.push(entry);
        }
        Ok(Self(entries))
    }

    /// Whether no number is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `number` (which must be E.164) may be dialled.
    pub fn allows(&self, number: &str) -> bool {
        is_e164(number)
            && self.0.iter().any(|e| match e {
                Entry::Exact(n) => n == number,
                Entry::Prefix(p) => number.starts_with(p.as_str()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_is_plus_and_up_to_fifteen_digits() {
        for ok in ["+15551230000", "+447700900123", "+12", "+123456789012345"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "15551230000",
            "+1555 123",
            "+0123",
            "+1234567890123456",
            "+",
            "+1",
            "+1-555",
            "",
            "tel:+1555",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn allowlist_matches_exact_numbers_and_prefixes_only() {
        let list = Allowlist::parse(" +15551230000, +4420* ").unwrap();
        assert!(list.allows("+15551230000"));
        assert!(list.allows("+442079460000"));
        assert!(!list.allows("+15551230001"));
        assert!(!list.allows("+19005550100"), "premium number not listed");
        assert!(!list.allows("+4420abc"));
        assert!(Allowlist::parse("").unwrap().is_empty());
        assert!(!Allowlist::parse("").unwrap().allows("+15551230000"));
    }

    #[test]
    fn allowlist_refuses_what_is_not_a_number_or_prefix() {
        for bad in ["*", "+*", "1555*", "+1555x", "+15551230000*0", "+0*"] {
            let err = Allowlist::parse(bad).unwrap_err();
            assert!(err.contains("entry 1"), "{bad}: {err}");
        }
        assert!(Allowlist::parse("+15551230000,nope")
            .unwrap_err()
            .contains("entry 2"));
    }
}
