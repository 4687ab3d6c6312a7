//! The gRPC transport: one file per proto service, the caller read from metadata here, and
//! the one error conversion in `status`.

pub mod accounts;
pub mod auth;
pub mod convert;
pub mod edge;
pub mod social;
pub mod status;
pub mod users;

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;

use identity_core::{ClientInfo, CoreError, CoreResult, Credential, Identity, Principal};
use tonic::Request;

/// Metadata that names the end user on whose behalf a service calls.
pub const SESSION_TOKEN_HEADER: &str = "x-session-token";

/// The credential in the request's metadata, if any: `authorization: Bearer <access token>`
/// or `x-session-token: <token>`.
fn credential<T>(request: &Request<T>) -> CoreResult<Option<Credential<'_>>> {
    let metadata = request.metadata();
    if let Some(value) = metadata.get("authorization") {
        let value = value.to_str().map_err(|_| CoreError::invalid("authorization", "is not ASCII"))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(CoreError::invalid("authorization", "expected \"Bearer <access token>\""));
        }
        return Ok(Some(Credential::AccessToken(token.trim())));
    }
    if let Some(value) = metadata.get(SESSION_TOKEN_HEADER) {
        let token = value.to_str().map_err(|_| CoreError::invalid(SESSION_TOKEN_HEADER, "is not ASCII"))?;
        return Ok(Some(Credential::SessionToken(token.trim())));
    }
    Ok(None)
}

/// The caller, or `None` when no credential was sent. A dead credential is an error.
pub async fn caller<T>(identity: &Identity, request: &Request<T>) -> CoreResult<Option<Principal>> {
    match credential(request)? {
        Some(credential) => identity.authenticate(credential).await.map(Some),
        None => Ok(None),
    }
}

/// The callers whose `x-forwarded-for` names the end user (`IDENTITY_TRUSTED_FORWARDERS`).
#[derive(Debug, Clone)]
pub struct Forwarders(Arc<Vec<IpNet>>);

impl Forwarders {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Forwarders(Arc::new(networks))
    }

    fn trusts(&self, peer: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address.
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|network| network.contains(&peer))
    }

    /// Where the end user is: from a trusted forwarder (the facade), the first entry of
    /// `x-forwarded-for` when it is an IP address; from anyone else, or without one, the
    /// peer's address (a spoofed header cannot move a caller to another throttling counter).
    /// The user agent is cut to 512 characters.
    pub fn client_info<T>(&self, request: &Request<T>) -> ClientInfo {
        let metadata = request.metadata();
        let header = |name: &str| metadata.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
        // A peer on the Unix socket is a process of this host: it counts as loopback.
        let local = request.extensions().get::<tonic::transport::server::UdsConnectInfo>().is_some();
        let peer =
            request.remote_addr().map(|addr| addr.ip()).or(local.then_some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)));
        let forwarded = header("x-forwarded-for")
            .filter(|_| peer.is_some_and(|peer| self.trusts(peer)))
            .and_then(|list| list.split(',').next())
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok());
        let ip = forwarded.or(peer).map(|ip| ip.to_string()).unwrap_or_default();
        let user_agent = header("x-forwarded-user-agent").or_else(|| header("user-agent")).unwrap_or_default();
        ClientInfo { ip, user_agent: user_agent.chars().take(512).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trusted_peers_name_the_end_user() {
        let forwarders = Forwarders::new(vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()]);
        assert!(forwarders.trusts("127.0.0.1".parse().unwrap()));
        assert!(forwarders.trusts("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!forwarders.trusts("192.0.2.1".parse().unwrap()));
        assert!(!forwarders.trusts("::1".parse().unwrap()));
    }
}
