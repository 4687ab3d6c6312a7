//! The domain's settings as plain values. The binaries parse them (clap) and pass them down;
//! nothing here reads the environment.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use jsonwebtoken::Algorithm;

use crate::error::{CoreError, CoreResult};

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
    pub keys: KeySettings,
    pub email: EmailSettings,
    /// The providers users may sign in with (`IDENTITY_PROVIDERS_FILE`; none by default).
    pub providers: Vec<crate::social::ProviderSettings>,
}

/// Signing keys: their rotation, publication and protection at rest (docs/keys.md).
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// How long a key signs before the next one takes over.
    pub rotation_period: Duration,
    /// How long the next key is published before it signs: at least `jwks_max_age`, so that
    /// every relying party caching the JWK set has it before its first token.
    pub publish_ahead: Duration,
    /// How long relying parties may cache the JWK set (`Cache-Control: max-age`).
    pub jwks_max_age: Duration,
    /// How far relying parties' clocks may lag: a retired key stays published this much longer
    /// than the last token it signed.
    pub clock_skew: Duration,
    /// HS256 secrets that only verify (a secret being rotated out).
    pub previous_secrets: Vec<Secret>,
    /// The key-encryption key (32 bytes, base64 or hex). None: generated beside a SQLite file;
    /// refused on PostgreSQL.
    pub encryption_key: Option<Secret>,
    /// Earlier key-encryption keys: they open stored keys, never seal.
    pub previous_encryption_keys: Vec<Secret>,
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            rotation_period: Duration::from_secs(30 * 24 * 3600),
            publish_ahead: Duration::from_secs(3600),
            jwks_max_age: Duration::from_secs(300),
            clock_skew: Duration::from_secs(60),
            previous_secrets: Vec::new(),
            encryption_key: None,
            previous_encryption_keys: Vec::new(),
        }
    }
}

impl KeySettings {
    pub fn check(&self) -> CoreResult<()> {
        let mut checks = vec![
            at_least("keys.jwks_max_age", self.jwks_max_age, Duration::from_secs(1), "1s"),
            at_least("keys.rotation_period", self.rotation_period, Duration::from_secs(1), "1s"),
        ];
        if self.publish_ahead < self.jwks_max_age {
            checks.push(Err(CoreError::invalid(
                "keys.publish_ahead",
                format!(
                    "must be at least the JWK set's max-age ({}): relying parties caching the set would meet \
                     tokens of a key they do not have",
                    humanize(self.jwks_max_age)
                ),
            )));
        }
        if self.rotation_period <= self.publish_ahead {
            checks.push(Err(CoreError::invalid(
                "keys.rotation_period",
                "must be longer than the publish-ahead time (the next key is published that long before it signs)",
            )));
        }
        for secret in &self.previous_secrets {
            if secret.expose().len() < 32 {
                checks.push(Err(CoreError::invalid("keys.previous_secrets", "each must be at least 32 bytes")));
                break;
            }
        }
        CoreError::check_all(checks)
    }
}

/// Whether an address must be verified before its user may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmailVerification {
    /// Login works; `User.email_verified` tells.
    #[default]
    Optional,
    /// Login is refused (`EmailNotVerified`, after the password was checked) until verified.
    Required,
}

impl FromStr for EmailVerification {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "optional" => Ok(EmailVerification::Optional),
            "required" => Ok(EmailVerification::Required),
            other => Err(format!("{other:?}: expected optional or required")),
        }
    }
}

/// Accounts by email: delivery, links, lifetimes and limits (docs/accounts.md).
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// `smtp://host:port` (plaintext, or `?tls=required` for STARTTLS), `smtps://host:port`
    /// (TLS), credentials as `user:password@`. None: each message is written as an `.eml`
    /// file into `outbox_dir` and its link logged (the embedded default).
    pub smtp_url: Option<Secret>,
    /// PEM certificates trusted, besides the system's roots, for the SMTP server's TLS (a
    /// private CA); only with an `smtps://` or `?tls=required` URL.
    pub smtp_ca: Option<PathBuf>,
    /// The `From:` of every message: `Name <address>` or a bare address.
    pub from: String,
    /// The base of every link in a message (the facade's public URL); never a request's Host.
    pub public_url: String,
    pub verification: EmailVerification,
    pub outbox_dir: PathBuf,
    pub reset_ttl: Duration,
    pub verification_ttl: Duration,
    pub change_ttl: Duration,
    /// Requests (reset, resend) naming one address, per `limit_window`.
    pub address_limit: u32,
    /// Requests from one client address, per `limit_window`.
    pub client_limit: u32,
    pub limit_window: Duration,
    /// The longest wait between two delivery attempts of a message (the wait doubles from 1 s).
    pub retry_max: Duration,
    /// A message not delivered this long after it was queued is abandoned.
    pub give_up_after: Duration,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            smtp_url: None,
            smtp_ca: None,
            from: "Identity <no-reply@localhost>".into(),
            public_url: "http://127.0.0.1:8080".into(),
            verification: EmailVerification::Optional,
            outbox_dir: PathBuf::from("data/outbox"),
            reset_ttl: Duration::from_secs(3600),
            verification_ttl: Duration::from_secs(3 * 24 * 3600),
            change_ttl: Duration::from_secs(3600),
            address_limit: 3,
            client_limit: 20,
            limit_window: Duration::from_secs(3600),
            retry_max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl EmailSettings {
    pub fn check(&self) -> CoreResult<()> {
        let mut checks = vec![
            crate::mail::parse_from("email.from", &self.from).map(drop),
            crate::mail::check_public_url("email.public_url", &self.public_url),
            crate::mail::smtp_builder(self).map(drop),
        ];
        for (field, ttl) in [
            ("email.reset_ttl", self.reset_ttl),
            ("email.verification_ttl", self.verification_ttl),
            ("email.change_ttl", self.change_ttl),
            ("email.limit_window", self.limit_window),
            ("email.give_up_after", self.give_up_after),
        ] {
            checks.push(at_least(field, ttl, Duration::from_secs(1), "1s"));
        }
        checks.push(at_least("email.retry_max", self.retry_max, Duration::from_millis(100), "100ms"));
        for (field, limit) in [("email.address_limit", self.address_limit), ("email.client_limit", self.client_limit)] {
            if limit == 0 {
                checks.push(Err(CoreError::invalid(field, "must be at least 1")));
            }
        }
        CoreError::check_all(checks)
    }
}

/// `90s` as `1m 30s`, for messages.
fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m {s}s"),
    }
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
            keys: KeySettings::default(),
            email: EmailSettings::default(),
            providers: Vec::new(),
        }
    }
}

impl Settings {
    /// Checks combinations and bounds, every one at once. Each violation names the field of
    /// `Settings` (`throttle.` fields by theirs); the binary says which setting that is.
    pub fn validate(&self) -> CoreResult<()> {
        let mut checks = vec![self.check_secret()];
        for (field, ttl) in [
            ("access_ttl", self.access_ttl),
            ("refresh_ttl", self.refresh_ttl),
            ("session_idle_ttl", self.session_idle_ttl),
        ] {
            checks.push(at_least(field, ttl, Duration::from_secs(1), "1s"));
        }
        // An access token outliving its session is not refused: tokens never outlive their
        // session (they are cut at its expiry), whatever the settings say.
        checks.push(at_least("session_cache_ttl", self.session_cache_ttl, Duration::from_millis(100), "100ms"));
        // Rotation times are stored in whole seconds (`sessions::refresh::grace_closed`).
        if self.refresh_reuse_grace.subsec_nanos() != 0 {
            checks.push(Err(CoreError::invalid("refresh_reuse_grace", "is counted in whole seconds (0s for none)")));
        }
        checks.push(self.password_cost.check());
        checks.push(self.throttle.check());
        checks.push(self.keys.check());
        checks.push(self.email.check());
        CoreError::check_all(checks)
    }

    fn check_secret(&self) -> CoreResult<()> {
        match (self.jwt_alg, &self.jwt_secret) {
            (JwtAlg::Hs256, None) => Err(CoreError::invalid("jwt_secret", "is required for HS256")),
            // RFC 7518 3.2: an HS256 key is at least as long as the hash, 256 bits.
            (JwtAlg::Hs256, Some(secret)) if secret.expose().len() < 32 => {
                Err(CoreError::invalid("jwt_secret", "must be at least 32 bytes"))
            }
            (JwtAlg::Hs256, Some(_)) | (_, None) => Ok(()),
            (other, Some(_)) => Err(CoreError::invalid("jwt_secret", format!("is only for HS256, not {other}"))),
        }
    }
}

impl PasswordCost {
    /// Never below OWASP's minimum; within what argon2 accepts.
    pub fn check(&self) -> CoreResult<()> {
        let owasp = PasswordCost::OWASP;
        if self.memory_kib < owasp.memory_kib || self.iterations < owasp.iterations || self.parallelism < 1 {
            return Err(CoreError::invalid(
                "password_cost",
                format!("below OWASP's minimum (m={} KiB, t={}, p=1)", owasp.memory_kib, owasp.iterations),
            ));
        }
        // A cost that would take minutes per login is a mistake, not a policy.
        if self.memory_kib > 4 * 1024 * 1024 || self.iterations > 64 || self.parallelism > 64 {
            return Err(CoreError::invalid("password_cost", "above the maximum (m=4 GiB, t=64, p=64)"));
        }
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map(|_| ())
            .map_err(|error| CoreError::invalid("password_cost", error.to_string()))
    }
}

impl ThrottleSettings {
    pub fn check(&self) -> CoreResult<()> {
        let mut checks = Vec::new();
        for (field, limit) in [
            ("throttle.max_failures", self.max_failures),
            ("throttle.account_max_failures", self.account_max_failures),
            ("throttle.address_max_failures", self.address_max_failures),
        ] {
            if limit == 0 {
                checks.push(Err(CoreError::invalid(field, "must be at least 1")));
            }
        }
        checks.push(at_least("throttle.lockout", self.lockout, Duration::from_secs(1), "1s"));
        checks.push(at_least("throttle.failure_window", self.failure_window, Duration::from_secs(1), "1s"));
        if self.lockout_max < self.lockout {
            checks.push(Err(CoreError::invalid("throttle.lockout_max", "must not be shorter than the first lock-out")));
        }
        CoreError::check_all(checks)
    }
}

fn at_least(field: &'static str, value: Duration, minimum: Duration, shown: &str) -> CoreResult<()> {
    if value < minimum { Err(CoreError::invalid(field, format!("must be at least {shown}"))) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "[redacted]");
    }

    fn refusal(settings: &Settings) -> String {
        settings.validate().unwrap_err().to_string()
    }

    #[test]
    fn hs256_needs_a_long_secret_and_others_refuse_one() {
        let mut settings = Settings { jwt_alg: JwtAlg::Hs256, ..Settings::default() };
        assert_eq!(refusal(&settings), "jwt_secret: is required for HS256");
        settings.jwt_secret = Some(Secret::new("x".repeat(31)));
        assert_eq!(refusal(&settings), "jwt_secret: must be at least 32 bytes");
        settings.jwt_secret = Some(Secret::new("x".repeat(32)));
        assert!(settings.validate().is_ok());
        settings.jwt_alg = JwtAlg::Es256;
        assert!(refusal(&settings).contains("only for HS256"));
    }

    #[test]
    fn password_cost_below_owasp_or_absurd_is_refused() {
        let settings =
            Settings { password_cost: PasswordCost { memory_kib: 4096, ..PasswordCost::OWASP }, ..Settings::default() };
        assert!(refusal(&settings).contains("OWASP"));
        let settings = Settings {
            password_cost: PasswordCost { parallelism: 1000, ..PasswordCost::OWASP },
            ..Settings::default()
        };
        assert!(refusal(&settings).starts_with("password_cost"));
    }

    #[test]
    fn nonsense_durations_and_limits_are_refused_all_at_once() {
        let settings = Settings {
            access_ttl: Duration::ZERO,
            session_cache_ttl: Duration::from_millis(1),
            throttle: ThrottleSettings {
                max_failures: 0,
                lockout: Duration::from_secs(60),
                lockout_max: Duration::from_secs(1),
                ..ThrottleSettings::default()
            },
            ..Settings::default()
        };
        let message = refusal(&settings);
        for field in ["access_ttl", "session_cache_ttl", "throttle.max_failures", "throttle.lockout_max"] {
            assert!(message.contains(field), "{message}");
        }
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn keys_are_published_at_least_one_cache_lifetime_before_they_sign() {
        let keys = KeySettings { publish_ahead: Duration::from_secs(299), ..KeySettings::default() };
        let message = refusal(&Settings { keys, ..Settings::default() });
        assert!(message.starts_with("keys.publish_ahead: must be at least the JWK set's max-age (5m)"), "{message}");
        let keys = KeySettings { rotation_period: Duration::from_secs(3600), ..KeySettings::default() };
        assert!(refusal(&Settings { keys, ..Settings::default() }).starts_with("keys.rotation_period"));
        let keys = KeySettings { previous_secrets: vec![Secret::new("short")], ..KeySettings::default() };
        assert!(refusal(&Settings { keys, ..Settings::default() }).starts_with("keys.previous_secrets"));
    }

    #[test]
    fn algorithms_parse_by_their_jose_names() {
        assert_eq!("EdDSA".parse::<JwtAlg>(), Ok(JwtAlg::EdDsa));
        assert!("none".parse::<JwtAlg>().is_err());
        assert!("rs256".parse::<JwtAlg>().is_err());
    }
}
