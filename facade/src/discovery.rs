//! What relying parties need to verify our tokens — the JWK set and the token settings
//! (issuer, algorithms) — fetched from the identity service: for the JWK set route on every
//! request (a key published there must be served at once: relying parties cache the set for
//! its max-age), otherwise kept for a minute. While the identity service is down the last copy
//! is served; before the first fetch, 503.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use identity_proto::pb;

use crate::{error::ApiError, identity::IdentityClient};

/// How long a fetched copy is used before asking again (key rotation shows up within it).
const FRESH_FOR: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct TokenSettings {
    pub settings: pb::GetTokenSettingsResponse,
    pub keys: Vec<pb::Jwk>,
}

impl TokenSettings {
    /// `auto` Secure cookies: everything except a plain-http localhost issuer.
    pub fn issuer_is_local_http(&self) -> bool {
        let Some(rest) = self.settings.issuer.strip_prefix("http://") else { return false };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The JWK set document (RFC 7517): public members only, by construction of `pb::Jwk`.
    pub fn jwks_json(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|key| {
                let mut object = serde_json::Map::new();
                for (name, value) in [
                    ("kty", &key.kty),
                    ("kid", &key.kid),
                    ("use", &key.r#use),
                    ("alg", &key.alg),
                    ("n", &key.n),
                    ("e", &key.e),
                    ("crv", &key.crv),
                    ("x", &key.x),
                    ("y", &key.y),
                ] {
                    if !value.is_empty() {
                        object.insert(name.to_owned(), value.as_str().into());
                    }
                }
                serde_json::Value::Object(object)
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// How long relying parties may cache the JWK set and this document, in seconds (five
    /// minutes from an identity service that does not say).
    pub fn max_age(&self) -> u64 {
        self.settings.jwks_max_age.as_ref().map_or(300, |max_age| u64::try_from(max_age.seconds).unwrap_or(300))
    }

    /// OpenID Connect discovery metadata, as far as it is true of this service: it issues
    /// access tokens verifiable from `jwks_uri`; it has no authorization endpoint.
    pub fn openid_configuration(&self) -> serde_json::Value {
        let issuer = self.settings.issuer.trim_end_matches('/');
        serde_json::json!({
            "issuer": self.settings.issuer,
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "id_token_signing_alg_values_supported": self.settings.verification_algorithms,
            "subject_types_supported": ["public"],
            "claims_supported": ["iss", "aud", "sub", "exp", "iat", "jti", "sid", "username", "email", "role",
                "https://hasura.io/jwt/claims"],
        })
    }
}

/// The last answer and when it came.
type Cached = Option<(Instant, Arc<TokenSettings>)>;

#[derive(Clone, Debug)]
pub struct Discovery {
    identity: IdentityClient,
    cached: Arc<RwLock<Cached>>,
}

impl Discovery {
    pub fn new(identity: IdentityClient) -> Self {
        Discovery { identity, cached: Arc::default() }
    }

    pub async fn get(&self) -> Result<Arc<TokenSettings>, ApiError> {
        self.get_within(FRESH_FOR).await
    }

    /// A copy fetched now (or, with the identity service down, the last one).
    pub async fn fresh(&self) -> Result<Arc<TokenSettings>, ApiError> {
        self.get_within(Duration::ZERO).await
    }

    async fn get_within(&self, fresh_for: Duration) -> Result<Arc<TokenSettings>, ApiError> {
        let cached = self.cached.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        if let Some((at, settings)) = &cached
            && at.elapsed() < fresh_for
        {
            return Ok(settings.clone());
        }
        match self.fetch().await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *self.cached.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Some((Instant::now(), fresh.clone()));
                Ok(fresh)
            }
            Err(error) => match cached {
                Some((_, stale)) => Ok(stale),
                None => Err(error),
            },
        }
    }

    /// The copy at hand, fresh or not, without asking the identity service.
    pub fn last(&self) -> Option<Arc<TokenSettings>> {
        self.cached.read().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref().map(|(_, s)| s.clone())
    }

    async fn fetch(&self) -> Result<TokenSettings, ApiError> {
        let mut auth = self.identity.auth();
        let settings = auth.get_token_settings(pb::GetTokenSettingsRequest {}).await?.into_inner();
        let keys = auth.get_jwks(pb::GetJwksRequest {}).await?.into_inner().keys;
        Ok(TokenSettings { settings, keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_issuer(issuer: &str) -> TokenSettings {
        TokenSettings {
            settings: pb::GetTokenSettingsResponse { issuer: issuer.into(), ..Default::default() },
            keys: Vec::new(),
        }
    }

    #[test]
    fn only_plain_http_loopback_issuers_are_local() {
        for local in ["http://127.0.0.1:8080", "http://localhost", "http://LOCALHOST:1/x", "http://[::1]:8080"] {
            assert!(with_issuer(local).issuer_is_local_http(), "{local}");
        }
        for remote in ["https://127.0.0.1:8080", "http://auth.example.com", "http://localhost.evil.com", ""] {
            assert!(!with_issuer(remote).issuer_is_local_http(), "{remote}");
        }
    }

    #[test]
    fn jwks_omit_empty_members() {
        let settings = TokenSettings {
            settings: Default::default(),
            keys: vec![pb::Jwk {
                kty: "OKP".into(),
                kid: "k".into(),
                r#use: "sig".into(),
                alg: "EdDSA".into(),
                crv: "Ed25519".into(),
                x: "abc".into(),
                ..Default::default()
            }],
        };
        assert_eq!(
            settings.jwks_json(),
            serde_json::json!({"keys": [{"kty": "OKP", "kid": "k", "use": "sig", "alg": "EdDSA", "crv": "Ed25519", "x": "abc"}]})
        );
    }
}
