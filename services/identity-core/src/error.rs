//! The one error type of the domain. Variants say what the caller did wrong or what failed;
//! they know nothing of gRPC or HTTP status codes (each transport maps them once).

use std::time::Duration;

/// Why a credential does not name a live session. The message is safe to show to the holder
/// of the credential: it never tells whether a user exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Unparseable, forged, wrong issuer/audience/algorithm, or unknown.
    InvalidToken,
    /// The access or refresh token itself has expired.
    TokenExpired,
    /// The session was revoked (logout, a manager, refresh-token reuse, password change).
    SessionRevoked,
    /// The session reached its absolute or idle expiry.
    SessionExpired,
    /// The refresh token was already used: treated as theft, the session is now revoked.
    RefreshTokenReused,
    /// The user was deactivated or deleted.
    UserInactive,
}

impl DeadReason {
    /// A stable machine-readable name (used as `google.rpc.ErrorInfo.reason`).
    pub fn code(self) -> &'static str {
        match self {
            DeadReason::InvalidToken => "INVALID_TOKEN",
            DeadReason::TokenExpired => "TOKEN_EXPIRED",
            DeadReason::SessionRevoked => "SESSION_REVOKED",
            DeadReason::SessionExpired => "SESSION_EXPIRED",
            DeadReason::RefreshTokenReused => "REFRESH_TOKEN_REUSED",
            DeadReason::UserInactive => "USER_INACTIVE",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            DeadReason::InvalidToken => "invalid token",
            DeadReason::TokenExpired => "token expired",
            DeadReason::SessionRevoked => "session revoked",
            DeadReason::SessionExpired => "session expired",
            DeadReason::RefreshTokenReused => "refresh token already used; the session is revoked",
            DeadReason::UserInactive => "user is not active",
        }
    }
}

/// Why a sign-in with a provider, a link or an unlink was refused (`docs/social-login.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocialError {
    /// The `state` is missing, unknown, used, expired, or for another provider or redirect URI.
    StateInvalid,
    /// The provider refused the code (used, expired, or issued to someone else).
    CodeRejected,
    /// The provider's ID token failed verification (signature, `alg`, issuer, audience,
    /// nonce, expiry), or there was none.
    TokenInvalid,
    /// A local account has the provider's address, and the addresses are not both verified:
    /// no automatic link. Log in to that account and link the provider from there.
    EmailInUse,
    /// The provider shared no email address it verified: nothing is linked or created by it.
    /// A user with an account logs in to it and links the provider from there.
    EmailRequired,
    /// This identity at the provider belongs to another user.
    LinkedElsewhere,
    /// Unlinking would leave the user no way to log in.
    LastLoginMethod,
    /// The provider could not be reached (discovery, token endpoint or API).
    ProviderUnavailable,
}

impl SocialError {
    /// A stable machine-readable name (`google.rpc.ErrorInfo.reason`, the facade's error code).
    pub fn code(self) -> &'static str {
        match self {
            SocialError::StateInvalid => "SOCIAL_STATE_INVALID",
            SocialError::CodeRejected => "SOCIAL_CODE_REJECTED",
            SocialError::TokenInvalid => "SOCIAL_TOKEN_INVALID",
            SocialError::EmailInUse => "SOCIAL_EMAIL_IN_USE",
            SocialError::EmailRequired => "SOCIAL_EMAIL_REQUIRED",
            SocialError::LinkedElsewhere => "IDENTITY_LINKED_ELSEWHERE",
            SocialError::LastLoginMethod => "LAST_LOGIN_METHOD",
            SocialError::ProviderUnavailable => "PROVIDER_UNAVAILABLE",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            SocialError::StateInvalid => "the sign-in was not started here or has expired; start it again",
            SocialError::CodeRejected => "the provider refused the authorization code",
            SocialError::TokenInvalid => "the provider's ID token did not verify",
            SocialError::EmailInUse => {
                "an account already uses this email address; log in to it and link the provider from there"
            }
            SocialError::EmailRequired => {
                "the provider did not share an email address it verified; if you have an account here, \
                 log in to it and link the provider from there"
            }
            SocialError::LinkedElsewhere => "this account at the provider is linked to another user",
            SocialError::LastLoginMethod => {
                "this is the last way to log in; set a password or link another provider first"
            }
            SocialError::ProviderUnavailable => "the provider cannot be reached; retry later",
        }
    }
}

/// One bad input field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: &'static str,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("a user with this {field} already exists")]
    AlreadyExists { field: &'static str },
    /// One generic message for an unknown user and a wrong password alike.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// No credential was presented where one is needed.
    #[error("authentication required")]
    Unauthenticated,
    #[error("{}", .0.message())]
    SessionDead(DeadReason),
    #[error("{0}")]
    Forbidden(&'static str),
    /// Too many failed logins, or too many requests for mail (`what` says which).
    #[error("too many {what}; retry in {} s", retry_after.as_secs().max(1))]
    Throttled { what: &'static str, retry_after: Duration },
    /// The right password, but `IDENTITY_EMAIL_VERIFICATION=required` and the address is not
    /// verified yet.
    #[error("email address not verified")]
    EmailNotVerified,
    /// Bad input, every bad field at once.
    #[error("{}", .0.iter().map(|v| format!("{}: {}", v.field, v.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Violation>),
    /// Signing in with a provider, linking or unlinking refused.
    #[error("{}", .0.message())]
    Social(SocialError),
    #[error("the database is unavailable")]
    Unavailable,
    /// An operator's change refused as it stands (it would leave no signing key, or does not
    /// apply); the text says why and what to do instead.
    #[error("{0}")]
    Refused(String),
    /// The key-encryption key is missing, malformed or not the one the keys were sealed with.
    #[error("{0}")]
    KeyEncryption(String),
    /// Database, hashing or signing failures. The text is for logs, never for clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        CoreError::Invalid(vec![Violation { field, reason: reason.into() }])
    }

    /// Runs every check and gathers their violations; `Ok` when there are none.
    pub fn check_all(checks: impl IntoIterator<Item = CoreResult<()>>) -> CoreResult<()> {
        let mut violations = Vec::new();
        for check in checks {
            match check {
                Ok(()) => {}
                Err(CoreError::Invalid(found)) => violations.extend(found),
                Err(other) => return Err(other),
            }
        }
        if violations.is_empty() { Ok(()) } else { Err(CoreError::Invalid(violations)) }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        CoreError::Internal(error.to_string())
    }
}

pub type CoreResult<T> = Result<T, CoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_all_gathers_every_violation() {
        let error = CoreError::check_all([
            Err(CoreError::invalid("username", "must not be empty")),
            Ok(()),
            Err(CoreError::invalid("email", "must be a valid email address")),
        ])
        .unwrap_err();
        assert_eq!(error.to_string(), "username: must not be empty; email: must be a valid email address");
        assert!(CoreError::check_all([Ok(()), Ok(())]).is_ok());
    }
}
