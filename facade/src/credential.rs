//! The credential rules, for every entry point: an HTTP request (`Authorization: Bearer`, or
//! django-graphql-jwt's `JWT` prefix, else the `sessionid` cookie), a websocket's
//! `connection_init` payload, and the headers Hasura forwards to its webhook. Also where the
//! end user is (`ClientInfo`), and how both travel to the identity service as gRPC metadata.

use std::collections::HashMap;

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

impl ClientInfo {
    pub fn of_request(request: &Request) -> Self {
        ClientInfo {
            ip: request.remote_addr().as_socket_addr().map(|addr| addr.ip().to_string()).unwrap_or_default(),
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
