//! Every setting of `graphql-facade`: a CLI flag and an environment variable each.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser};
use stack_process::pem;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// `FACADE_COOKIE_SECURE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CookieSecure {
    /// Secure unless the issuer (`IDENTITY_ISSUER`) is plain-http localhost.
    Auto,
    Always,
    Never,
}

/// The GraphQL facade: every request authenticated through the identity service.
#[derive(Debug, Clone, Parser)]
#[command(name = "graphql-facade", version, about)]
#[group(id = "facade")]
pub struct Config {
    /// Where the facade listens for HTTP.
    #[arg(long, env = "FACADE_HTTP_ADDR", value_name = "FACADE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Where the facade finds the identity service (gRPC): one URL, or several replicas'
    /// separated by commas (calls go round-robin over those that answer). `https://` means
    /// TLS, the certificate checked against `FACADE_IDENTITY_CA` (default: the public web
    /// roots); `http://` means plaintext.
    #[arg(
        long,
        env = "FACADE_IDENTITY_URL",
        value_name = "FACADE_IDENTITY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub identity_url: String,

    /// HTTP/2 connections to each identity-service URL; calls go round-robin over them.
    #[arg(long, env = "FACADE_IDENTITY_CONNECTIONS", value_name = "FACADE_IDENTITY_CONNECTIONS", default_value_t = 1)]
    pub identity_connections: usize,

    /// PEM CA certificate(s) the identity service's certificate must chain to (a private CA).
    #[arg(long, env = "FACADE_IDENTITY_CA", value_name = "FACADE_IDENTITY_CA")]
    pub identity_ca: Option<PathBuf>,

    /// The name the identity service's certificate must carry. Default: the host of its URL.
    #[arg(long, env = "FACADE_IDENTITY_TLS_NAME", value_name = "FACADE_IDENTITY_TLS_NAME")]
    pub identity_tls_name: Option<String>,

    /// PEM certificate the facade presents to the identity service (mutual TLS).
    #[arg(long, env = "FACADE_IDENTITY_CLIENT_CERT", value_name = "FACADE_IDENTITY_CLIENT_CERT")]
    pub identity_client_cert: Option<PathBuf>,

    /// PEM private key of `FACADE_IDENTITY_CLIENT_CERT`.
    #[arg(long, env = "FACADE_IDENTITY_CLIENT_KEY", value_name = "FACADE_IDENTITY_CLIENT_KEY")]
    pub identity_client_key: Option<PathBuf>,

    /// How long one call to the identity service may take before the facade answers
    /// SERVICE_UNAVAILABLE.
    #[arg(long, env = "FACADE_IDENTITY_TIMEOUT", value_name = "FACADE_IDENTITY_TIMEOUT", default_value = "5s")]
    pub identity_timeout: humantime::Duration,

    /// The deepest selection a query may make.
    #[arg(long, env = "FACADE_MAX_DEPTH", value_name = "FACADE_MAX_DEPTH", default_value_t = 15)]
    pub max_depth: usize,

    /// The most fields (complexity points) a query may select.
    #[arg(long, env = "FACADE_MAX_COMPLEXITY", value_name = "FACADE_MAX_COMPLEXITY", default_value_t = 1000)]
    pub max_complexity: usize,

    /// The most aliases a query may use (aliases multiply work, e.g. many `tokenAuth`s).
    #[arg(long, env = "FACADE_MAX_ALIASES", value_name = "FACADE_MAX_ALIASES", default_value_t = 15)]
    pub max_aliases: usize,

    /// The largest request body accepted, in bytes.
    #[arg(long, env = "FACADE_MAX_BODY_BYTES", value_name = "FACADE_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Most websockets open at once for one session (more are refused with 4429).
    #[arg(
        long,
        env = "FACADE_WS_MAX_SOCKETS_PER_SESSION",
        value_name = "FACADE_WS_MAX_SOCKETS_PER_SESSION",
        default_value_t = 8
    )]
    pub ws_max_sockets_per_session: usize,

    /// Most subscriptions running at once on one websocket.
    #[arg(long, env = "FACADE_WS_MAX_SUBSCRIPTIONS", value_name = "FACADE_WS_MAX_SUBSCRIPTIONS", default_value_t = 16)]
    pub ws_max_subscriptions: usize,

    /// A websocket that has not sent `connection_init` by then is closed with 4408.
    #[arg(long, env = "FACADE_WS_INIT_TIMEOUT", value_name = "FACADE_WS_INIT_TIMEOUT", default_value = "10s")]
    pub ws_init_timeout: humantime::Duration,

    /// How often the facade pings each websocket (keep-alive through proxies).
    #[arg(long, env = "FACADE_WS_PING_INTERVAL", value_name = "FACADE_WS_PING_INTERVAL", default_value = "25s")]
    pub ws_ping_interval: humantime::Duration,

    /// Whether cookies carry `Secure`: `auto` = Secure unless the issuer (`IDENTITY_ISSUER`, as
    /// the identity service reports it) is plain-http localhost; `always`; `never`.
    #[arg(long, env = "FACADE_COOKIE_SECURE", value_name = "FACADE_COOKIE_SECURE", default_value = "auto")]
    pub cookie_secure: CookieSecure,

    /// The Hasura role of requests without any credential (webhook mode). Unset: such
    /// requests get 401.
    #[arg(long, env = "FACADE_HASURA_ANONYMOUS_ROLE", value_name = "FACADE_HASURA_ANONYMOUS_ROLE")]
    pub hasura_anonymous_role: Option<String>,

    /// The longest Hasura may cache a webhook answer (never longer than the credential lives).
    /// Revocations reach Hasura within this time.
    #[arg(long, env = "FACADE_HASURA_CACHE_MAX_AGE", value_name = "FACADE_HASURA_CACHE_MAX_AGE", default_value = "5s")]
    pub hasura_cache_max_age: humantime::Duration,

    /// Reverse proxies in front of the facade (CIDRs, comma-separated) whose `X-Forwarded-For`
    /// says where the client is (login throttling, session listing). Default: none, the peer's
    /// address counts.
    #[arg(long, env = "FACADE_TRUSTED_PROXIES", value_name = "FACADE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Serve GraphiQL to browsers at `GET /graphql`.
    #[arg(
        long,
        env = "FACADE_GRAPHIQL",
        value_name = "FACADE_GRAPHIQL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub graphiql: bool,
}

/// A configuration problem, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// The contract's defaults, built from the declarations above without reading the
    /// environment; for tests.
    pub fn defaults() -> Self {
        let command = Self::command().mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(["graphql-facade"]);
        matches
            .and_then(|matches| Self::from_arg_matches(&matches))
            .unwrap_or_else(|error| panic!("the declared defaults do not parse: {error}"))
    }

    /// The identity service's replicas, as listed in `FACADE_IDENTITY_URL`.
    pub fn identity_urls(&self) -> Vec<String> {
        self.identity_url.split(',').map(str::trim).filter(|url| !url.is_empty()).map(str::to_owned).collect()
    }

    /// How the facade speaks TLS to the identity service's `https://` URLs, the files read and
    /// checked; `None` when every URL is `http://`. A TLS setting beside only `http://` URLs
    /// is refused: the operator meant TLS and would silently get plaintext.
    pub fn identity_tls(&self) -> Result<Option<ClientTlsConfig>, ConfigError> {
        let any_https = self.identity_urls().iter().any(|url| url.starts_with("https://"));
        if !any_https {
            let stray = [
                ("FACADE_IDENTITY_CA", self.identity_ca.is_some()),
                ("FACADE_IDENTITY_TLS_NAME", self.identity_tls_name.is_some()),
                ("FACADE_IDENTITY_CLIENT_CERT", self.identity_client_cert.is_some()),
                ("FACADE_IDENTITY_CLIENT_KEY", self.identity_client_key.is_some()),
            ];
            return match stray.iter().find(|(_, set)| *set) {
                Some((name, _)) => {
                    Err(ConfigError(format!("{name}: set, but FACADE_IDENTITY_URL has no https:// URL (TLS is off)")))
                }
                None => Ok(None),
            };
        }
        let mut tls = ClientTlsConfig::new().timeout(Duration::from(self.identity_timeout));
        tls = match &self.identity_ca {
            Some(path) => tls.ca_certificate(Certificate::from_pem(
                pem::certificates("FACADE_IDENTITY_CA", path).map_err(ConfigError)?,
            )),
            None => tls.with_webpki_roots(),
        };
        if let Some(name) = &self.identity_tls_name {
            tls = tls.domain_name(name.clone());
        }
        match (&self.identity_client_cert, &self.identity_client_key) {
            (Some(cert), Some(key)) => {
                let cert = pem::certificates("FACADE_IDENTITY_CLIENT_CERT", cert).map_err(ConfigError)?;
                let key = pem::private_key("FACADE_IDENTITY_CLIENT_KEY", key).map_err(ConfigError)?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            (Some(_), None) => {
                return Err(ConfigError(
                    "FACADE_IDENTITY_CLIENT_KEY: required with FACADE_IDENTITY_CLIENT_CERT".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError(
                    "FACADE_IDENTITY_CLIENT_CERT: required with FACADE_IDENTITY_CLIENT_KEY".into(),
                ));
            }
            (None, None) => {}
        }
        Ok(Some(tls))
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let urls = self.identity_urls();
        if urls.is_empty() {
            return Err(ConfigError(
                "FACADE_IDENTITY_URL: expected one or more http://, https:// or unix:// URLs".into(),
            ));
        }
        for url in &urls {
            let valid = match url.strip_prefix("unix://") {
                Some(path) => path.starts_with('/'),
                None => {
                    (url.starts_with("http://") || url.starts_with("https://"))
                        && url.parse::<tonic::transport::Uri>().is_ok()
                }
            };
            if !valid {
                return Err(ConfigError(format!(
                    "FACADE_IDENTITY_URL: expected an http://, https:// or unix:///absolute/path URL, got {url:?}"
                )));
            }
        }
        if !(1..=64).contains(&self.identity_connections) {
            return Err(ConfigError("FACADE_IDENTITY_CONNECTIONS must be between 1 and 64".into()));
        }
        self.identity_tls()?;
        for (name, value) in [
            ("FACADE_MAX_DEPTH", self.max_depth),
            ("FACADE_MAX_COMPLEXITY", self.max_complexity),
            ("FACADE_MAX_BODY_BYTES", self.max_body_bytes),
            ("FACADE_WS_MAX_SOCKETS_PER_SESSION", self.ws_max_sockets_per_session),
            ("FACADE_WS_MAX_SUBSCRIPTIONS", self.ws_max_subscriptions),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(ConfigError("FACADE_MAX_BODY_BYTES must be between 1024 and 16777216".into()));
        }
        for (name, value, minimum, shown) in [
            ("FACADE_IDENTITY_TIMEOUT", self.identity_timeout, Duration::from_millis(100), "100ms"),
            ("FACADE_WS_INIT_TIMEOUT", self.ws_init_timeout, Duration::from_secs(1), "1s"),
            ("FACADE_WS_PING_INTERVAL", self.ws_ping_interval, Duration::from_secs(1), "1s"),
        ] {
            if Duration::from(value) < minimum {
                return Err(ConfigError(format!("{name} must be at least {shown}")));
            }
        }
        if self.hasura_anonymous_role.as_deref().is_some_and(|role| role.trim().is_empty()) {
            return Err(ConfigError("FACADE_HASURA_ANONYMOUS_ROLE must not be empty when set".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let config = Config::defaults();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.identity_url, "http://127.0.0.1:50051");
        assert!(config.validate().is_ok());
    }

    #[test]
    fn nonsense_values_name_the_setting() {
        let config = Config { ws_ping_interval: Duration::ZERO.into(), ..Config::defaults() };
        assert!(config.validate().unwrap_err().0.starts_with("FACADE_WS_PING_INTERVAL"));
        let config = Config { max_body_bytes: 10, ..Config::defaults() };
        assert!(config.validate().unwrap_err().0.starts_with("FACADE_MAX_BODY_BYTES"));
        let config = Config { identity_timeout: Duration::ZERO.into(), ..Config::defaults() };
        assert!(config.validate().unwrap_err().0.starts_with("FACADE_IDENTITY_TIMEOUT"));
    }

    #[test]
    fn the_identity_service_may_be_several_replicas() {
        let config = Config { identity_url: "http://a:1, http://b:2,".into(), ..Config::defaults() };
        assert_eq!(config.identity_urls(), ["http://a:1", "http://b:2"]);
        assert!(config.validate().is_ok());
        let config = Config { identity_url: "http://a:1,b:2".into(), ..Config::defaults() };
        assert!(config.validate().unwrap_err().0.contains("\"b:2\""));
    }

    #[test]
    fn tls_settings_without_an_https_url_are_refused() {
        let config = Config { identity_ca: Some("/nowhere/ca.pem".into()), ..Config::defaults() };
        assert!(config.validate().unwrap_err().0.starts_with("FACADE_IDENTITY_CA: set, but"));
        let config = Config { identity_url: "https://identity.internal:50051".into(), ..Config::defaults() };
        assert!(config.validate().is_ok());
        let config = Config {
            identity_url: "https://identity.internal:50051".into(),
            identity_ca: Some("/nowhere/ca.pem".into()),
            ..Config::defaults()
        };
        assert!(config.validate().unwrap_err().0.starts_with("FACADE_IDENTITY_CA: cannot read"));
        let config = Config {
            identity_url: "https://identity.internal:50051".into(),
            identity_client_cert: Some("/nowhere/cert.pem".into()),
            ..Config::defaults()
        };
        assert!(config.validate().unwrap_err().0.starts_with("FACADE_IDENTITY_CLIENT_KEY: required"));
    }

    #[test]
    fn a_bad_identity_url_names_the_setting() {
        let config = Config { identity_url: "127.0.0.1:50051".into(), ..Config::defaults() };
        assert!(config.validate().unwrap_err().0.starts_with("FACADE_IDENTITY_URL"));
    }
}
