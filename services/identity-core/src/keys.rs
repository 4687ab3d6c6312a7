//! Signing keys and access tokens. The key for the configured algorithm is generated on first
//! start and kept in the database, so tokens survive a restart; keys of other algorithms that
//! are not retired stay in the JWK set and keep verifying ("previous" keys).
//!
//! Verification pins the algorithm to the key named by `kid`: a token whose header names any
//! other algorithm (`none`, HS256 against an RSA key, ...) is refused before any signature
//! check. Verified claims are cached by the token's SHA-256 until `exp`, so a token seen
//! before costs one hash and a map lookup, not a signature check.

use std::{collections::HashMap, sync::Arc, time::Duration};

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
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
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

struct Verifier {
    algorithm: Algorithm,
    key: DecodingKey,
}

pub struct Keys {
    kid: String,
    algorithm: Algorithm,
    encoding: Arc<EncodingKey>,
    verifiers: HashMap<String, Verifier>,
    jwks: Vec<PublicJwk>,
    validation: HashMap<Algorithm, Validation>,
    verified: Cache<[u8; 32], Arc<Claims>>,
    pool: BlockingPool,
}

// === impl Keys ===

impl Keys {
    /// Loads the keys, generating and storing one for the configured algorithm if there is
    /// none yet.
    pub async fn load(db: &DatabaseConnection, settings: &Settings, pool: BlockingPool) -> CoreResult<Self> {
        let wanted = settings.jwt_alg;
        let mut rows = live_keys(db).await?;
        if wanted != JwtAlg::Hs256 && !rows.iter().any(|row| row.alg == wanted.name()) {
            let row = pool.run(move || generate(wanted)).await??;
            signing_keys::Entity::insert(row).exec(db).await?;
            // Two replicas starting at once may both generate; everyone then signs with the
            // oldest key of the algorithm, so they agree.
            rows = live_keys(db).await?;
        }

        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        let mut active = None;
        for row in &rows {
            let jwk: PublicJwk = serde_json::from_str(&row.public_jwk).map_err(CoreError::internal)?;
            let alg: JwtAlg = row.alg.parse().map_err(CoreError::internal)?;
            let full: Jwk = serde_json::from_str(&row.public_jwk).map_err(CoreError::internal)?;
            let key = DecodingKey::from_jwk(&full).map_err(CoreError::internal)?;
            verifiers.insert(row.kid.clone(), Verifier { algorithm: alg.algorithm(), key });
            jwks.push(jwk);
            if alg == wanted && active.is_none() {
                active = Some((row.kid.clone(), encoding_key(alg, &row.private_key_pem)?));
            }
        }
        let (kid, encoding) = match (wanted, active) {
            (JwtAlg::Hs256, _) => {
                let secret =
                    settings.jwt_secret.as_ref().ok_or_else(|| CoreError::internal("HS256 without a secret"))?;
                let kid = hmac_kid(secret.expose().as_bytes());
                verifiers.insert(
                    kid.clone(),
                    Verifier { algorithm: Algorithm::HS256, key: DecodingKey::from_secret(secret.expose().as_bytes()) },
                );
                (kid, EncodingKey::from_secret(secret.expose().as_bytes()))
            }
            (_, Some(active)) => active,
            (_, None) => return Err(CoreError::internal("no signing key after generating one")),
        };

        let mut validation = HashMap::new();
        for algorithm in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256] {
            let mut v = Validation::new(algorithm);
            v.set_issuer(&[&settings.issuer]);
            v.set_audience(&[&settings.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v.leeway = 0;
            validation.insert(algorithm, v);
        }
        let verified = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(settings.access_ttl.max(Duration::from_secs(1)))
            .build();
        Ok(Keys {
            kid,
            algorithm: wanted.algorithm(),
            encoding: Arc::new(encoding),
            verifiers,
            jwks,
            validation,
            verified,
            pool,
        })
    }

    /// The public keys: every key that is not retired. Symmetric (HS256) keys are never shown.
    pub fn jwks(&self) -> &[PublicJwk] {
        &self.jwks
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs on the blocking pool (RSA signing costs milliseconds).
    pub async fn sign(&self, claims: Claims) -> CoreResult<String> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        let key = Arc::clone(&self.encoding);
        let token = if self.algorithm == Algorithm::RS256 {
            self.pool.run(move || encode(&header, &claims, &key)).await?
        } else {
            encode(&header, &claims, &key)
        };
        token.map_err(CoreError::internal)
    }

    /// Verifies signature, algorithm, `iss`, `aud` and `exp`. Says nothing of the session.
    pub fn verify(&self, token: &str) -> CoreResult<Arc<Claims>> {
        let now = clock::now();
        let fingerprint = tokens::digest(token);
        if let Some(claims) = self.verified.get(&fingerprint) {
            return if claims.exp > now { Ok(claims) } else { Err(CoreError::SessionDead(DeadReason::TokenExpired)) };
        }
        let invalid = CoreError::SessionDead(DeadReason::InvalidToken);
        let header = decode_header(token).map_err(|_| CoreError::SessionDead(DeadReason::InvalidToken))?;
        let verifier = header.kid.as_deref().and_then(|kid| self.verifiers.get(kid)).ok_or(invalid)?;
        if header.alg != verifier.algorithm {
            return Err(CoreError::SessionDead(DeadReason::InvalidToken));
        }
        let validation = self
            .validation
            .get(&verifier.algorithm)
            .ok_or_else(|| CoreError::internal("no validation for algorithm"))?;
        let data = decode::<Claims>(token, &verifier.key, validation).map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => CoreError::SessionDead(DeadReason::TokenExpired),
            _ => CoreError::SessionDead(DeadReason::InvalidToken),
        })?;
        let claims = Arc::new(data.claims);
        self.verified.insert(fingerprint, Arc::clone(&claims));
        Ok(claims)
    }
}

async fn live_keys(db: &DatabaseConnection) -> CoreResult<Vec<signing_keys::Model>> {
    Ok(signing_keys::Entity::find()
        .filter(signing_keys::Column::RetiredAt.is_null())
        .order_by_asc(signing_keys::Column::CreatedAt)
        .order_by_asc(signing_keys::Column::Kid)
        .all(db)
        .await?)
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

/// A new key pair as a row: PKCS#8 PEM private key and its public JWK.
fn generate(alg: JwtAlg) -> CoreResult<signing_keys::ActiveModel> {
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
    Ok(signing_keys::ActiveModel {
        kid: Set(kid),
        alg: Set(alg.name().to_owned()),
        private_key_pem: Set(pem),
        public_jwk: Set(public_jwk),
        created_at: Set(clock::now()),
        retired_at: Set(None),
    })
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
            let row = generate(alg).unwrap();
            let pem = row.private_key_pem.clone().unwrap();
            let jwk_text = row.public_jwk.clone().unwrap();
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
