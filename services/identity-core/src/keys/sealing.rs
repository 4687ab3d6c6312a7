//! Private signing keys at rest: AES-256-GCM under a key-encryption key (KEK) that the database
//! never holds, so a dump of the database hands over no private key.
//!
//! Each sealed key is `base64(nonce ‖ ciphertext ‖ tag)` with a random 96-bit nonce, its `kid`
//! as associated data (a sealed key copied onto another row does not open), and the KEK's id
//! stored beside it: a wrong KEK is named as such, not mistaken for a damaged row. The KEK
//! comes from `IDENTITY_KEY_ENCRYPTION_KEY` (or `_FILE`); on SQLite with none set, one is
//! generated beside the database file (mode 0600). Earlier KEKs
//! (`IDENTITY_KEY_ENCRYPTION_PREVIOUS_KEYS`) still open keys; new keys are sealed under the
//! current one, and `keys rewrap` moves the old ones to it.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{
    error::{CoreError, CoreResult},
    settings::Secret,
    store,
};

/// One key-encryption key and its public id (a hash, which reveals nothing of it).
struct Kek {
    id: String,
    key: LessSafeKey,
}

impl Kek {
    fn new(bytes: &[u8; 32]) -> CoreResult<Self> {
        let digest = Sha256::new().chain_update(b"identity.v1 kek id\0").chain_update(bytes).finalize();
        let id: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CoreError::internal("key-encryption key"))?;
        Ok(Kek { id, key: LessSafeKey::new(key) })
    }
}

/// The KEKs this process holds: the current one seals, every one opens.
pub struct Sealing {
    current: Kek,
    previous: Vec<Kek>,
    /// Where the KEK was generated, when it was (the service warns once).
    pub generated: Option<PathBuf>,
}

/// A private key as stored: sealed text and the id of the KEK that sealed it.
pub struct Sealed {
    pub text: String,
    pub kek_id: String,
}

impl Sealing {
    /// The KEK of the settings; else, on a SQLite file, the one beside it (generated on first
    /// use); else (an in-memory SQLite database) a fresh one for this process. PostgreSQL
    /// without a KEK is refused: replicas must share it, and none could be generated for all.
    pub fn resolve(current: Option<&Secret>, previous: &[Secret], database_url: &str) -> CoreResult<Self> {
        let previous = previous
            .iter()
            .map(|secret| parse(secret.expose()).and_then(|bytes| Kek::new(&bytes)))
            .collect::<CoreResult<Vec<_>>>()?;
        if let Some(secret) = current {
            let current = Kek::new(&parse(secret.expose())?)?;
            return Ok(Sealing { current, previous, generated: None });
        }
        if store::is_postgres(database_url) {
            return Err(CoreError::KeyEncryption(
                "IDENTITY_KEY_ENCRYPTION_KEY (or _FILE) is required on PostgreSQL: 32 random bytes, base64 \
                 (`openssl rand -base64 32`), the same on every replica"
                    .into(),
            ));
        }
        let Some(path) = kek_file(database_url) else {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            return Ok(Sealing { current: Kek::new(&bytes)?, previous, generated: None });
        };
        let (bytes, generated) = read_or_generate(&path)?;
        Ok(Sealing { current: Kek::new(&bytes)?, previous, generated: generated.then_some(path) })
    }

    /// A KEK for tests.
    #[cfg(test)]
    pub(crate) fn of(bytes: [u8; 32]) -> Self {
        Sealing { current: Kek::new(&bytes).unwrap_or_else(|_| unreachable!()), previous: Vec::new(), generated: None }
    }

    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plaintext` (a PEM private key) for row `kid` under the current KEK.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> CoreResult<Sealed> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut in_out = plaintext.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(kid.as_bytes()), &mut in_out)
            .map_err(|_| CoreError::internal("sealing a private key"))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&in_out);
        Ok(Sealed { text: URL_SAFE_NO_PAD.encode(stored), kek_id: self.current.id.clone() })
    }

    /// Opens the sealed key of row `kid`. A KEK this process does not hold, or one that does
    /// not open the key, is a `KeyEncryption` error naming both ids.
    pub fn open(&self, kid: &str, sealed: &str, kek_id: &str) -> CoreResult<Vec<u8>> {
        let kek =
            std::iter::once(&self.current).chain(&self.previous).find(|kek| kek.id == kek_id).ok_or_else(|| {
                CoreError::KeyEncryption(format!(
                    "IDENTITY_KEY_ENCRYPTION_KEY: signing key {kid} is encrypted under key-encryption key {kek_id}, \
                 but this process holds {} (IDENTITY_KEY_ENCRYPTION_KEY{}): the wrong key?",
                    self.ids().join(", "),
                    if self.previous.is_empty() { "" } else { " and _PREVIOUS_KEYS" }
                ))
            })?;
        let damaged = || {
            CoreError::KeyEncryption(format!(
                "IDENTITY_KEY_ENCRYPTION_KEY: signing key {kid} does not decrypt under key-encryption key {kek_id}: \
                 the row is damaged"
            ))
        };
        let mut stored = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| damaged())?;
        if stored.len() < NONCE_LEN {
            return Err(damaged());
        }
        let mut in_out = stored.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&stored).map_err(|_| damaged())?;
        let plaintext = kek.key.open_in_place(nonce, Aad::from(kid.as_bytes()), &mut in_out).map_err(|_| damaged())?;
        Ok(plaintext.to_vec())
    }

    fn ids(&self) -> Vec<String> {
        std::iter::once(&self.current).chain(&self.previous).map(|kek| kek.id.clone()).collect()
    }
}

/// A KEK as configured: 32 bytes in base64 (standard or URL-safe, padded or not) or hex.
fn parse(text: &str) -> CoreResult<[u8; 32]> {
    let text = text.trim();
    let decoded = if text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        (0..32).map(|index| u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).unwrap_or(0)).collect()
    } else {
        let unpadded = text.trim_end_matches('=');
        STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(unpadded))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(unpadded))
            .unwrap_or_default()
    };
    <[u8; 32]>::try_from(decoded.as_slice()).map_err(|_| {
        CoreError::KeyEncryption(
            "IDENTITY_KEY_ENCRYPTION_KEY: expected 32 bytes in base64 (`openssl rand -base64 32`) or 64 hex digits"
                .into(),
        )
    })
}

/// The KEK file of a SQLite database file: `<dir>/<stem>.kek` (`data/identity.kek` for the
/// default database). None for an in-memory database.
pub(crate) fn kek_file(database_url: &str) -> Option<PathBuf> {
    kek_beside(Path::new(store::sqlite_file(database_url)?))
}

/// The KEK file that belongs with the database file `file`.
pub(crate) fn kek_beside(file: &Path) -> Option<PathBuf> {
    let stem = file.file_stem()?.to_string_lossy().into_owned();
    Some(file.with_file_name(format!("{stem}.kek")))
}

fn read_or_generate(path: &Path) -> CoreResult<([u8; 32], bool)> {
    let unreadable = |error: std::io::Error| {
        CoreError::KeyEncryption(format!(
            "IDENTITY_KEY_ENCRYPTION_KEY: cannot read the generated key-encryption key {}: {error}",
            path.display()
        ))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((parse(&text)?, false)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                store::owner_only_dirs(dir).map_err(unreadable)?;
            }
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            match store::owner_only_file(path) {
                Ok(()) => {
                    std::fs::write(path, format!("{}\n", STANDARD.encode(bytes))).map_err(unreadable)?;
                    Ok((bytes, true))
                }
                // Another process made it first: use theirs.
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    read_or_generate_existing(path).map(|bytes| (bytes, false))
                }
                Err(error) => Err(unreadable(error)),
            }
        }
        Err(error) => Err(unreadable(error)),
    }
}

/// A KEK file another process is writing: read once it holds a key (it writes it at once).
fn read_or_generate_existing(path: &Path) -> CoreResult<[u8; 32]> {
    for _ in 0..50 {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return parse(&text);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(CoreError::KeyEncryption(format!(
        "IDENTITY_KEY_ENCRYPTION_KEY: the generated key-encryption key {} is empty",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_under_its_kek_and_kid_only() {
        let sealing = Sealing::of([7; 32]);
        let sealed = sealing.seal("kid-1", b"-----BEGIN PRIVATE KEY-----").unwrap();
        assert!(!sealed.text.contains("PRIVATE"));
        assert_eq!(sealing.open("kid-1", &sealed.text, &sealed.kek_id).unwrap(), b"-----BEGIN PRIVATE KEY-----");
        assert!(sealing.open("kid-2", &sealed.text, &sealed.kek_id).is_err(), "moved to another row");
        let other = Sealing::of([8; 32]);
        let error = other.open("kid-1", &sealed.text, &sealed.kek_id).unwrap_err().to_string();
        assert!(error.contains(&sealed.kek_id) && error.contains(other.current_id()), "{error}");
    }

    #[test]
    fn previous_keks_open_and_the_current_one_seals() {
        let old = Sealing::of([1; 32]);
        let sealed = old.seal("k", b"pem").unwrap();
        let both = Sealing::resolve(
            Some(&Secret::new(STANDARD.encode([2u8; 32]))),
            &[Secret::new(STANDARD.encode([1u8; 32]))],
            "sqlite::memory:",
        )
        .unwrap();
        assert_eq!(both.open("k", &sealed.text, &sealed.kek_id).unwrap(), b"pem");
        assert_ne!(both.seal("k", b"pem").unwrap().kek_id, sealed.kek_id);
    }

    #[test]
    fn keks_parse_from_base64_or_hex_and_nothing_else() {
        assert_eq!(parse(&STANDARD.encode([9u8; 32])).unwrap(), [9; 32]);
        assert_eq!(parse(&URL_SAFE_NO_PAD.encode([9u8; 32])).unwrap(), [9; 32]);
        assert_eq!(parse(&"0a".repeat(32)).unwrap(), [10; 32]);
        assert!(parse("short").is_err());
        assert!(parse(&STANDARD.encode([9u8; 31])).is_err());
    }

    #[test]
    fn postgres_without_a_kek_is_refused_and_sqlite_gets_one_beside_the_file() {
        let error = Sealing::resolve(None, &[], "postgres://x@y/z").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("IDENTITY_KEY_ENCRYPTION_KEY"), "{error}");
        let dir = tempfile_dir();
        let url = format!("sqlite://{}/identity.db?mode=rwc", dir.display());
        let first = Sealing::resolve(None, &[], &url).unwrap();
        assert_eq!(first.generated.as_deref(), Some(dir.join("identity.kek").as_path()));
        let again = Sealing::resolve(None, &[], &url).unwrap();
        assert!(again.generated.is_none());
        assert_eq!(first.current_id(), again.current_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("identity.kek")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kek-test-{}-{}", std::process::id(), rand::rng().next_u32()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
