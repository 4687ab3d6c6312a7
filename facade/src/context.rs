//! Who is asking: the credential of an HTTP request (or, later, a websocket), resolved once
//! through `AuthService.Authenticate` into a principal or anonymous. Resolvers read it from
//! here; none asks the identity service who is calling.

use identity_proto::pb;
use poem::{Request, http::header};
use tonic::metadata::MetadataValue;

use crate::{
    browser::{BrowserContext, SESSION_COOKIE},
    error::{ApiError, ErrorKind},
    identity::IdentityClient,
};

/// A credential as presented by a client.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <jwt>` (or django-graphql-jwt's `JWT <jwt>`).
    Bearer(String),
    /// The `sessionid` cookie.
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
    /// Reads an `Authorization` header value: `Bearer <jwt>` or `JWT <jwt>`.
    pub fn from_authorization(value: &str) -> Option<Self> {
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("jwt");
        (known && !token.is_empty()).then(|| Credential::Bearer(token.to_owned()))
    }
}

/// The credential of an HTTP request: `Authorization` first, then the `sessionid` cookie.
/// Any other `Authorization` (Basic, from a proxy in front) is not ours: the cookie then counts.
pub fn credential(request: &Request) -> Option<Credential> {
    if let Some(bearer) = request.header(header::AUTHORIZATION).and_then(Credential::from_authorization) {
        return Some(bearer);
    }
    request
        .cookie()
        .get(SESSION_COOKIE)
        .map(|cookie| cookie.value_str().to_owned())
        .filter(|token| !token.is_empty())
        .map(Credential::Session)
}

pub fn client_info(request: &Request) -> ClientInfo {
    ClientInfo {
        ip: request.remote_addr().as_socket_addr().map(|addr| addr.ip().to_string()).unwrap_or_default(),
        user_agent: request.header(header::USER_AGENT).unwrap_or_default().chars().take(512).collect(),
    }
}

/// Where the end user is, forwarded to the identity service (throttling, session listing).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: String,
    pub user_agent: String,
}

#[derive(Debug, Clone)]
pub enum Caller {
    Anonymous,
    /// A credential was sent but is dead: public operations still work; the rest answer this.
    Rejected(ApiError),
    User(Box<pb::Principal>),
}

#[derive(Clone, Debug)]
pub struct RequestContext {
    pub identity: IdentityClient,
    pub credential: Option<Credential>,
    pub caller: Caller,
    pub client: ClientInfo,
    /// Cookies and the CSRF verdict, for HTTP requests (not websockets).
    pub browser: Option<BrowserContext>,
}

impl RequestContext {
    /// Authenticates the credential, if any. `Err` only when the identity service could not
    /// answer: the request cannot be served at all.
    pub async fn resolve(
        identity: IdentityClient,
        credential: Option<Credential>,
        client: ClientInfo,
    ) -> Result<Self, ApiError> {
        let caller = match &credential {
            None => Caller::Anonymous,
            Some(credential) => {
                let credential = match credential {
                    Credential::Bearer(token) => pb::authenticate_request::Credential::AccessToken(token.clone()),
                    Credential::Session(token) => pb::authenticate_request::Credential::SessionToken(token.clone()),
                };
                // The facade needs who it is, not the claims.
                let request = pb::AuthenticateRequest { credential: Some(credential), omit_claims: true };
                match identity.authenticate(request).await {
                    Ok(principal) => Caller::User(Box::new(principal)),
                    Err(status) => {
                        let error = ApiError::from(status);
                        match error.kind {
                            ErrorKind::Unauthenticated => Caller::Rejected(error),
                            ErrorKind::BadUserInput => {
                                Caller::Rejected(ApiError { kind: ErrorKind::Unauthenticated, ..error })
                            }
                            _ => return Err(error),
                        }
                    }
                }
            }
        };
        Ok(RequestContext { identity, credential, caller, client, browser: None })
    }

    /// The context of an HTTP request: its credential resolved, its cookies at hand.
    pub async fn of_http(
        identity: &IdentityClient,
        cookies: &crate::browser::Cookies,
        request: &Request,
    ) -> Result<Self, ApiError> {
        let credential = credential(request);
        let browser = BrowserContext::of(request, cookies, credential.as_ref());
        let mut context = RequestContext::resolve(identity.clone(), credential, client_info(request)).await?;
        context.browser = Some(browser);
        Ok(context)
    }

    /// The caller, or UNAUTHENTICATED naming why (no credential, expired, revoked, ...).
    pub fn principal(&self) -> Result<&pb::Principal, ApiError> {
        match &self.caller {
            Caller::User(principal) => Ok(principal),
            Caller::Anonymous => Err(ApiError::unauthenticated()),
            Caller::Rejected(error) => Err(error.clone()),
        }
    }

    /// A request on the caller's behalf: their credential and the client's address.
    pub fn as_caller<T>(&self, message: T) -> Result<tonic::Request<T>, ApiError> {
        self.principal()?;
        let mut request = self.anonymous(message);
        let metadata = request.metadata_mut();
        match &self.credential {
            Some(Credential::Bearer(token)) => {
                let value = MetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| ApiError::new(ErrorKind::Unauthenticated, "invalid token"))?;
                metadata.insert("authorization", value);
            }
            Some(Credential::Session(token)) => {
                let value = MetadataValue::try_from(token.as_str())
                    .map_err(|_| ApiError::new(ErrorKind::Unauthenticated, "invalid token"))?;
                metadata.insert("x-session-token", value);
            }
            None => {}
        }
        Ok(request)
    }

    /// A request that names no user (public operations): a dead credential cannot block it.
    pub fn anonymous<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        if let Ok(ip) = MetadataValue::try_from(self.client.ip.as_str()) {
            metadata.insert("x-forwarded-for", ip);
        }
        if let Ok(agent) = MetadataValue::try_from(self.client.user_agent.as_str()) {
            metadata.insert("x-forwarded-user-agent", agent);
        }
        request
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
}
