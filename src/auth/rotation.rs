//! Secret lists and their rotation: a [`JwtVerifier`] rebuilt only when the value behind
//! its handle changes.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{AuthError, Clock, JwtVerifier};
use crate::secret::Secret;
use crate::secrets::SecretHandle;

/// Splits a secret list value (`new,old`) into its entries; empty entries are skipped.
pub fn secret_list(value: &Secret<String>) -> Vec<Secret<String>> {
    value
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Secret::new(s.to_string()))
        .collect()
}

/// A [`JwtVerifier`] that follows its secret list: rebuilt when the value behind the handle
/// changes (rotation without restart), reused otherwise.
pub struct RotatingVerifier {
    secret: SecretHandle,
    leeway: Duration,
    clock: Clock,
    built: Mutex<Option<BuiltVerifier>>,
}

/// A verifier and the secret value it was built from.
type BuiltVerifier = (Arc<Secret<String>>, Arc<JwtVerifier>);

impl std::fmt::Debug for RotatingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingVerifier")
            .field("secret", &self.secret)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl RotatingVerifier {
    /// A verifier for the comma-separated secret list behind `secret`.
    pub fn new(secret: SecretHandle, leeway: Duration, clock: Clock) -> Self {
        Self {
            secret,
            leeway,
            clock,
            built: Mutex::new(None),
        }
    }

    /// The verifier for the current secret list.
    ///
    /// # Errors
    /// [`AuthError::SecretUnavailable`] when the secret has no value or an empty list.
    pub fn verifier(&self) -> Result<Arc<JwtVerifier>, AuthError> {
        let current = self.secret.current().ok_or(AuthError::SecretUnavailable)?;
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((value, verifier)) = built.as_ref() {
            if Arc::ptr_eq(value, &current) {
                return Ok(Arc::clone(verifier));
            }
        }
        let list = secret_list(&current);
        if list.is_empty() {
            return Err(AuthError::SecretUnavailable);
        }
        let verifier = Arc::new(JwtVerifier::new(&list, self.leeway, self.clock));
        *built = Some((current, Arc::clone(&verifier)));
        Ok(verifier)
    }
}
