//! Talking to providers: the authorization URL, the code exchange and what the provider says
//! of the user. OpenID Connect through `openidconnect` (discovery, the provider's JWKS, the ID
//! token's signature, issuer, audience, nonce and expiry); GitHub through `oauth2` and its REST
//! API. No token of the provider's is kept.

use std::{
    borrow::Cow,
    time::{Duration, Instant},
};

use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, SubjectIdentifier, TokenResponse, UserInfoError,
    core::{
        CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreIdTokenClaims, CoreJwsSigningAlgorithm,
        CoreProviderMetadata, CoreTokenResponse, CoreUserInfoClaims,
    },
};
use serde::Deserialize;

use super::config::{ProviderKind, ProviderSettings};
use crate::error::{CoreError, CoreResult, SocialError};

/// A discovered provider's client.
type OidcClient =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// How long a discovery document (and the JWKS fetched with it) is used before it is fetched
/// again; a token signed by a key it does not hold fetches it sooner (a provider rotated).
const DISCOVERY_TTL: Duration = Duration::from_secs(15 * 60);
/// A token with an unknown key re-fetches the JWKS at most this often.
const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// After a failed discovery with no document to fall back on, sign-ins are refused at once for
/// this long: those that queued behind it do not each wait for the provider again.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);
/// Every call to a provider: connecting, and the whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a provider says of the user who signed in.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    /// The provider's stable id for the user (`sub`; GitHub's numeric id).
    pub subject: String,
    pub email: Option<String>,
    /// The provider asserts the address is the user's.
    pub email_verified: bool,
    /// A username to start from (`preferred_username`, GitHub's `login`, a name).
    pub username: Option<String>,
}

/// The secrets of one authorization request, kept (server side) until its code comes back.
pub(crate) struct Request {
    pub url: String,
    pub pkce_verifier: String,
}

/// One configured provider and, for OpenID Connect, its discovery document once fetched.
pub(crate) struct Provider {
    pub settings: ProviderSettings,
    discovered: tokio::sync::Mutex<Discovered>,
}

/// What is known of an OpenID provider's discovery document.
#[derive(Default)]
struct Discovered {
    /// The client it made, and when it was fetched.
    client: Option<(OidcClient, Instant)>,
    /// When the last fetch failed, if it did.
    failed_at: Option<Instant>,
}

impl Provider {
    pub fn new(settings: ProviderSettings) -> Self {
        Provider { settings, discovered: tokio::sync::Mutex::new(Discovered::default()) }
    }

    /// The URL to send the browser to, with `state`, `nonce` (OpenID Connect) and a PKCE S256
    /// challenge.
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        state: &str,
        nonce: &str,
        redirect_uri: &str,
    ) -> CoreResult<Request> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let redirect = Cow::Owned(redirect_url(redirect_uri)?);
        let scopes = self.settings.scopes.iter().map(|scope| Scope::new(scope.clone()));
        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let url = match self.settings.kind {
            ProviderKind::Oidc => {
                let client = self.oidc_client(http, false).await?;
                let (url, _, _) = client
                    .authorize_url(
                        CoreAuthenticationFlow::AuthorizationCode,
                        move || CsrfToken::new(state),
                        move || Nonce::new(nonce),
                    )
                    .add_scopes(scopes.filter(|scope| scope.as_str() != "openid"))
                    .set_pkce_challenge(challenge)
                    .set_redirect_uri(redirect)
                    .url();
                url
            }
            ProviderKind::Github => {
                let (url, _) = self
                    .github_client()?
                    .authorize_url(move || CsrfToken::new(state))
                    .add_scopes(scopes)
                    .set_pkce_challenge(challenge)
                    .set_redirect_uri(redirect)
                    .url();
                url
            }
        };
        Ok(Request { url: url.to_string(), pkce_verifier: verifier.secret().clone() })
    }

    /// Exchanges `code` and says who signed in.
    pub async fn profile(
        &self,
        http: &reqwest::Client,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        redirect_uri: &str,
    ) -> CoreResult<Profile> {
        match self.settings.kind {
            ProviderKind::Oidc => self.oidc_profile(http, code, pkce_verifier, nonce, redirect_uri).await,
            ProviderKind::Github => self.github_profile(http, code, pkce_verifier, redirect_uri).await,
        }
    }

    /// The client of the discovered provider, fetching the document when there is none, it
    /// is older than `DISCOVERY_TTL`, or `refetch` (and the last fetch is `REFETCH_AFTER` old).
    /// A provider that cannot be reached: its last document if there is one, else
    /// `ProviderUnavailable` — at once for `FAILURE_MEMORY` after a failed fetch. One fetch at
    /// a time: those who wait for it then find its document (or its failure).
    async fn oidc_client(&self, http: &reqwest::Client, refetch: bool) -> CoreResult<OidcClient> {
        let mut discovered = self.discovered.lock().await;
        if let Some((client, at)) = discovered.client.as_ref() {
            let age = at.elapsed();
            if age < DISCOVERY_TTL && !(refetch && age >= REFETCH_AFTER) {
                return Ok(client.clone());
            }
        }
        let failed_lately = discovered.failed_at.is_some_and(|at| at.elapsed() < FAILURE_MEMORY);
        if failed_lately && discovered.client.is_none() {
            return Err(CoreError::Social(SocialError::ProviderUnavailable));
        }
        match self.discover(http).await {
            Ok(client) => {
                *discovered = Discovered { client: Some((client.clone(), Instant::now())), failed_at: None };
                Ok(client)
            }
            Err(error) => {
                discovered.failed_at = Some(Instant::now());
                match discovered.client.as_ref() {
                    Some((client, _)) => {
                        tracing::warn!(provider = %self.settings.name, %error, "discovery failed; using the last document");
                        Ok(client.clone())
                    }
                    None => Err(error),
                }
            }
        }
    }

    async fn discover(&self, http: &reqwest::Client) -> CoreResult<OidcClient> {
        let name = &self.settings.name;
        let issuer = self.settings.issuer.clone().unwrap_or_default();
        let issuer = IssuerUrl::new(issuer).map_err(CoreError::internal)?;
        let metadata = CoreProviderMetadata::discover_async(issuer, http).await.map_err(|error| {
            tracing::warn!(provider = %name, error = %error_chain(&error), "OpenID discovery failed");
            CoreError::Social(SocialError::ProviderUnavailable)
        })?;
        // A provider that takes the client's secret in the body only says so here.
        let methods = metadata.token_endpoint_auth_methods_supported().cloned().unwrap_or_default();
        let post_only = !methods.is_empty() && !methods.contains(&CoreClientAuthMethod::ClientSecretBasic);
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.settings.client_secret.expose().to_owned())),
        );
        Ok(if post_only { client.set_auth_type(openidconnect::AuthType::RequestBody) } else { client })
    }

    async fn oidc_profile(
        &self,
        http: &reqwest::Client,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        redirect_uri: &str,
    ) -> CoreResult<Profile> {
        let name = &self.settings.name;
        let client = self.oidc_client(http, false).await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(CoreError::internal)?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .set_redirect_uri(Cow::Owned(redirect_url(redirect_uri)?))
            .request_async(http)
            .await
            .map_err(|error| token_error(name, error))?;
        let nonce = Nonce::new(nonce.to_owned());
        let claims = match verify_id_token(&client, &response, &nonce) {
            Ok(claims) => claims,
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // The provider may have rotated its keys: fetch them once more.
                let fresh = self.oidc_client(http, true).await?;
                verify_id_token(&fresh, &response, &nonce).map_err(|error| id_token_refused(name, &error))?
            }
            Err(error) => return Err(id_token_refused(name, &error)),
        };
        let name_claim = claims.name().and_then(|name| name.get(None)).map(|name| name.as_str().to_owned());
        let mut profile = Profile {
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|email| email.as_str().to_owned()),
            email_verified: claims.email_verified().unwrap_or(false),
            username: claims.preferred_username().map(|name| name.as_str().to_owned()).or(name_claim),
        };
        if profile.email.is_none()
            && let Some(info) = self.user_info(&client, http, &response, claims.subject()).await?
        {
            profile.email = info.email().map(|email| email.as_str().to_owned());
            profile.email_verified = info.email_verified().unwrap_or(false);
            if profile.username.is_none() {
                let name = info.name().and_then(|name| name.get(None)).map(|name| name.as_str().to_owned());
                profile.username = info.preferred_username().map(|name| name.as_str().to_owned()).or(name);
            }
        }
        Ok(profile)
    }

    /// The claims of the provider's UserInfo endpoint, asked with the access token just issued,
    /// for an ID token without an address: a provider that follows OpenID Connect Core §5.4
    /// strictly puts the claims a scope asks for there, not in the ID token. They must be about
    /// `subject` (openidconnect checks), or the sign-in is refused. None: no such endpoint.
    async fn user_info(
        &self,
        client: &OidcClient,
        http: &reqwest::Client,
        response: &CoreTokenResponse,
        subject: &SubjectIdentifier,
    ) -> CoreResult<Option<CoreUserInfoClaims>> {
        let provider = &self.settings.name;
        let Ok(request) = client.user_info(response.access_token().clone(), Some(subject.clone())) else {
            return Ok(None);
        };
        match request.request_async(http).await {
            Ok(claims) => Ok(Some(claims)),
            Err(error) => {
                let unavailable = match &error {
                    UserInfoError::Request(_) => true,
                    UserInfoError::Response(status, ..) => status.is_server_error(),
                    _ => false,
                };
                if unavailable {
                    tracing::warn!(%provider, error = %error_chain(&error), "UserInfo endpoint unreachable");
                    Err(CoreError::Social(SocialError::ProviderUnavailable))
                } else {
                    tracing::info!(%provider, error = %error_chain(&error), "social login refused: UserInfo did not answer for the user");
                    Err(CoreError::Social(SocialError::TokenInvalid))
                }
            }
        }
    }

    fn github_client(
        &self,
    ) -> CoreResult<
        oauth2::basic::BasicClient<
            oauth2::EndpointSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointSet,
        >,
    > {
        let settings = &self.settings;
        Ok(oauth2::basic::BasicClient::new(oauth2::ClientId::new(settings.client_id.clone()))
            .set_client_secret(oauth2::ClientSecret::new(settings.client_secret.expose().to_owned()))
            .set_auth_uri(oauth2::AuthUrl::new(settings.authorize_url.clone()).map_err(CoreError::internal)?)
            .set_token_uri(oauth2::TokenUrl::new(settings.token_url.clone()).map_err(CoreError::internal)?)
            // GitHub takes the client's credentials in the body.
            .set_auth_type(oauth2::AuthType::RequestBody))
    }

    async fn github_profile(
        &self,
        http: &reqwest::Client,
        code: &str,
        pkce_verifier: &str,
        redirect_uri: &str,
    ) -> CoreResult<Profile> {
        let name = &self.settings.name;
        let response = self
            .github_client()?
            .exchange_code(oauth2::AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(oauth2::PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .set_redirect_uri(Cow::Owned(redirect_url(redirect_uri)?))
            .request_async(http)
            .await
            .map_err(|error| token_error(name, error))?;
        let token = response.access_token().secret();
        let user: GithubUser = self.github_get(http, "/user", token).await?;
        let emails: Vec<GithubEmail> = self.github_get(http, "/user/emails", token).await?;
        // The primary address if GitHub verified it, else another verified one; an unverified
        // address counts as unverified, never as proof.
        let chosen = emails
            .iter()
            .filter(|email| email.verified)
            .max_by_key(|email| email.primary)
            .or_else(|| emails.iter().find(|email| email.primary))
            .map(|email| (email.email.clone(), email.verified))
            .or_else(|| user.email.clone().map(|email| (email, false)));
        Ok(Profile {
            subject: user.id.to_string(),
            email_verified: chosen.as_ref().is_some_and(|(_, verified)| *verified),
            email: chosen.map(|(email, _)| email),
            username: Some(user.login),
        })
    }

    async fn github_get<T: serde::de::DeserializeOwned>(
        &self,
        http: &reqwest::Client,
        path: &str,
        token: &str,
    ) -> CoreResult<T> {
        let name = &self.settings.name;
        let unavailable = |error: &dyn std::fmt::Display| {
            tracing::warn!(provider = %name, %path, %error, "GitHub API call failed");
            CoreError::Social(SocialError::ProviderUnavailable)
        };
        let response = http
            .get(format!("{}{path}", self.settings.api_url))
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header(reqwest::header::USER_AGENT, "identity-service")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .send()
            .await
            .map_err(|error| unavailable(&error))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            tracing::info!(provider = %name, %path, %status, "social login refused: GitHub refused the token");
            return Err(CoreError::Social(SocialError::CodeRejected));
        }
        if !status.is_success() {
            return Err(unavailable(&status));
        }
        response.json::<T>().await.map_err(|error| unavailable(&error))
    }
}

/// The HTTP client for providers: bounded in time, never following a redirect (a provider's
/// answer cannot send us elsewhere).
pub(crate) fn http_client() -> CoreResult<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent("identity-service")
        .build()
        .map_err(CoreError::internal)
}

/// Signature algorithms an ID token may use: the asymmetric ones (never `none`, never an HMAC
/// keyed with the client's secret).
const ASYMMETRIC: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// The ID token's claims, verified with the provider's keys as the client knows them: the
/// signature (asymmetric algorithms only), issuer, audience, expiry and nonce; and, when the
/// token carries `at_hash`, that it was issued with this access token.
fn verify_id_token(
    client: &OidcClient,
    response: &CoreTokenResponse,
    nonce: &Nonce,
) -> Result<CoreIdTokenClaims, openidconnect::ClaimsVerificationError> {
    use openidconnect::ClaimsVerificationError as E;
    let id_token = response.id_token().ok_or_else(|| E::Other("no ID token in the token response".into()))?;
    let verifier = client.id_token_verifier().set_allowed_algs(ASYMMETRIC);
    let claims = id_token.claims(&verifier, nonce)?.clone();
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token.signing_alg().map_err(E::SignatureVerification)?;
        let key = id_token.signing_key(&verifier).map_err(E::SignatureVerification)?;
        let actual = AccessTokenHash::from_token(response.access_token(), alg, key)
            .map_err(|error| E::Other(format!("at_hash: {error}")))?;
        if actual != *expected {
            return Err(E::Other("at_hash does not match the access token".into()));
        }
    }
    Ok(claims)
}

fn redirect_url(uri: &str) -> CoreResult<RedirectUrl> {
    RedirectUrl::new(uri.to_owned()).map_err(|_| CoreError::invalid("redirect_uri", "is not a URL"))
}

fn id_token_refused(provider: &str, error: &openidconnect::ClaimsVerificationError) -> CoreError {
    tracing::info!(%provider, %error, "social login refused: the ID token did not verify");
    CoreError::Social(SocialError::TokenInvalid)
}

/// The token endpoint's refusal (a used, expired or foreign code: `CodeRejected`), an answer
/// that is no token response (`TokenInvalid`; GitHub answers errors with 200 and a JSON
/// `error`, which is a refusal), or no answer (`ProviderUnavailable`).
fn token_error<RE: std::error::Error + 'static, T: oauth2::ErrorResponse + 'static>(
    provider: &str,
    error: oauth2::RequestTokenError<RE, T>,
) -> CoreError {
    use oauth2::RequestTokenError as E;
    let refusal = match &error {
        E::ServerResponse(_) => SocialError::CodeRejected,
        E::Parse(_, body) => {
            let said_error = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .is_some_and(|body| body.get("error").is_some_and(serde_json::Value::is_string));
            if said_error { SocialError::CodeRejected } else { SocialError::TokenInvalid }
        }
        E::Request(_) | E::Other(_) => SocialError::ProviderUnavailable,
    };
    match refusal {
        SocialError::ProviderUnavailable => {
            tracing::warn!(%provider, error = %error_chain(&error), "token endpoint unreachable")
        }
        _ => tracing::info!(%provider, error = %error_chain(&error), "social login refused by the token endpoint"),
    }
    CoreError::Social(refusal)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct GithubUser {
    id: u64,
    login: String,
    email: Option<String>,
}

#[derive(Deserialize)]
struct GithubEmail {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}
