//! Every setting of `identity-service`: a CLI flag and an environment variable each, parsed
//! once in `main` and passed down by value.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser};
use identity_core::{
    CoreError, EmailSettings, EmailVerification, JwtAlg, KeySettings, PasswordCost, Secret, Settings, StoreOptions,
    ThrottleSettings, check_bootstrap_manager,
};
use ipnet::IpNet;

use crate::tls::Transport;

/// The identity service: users, sessions and tokens over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "identity-service", version, about)]
#[group(id = "identity")]
pub struct Config {
    /// Database: any `sqlite:` or `postgres://` URL. SQLite files and their directory are
    /// created; the schema is migrated on start.
    #[arg(
        long,
        env = "IDENTITY_DATABASE_URL",
        value_name = "IDENTITY_DATABASE_URL",
        default_value = "sqlite://data/identity.db?mode=rwc"
    )]
    pub database_url: Secret,

    /// Where the gRPC server listens.
    #[arg(long, env = "IDENTITY_GRPC_ADDR", value_name = "IDENTITY_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Also serve gRPC on this Unix domain socket, for a facade on the same host
    /// (`FACADE_IDENTITY_URL=unix:///path`): plaintext, the file owner-only (a stale one is
    /// replaced, and it is removed at exit). Its peers count as loopback (trusted forwarders by
    /// default). Not with `IDENTITY_TLS_CERT`.
    #[arg(long, env = "IDENTITY_GRPC_UDS", value_name = "IDENTITY_GRPC_UDS")]
    pub grpc_uds: Option<PathBuf>,

    /// PEM certificate chain: the gRPC port speaks TLS only (with `IDENTITY_TLS_KEY`). Unset:
    /// plaintext, for loopback or a network that is itself encrypted.
    #[arg(long, env = "IDENTITY_TLS_CERT", value_name = "IDENTITY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `IDENTITY_TLS_CERT`.
    #[arg(long, env = "IDENTITY_TLS_KEY", value_name = "IDENTITY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): mutual TLS, only callers presenting a certificate signed by one
    /// of them are let in (their certificate's subject is logged with each call).
    #[arg(long, env = "IDENTITY_TLS_CLIENT_CA", value_name = "IDENTITY_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// JWT `iss`, and the base URL of OIDC discovery: the public URL of the facade. Default:
    /// `http://127.0.0.1:8080`; in `identity-stack`, the facade's own address
    /// (`FACADE_HTTP_ADDR`).
    #[arg(long, env = "IDENTITY_ISSUER", value_name = "IDENTITY_ISSUER")]
    pub issuer: Option<String>,

    /// JWT `aud`.
    #[arg(long, env = "IDENTITY_AUDIENCE", value_name = "IDENTITY_AUDIENCE", default_value = "identity")]
    pub audience: String,

    /// Signing algorithm: RS256, ES256, EdDSA or HS256.
    #[arg(long, env = "IDENTITY_JWT_ALG", value_name = "IDENTITY_JWT_ALG", default_value = "RS256")]
    pub jwt_alg: JwtAlg,

    /// HMAC secret (at least 32 bytes); required for, and only for, HS256.
    #[arg(long, env = "IDENTITY_JWT_SECRET", value_name = "IDENTITY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Access-token lifetime.
    #[arg(long, env = "IDENTITY_ACCESS_TTL", value_name = "IDENTITY_ACCESS_TTL", default_value = "5m")]
    pub access_ttl: humantime::Duration,

    /// Refresh-token lifetime, and the absolute lifetime of a session.
    #[arg(long, env = "IDENTITY_REFRESH_TTL", value_name = "IDENTITY_REFRESH_TTL", default_value = "7d")]
    pub refresh_ttl: humantime::Duration,

    /// A session unused this long is dead.
    #[arg(long, env = "IDENTITY_SESSION_IDLE_TTL", value_name = "IDENTITY_SESSION_IDLE_TTL", default_value = "24h")]
    pub session_idle_ttl: humantime::Duration,

    /// A refresh token used again within this time after its rotation is not treated as theft
    /// (two tabs, a retried request).
    #[arg(
        long,
        env = "IDENTITY_REFRESH_REUSE_GRACE",
        value_name = "IDENTITY_REFRESH_REUSE_GRACE",
        default_value = "10s"
    )]
    pub refresh_reuse_grace: humantime::Duration,

    /// `username:password`, or `username:@/path/to/password-file`: creates a manager on
    /// start if no manager exists.
    #[arg(long, env = "IDENTITY_BOOTSTRAP_MANAGER", value_name = "IDENTITY_BOOTSTRAP_MANAGER", hide_env_values = true)]
    pub bootstrap_manager: Option<Secret>,

    /// Argon2id memory cost in KiB (OWASP minimum 19456). Raising it rehashes on login.
    #[arg(long, env = "IDENTITY_ARGON2_MEMORY_KIB", value_name = "IDENTITY_ARGON2_MEMORY_KIB", default_value_t = PasswordCost::OWASP.memory_kib)]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations (OWASP minimum 2).
    #[arg(long, env = "IDENTITY_ARGON2_ITERATIONS", value_name = "IDENTITY_ARGON2_ITERATIONS", default_value_t = PasswordCost::OWASP.iterations)]
    pub argon2_iterations: u32,

    /// Argon2id parallelism.
    #[arg(long, env = "IDENTITY_ARGON2_PARALLELISM", value_name = "IDENTITY_ARGON2_PARALLELISM", default_value_t = PasswordCost::OWASP.parallelism)]
    pub argon2_parallelism: u32,

    /// Failed logins for one account from one address before it is locked out.
    #[arg(long, env = "IDENTITY_LOGIN_MAX_FAILURES", value_name = "IDENTITY_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,

    /// Failed logins for one account from all addresses before it is locked out.
    #[arg(
        long,
        env = "IDENTITY_LOGIN_ACCOUNT_MAX_FAILURES",
        value_name = "IDENTITY_LOGIN_ACCOUNT_MAX_FAILURES",
        default_value_t = 20
    )]
    pub login_account_max_failures: u32,

    /// Failed logins from one address across all accounts before it is locked out.
    #[arg(
        long,
        env = "IDENTITY_LOGIN_ADDRESS_MAX_FAILURES",
        value_name = "IDENTITY_LOGIN_ADDRESS_MAX_FAILURES",
        default_value_t = 50
    )]
    pub login_address_max_failures: u32,

    /// First lock-out; it doubles with each further failure.
    #[arg(long, env = "IDENTITY_LOGIN_LOCKOUT", value_name = "IDENTITY_LOGIN_LOCKOUT", default_value = "30s")]
    pub login_lockout: humantime::Duration,

    /// The longest lock-out: no attacker can lock a user out for longer than this.
    #[arg(long, env = "IDENTITY_LOGIN_LOCKOUT_MAX", value_name = "IDENTITY_LOGIN_LOCKOUT_MAX", default_value = "15m")]
    pub login_lockout_max: humantime::Duration,

    /// Failures are forgotten after this long without another.
    #[arg(
        long,
        env = "IDENTITY_LOGIN_FAILURE_WINDOW",
        value_name = "IDENTITY_LOGIN_FAILURE_WINDOW",
        default_value = "15m"
    )]
    pub login_failure_window: humantime::Duration,

    /// How long a replica trusts its cached view of a session. Revocations through this
    /// replica are immediate, and through another (PostgreSQL) as soon as its announcement
    /// arrives; this bounds only what no announcement reached (a replica that was not
    /// listening, or one that died between commit and announcement).
    #[arg(long, env = "IDENTITY_SESSION_CACHE_TTL", value_name = "IDENTITY_SESSION_CACHE_TTL", default_value = "5s")]
    pub session_cache_ttl: humantime::Duration,

    /// How long a call waits for the database before answering UNAVAILABLE.
    #[arg(long, env = "IDENTITY_DATABASE_TIMEOUT", value_name = "IDENTITY_DATABASE_TIMEOUT", default_value = "5s")]
    pub database_timeout: humantime::Duration,

    /// Where Prometheus scrapes the service's metrics (`GET /metrics`); unset: not served.
    #[arg(long, env = "IDENTITY_METRICS_ADDR", value_name = "IDENTITY_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Callers (CIDRs, comma-separated) whose `x-forwarded-for` metadata names the end user's
    /// address (login throttling, session listing); from anyone else it is ignored and the
    /// peer's address counts.
    #[arg(
        long,
        env = "IDENTITY_TRUSTED_FORWARDERS",
        value_name = "IDENTITY_TRUSTED_FORWARDERS",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub trusted_forwarders: Vec<IpNet>,

    /// How often the janitor deletes what is past its life (dead sessions, expired refresh
    /// tokens, forgotten login counters). Replicas sharing a database take turns: one run per
    /// interval in all.
    #[arg(long, env = "IDENTITY_JANITOR_INTERVAL", value_name = "IDENTITY_JANITOR_INTERVAL", default_value = "5m")]
    pub janitor_interval: humantime::Duration,

    /// How long a dead session, an expired refresh token or a forgotten login counter is kept
    /// before the janitor deletes it.
    #[arg(long, env = "IDENTITY_JANITOR_RETENTION", value_name = "IDENTITY_JANITOR_RETENTION", default_value = "1h")]
    pub janitor_retention: humantime::Duration,

    /// How long a signing key signs before the next one takes over (keys rotate by themselves;
    /// `identity-service keys rotate` rotates now).
    #[arg(
        long,
        env = "IDENTITY_KEY_ROTATION_PERIOD",
        value_name = "IDENTITY_KEY_ROTATION_PERIOD",
        default_value = "30d"
    )]
    pub key_rotation_period: humantime::Duration,

    /// How long the next signing key is in the JWK set before it signs: at least
    /// `IDENTITY_JWKS_MAX_AGE`, so relying parties caching the set have it before its first token.
    #[arg(long, env = "IDENTITY_KEY_PUBLISH_AHEAD", value_name = "IDENTITY_KEY_PUBLISH_AHEAD", default_value = "1h")]
    pub key_publish_ahead: humantime::Duration,

    /// How long relying parties may cache the JWK set (the facade's `Cache-Control: max-age`).
    #[arg(long, env = "IDENTITY_JWKS_MAX_AGE", value_name = "IDENTITY_JWKS_MAX_AGE", default_value = "5m")]
    pub jwks_max_age: humantime::Duration,

    /// How far relying parties' clocks may lag ours: a retired key stays in the JWK set this much
    /// longer than the last token it signed lives.
    #[arg(long, env = "IDENTITY_CLOCK_SKEW", value_name = "IDENTITY_CLOCK_SKEW", default_value = "60s")]
    pub clock_skew: humantime::Duration,

    /// HS256 secrets that still verify but no longer sign (comma-separated): rotate the secret
    /// by moving it here and setting a new `IDENTITY_JWT_SECRET`.
    #[arg(
        long,
        env = "IDENTITY_JWT_PREVIOUS_SECRETS",
        value_name = "IDENTITY_JWT_PREVIOUS_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub jwt_previous_secrets: Vec<Secret>,

    /// The key-encryption key that seals the private signing keys in the database: 32 bytes,
    /// base64 (`openssl rand -base64 32`) or hex. Required on PostgreSQL; on SQLite, unset, one
    /// is generated beside the database file (`data/identity.kek`).
    #[arg(
        long,
        env = "IDENTITY_KEY_ENCRYPTION_KEY",
        value_name = "IDENTITY_KEY_ENCRYPTION_KEY",
        hide_env_values = true,
        conflicts_with = "key_encryption_key_file"
    )]
    pub key_encryption_key: Option<Secret>,

    /// A file holding `IDENTITY_KEY_ENCRYPTION_KEY`.
    #[arg(long, env = "IDENTITY_KEY_ENCRYPTION_KEY_FILE", value_name = "IDENTITY_KEY_ENCRYPTION_KEY_FILE")]
    pub key_encryption_key_file: Option<PathBuf>,

    /// Earlier key-encryption keys (comma-separated): they still open stored keys, new keys are
    /// sealed under the current one; `identity-service keys rewrap` moves every key to it.
    #[arg(
        long,
        env = "IDENTITY_KEY_ENCRYPTION_PREVIOUS_KEYS",
        value_name = "IDENTITY_KEY_ENCRYPTION_PREVIOUS_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub key_encryption_previous_keys: Vec<Secret>,

    /// Where mail goes: `smtp://host:port` (plaintext), `smtp://host:port?tls=required`
    /// (STARTTLS), `smtps://host:port` (TLS); credentials as `smtp://user:password@host`.
    /// Unset: every message is written as an `.eml` file into `IDENTITY_OUTBOX_DIR`, its link
    /// logged.
    #[arg(long, env = "IDENTITY_SMTP_URL", value_name = "IDENTITY_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<Secret>,

    /// PEM certificates to trust, besides the system's roots, for the SMTP server's TLS (a
    /// private CA); only with an `smtps://` or `?tls=required` IDENTITY_SMTP_URL.
    #[arg(long, env = "IDENTITY_SMTP_CA", value_name = "IDENTITY_SMTP_CA")]
    pub smtp_ca: Option<PathBuf>,

    /// The `From:` of every message.
    #[arg(
        long,
        env = "IDENTITY_EMAIL_FROM",
        value_name = "IDENTITY_EMAIL_FROM",
        default_value = "Identity <no-reply@localhost>"
    )]
    pub email_from: String,

    /// The base of every link in a message (the facade's public URL; never a request's Host).
    /// Default: the issuer.
    #[arg(long, env = "IDENTITY_PUBLIC_URL", value_name = "IDENTITY_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// `optional`: login works before the address is verified (`User.email_verified` tells);
    /// `required`: login is refused (EMAIL_NOT_VERIFIED) until it is.
    #[arg(
        long,
        env = "IDENTITY_EMAIL_VERIFICATION",
        value_name = "IDENTITY_EMAIL_VERIFICATION",
        default_value = "optional"
    )]
    pub email_verification: EmailVerification,

    /// The providers users may sign in with: a TOML file of `[[provider]]` tables
    /// (docs/social-login.md). Unset: none.
    #[arg(long, env = "IDENTITY_PROVIDERS_FILE", value_name = "IDENTITY_PROVIDERS_FILE")]
    pub providers_file: Option<PathBuf>,

    /// Where messages are written when `IDENTITY_SMTP_URL` is unset.
    #[arg(long, env = "IDENTITY_OUTBOX_DIR", value_name = "IDENTITY_OUTBOX_DIR", default_value = "data/outbox")]
    pub outbox_dir: PathBuf,

    /// How long a password-reset link works.
    #[arg(long, env = "IDENTITY_PASSWORD_RESET_TTL", value_name = "IDENTITY_PASSWORD_RESET_TTL", default_value = "1h")]
    pub password_reset_ttl: humantime::Duration,

    /// How long a verification link works.
    #[arg(
        long,
        env = "IDENTITY_EMAIL_VERIFICATION_TTL",
        value_name = "IDENTITY_EMAIL_VERIFICATION_TTL",
        default_value = "3d"
    )]
    pub email_verification_ttl: humantime::Duration,

    /// How long the link confirming a new address works.
    #[arg(long, env = "IDENTITY_EMAIL_CHANGE_TTL", value_name = "IDENTITY_EMAIL_CHANGE_TTL", default_value = "1h")]
    pub email_change_ttl: humantime::Duration,

    /// Reset and verification requests naming one address, per `IDENTITY_MAIL_LIMIT_WINDOW`.
    #[arg(long, env = "IDENTITY_MAIL_ADDRESS_LIMIT", value_name = "IDENTITY_MAIL_ADDRESS_LIMIT", default_value_t = 3)]
    pub mail_address_limit: u32,

    /// Requests for mail from one client address, per `IDENTITY_MAIL_LIMIT_WINDOW`.
    #[arg(long, env = "IDENTITY_MAIL_CLIENT_LIMIT", value_name = "IDENTITY_MAIL_CLIENT_LIMIT", default_value_t = 20)]
    pub mail_client_limit: u32,

    /// The window of the two mail limits.
    #[arg(long, env = "IDENTITY_MAIL_LIMIT_WINDOW", value_name = "IDENTITY_MAIL_LIMIT_WINDOW", default_value = "1h")]
    pub mail_limit_window: humantime::Duration,

    /// The longest wait between two delivery attempts of a message (1 s, doubling, up to this).
    #[arg(long, env = "IDENTITY_MAIL_RETRY_MAX", value_name = "IDENTITY_MAIL_RETRY_MAX", default_value = "5m")]
    pub mail_retry_max: humantime::Duration,

    /// A message still undelivered this long after it was queued is abandoned.
    #[arg(
        long,
        env = "IDENTITY_MAIL_GIVE_UP_AFTER",
        value_name = "IDENTITY_MAIL_GIVE_UP_AFTER",
        default_value = "24h"
    )]
    pub mail_give_up: humantime::Duration,

    /// Database connection pool size.
    #[arg(
        long,
        env = "IDENTITY_DATABASE_MAX_CONNECTIONS",
        value_name = "IDENTITY_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub database_max_connections: u32,
}

/// When the janitor runs, and what it keeps.
#[derive(Clone, Copy, Debug)]
pub struct Janitor {
    pub interval: Duration,
    pub retention: Duration,
}

/// The issuer when `IDENTITY_ISSUER` is unset: the facade at its default address.
pub const DEFAULT_ISSUER: &str = "http://127.0.0.1:8080";

/// A configuration problem, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// The core's refusal of `Settings`, each field named by its setting.
    fn from_core(error: CoreError) -> Self {
        match error {
            CoreError::Invalid(violations) => ConfigError(
                violations
                    .iter()
                    .map(|violation| format!("{}: {}", variable(violation.field), violation.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            other => ConfigError(other.to_string()),
        }
    }
}

/// The setting behind a field of `Settings`.
fn variable(field: &str) -> &str {
    match field {
        "jwt_secret" => "IDENTITY_JWT_SECRET",
        "access_ttl" => "IDENTITY_ACCESS_TTL",
        "refresh_ttl" => "IDENTITY_REFRESH_TTL",
        "session_idle_ttl" => "IDENTITY_SESSION_IDLE_TTL",
        "refresh_reuse_grace" => "IDENTITY_REFRESH_REUSE_GRACE",
        "session_cache_ttl" => "IDENTITY_SESSION_CACHE_TTL",
        "password_cost" => "IDENTITY_ARGON2_MEMORY_KIB/_ITERATIONS/_PARALLELISM",
        "throttle.max_failures" => "IDENTITY_LOGIN_MAX_FAILURES",
        "throttle.account_max_failures" => "IDENTITY_LOGIN_ACCOUNT_MAX_FAILURES",
        "throttle.address_max_failures" => "IDENTITY_LOGIN_ADDRESS_MAX_FAILURES",
        "throttle.lockout" => "IDENTITY_LOGIN_LOCKOUT",
        "throttle.lockout_max" => "IDENTITY_LOGIN_LOCKOUT_MAX",
        "throttle.failure_window" => "IDENTITY_LOGIN_FAILURE_WINDOW",
        "keys.rotation_period" => "IDENTITY_KEY_ROTATION_PERIOD",
        "keys.publish_ahead" => "IDENTITY_KEY_PUBLISH_AHEAD",
        "keys.jwks_max_age" => "IDENTITY_JWKS_MAX_AGE",
        "keys.previous_secrets" => "IDENTITY_JWT_PREVIOUS_SECRETS",
        "email.smtp_url" => "IDENTITY_SMTP_URL",
        "email.smtp_ca" => "IDENTITY_SMTP_CA",
        "email.from" => "IDENTITY_EMAIL_FROM",
        "email.public_url" => "IDENTITY_PUBLIC_URL (or IDENTITY_ISSUER, its default)",
        "email.outbox_dir" => "IDENTITY_OUTBOX_DIR",
        "providers_file" => "IDENTITY_PROVIDERS_FILE",
        "email.reset_ttl" => "IDENTITY_PASSWORD_RESET_TTL",
        "email.verification_ttl" => "IDENTITY_EMAIL_VERIFICATION_TTL",
        "email.change_ttl" => "IDENTITY_EMAIL_CHANGE_TTL",
        "email.address_limit" => "IDENTITY_MAIL_ADDRESS_LIMIT",
        "email.client_limit" => "IDENTITY_MAIL_CLIENT_LIMIT",
        "email.limit_window" => "IDENTITY_MAIL_LIMIT_WINDOW",
        "email.retry_max" => "IDENTITY_MAIL_RETRY_MAX",
        "email.give_up_after" => "IDENTITY_MAIL_GIVE_UP_AFTER",
        other => other,
    }
}

impl Config {
    /// The contract's defaults, built from the declarations above without reading the
    /// environment; for tests.
    pub fn defaults() -> Self {
        let command = Self::command().mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(["identity-service"]);
        matches
            .and_then(|matches| Self::from_arg_matches(&matches))
            .unwrap_or_else(|error| panic!("the declared defaults do not parse: {error}"))
    }

    /// Everything checked: the settings of the domain, the store and the bootstrap manager.
    /// The message names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings()?;
        self.store()?;
        self.bootstrap_manager()?;
        self.transport()?;
        self.janitor()?;
        Ok(())
    }

    /// Plaintext or TLS on the gRPC port, its files read and checked.
    pub fn transport(&self) -> Result<Transport, ConfigError> {
        Transport::from_files(self.tls_cert.as_deref(), self.tls_key.as_deref(), self.tls_client_ca.as_deref())
    }

    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let url = self.database_url.expose();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError("IDENTITY_DATABASE_URL: expected a sqlite: or postgres:// URL".into()));
        }
        let issuer = self.issuer.clone().unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
        let settings = Settings {
            email: EmailSettings {
                smtp_url: self.smtp_url.clone(),
                smtp_ca: self.smtp_ca.clone(),
                from: self.email_from.clone(),
                public_url: self.public_url.clone().unwrap_or_else(|| issuer.clone()),
                verification: self.email_verification,
                outbox_dir: self.outbox_dir.clone(),
                reset_ttl: self.password_reset_ttl.into(),
                verification_ttl: self.email_verification_ttl.into(),
                change_ttl: self.email_change_ttl.into(),
                address_limit: self.mail_address_limit,
                client_limit: self.mail_client_limit,
                limit_window: self.mail_limit_window.into(),
                retry_max: self.mail_retry_max.into(),
                give_up_after: self.mail_give_up.into(),
            },
            issuer,
            audience: self.audience.clone(),
            jwt_alg: self.jwt_alg,
            jwt_secret: self.jwt_secret.clone(),
            access_ttl: self.access_ttl.into(),
            refresh_ttl: self.refresh_ttl.into(),
            session_idle_ttl: self.session_idle_ttl.into(),
            refresh_reuse_grace: self.refresh_reuse_grace.into(),
            password_cost: PasswordCost {
                memory_kib: self.argon2_memory_kib,
                iterations: self.argon2_iterations,
                parallelism: self.argon2_parallelism,
            },
            throttle: ThrottleSettings {
                max_failures: self.login_max_failures,
                account_max_failures: self.login_account_max_failures,
                address_max_failures: self.login_address_max_failures,
                lockout: self.login_lockout.into(),
                lockout_max: self.login_lockout_max.into(),
                failure_window: self.login_failure_window.into(),
            },
            session_cache_ttl: self.session_cache_ttl.into(),
            keys: KeySettings {
                rotation_period: self.key_rotation_period.into(),
                publish_ahead: self.key_publish_ahead.into(),
                jwks_max_age: self.jwks_max_age.into(),
                clock_skew: self.clock_skew.into(),
                previous_secrets: self.jwt_previous_secrets.clone(),
                encryption_key: self.key_encryption_key()?,
                previous_encryption_keys: self.key_encryption_previous_keys.clone(),
            },
            providers: match &self.providers_file {
                Some(path) => identity_core::social::load_providers(path).map_err(ConfigError::from_core)?,
                None => Vec::new(),
            },
        };
        settings.validate().map_err(ConfigError::from_core)?;
        Ok(settings)
    }

    /// `IDENTITY_KEY_ENCRYPTION_KEY`, or the contents of `_FILE`; required on PostgreSQL.
    fn key_encryption_key(&self) -> Result<Option<Secret>, ConfigError> {
        let key = match &self.key_encryption_key_file {
            Some(path) => Some(Secret::new(std::fs::read_to_string(path).map_err(|error| {
                ConfigError(format!("IDENTITY_KEY_ENCRYPTION_KEY_FILE: cannot read {}: {error}", path.display()))
            })?)),
            None => self.key_encryption_key.clone(),
        };
        let url = self.database_url.expose();
        if key.is_none() && (url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError(
                "IDENTITY_KEY_ENCRYPTION_KEY (or _FILE) is required on PostgreSQL: 32 random bytes, base64 \
                 (`openssl rand -base64 32`), the same on every replica; it encrypts the signing keys at rest"
                    .into(),
            ));
        }
        Ok(key)
    }

    pub fn store(&self) -> Result<StoreOptions, ConfigError> {
        let timeout: Duration = self.database_timeout.into();
        if timeout < Duration::from_millis(100) {
            return Err(ConfigError("IDENTITY_DATABASE_TIMEOUT: must be at least 100ms".into()));
        }
        if !(1..=1000).contains(&self.database_max_connections) {
            return Err(ConfigError("IDENTITY_DATABASE_MAX_CONNECTIONS: must be between 1 and 1000".into()));
        }
        Ok(StoreOptions { timeout, max_connections: self.database_max_connections })
    }

    /// The janitor's interval and retention.
    pub fn janitor(&self) -> Result<Janitor, ConfigError> {
        let interval: Duration = self.janitor_interval.into();
        if interval < Duration::from_millis(100) {
            return Err(ConfigError("IDENTITY_JANITOR_INTERVAL: must be at least 100ms".into()));
        }
        Ok(Janitor { interval, retention: self.janitor_retention.into() })
    }

    /// `username:password` or `username:@file`, checked as a sign-up would be.
    pub fn bootstrap_manager(&self) -> Result<Option<(String, Secret)>, ConfigError> {
        let invalid = |reason: String| ConfigError(format!("IDENTITY_BOOTSTRAP_MANAGER: {reason}"));
        let Some(value) = &self.bootstrap_manager else { return Ok(None) };
        let (username, password) = value
            .expose()
            .split_once(':')
            .ok_or_else(|| invalid("expected username:password or username:@file".into()))?;
        let password = match password.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|error| invalid(format!("cannot read {path}: {error}")))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            None => password.to_owned(),
        };
        check_bootstrap_manager(username, &password).map_err(|error| invalid(error.to_string()))?;
        Ok(Some((username.to_owned(), Secret::new(password))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let config = Config::defaults();
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
        let settings = config.settings().unwrap();
        assert_eq!(settings.access_ttl, Duration::from_secs(300));
        assert_eq!(settings.refresh_ttl, Duration::from_secs(7 * 86400));
        assert_eq!(settings.session_idle_ttl, Duration::from_secs(86400));
        assert_eq!(settings.refresh_reuse_grace, Duration::from_secs(10));
        assert_eq!(settings.jwt_alg, JwtAlg::Rs256);
        assert_eq!(settings.keys.rotation_period, Duration::from_secs(30 * 86400));
        assert_eq!(settings.keys.publish_ahead, Duration::from_secs(3600));
        assert_eq!(settings.keys.jwks_max_age, Duration::from_secs(300));
    }

    #[test]
    fn postgres_needs_a_key_encryption_key_and_says_so_in_one_line() {
        let config = Config { database_url: Secret::new("postgres://u@h/db"), ..Config::defaults() };
        let message = config.validate().unwrap_err().0;
        assert!(message.starts_with("IDENTITY_KEY_ENCRYPTION_KEY (or _FILE) is required on PostgreSQL"), "{message}");
        assert!(!message.contains('\n'));
        let config = Config { key_publish_ahead: Duration::from_secs(10).into(), ..Config::defaults() };
        assert!(config.validate().unwrap_err().0.starts_with("IDENTITY_KEY_PUBLISH_AHEAD: must be at least"));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let error = Config::try_parse_from(["identity-service", "--jwt-alg", "none"]).unwrap_err().to_string();
        assert!(error.contains("IDENTITY_JWT_ALG"), "{error}");
        let mut config = Config::defaults();
        config.database_url = Secret::new("mysql://x");
        assert!(config.settings().unwrap_err().0.starts_with("IDENTITY_DATABASE_URL"));
    }

    #[test]
    fn nonsense_values_are_refused_naming_the_setting() {
        let config = Config { database_max_connections: 0, ..Config::defaults() };
        assert!(config.validate().unwrap_err().0.starts_with("IDENTITY_DATABASE_MAX_CONNECTIONS"));
        let config = Config { database_timeout: Duration::ZERO.into(), ..Config::defaults() };
        assert!(config.validate().unwrap_err().0.starts_with("IDENTITY_DATABASE_TIMEOUT"));
        let config = Config { login_max_failures: 0, login_lockout: Duration::ZERO.into(), ..Config::defaults() };
        let message = config.validate().unwrap_err().0;
        assert!(
            message.contains("IDENTITY_LOGIN_MAX_FAILURES") && message.contains("IDENTITY_LOGIN_LOCKOUT:"),
            "{message}"
        );
        let config =
            Config { jwt_alg: JwtAlg::Hs256, jwt_secret: Some(Secret::new("x".repeat(31))), ..Config::defaults() };
        assert_eq!(config.validate().unwrap_err().0, "IDENTITY_JWT_SECRET: must be at least 32 bytes");
    }

    #[test]
    fn the_bootstrap_password_is_checked_before_start_and_named_once() {
        let config = Config { bootstrap_manager: Some(Secret::new("root:short")), ..Config::defaults() };
        assert_eq!(
            config.validate().unwrap_err().0,
            "IDENTITY_BOOTSTRAP_MANAGER: password: must be at least 8 characters"
        );
    }

    #[test]
    fn bootstrap_manager_reads_inline_or_from_a_file() {
        let mut config = Config::defaults();
        config.bootstrap_manager = Some(Secret::new("root:s3cret pass"));
        let (name, password) = config.bootstrap_manager().unwrap().unwrap();
        assert_eq!((name.as_str(), password.expose()), ("root", "s3cret pass"));
        let file = std::env::temp_dir().join(format!("bootstrap-{}", std::process::id()));
        std::fs::write(&file, "from file\n").unwrap();
        config.bootstrap_manager = Some(Secret::new(format!("root:@{}", file.display())));
        let (_, password) = config.bootstrap_manager().unwrap().unwrap();
        assert_eq!(password.expose(), "from file");
        config.bootstrap_manager = Some(Secret::new("no-colon"));
        assert!(config.bootstrap_manager().is_err());
    }
}
