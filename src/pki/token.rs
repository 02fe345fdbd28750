//! Kubeadm bootstrap tokens: `[a-z0-9]{6}.[a-z0-9]{16}`, the first part public (the token id),
//! the second the secret.

use ring::rand::{SecureRandom, SystemRandom};

use super::PkiError;

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Whether `s` is a well-formed bootstrap token (the one check is `spec::Token::parse`).
pub fn is_valid(s: &str) -> bool {
    crate::spec::Token::is_valid(s)
}

/// A new token from the operating system's random source, every character uniform over
/// `[a-z0-9]` (bytes of 252 and above are rejected, so there is no modulo bias).
pub(super) fn generate() -> Result<String, PkiError> {
    let rng = SystemRandom::new();
    let mut chars = Vec::with_capacity(22);
    let mut buf = [0u8; 64];
    while chars.len() < 22 {
        rng.fill(&mut buf).map_err(|_| PkiError::Crypto {
            what: "the bootstrap token",
            reason: "the operating system's random source failed".into(),
        })?;
        for &b in &buf {
            if b < 252 && chars.len() < 22 {
                chars.push(ALPHABET[usize::from(b % 36)]);
            }
        }
    }
    chars.insert(6, b'.');
    Ok(String::from_utf8(chars).expect("ASCII"))
}
