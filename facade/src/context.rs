//! Who is asking, decided once per request and put in its data: the credential (`credential`),
//! the CSRF verdict for browsers (`browser`), then the principal it resolves to through
//! `AuthService.Authenticate`, in that order, for GraphQL, REST, websockets and Hasura alike.
//! Resolvers and routes read it from here; none asks the identity service who is calling.

use identity_proto::pb;
use poem::Request;

use crate::{
    browser::{BrowserContext, Cookies},
    credential::{ClientInfo, Credential, TrustedProxies},
    error::{ApiError, ErrorKind},
    identity::IdentityClient,
};

/// When a request must pass the CSRF check before anything else is done for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfRule {
    /// Reads.
    NotNeeded,
    /// Writes: required when the request rides on the session cookie.
    CookieWrites,
    /// Logins (login CSRF): required unless the request carries a bearer token.
    Always,
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
    /// Cookies and the CSRF verdict, for HTTP requests (not websockets or Hasura).
    pub browser: Option<BrowserContext>,
}

impl RequestContext {
    /// The context of an HTTP request: its credential read, its CSRF verdict given (and, where
    /// `rule` requires it, enforced: nothing else is done for a refused request), then the
    /// credential resolved. Otherwise `Err` only when the identity service could not answer.
    pub async fn of_http(
        identity: &IdentityClient,
        (cookies, proxies): (&Cookies, &TrustedProxies),
        request: &Request,
        rule: CsrfRule,
    ) -> Result<Self, ApiError> {
        let credential = Credential::of_request(request);
        let browser = BrowserContext::of(request, cookies, credential.as_ref());
        let required = match rule {
            CsrfRule::NotNeeded => false,
            CsrfRule::CookieWrites => matches!(credential, Some(Credential::Session(_))),
            CsrfRule::Always => true,
        };
        if required {
            browser.require_csrf()?;
        }
        let mut context =
            RequestContext::resolve(identity.clone(), credential, ClientInfo::of_request(request, proxies)).await?;
        context.browser = Some(browser);
        Ok(context)
    }

    /// Authenticates the credential, if any (no credential: no call). `Err` only when the
    /// identity service could not answer: the request cannot be served at all.
    pub async fn resolve(
        identity: IdentityClient,
        credential: Option<Credential>,
        client: ClientInfo,
    ) -> Result<Self, ApiError> {
        let caller = match &credential {
            None => Caller::Anonymous,
            Some(credential) => {
                // The facade needs who it is, not the claims.
                let request = pb::AuthenticateRequest { credential: Some(credential.to_pb()), omit_claims: true };
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

    /// The caller, or UNAUTHENTICATED naming why (no credential, expired, revoked, ...).
    pub fn principal(&self) -> Result<&pb::Principal, ApiError> {
        match &self.caller {
            Caller::User(principal) => Ok(principal),
            Caller::Anonymous => Err(ApiError::unauthenticated()),
            Caller::Rejected(error) => Err(error.clone()),
        }
    }

    /// Whether the request rides on the session cookie (no bearer token): only such requests
    /// can be forged cross-site.
    pub fn cookie_authenticated(&self) -> bool {
        matches!(self.credential, Some(Credential::Session(_)))
    }

    /// A request on the caller's behalf: their credential and the client's address.
    pub fn as_caller<T>(&self, message: T) -> Result<tonic::Request<T>, ApiError> {
        self.principal()?;
        let mut request = self.anonymous(message);
        if let Some(credential) = &self.credential
            && !credential.attach(request.metadata_mut())
        {
            return Err(ApiError::new(ErrorKind::Unauthenticated, "invalid token"));
        }
        Ok(request)
    }

    /// A request that names no user (public operations): a dead credential cannot block it.
    pub fn anonymous<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.client.attach(request.metadata_mut());
        request
    }
}
