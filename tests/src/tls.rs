//! Certificates made in the test: a CA, the identity service's certificate (for `127.0.0.1`
//! and `localhost`), a client certificate from the same CA, and one from a CA nobody trusts.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// PEM files in a temporary directory, dropped with it.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate signed by a CA the server does not know.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

/// The subject of the client certificate, as it shows in the identity service's log.
pub const CLIENT_SUBJECT: &str = "CN=graphql-facade, O=e2e";

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(names: &[&str], common_name: &str, issuer: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let mut params = CertificateParams::new(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "e2e");
    let key = KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, issuer).unwrap();
    (certificate.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, contents: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        let authority = ca("e2e test CA");
        let (server_cert, server_key) = leaf(&["127.0.0.1", "localhost"], "identity-service", &authority);
        let (client_cert, client_key) = leaf(&[], "graphql-facade", &authority);
        let (stranger_cert, stranger_key) = leaf(&[], "graphql-facade", &ca("a CA nobody trusts"));
        Pki {
            ca: write("ca.pem", &authority.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            stranger_cert: write("stranger.pem", &stranger_cert),
            stranger_key: write("stranger-key.pem", &stranger_key),
            _dir: dir,
        }
    }

    /// A client that trusts the test CA, presenting no certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(&self.ca).unwrap()))
    }

    /// A client that trusts the test CA and presents the given certificate.
    pub fn client_with(&self, cert: &PathBuf, key: &PathBuf) -> ClientTlsConfig {
        self.client().identity(Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()))
    }

    pub fn path(path: &std::path::Path) -> &str {
        path.to_str().unwrap()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
