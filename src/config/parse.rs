//! Reading single variables: the [`Source`] they come from, numbers, durations, booleans,
//! secrets and secret lists, with errors that name the variable and never a secret's value.

use std::collections::HashMap;
use std::time::Duration;

use super::ConfigError;
use crate::secret::Secret;
use crate::secrets::SecretSpec;

/// Where configuration values come from: the process environment, or a map in tests.
pub trait Source {
    /// The value of `key`, if set. An empty value counts as unset.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Env;

impl Source for Env {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).filter(|v| !v.is_empty()).cloned()
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key)
            .filter(|v| !v.is_empty())
            .map(|v| (*v).to_string())
    }
}

pub(super) fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// Reads a secret variable as a value or an `ssm:` reference.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var` when the reference is malformed.
pub fn secret_spec(var: &'static str, raw: &str) -> Result<SecretSpec, ConfigError> {
    SecretSpec::parse(raw).map_err(|e| invalid(var, e.to_string()))
}

/// Parses a boolean variable (`true`/`false`, `1`/`0`, `yes`/`no`, any case).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var` for anything else.
pub fn boolean(src: &dyn Source, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    let Some(raw) = src.get(var) else {
        return Ok(default);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(var, "expected 'true' or 'false'")),
    }
}

/// Parses a non-secret integer variable, at least `min`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var` when it is not a whole number of at least `min`.
pub fn number<T>(src: &dyn Source, var: &'static str, default: T, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = src.get(var) else {
        return Ok(default);
    };
    let value: T = raw.trim().parse().map_err(|_| {
        invalid(
            var,
            format!("expected a whole number, got {:?}", truncate(&raw)),
        )
    })?;
    if value < min {
        return Err(invalid(var, format!("must be at least {min}")));
    }
    Ok(value)
}

/// Parses a duration in milliseconds that must be positive.
pub(super) fn millis(
    src: &dyn Source,
    var: &'static str,
    default: u64,
) -> Result<Duration, ConfigError> {
    number(src, var, default, 1).map(Duration::from_millis)
}

fn truncate(raw: &str) -> String {
    raw.chars().take(32).collect()
}

/// Splits a comma-separated secret list; empty entries are an error (never echo the values).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var` when an entry is empty.
pub fn parse_secret_list(var: &'static str, raw: &str) -> Result<Vec<Secret<String>>, ConfigError> {
    let parts: Vec<&str> = raw.split(',').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(var, "empty entry in comma-separated list"));
    }
    Ok(parts
        .into_iter()
        .map(|p| Secret::new(p.to_string()))
        .collect())
}

/// Checks that `url` (the value of `var`) starts with `secure` (`https://`, `wss://`), or with
/// `plain` (`http://`, `ws://`) only for a loopback host — a local fake or sidecar. Anything
/// that carries a credential or call audio never leaves the machine in clear by a typo.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var`.
pub fn secure_origin(
    var: &'static str,
    url: &str,
    secure: &'static str,
    plain: &'static str,
) -> Result<(), ConfigError> {
    if url.starts_with(secure) {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix(plain) else {
        return Err(invalid(var, format!("must start with {secure}")));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(invalid(
            var,
            format!("must start with {secure} ({plain} only for a loopback host)"),
        ))
    }
}
