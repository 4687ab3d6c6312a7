//! Opaque secrets (session and refresh tokens): 256 random bits, handed out once, stored
//! only as their SHA-256, compared in constant time.
//!
//! `seal`/`unseal` keep a secret retrievable by whoever holds another token and by nobody
//! else: AES-256-GCM under a key derived from that token, which the database never stores (it
//! keeps only the token's SHA-256, a different derivation). The refresh grace uses it to hand
//! a retried refresh the successor it already issued.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{CoreError, CoreResult};

/// The longest access token (a JWT) accepted; ours are under 1 KiB.
pub const ACCESS_TOKEN_MAX_BYTES: usize = 8 * 1024;
/// The longest session or refresh token accepted; ours are 43 characters.
pub const OPAQUE_TOKEN_MAX_BYTES: usize = 256;

/// A presented token, bounded before it is hashed or looked up.
pub(crate) fn check(field: &'static str, token: &str, max_bytes: usize) -> CoreResult<()> {
    if token.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    if token.len() > max_bytes {
        return Err(CoreError::invalid(field, format!("must be at most {max_bytes} bytes")));
    }
    Ok(())
}

/// A fresh token and the hash to store for it.
pub(crate) fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&token);
    (token, hash)
}

/// The hex SHA-256 of a token: what the database keeps and looks up by. Tokens carry 256
/// bits of entropy, so a fast hash is enough (no password stretching needed).
pub(crate) fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// The raw SHA-256, for in-memory cache keys.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two stored hashes.
pub(crate) fn hashes_match(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The sealing key of `token`: SHA-256 over a label and the token, so it differs from the
/// stored hash (plain SHA-256 of the token).
fn sealing_key(token: &str) -> CoreResult<LessSafeKey> {
    let material = Sha256::new().chain_update(b"identity.v1 sealed by token\0").chain_update(token).finalize();
    let key = UnboundKey::new(&AES_256_GCM, &material).map_err(|_| CoreError::internal("sealing key"))?;
    Ok(LessSafeKey::new(key))
}

/// `secret` encrypted for the holder of `token`, bound to `context` (e.g. a row id).
pub(crate) fn seal(token: &str, context: &str, secret: &str) -> CoreResult<String> {
    let key = sealing_key(token)?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let mut sealed = secret.as_bytes().to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut sealed)
        .map_err(|_| CoreError::internal("sealing failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(URL_SAFE_NO_PAD.encode(out))
}

/// What `seal` sealed, if `token` and `context` are the ones it was sealed with.
pub(crate) fn unseal(token: &str, context: &str, sealed: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut in_out = ciphertext.to_vec();
    let plain = sealing_key(token).ok()?.open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out).ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

/// A random, time-ordered identifier.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_stored_as_their_hash() {
        let (token, stored) = generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), 32);
        assert_eq!(stored.len(), 64);
        assert_ne!(token, stored);
        assert!(hashes_match(&stored, &hash(&token)));
        assert!(!hashes_match(&stored, &hash("other")));
        assert_ne!(generate().0, token);
    }

    #[test]
    fn only_the_token_and_context_it_was_sealed_with_unseal_a_secret() {
        let (token, stored) = generate();
        let sealed = seal(&token, "row-1", "the successor").unwrap();
        assert!(!sealed.contains("successor"));
        assert_eq!(unseal(&token, "row-1", &sealed).as_deref(), Some("the successor"));
        assert_eq!(unseal(&stored, "row-1", &sealed), None, "the stored hash must not unseal it");
        assert_eq!(unseal(&token, "row-2", &sealed), None);
        assert_eq!(unseal(&token, "row-1", "garbage"), None);
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
