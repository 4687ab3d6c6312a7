//! The domain's settings as plain values. The binaries parse them (clap) and pass them down;
//! nothing here reads the environment.

use std::{fmt, str::FromStr, time::Duration};

use jsonwebtoken::Algorithm;

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// The signing algorithms the contract allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    Rs256,
    Es256,
    EdDsa,
    Hs256,
}

impl JwtAlg {
    pub fn algorithm(self) -> Algorithm {
        match self {
            JwtAlg::Rs256 => Algorithm::RS256,
            JwtAlg::Es256 => Algorithm::ES256,
            JwtAlg::EdDsa => Algorithm::EdDSA,
            JwtAlg::Hs256 => Algorithm::HS256,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JwtAlg::Rs256 => "RS256",
            JwtAlg::Es256 => "ES256",
            JwtAlg::EdDsa => "EdDSA",
            JwtAlg::Hs256 => "HS256",
        }
    }
}

impl FromStr for JwtAlg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(JwtAlg::Rs256),
            "ES256" => Ok(JwtAlg::Es256),
            "EdDSA" => Ok(JwtAlg::EdDsa),
            "HS256" => Ok(JwtAlg::Hs256),
            other => Err(format!("unknown algorithm {other:?}; expected RS256, ES256, EdDSA or HS256")),
        }
    }
}

impl fmt::Display for JwtAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Argon2id cost. The defaults are OWASP's minimum (m=19456 KiB, t=2, p=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl PasswordCost {
    pub const OWASP: PasswordCost = PasswordCost { memory_kib: 19_456, iterations: 2, parallelism: 1 };
}

impl Default for PasswordCost {
    fn default() -> Self {
        PasswordCost::OWASP
    }
}

/// Login throttling. Three counters per attempt: the account from this address (strict), the
/// account from anywhere (looser, for distributed guessing) and the address across accounts
/// (credential stuffing). A counter that reaches its limit locks for `lockout`, doubling with
/// each further failure up to `lockout_max`; attempts refused while locked are not counted, so
/// an attacker cannot keep extending the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    pub max_failures: u32,
    pub account_max_failures: u32,
    pub address_max_failures: u32,
    pub lockout: Duration,
    pub lockout_max: Duration,
    /// Failures older than this (since the last one) are forgotten.
    pub failure_window: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            max_failures: 5,
            account_max_failures: 20,
            address_max_failures: 50,
            lockout: Duration::from_secs(30),
            lockout_max: Duration::from_secs(15 * 60),
            failure_window: Duration::from_secs(15 * 60),
        }
    }
}

/// Everything the domain needs to know, built once by the binary.
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub audience: String,
    pub jwt_alg: JwtAlg,
    /// Required for, and only for, HS256 (at least 32 bytes).
    pub jwt_secret: Option<Secret>,
    pub access_ttl: Duration,
    /// Refresh-token lifetime, and the absolute lifetime of a session.
    pub refresh_ttl: Duration,
    pub session_idle_ttl: Duration,
    /// A refresh token used again within this time after its rotation is not theft.
    pub refresh_reuse_grace: Duration,
    pub password_cost: PasswordCost,
    pub throttle: ThrottleSettings,
    /// How long a replica trusts what it cached about a session before reading the database
    /// again. Revocations made through this process are seen at once regardless; this bounds
    /// how late a revocation made by another replica is seen.
    pub session_cache_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            issuer: "http://127.0.0.1:8080".into(),
            audience: "identity".into(),
            jwt_alg: JwtAlg::Rs256,
            jwt_secret: None,
            access_ttl: Duration::from_secs(5 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            session_idle_ttl: Duration::from_secs(24 * 3600),
            refresh_reuse_grace: Duration::from_secs(10),
            password_cost: PasswordCost::OWASP,
            throttle: ThrottleSettings::default(),
            session_cache_ttl: Duration::from_secs(5),
        }
    }
}

impl Settings {
    /// Checks what clap cannot: combinations and minimums. The error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        match (self.jwt_alg, &self.jwt_secret) {
            (JwtAlg::Hs256, None) => {
                return Err("IDENTITY_JWT_SECRET is required when IDENTITY_JWT_ALG is HS256".into());
            }
            (JwtAlg::Hs256, Some(secret)) if secret.expose().len() < 32 => {
                return Err("IDENTITY_JWT_SECRET must be at least 32 bytes".into());
            }
            (JwtAlg::Hs256, Some(_)) => {}
            (_, Some(_)) => {
                return Err(format!("IDENTITY_JWT_SECRET is only for HS256, but IDENTITY_JWT_ALG is {}", self.jwt_alg));
            }
            (_, None) => {}
        }
        for (name, ttl) in [
            ("IDENTITY_ACCESS_TTL", self.access_ttl),
            ("IDENTITY_REFRESH_TTL", self.refresh_ttl),
            ("IDENTITY_SESSION_IDLE_TTL", self.session_idle_ttl),
        ] {
            if ttl.as_secs() < 1 {
                return Err(format!("{name} must be at least 1s"));
            }
        }
        let cost = self.password_cost;
        let owasp = PasswordCost::OWASP;
        if cost.memory_kib < owasp.memory_kib || cost.iterations < owasp.iterations || cost.parallelism < 1 {
            return Err(format!(
                "IDENTITY_ARGON2_*: argon2id cost below OWASP's minimum (m={} KiB, t={}, p=1)",
                owasp.memory_kib, owasp.iterations
            ));
        }
        if self.throttle.max_failures == 0 {
            return Err("IDENTITY_LOGIN_MAX_FAILURES must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "[redacted]");
    }

    #[test]
    fn hs256_needs_a_long_secret_and_others_refuse_one() {
        let mut settings = Settings { jwt_alg: JwtAlg::Hs256, ..Settings::default() };
        assert!(settings.validate().unwrap_err().contains("IDENTITY_JWT_SECRET"));
        settings.jwt_secret = Some(Secret::new("short"));
        assert!(settings.validate().unwrap_err().contains("32 bytes"));
        settings.jwt_secret = Some(Secret::new("x".repeat(32)));
        assert!(settings.validate().is_ok());
        settings.jwt_alg = JwtAlg::Es256;
        assert!(settings.validate().unwrap_err().contains("only for HS256"));
    }

    #[test]
    fn password_cost_below_owasp_is_refused() {
        let settings =
            Settings { password_cost: PasswordCost { memory_kib: 4096, ..PasswordCost::OWASP }, ..Settings::default() };
        assert!(settings.validate().unwrap_err().contains("OWASP"));
    }

    #[test]
    fn algorithms_parse_by_their_jose_names() {
        assert_eq!("EdDSA".parse::<JwtAlg>(), Ok(JwtAlg::EdDsa));
        assert!("none".parse::<JwtAlg>().is_err());
        assert!("rs256".parse::<JwtAlg>().is_err());
    }
}
