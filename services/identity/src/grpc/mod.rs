//! The gRPC transport: one file per proto service, the caller read from metadata here, and
//! the one error conversion in `status`.

pub mod auth;
pub mod convert;
pub mod edge;
pub mod status;
pub mod users;

use std::net::IpAddr;

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

/// Where the end user is: `x-forwarded-for` (set by the facade; its first entry, when it is
/// an IP address), else the peer address. Callers of this service are trusted internal
/// services. The user agent is cut to 512 characters.
pub fn client_info<T>(request: &Request<T>) -> ClientInfo {
    let metadata = request.metadata();
    let header = |name: &str| metadata.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    let ip = header("x-forwarded-for")
        .and_then(|list| list.split(',').next())
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        .or_else(|| request.remote_addr().map(|addr| addr.ip()))
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let user_agent = header("x-forwarded-user-agent").or_else(|| header("user-agent")).unwrap_or_default();
    ClientInfo { ip, user_agent: user_agent.chars().take(512).collect() }
}
