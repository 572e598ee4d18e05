//! Passwords, bearer tokens and the failed-login limiter.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Hashes a password for the config file (argon2id, PHC string).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Checks `password` against a PHC hash. A malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A hash that no password matches, verified for unknown users so that a
/// login for a user who does not exist takes as long as one who does.
pub fn decoy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$o9Qk0cb1nq8D3qZ0ecJ0vQ4Hn7x1n2UeQ4gkI2Xo1zY"
}

/// A new bearer token: 32 random bytes, hex, with a recognisable prefix so
/// that secret scanners can find leaked ones.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("ajar_{}", hex::encode(bytes))
}

/// What the store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Counts failed logins per user name and per address in a sliding window;
/// past the limit, further attempts are refused without checking the
/// password until the window has moved on.
#[derive(Debug)]
pub struct LoginLimiter {
    window: Duration,
    per_user: usize,
    per_addr: usize,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(Duration::from_secs(300), 5, 20)
    }
}

impl LoginLimiter {
    pub fn new(window: Duration, per_user: usize, per_addr: usize) -> Self {
        Self { window, per_user, per_addr, failures: Mutex::new(HashMap::new()) }
    }

    fn keys(user: &str, addr: IpAddr) -> [String; 2] {
        [format!("user:{user}"), format!("addr:{addr}")]
    }

    /// `Err(seconds)` until the next attempt is allowed.
    pub fn check(&self, user: &str, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let [user_key, addr_key] = Self::keys(user, addr);
        let mut wait = 0u64;
        for (key, limit) in [(user_key, self.per_user), (addr_key, self.per_addr)] {
            if let Some(times) = failures.get_mut(&key) {
                times.retain(|t| now.duration_since(*t) < self.window);
                if times.len() >= limit {
                    let oldest = times.iter().min().copied().unwrap_or(now);
                    let left = self.window.saturating_sub(now.duration_since(oldest));
                    wait = wait.max(left.as_secs().max(1));
                }
            }
        }
        if wait > 0 {
            Err(wait)
        } else {
            Ok(())
        }
    }

    pub fn record_failure(&self, user: &str, addr: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Bound memory under a flood of distinct names: forget idle entries.
        if failures.len() > 10_000 {
            failures.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < self.window));
        }
        for key in Self::keys(user, addr) {
            failures.entry(key).or_default().push(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("anything", decoy_hash()));
        assert!(!verify_password("anything", "not a hash"));
    }

    #[test]
    fn limiter_blocks_after_limit_and_recovers() {
        let limiter = LoginLimiter::new(Duration::from_secs(60), 3, 100);
        let addr: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("bob", addr, t0).is_ok());
            limiter.record_failure("bob", addr, t0);
        }
        assert!(limiter.check("bob", addr, t0).is_err());
        assert!(limiter.check("carol", addr, t0).is_ok());
        assert!(limiter.check("bob", addr, t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("ajar_") && a.len() == 69);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
