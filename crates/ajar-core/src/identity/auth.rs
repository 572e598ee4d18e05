//! Passwords (argon2id, checked in reused work areas) and bearer tokens.

use std::sync::Mutex;

use argon2::password_hash::{self, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
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

/// The most memory a password check may take (argon2's `m`, in KiB): a
/// hash asking for more is never checked.
const MAX_HASH_MEMORY_KIB: usize = 1024 * 1024;

/// Checks `password` against a PHC hash using `memory` for argon2's work
/// area, grown to the size the hash asks for and kept by the caller for the
/// next check. Reusing it is what bounds the server's memory under a burst
/// of sign-ins: allocating ~19 MiB anew per check made glibc keep the freed
/// blocks (200 parallel guesses left the server at ~400 MiB with only two
/// checks at a time). A malformed hash never matches.
pub fn verify_password_in(password: &str, phc: &str, memory: &mut Vec<argon2::Block>) -> bool {
    use argon2::{Algorithm, Params, Version};
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Some(expected), Some(salt)) = (hash.hash, hash.salt) else { return false };
    let (Ok(params), Ok(algorithm)) = (Params::try_from(&hash), Algorithm::try_from(hash.algorithm)) else {
        return false;
    };
    let Ok(version) = hash.version.map(Version::try_from).transpose() else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let blocks = params.block_count();
    if blocks > MAX_HASH_MEMORY_KIB {
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version.unwrap_or_default(), params);
    argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks]).is_ok()
        && password_hash::Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// Work areas for password checks, one per check that may run at once.
#[derive(Debug, Default)]
pub struct HashMemory(Mutex<Vec<Vec<argon2::Block>>>);

impl HashMemory {
    /// A work area to check with; give it back with [`HashMemory::put`].
    pub fn take(&self) -> Vec<argon2::Block> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default()
    }

    pub fn put(&self, memory: Vec<argon2::Block>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(memory);
    }
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
    fn checking_in_reused_memory_agrees_with_the_library() {
        let mut memory = Vec::new();
        let hash = hash_password("correct horse").expect("hash");
        assert!(verify_password_in("correct horse", &hash, &mut memory));
        let blocks = memory.len();
        assert_eq!(blocks, 19 * 1024, "argon2id's default m = 19 MiB of 1 KiB blocks");
        assert!(!verify_password_in("correct horsf", &hash, &mut memory));
        assert!(!verify_password_in("anything", decoy_hash(), &mut memory));
        assert!(!verify_password_in("anything", "not a hash", &mut memory));
        assert_eq!(memory.len(), blocks, "the work area is reused, not grown");
        // Other parameters and argon2i/argon2d hashes check the same way.
        let params = argon2::Params::new(8192, 3, 1, None).expect("params");
        let salt = SaltString::encode_b64(b"sixteen byte slt").expect("salt");
        for algorithm in [argon2::Algorithm::Argon2i, argon2::Algorithm::Argon2d] {
            let phc = Argon2::new(algorithm, argon2::Version::V0x13, params.clone())
                .hash_password(b"pw", &salt)
                .expect("hash")
                .to_string();
            assert!(verify_password_in("pw", &phc, &mut memory), "{phc}");
            assert!(!verify_password_in("pW", &phc, &mut memory), "{phc}");
        }
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
