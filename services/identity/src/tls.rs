//! TLS on the gRPC port (`IDENTITY_TLS_CERT`, `IDENTITY_TLS_KEY`), and mutual TLS
//! (`IDENTITY_TLS_CLIENT_CA`): only callers presenting a certificate signed by that CA get in,
//! and every log line of their calls names the certificate's subject.

use std::{path::Path, time::Duration};

use stack_process::pem;
use tonic::{
    codegen::http,
    transport::{
        Certificate, Identity, ServerTlsConfig,
        server::{TcpConnectInfo, TlsConnectInfo},
    },
};

use crate::ConfigError;

/// How the gRPC port speaks.
#[derive(Clone, Debug)]
pub enum Transport {
    Plaintext,
    Tls { config: ServerTlsConfig, mutual: bool },
}

impl Transport {
    /// From the three settings; a missing half, an unreadable file or one of the wrong kind
    /// names its setting.
    pub fn from_files(cert: Option<&Path>, key: Option<&Path>, client_ca: Option<&Path>) -> Result<Self, ConfigError> {
        let (cert, key) = match (cert, key) {
            (None, None) if client_ca.is_some() => {
                return Err(ConfigError(
                    "IDENTITY_TLS_CLIENT_CA: needs IDENTITY_TLS_CERT and IDENTITY_TLS_KEY (mutual TLS is TLS)".into(),
                ));
            }
            (None, None) => return Ok(Transport::Plaintext),
            (Some(_), None) => return Err(ConfigError("IDENTITY_TLS_KEY: required with IDENTITY_TLS_CERT".into())),
            (None, Some(_)) => return Err(ConfigError("IDENTITY_TLS_CERT: required with IDENTITY_TLS_KEY".into())),
            (Some(cert), Some(key)) => (cert, key),
        };
        let cert = pem::certificates("IDENTITY_TLS_CERT", cert).map_err(ConfigError)?;
        let key = pem::private_key("IDENTITY_TLS_KEY", key).map_err(ConfigError)?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).timeout(HANDSHAKE_TIMEOUT);
        if let Some(client_ca) = client_ca {
            let ca = pem::certificates("IDENTITY_TLS_CLIENT_CA", client_ca).map_err(ConfigError)?;
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        // Building the acceptor checks that the key is the certificate's.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|error| ConfigError(format!("IDENTITY_TLS_CERT/IDENTITY_TLS_KEY: {}", source_text(&error))))?;
        Ok(Transport::Tls { config, mutual: client_ca.is_some() })
    }

    /// For the log line that says where the service listens.
    pub fn describe(&self) -> &'static str {
        match self {
            Transport::Plaintext => "plaintext",
            Transport::Tls { mutual: false, .. } => "tls",
            Transport::Tls { mutual: true, .. } => "mutual tls",
        }
    }
}

/// A client that opened a connection has this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn source_text(error: &tonic::transport::Error) -> String {
    use std::error::Error;
    error.source().map_or_else(|| error.to_string(), ToString::to_string)
}

/// The span every call runs in under mutual TLS: `caller` is the subject of the certificate
/// the caller presented.
pub fn caller_span(request: &http::Request<()>) -> tracing::Span {
    let subject = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|chain| chain.first().and_then(|leaf| subject(leaf.as_ref())));
    match subject {
        Some(subject) => tracing::info_span!("grpc", caller = %subject),
        None => tracing::Span::none(),
    }
}

fn subject(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(certificate.subject().to_string())
}
