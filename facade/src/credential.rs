//! The credential rules, for every entry point: an HTTP request (`Authorization: Bearer`, or
//! django-graphql-jwt's `JWT` prefix, else the `sessionid` cookie), a websocket's
//! `connection_init` payload, and the headers Hasura forwards to its webhook. Also where the
//! end user is (`ClientInfo`), and how both travel to the identity service as gRPC metadata.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use ipnet::IpNet;

use identity_proto::pb;
use poem::{Request, http::header, web::cookie::CookieJar};
use tonic::metadata::{MetadataMap, MetadataValue};

/// The session cookie's name (Django's).
pub const SESSION_COOKIE: &str = "sessionid";

/// A credential as presented by a client.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <jwt>` (or `JWT <jwt>`).
    Bearer(String),
    /// The `sessionid` cookie, or a websocket's `sessionToken`.
    Session(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer([redacted])"),
            Credential::Session(_) => f.write_str("Session([redacted])"),
        }
    }
}

impl Credential {
    /// An `Authorization` header value: `Bearer <jwt>` or `JWT <jwt>`. Any other scheme
    /// (a proxy's Basic) is not ours.
    pub fn from_authorization(value: &str) -> Option<Self> {
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("jwt");
        (known && !token.is_empty()).then(|| Credential::Bearer(token.to_owned()))
    }

    /// The credential of an HTTP request: `Authorization` first, then the `sessionid` cookie.
    pub fn of_request(request: &Request) -> Option<Self> {
        let bearer = request.header(header::AUTHORIZATION).and_then(Credential::from_authorization);
        bearer.or_else(|| Self::of_cookies(request.cookie()))
    }

    /// A `connection_init` payload's: `{"authorization": "Bearer …"}` or `{"sessionToken": …}`.
    pub fn of_init_payload(payload: &serde_json::Value) -> Option<Self> {
        let authorization = payload.get("authorization").or_else(|| payload.get("Authorization"));
        if let Some(value) = authorization.and_then(|value| value.as_str()) {
            return Credential::from_authorization(value);
        }
        let token = payload.get("sessionToken").and_then(|value| value.as_str()).filter(|token| !token.is_empty());
        token.map(|token| Credential::Session(token.to_owned()))
    }

    /// Among headers forwarded by Hasura (names lower-cased), by the rules of a request.
    pub fn of_forwarded(headers: &HashMap<String, String>) -> Option<Self> {
        let bearer = headers.get("authorization").and_then(|value| Credential::from_authorization(value));
        bearer.or_else(|| Self::of_cookies(&headers.get("cookie")?.parse().ok()?))
    }

    fn of_cookies(jar: &CookieJar) -> Option<Self> {
        let token = jar.get(SESSION_COOKIE)?.value_str().to_owned();
        (!token.is_empty()).then_some(Credential::Session(token))
    }

    pub fn is_bearer(&self) -> bool {
        matches!(self, Credential::Bearer(_))
    }

    /// The credential of an `Authenticate` request.
    pub fn to_pb(&self) -> pb::authenticate_request::Credential {
        match self {
            Credential::Bearer(token) => pb::authenticate_request::Credential::AccessToken(token.clone()),
            Credential::Session(token) => pb::authenticate_request::Credential::SessionToken(token.clone()),
        }
    }

    /// Names the end user in a call's metadata (`authorization` or `x-session-token`).
    /// `false` when the token cannot travel as metadata (it then names nobody).
    pub fn attach(&self, metadata: &mut MetadataMap) -> bool {
        match self {
            Credential::Bearer(token) => MetadataValue::try_from(format!("Bearer {token}"))
                .map(|value| metadata.insert("authorization", value))
                .is_ok(),
            Credential::Session(token) => {
                MetadataValue::try_from(token.as_str()).map(|value| metadata.insert("x-session-token", value)).is_ok()
            }
        }
    }
}

/// Where the end user is, forwarded to the identity service (throttling, session listing).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

/// The reverse proxies in front of the facade (`FACADE_TRUSTED_PROXIES`), whose
/// `X-Forwarded-For` says where the client is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(Arc::new(networks))
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy (each proxy appends the
    /// address it got the request from, so entries left of the last untrusted one may be made
    /// up by the client).
    pub fn client_address(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let Some(list) = forwarded_for else { return Some(peer) };
        let mut hops = list.split(',').rev().map(|entry| entry.trim().parse::<IpAddr>());
        let mut client = peer;
        for hop in hops.by_ref() {
            match hop {
                Ok(address) => {
                    client = address;
                    if !self.trusts(address) {
                        break;
                    }
                }
                // A malformed entry: nothing left of it can be believed.
                Err(_) => break,
            }
        }
        Some(client)
    }
}

impl ClientInfo {
    pub fn of_request(request: &Request, proxies: &TrustedProxies) -> Self {
        let peer = request.remote_addr().as_socket_addr().map(|addr| addr.ip());
        let address = proxies.client_address(peer, request.header("x-forwarded-for"));
        ClientInfo {
            ip: address.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent: request.header(header::USER_AGENT).unwrap_or_default().chars().take(512).collect(),
        }
    }

    /// Tells the identity service where the end user is (`x-forwarded-for`,
    /// `x-forwarded-user-agent`).
    pub fn attach(&self, metadata: &mut MetadataMap) {
        if let Ok(ip) = MetadataValue::try_from(self.ip.as_str()) {
            metadata.insert("x-forwarded-for", ip);
        }
        if let Ok(agent) = MetadataValue::try_from(self.user_agent.as_str()) {
            metadata.insert("x-forwarded-user-agent", agent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_accepts_bearer_and_jwt_prefixes() {
        assert_eq!(Credential::from_authorization("Bearer abc"), Some(Credential::Bearer("abc".into())));
        assert_eq!(Credential::from_authorization("JWT abc"), Some(Credential::Bearer("abc".into())));
        assert_eq!(Credential::from_authorization("bearer  abc "), Some(Credential::Bearer("abc".into())));
        assert_eq!(Credential::from_authorization("Basic abc"), None);
        assert_eq!(Credential::from_authorization("Bearer "), None);
        assert_eq!(format!("{:?}", Credential::Bearer("secret".into())), "Bearer([redacted])");
    }

    #[test]
    fn init_payloads_name_a_bearer_or_a_session_token() {
        let bearer = Credential::of_init_payload(&serde_json::json!({"authorization": "Bearer abc"}));
        assert_eq!(bearer, Some(Credential::Bearer("abc".into())));
        let session = Credential::of_init_payload(&serde_json::json!({"sessionToken": "s"}));
        assert_eq!(session, Some(Credential::Session("s".into())));
        assert_eq!(Credential::of_init_payload(&serde_json::json!({})), None);
        assert_eq!(Credential::of_init_payload(&serde_json::Value::Null), None);
    }

    #[test]
    fn only_trusted_proxies_say_where_the_client_is() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let none = TrustedProxies::default();
        assert_eq!(none.client_address(Some(ip("10.0.0.1")), Some("203.0.113.9")), Some(ip("10.0.0.1")));
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        // A client behind our proxy.
        assert_eq!(proxies.client_address(Some(ip("10.0.0.1")), Some("203.0.113.9")), Some(ip("203.0.113.9")));
        // A client that made up entries: only the right-most untrusted one counts.
        let spoofed = "198.51.100.66, 203.0.113.9, 10.0.0.2";
        assert_eq!(proxies.client_address(Some(ip("10.0.0.1")), Some(spoofed)), Some(ip("203.0.113.9")));
        // A client talking to us directly cannot name another address.
        assert_eq!(proxies.client_address(Some(ip("203.0.113.9")), Some("198.51.100.66")), Some(ip("203.0.113.9")));
        // Our proxy without a header, or with garbage.
        assert_eq!(proxies.client_address(Some(ip("10.0.0.1")), None), Some(ip("10.0.0.1")));
        assert_eq!(proxies.client_address(Some(ip("10.0.0.1")), Some("junk")), Some(ip("10.0.0.1")));
    }

    #[test]
    fn forwarded_headers_follow_the_rules_of_a_request() {
        let headers = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
        };
        assert_eq!(
            Credential::of_forwarded(&headers(&[("authorization", "Bearer abc")])),
            Some(Credential::Bearer("abc".into()))
        );
        assert_eq!(
            Credential::of_forwarded(&headers(&[("cookie", "a=b; sessionid=tok; csrftoken=x")])),
            Some(Credential::Session("tok".into()))
        );
        // A proxy's Basic is not ours: the cookie counts, as on a direct request.
        assert_eq!(
            Credential::of_forwarded(&headers(&[("authorization", "Basic eDp5"), ("cookie", "sessionid=tok")])),
            Some(Credential::Session("tok".into()))
        );
        assert_eq!(Credential::of_forwarded(&headers(&[])), None);
    }
}
