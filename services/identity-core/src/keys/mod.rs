//! Signing keys and access tokens. Keys live in the database, their private halves sealed
//! under a key-encryption key (`sealing`), and move through a lifecycle (`lifecycle`): each is
//! published before it signs, signs for the rotation period, and keeps verifying until the
//! last token it signed has expired. Every replica keeps the set in memory and switches keys
//! at the same instant of the database's clock.
//!
//! Verification pins the algorithm to the key named by `kid`: a token whose header names any
//! other algorithm (`none`, HS256 against an RSA key, ...) is refused before any signature
//! check. Verified claims are cached by the token's SHA-256 until `exp`, so a token seen
//! before costs one hash and a map lookup, not a signature check.

pub mod admin;
mod lifecycle;
pub mod sealing;

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use aws_lc_rs::{
    encoding::AsDer,
    rand::SystemRandom,
    rsa::{KeyPair as RsaKeyPair, KeySize},
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode, errors::ErrorKind, jwk::Jwk,
};
use moka::sync::Cache;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    blocking::BlockingPool,
    clock,
    entities::signing_keys,
    error::{CoreError, CoreResult, DeadReason},
    settings::{JwtAlg, Settings},
    tokens,
};
use lifecycle::Intent;
pub use lifecycle::{KeyInfo, KeyState, format_ms};
use sealing::Sealing;

/// The Hasura claims namespace (https://hasura.io/docs/latest/auth/authentication/jwt/).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HasuraClaims {
    #[serde(rename = "x-hasura-allowed-roles")]
    pub allowed_roles: Vec<String>,
    #[serde(rename = "x-hasura-default-role")]
    pub default_role: String,
    #[serde(rename = "x-hasura-user-id")]
    pub user_id: String,
}

/// The claims of an access token (docs/identity-service.md, "Tokens and sessions").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub sid: String,
    pub username: String,
    pub email: String,
    pub role: String,
    #[serde(rename = "https://hasura.io/jwt/claims")]
    pub hasura: HasuraClaims,
}

impl Claims {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// One public key of the JWK set (RFC 7517); members that do not apply are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub n: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub e: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crv: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub x: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub y: String,
}

/// A key that can sign, and when (Unix ms, the database's clock).
struct Signer {
    kid: String,
    alg: JwtAlg,
    key: Arc<EncodingKey>,
    activates_at: i64,
    retires_at: Option<i64>,
}

struct Verifier {
    algorithm: Algorithm,
    key: DecodingKey,
    /// Unix ms (the database's clock) from which it no longer verifies; None: no end yet.
    until: Option<i64>,
}

/// The keys as last read from the database, with what was made of them.
struct KeySet {
    generation: i64,
    rows: Vec<signing_keys::Model>,
    /// Oldest activation first. Under HS256, the secret alone.
    signers: Vec<Signer>,
    verifiers: HashMap<String, Verifier>,
    public: Vec<(PublicJwk, Option<i64>)>,
}

impl KeySet {
    /// The key that signs at `now`: the newest activated one that has not retired.
    fn signer(&self, now: i64) -> Option<&Signer> {
        let active = |signer: &&Signer| signer.activates_at <= now;
        self.signers
            .iter()
            .rev()
            .filter(active)
            .find(|signer| signer.retires_at.is_none_or(|retires_at| retires_at > now))
            .or_else(|| self.signers.iter().rev().find(active))
            .or_else(|| self.signers.first())
    }
}

/// The current key's age and when the next one signs: what the metrics show.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KeyClock {
    /// Since the current key started signing.
    pub current_age: Duration,
    /// Until the next key signs: the one published, or else the next scheduled rotation
    /// (None under HS256, which does not rotate by itself).
    pub until_next: Option<Duration>,
}

/// Signing and verifying, with the stored keys loaded: each replica's in-memory view of the
/// key set, re-read when the set changes (an event, the once-a-second poll, a token naming a
/// key it does not know).
pub struct Keys {
    db: DatabaseConnection,
    timing: lifecycle::Timing,
    /// HS256 secrets, the signing one first: (kid, secret).
    secrets: Vec<(String, Vec<u8>)>,
    sealing: Sealing,
    set: RwLock<Arc<KeySet>>,
    /// The database's clock minus ours, in ms: states change at one instant on every replica.
    offset: AtomicI64,
    /// When the set was last re-read for an unknown key id (ours, Unix ms).
    reloaded_for_unknown: tokio::sync::Mutex<i64>,
    validation: HashMap<Algorithm, Validation>,
    verified: Cache<[u8; 32], Arc<Claims>>,
    pool: BlockingPool,
}

/// How often, at most, a token naming an unknown key re-reads the key set.
const UNKNOWN_KID_RELOAD_MS: i64 = 200;
/// Attempts at a compare-and-set change before giving up (each loses only to another change).
const ATTEMPTS: usize = 5;

// === impl Keys ===

impl Keys {
    /// Loads the keys: seals any still stored in the clear, makes sure the deployment has a
    /// current key of the configured algorithm (creating one, or rotating to a new algorithm),
    /// and opens the keys that sign. A key that does not open under the KEK is an error.
    pub async fn load(
        db: &DatabaseConnection,
        settings: &Settings,
        pool: BlockingPool,
        sealing: Sealing,
    ) -> CoreResult<Self> {
        let sealed = lifecycle::seal_plaintext(db, &sealing).await?;
        if !sealed.is_empty() {
            tracing::info!(kids = ?sealed, kek = sealing.current_id(), "signing keys stored in the clear are now encrypted");
        }
        let mut secrets = Vec::new();
        if settings.jwt_alg == JwtAlg::Hs256
            && let Some(secret) = &settings.jwt_secret
        {
            secrets.push(secret.expose().as_bytes().to_vec());
        }
        secrets.extend(settings.keys.previous_secrets.iter().map(|secret| secret.expose().as_bytes().to_vec()));
        let mut validation = HashMap::new();
        for algorithm in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256] {
            let mut v = Validation::new(algorithm);
            v.set_issuer(&[&settings.issuer]);
            v.set_audience(&[&settings.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v.leeway = 0;
            validation.insert(algorithm, v);
        }
        let empty = KeySet {
            generation: i64::MIN,
            rows: Vec::new(),
            signers: Vec::new(),
            verifiers: HashMap::new(),
            public: Vec::new(),
        };
        let keys = Keys {
            db: db.clone(),
            timing: lifecycle::Timing::of(settings),
            secrets: secrets.into_iter().map(|secret| (hmac_kid(&secret), secret)).collect(),
            sealing,
            set: RwLock::new(Arc::new(empty)),
            offset: AtomicI64::new(0),
            reloaded_for_unknown: tokio::sync::Mutex::new(0),
            validation,
            verified: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(settings.access_ttl.max(Duration::from_secs(1)))
                .build(),
            pool,
        };
        keys.change(lifecycle::plan_start).await?;
        keys.reload(true).await?;
        Ok(keys)
    }

    /// The public keys relying parties need now: next, current and retired ones. Symmetric
    /// (HS256) keys are never shown.
    pub fn jwks(&self) -> Vec<PublicJwk> {
        let now = self.now();
        let set = self.current_set();
        set.public
            .iter()
            .filter(|(_, until)| until.is_none_or(|until| now < until))
            .map(|(jwk, _)| jwk.clone())
            .collect()
    }

    /// Every stored key, with its state now.
    pub fn list(&self) -> Vec<KeyInfo> {
        let now = self.now();
        self.current_set().rows.iter().map(|row| lifecycle::info(row, now, &self.timing)).collect()
    }

    pub fn clock(&self) -> KeyClock {
        let now = self.now();
        let set = self.current_set();
        let Some(current) = set.signer(now) else { return KeyClock::default() };
        // The HS256 secret has no activation on record: age zero.
        let age = if current.activates_at == i64::MIN { 0 } else { now.saturating_sub(current.activates_at) };
        let current_age = Duration::from_millis(u64::try_from(age).unwrap_or(0));
        let next =
            set.signers.iter().filter(|signer| signer.activates_at > now).map(|signer| signer.activates_at).min();
        let until_next = match (next, self.timing.alg) {
            (Some(at), _) => Some(at),
            (None, JwtAlg::Hs256) => None,
            (None, _) => Some(current.activates_at.saturating_add(self.timing.period_ms).max(now)),
        };
        KeyClock {
            current_age,
            until_next: until_next.map(|at| Duration::from_millis(u64::try_from(at - now).unwrap_or(0))),
        }
    }

    /// The algorithm new tokens are signed with now (the configured one, except while a
    /// replica of another configuration's key still signs during a rolling restart).
    pub fn algorithm(&self) -> JwtAlg {
        self.current_set().signer(self.now()).map_or(self.timing.alg, |signer| signer.alg)
    }

    /// Now on the database's clock, Unix ms.
    fn now(&self) -> i64 {
        clock::now_millis().saturating_add(self.offset.load(Ordering::Relaxed))
    }

    fn current_set(&self) -> Arc<KeySet> {
        Arc::clone(&self.set.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Signs with the key current at this instant of the database's clock (RSA on the
    /// blocking pool: it costs milliseconds).
    pub async fn sign(&self, claims: Claims) -> CoreResult<String> {
        let set = self.current_set();
        let signer = set.signer(self.now()).ok_or_else(|| CoreError::internal("no signing key"))?;
        let algorithm = signer.alg.algorithm();
        let mut header = Header::new(algorithm);
        header.kid = Some(signer.kid.clone());
        let key = Arc::clone(&signer.key);
        let token = if algorithm == Algorithm::RS256 {
            self.pool.run(move || encode(&header, &claims, &key)).await?
        } else {
            encode(&header, &claims, &key)
        };
        token.map_err(CoreError::internal)
    }

    /// Verifies signature, algorithm, `iss`, `aud` and `exp`, with a key that still verifies.
    /// Says nothing of the session. A key id this replica does not know makes it re-read the
    /// key set (at most every 200 ms): another replica may have just made that key.
    pub async fn verify(&self, token: &str) -> CoreResult<Arc<Claims>> {
        match self.check(token) {
            Err(Refusal::UnknownKey) => {
                // Callers arriving together wait for one re-read, then look again.
                let mut last = self.reloaded_for_unknown.lock().await;
                let now = clock::now_millis();
                if now - *last >= UNKNOWN_KID_RELOAD_MS {
                    *last = now;
                    self.reload(false).await?;
                }
                drop(last);
                self.check(token).map_err(Refusal::into_error)
            }
            other => other.map_err(Refusal::into_error),
        }
    }

    fn check(&self, token: &str) -> Result<Arc<Claims>, Refusal> {
        let now = self.now();
        let fingerprint = tokens::digest(token);
        if let Some(claims) = self.verified.get(&fingerprint) {
            return if claims.exp > now / 1000 {
                Ok(claims)
            } else {
                Err(Refusal::Core(CoreError::SessionDead(DeadReason::TokenExpired)))
            };
        }
        let invalid = || Refusal::Core(CoreError::SessionDead(DeadReason::InvalidToken));
        let header = decode_header(token).map_err(|_| invalid())?;
        let kid = header.kid.as_deref().ok_or_else(invalid)?;
        let set = self.current_set();
        let verifier = set.verifiers.get(kid).ok_or(Refusal::UnknownKey)?;
        if header.alg != verifier.algorithm || verifier.until.is_some_and(|until| until <= now) {
            return Err(invalid());
        }
        let validation = self
            .validation
            .get(&verifier.algorithm)
            .ok_or_else(|| Refusal::Core(CoreError::internal("no validation for algorithm")))?;
        let data = decode::<Claims>(token, &verifier.key, validation).map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => Refusal::Core(CoreError::SessionDead(DeadReason::TokenExpired)),
            _ => invalid(),
        })?;
        let claims = Arc::new(data.claims);
        self.verified.insert(fingerprint, Arc::clone(&claims));
        Ok(claims)
    }

    /// Re-reads the key set if it changed (or `force`). Keys already open are kept, not
    /// opened again; a revoked one empties the verified-token cache. True if it was re-read.
    pub async fn reload(&self, force: bool) -> CoreResult<bool> {
        let before = clock::now_millis();
        let (generation, db_now) = lifecycle::read_counter(&self.db).await?;
        let after = clock::now_millis();
        self.offset.store(db_now - (before + after) / 2, Ordering::Relaxed);
        let previous = self.current_set();
        if !force && previous.generation == generation {
            return Ok(false);
        }
        // Read after the counter: a change landing in between shows in the rows, and the next
        // poll (the counter moved on) reads them again.
        let rows = lifecycle::read_rows(&self.db).await?;
        // Strict on the first load (a key that does not open stops the start); later, a key
        // that does not open is logged and the others keep signing.
        let first = previous.generation == i64::MIN;
        let set = self.build(generation, rows, &previous, first)?;
        let revoked = previous.verifiers.keys().any(|kid| !set.verifiers.contains_key(kid));
        *self.set.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(set);
        if revoked {
            self.verified.invalidate_all();
        }
        Ok(true)
    }

    /// `strict` (at start): a signing key that does not open is an error; later, it is
    /// logged and the keys that do open keep signing.
    fn build(
        &self,
        generation: i64,
        rows: Vec<signing_keys::Model>,
        previous: &KeySet,
        strict: bool,
    ) -> CoreResult<KeySet> {
        let now = self.now();
        let mut signers = Vec::new();
        let mut verifiers = HashMap::new();
        let mut public = Vec::new();
        for row in &rows {
            if row.revoked_at.is_some() || row.alg == JwtAlg::Hs256.name() {
                continue;
            }
            let until = lifecycle::verifies_until(row, &self.timing);
            if until.is_some_and(|until| until <= now) {
                continue;
            }
            let (alg, algorithm) = lifecycle::algorithm(&row.alg)?;
            let jwk: PublicJwk = serde_json::from_str(&row.public_jwk).map_err(CoreError::internal)?;
            let full: Jwk = serde_json::from_str(&row.public_jwk).map_err(CoreError::internal)?;
            let key = DecodingKey::from_jwk(&full).map_err(CoreError::internal)?;
            verifiers.insert(row.kid.clone(), Verifier { algorithm, key, until });
            public.push((jwk, until));
            let retired = row.retires_at.is_some_and(|retires_at| retires_at <= now);
            if retired || self.timing.alg == JwtAlg::Hs256 {
                continue;
            }
            let opened = match previous.signers.iter().find(|signer| signer.kid == row.kid) {
                Some(known) => Ok(Arc::clone(&known.key)),
                None => self.open(row, alg).map(Arc::new),
            };
            match opened {
                Ok(key) => signers.push(Signer {
                    kid: row.kid.clone(),
                    alg,
                    key,
                    activates_at: row.activates_at,
                    retires_at: row.retires_at,
                }),
                Err(error) if strict => return Err(error),
                Err(error) => {
                    tracing::error!(%error, kid = %row.kid, "a signing key does not open: the others keep signing")
                }
            }
        }
        for (index, (kid, secret)) in self.secrets.iter().enumerate() {
            verifiers.insert(
                kid.clone(),
                Verifier { algorithm: Algorithm::HS256, key: DecodingKey::from_secret(secret), until: None },
            );
            if index == 0 && self.timing.alg == JwtAlg::Hs256 {
                signers = vec![Signer {
                    kid: kid.clone(),
                    alg: JwtAlg::Hs256,
                    key: Arc::new(EncodingKey::from_secret(secret)),
                    activates_at: i64::MIN,
                    retires_at: None,
                }];
            }
        }
        if signers.is_empty() {
            return Err(CoreError::KeyEncryption(
                "IDENTITY_KEY_ENCRYPTION_KEY: no signing key opens with this key-encryption key".into(),
            ));
        }
        Ok(KeySet { generation, rows, signers, verifiers, public })
    }

    fn open(&self, row: &signing_keys::Model, alg: JwtAlg) -> CoreResult<EncodingKey> {
        let pem = match (&row.private_key_sealed, &row.kek_id) {
            (Some(sealed), Some(kek_id)) => self.sealing.open(&row.kid, sealed, kek_id)?,
            _ if !row.private_key_pem.is_empty() => row.private_key_pem.as_bytes().to_vec(),
            _ => return Err(CoreError::internal(format!("signing key {} has no private key", row.kid))),
        };
        let pem = String::from_utf8(pem).map_err(CoreError::internal)?;
        encoding_key(alg, &pem)
    }

    /// Lands a change planned on a fresh read, then re-reads the set. The change, if any.
    async fn change(
        &self,
        plan: impl Fn(&[signing_keys::Model], i64, &lifecycle::Timing) -> Option<Intent>,
    ) -> CoreResult<Option<Changed>> {
        let changer = Changer { db: &self.db, sealing: &self.sealing, pool: &self.pool };
        let changed = changer.change(&self.timing, |rows, now, timing| Ok(plan(rows, now, timing))).await?;
        if changed.is_some() {
            self.reload(true).await?;
        }
        Ok(changed)
    }

    /// The scheduled step, run by every replica each second: re-reads the set if it changed,
    /// publishes the next key when one is due (one replica does), and deletes keys past their
    /// life. True when this replica changed the set (the caller tells the others).
    pub async fn tick(&self) -> CoreResult<bool> {
        self.reload(false).await?;
        let (set, now) = (self.current_set(), self.now());
        // Planned on what is in memory (two small reads a second in all); landed on a fresh read.
        let changed = match lifecycle::plan_tick(&set.rows, now, &self.timing) {
            Some(_) => self.change(lifecycle::plan_tick).await?,
            None => None,
        };
        if let Some(changed) = &changed {
            tracing::info!(change = %changed.described, "signing keys: scheduled step");
        }
        if lifecycle::any_expired(&set.rows, now, &self.timing) {
            let removed = lifecycle::remove_expired(&self.db, now, &self.timing).await?;
            if removed > 0 {
                tracing::info!(removed, "signing keys: removed keys whose last token has expired");
            }
            // Deleting moves no counter (nothing observable changes): re-read the rows.
            self.reload(true).await?;
        }
        Ok(changed.is_some())
    }
}

/// A change that landed: what it was, and the key it made.
pub struct Changed {
    pub described: String,
    pub new_kid: Option<String>,
}

/// What changing the key set takes: the database, the KEK that seals new keys, and the pool
/// that generates them.
struct Changer<'a> {
    db: &'a DatabaseConnection,
    sealing: &'a Sealing,
    pool: &'a BlockingPool,
}

impl Changer<'_> {
    /// Plans on a fresh read and lands the plan (compare-and-set), re-reading and planning
    /// again if another change landed first.
    async fn change(
        &self,
        timing: &lifecycle::Timing,
        plan: impl Fn(&[signing_keys::Model], i64, &lifecycle::Timing) -> CoreResult<Option<Intent>>,
    ) -> CoreResult<Option<Changed>> {
        for _ in 0..ATTEMPTS {
            let (generation, now, rows) = lifecycle::read(self.db).await?;
            let Some(intent) = plan(&rows, now, timing)? else { return Ok(None) };
            let described = format!("{intent:?}");
            let generated = match lifecycle::needs_key(&intent) {
                Some(alg) => Some(self.pool.run(move || generate(alg)).await??),
                None => None,
            };
            let new_kid = generated.as_ref().map(|generated| generated.kid.clone());
            let mut generated = generated;
            let ops = lifecycle::ops(intent, now, &mut |alg, activates_at| {
                let generated = generated.take().ok_or_else(|| CoreError::internal("one new key per change"))?;
                lifecycle::sealed_row(alg, generated, activates_at, now, self.sealing)
            })?;
            if lifecycle::commit(self.db, generation, ops).await? {
                return Ok(Some(Changed { described, new_kid }));
            }
        }
        Err(CoreError::Unavailable)
    }
}

/// Why `check` refused, before it is told to the caller.
enum Refusal {
    /// No key by that id here: perhaps a key another replica just made.
    UnknownKey,
    Core(CoreError),
}

impl Refusal {
    fn into_error(self) -> CoreError {
        match self {
            Refusal::UnknownKey => CoreError::SessionDead(DeadReason::InvalidToken),
            Refusal::Core(error) => error,
        }
    }
}

fn encoding_key(alg: JwtAlg, pem: &str) -> CoreResult<EncodingKey> {
    let key = match alg {
        JwtAlg::Rs256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        JwtAlg::Es256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        JwtAlg::EdDsa => EncodingKey::from_ed_pem(pem.as_bytes()),
        JwtAlg::Hs256 => return Err(CoreError::internal("HS256 keys are not stored")),
    };
    key.map_err(CoreError::internal)
}

/// A new key pair: its id, PKCS#8 PEM private key and public JWK.
pub(crate) struct Generated {
    pub kid: String,
    pub private_pem: String,
    pub public_jwk: String,
}

fn generate(alg: JwtAlg) -> CoreResult<Generated> {
    let pkcs8: Vec<u8> = match alg {
        JwtAlg::Rs256 => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(CoreError::internal)?;
            let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(&pair).map_err(CoreError::internal)?;
            der.as_ref().to_vec()
        }
        JwtAlg::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(CoreError::internal)?
            .as_ref()
            .to_vec(),
        JwtAlg::EdDsa => {
            Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).map_err(CoreError::internal)?.as_ref().to_vec()
        }
        JwtAlg::Hs256 => return Err(CoreError::internal("HS256 keys are not generated")),
    };
    let pem = to_pem("PRIVATE KEY", &pkcs8);
    let encoding = encoding_key(alg, &pem)?;
    let kid = tokens::new_id();
    let mut jwk = Jwk::from_encoding_key(&encoding, alg.algorithm()).map_err(CoreError::internal)?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let public_jwk = serde_json::to_string(&jwk).map_err(CoreError::internal)?;
    Ok(Generated { kid, private_pem: pem, public_jwk })
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// A key id for the HMAC secret that reveals nothing about it.
fn hmac_kid(secret: &[u8]) -> String {
    let digest = Sha256::new().chain_update(b"identity-kid:").chain_update(secret).finalize();
    let hex: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    format!("hs256-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "http://127.0.0.1:8080".into(),
            aud: "identity".into(),
            sub: "u1".into(),
            exp,
            iat: clock::now(),
            jti: "j".into(),
            sid: "s".into(),
            username: "alice".into(),
            email: "alice@example.com".into(),
            role: "user".into(),
            hasura: HasuraClaims {
                allowed_roles: vec!["user".into()],
                default_role: "user".into(),
                user_id: "u1".into(),
            },
        }
    }

    #[test]
    fn generated_keys_sign_and_publish_a_matching_jwk() {
        for alg in [JwtAlg::Es256, JwtAlg::EdDsa, JwtAlg::Rs256] {
            let generated = generate(alg).unwrap();
            let pem = generated.private_pem.clone();
            let jwk_text = generated.public_jwk.clone();
            let jwk: Jwk = serde_json::from_str(&jwk_text).unwrap();
            let public: PublicJwk = serde_json::from_str(&jwk_text).unwrap();
            assert_eq!(public.alg, alg.name());
            assert_eq!(public.use_, "sig");
            assert!(!jwk_text.contains("\"d\""), "private member in {jwk_text}");
            let mut header = Header::new(alg.algorithm());
            header.kid = public.kid.clone().into();
            let token = encode(&header, &claims(clock::now() + 60), &encoding_key(alg, &pem).unwrap()).unwrap();
            let mut validation = Validation::new(alg.algorithm());
            validation.set_audience(&["identity"]);
            decode::<Claims>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation).unwrap();
        }
    }

    #[test]
    fn pem_lines_are_64_columns() {
        let pem = to_pem("PRIVATE KEY", &[7u8; 100]);
        assert!(pem.lines().all(|line| line.len() <= 64));
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }

    #[test]
    fn hmac_kid_does_not_contain_the_secret() {
        let kid = hmac_kid(b"0123456789abcdef0123456789abcdef");
        assert!(kid.starts_with("hs256-") && !kid.contains("0123"));
    }
}
