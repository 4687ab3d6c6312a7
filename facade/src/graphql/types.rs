//! GraphQL view types (their conversion from protobuf messages is `convert`'s). Shapes follow
//! django-graphql-jwt (`ObtainJSONWebToken`, `Verify`, `Refresh`, `Revoke`), so its clients
//! work unchanged. No type carries password material.

use async_graphql::{ID, InputObject, InputValueResult, Scalar, ScalarType, SimpleObject, Value};
use chrono::{DateTime, Utc};

/// Any JSON value (graphene's `GenericScalar`), used for token payloads.
#[derive(Debug, Clone, PartialEq)]
pub struct GenericScalar(pub serde_json::Value);

#[Scalar(name = "GenericScalar")]
impl ScalarType for GenericScalar {
    fn parse(value: Value) -> InputValueResult<Self> {
        Ok(GenericScalar(value.into_json()?))
    }

    fn to_value(&self) -> Value {
        Value::from_json(self.0.clone()).unwrap_or(Value::Null)
    }
}

/// The `errors` of an account operation (django-graphql-auth's `ExpectedErrorType`): each
/// field (camelCase; `nonFieldErrors` for the form as a whole) with its errors,
/// `{"newPassword2": [{"message": "...", "code": "password_mismatch"}]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedErrorType(pub serde_json::Value);

#[Scalar(name = "ExpectedErrorType")]
impl ScalarType for ExpectedErrorType {
    fn parse(value: Value) -> InputValueResult<Self> {
        Ok(ExpectedErrorType(value.into_json()?))
    }

    fn to_value(&self) -> Value {
        Value::from_json(self.0.clone()).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Profile {
    pub role: String,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct User {
    pub id: ID,
    pub username: String,
    pub email: String,
    pub role: String,
    pub is_active: bool,
    /// True once the user followed a link sent to `email` (django-graphql-auth's name).
    pub verified: bool,
    pub date_joined: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
    pub profile: Profile,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Session {
    pub id: ID,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub idle_expires_at: DateTime<Utc>,
    pub client_ip: String,
    pub user_agent: String,
    /// What the user agent says it is, for people: `computer`, `phone`, `tablet`, `bot` or
    /// `unknown device`.
    pub device: String,
    /// `Chrome 126`, `Safari 17.5`, `curl 8.5.0`, or `unknown browser`.
    pub browser: String,
    /// `Linux`, `Mac OSX`, `Windows 10`, `iPhone`, `Android`, or `unknown system`.
    pub os: String,
    /// True for the session of this request.
    pub current: bool,
}

/// `revokeOtherSessions`.
#[derive(Debug, Clone, SimpleObject)]
pub struct RevokeOtherSessions {
    /// How many sessions were revoked.
    pub revoked: i32,
}

/// `tokenAuth`: django-graphql-jwt's shape, plus the user.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "ObtainJSONWebToken")]
pub struct ObtainJsonWebToken {
    pub token: String,
    pub refresh_token: String,
    pub payload: GenericScalar,
    /// When the refresh token expires (Unix seconds).
    pub refresh_expires_in: i64,
    pub user: User,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Verify {
    pub payload: GenericScalar,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Refresh {
    pub token: String,
    pub refresh_token: String,
    pub payload: GenericScalar,
    pub refresh_expires_in: i64,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Revoke {
    /// When the session ended (Unix seconds).
    pub revoked: i64,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct CreateUser {
    pub user: User,
    pub profile: Profile,
    /// An access token for the new user, as after `tokenAuth`; null while the address must be
    /// verified before a login.
    pub token: Option<String>,
    pub refresh_token: Option<String>,
}

/// A browser login: the session travels in the `sessionid` cookie, not in the response.
#[derive(Debug, Clone, SimpleObject)]
pub struct LoginResult {
    pub success: bool,
    pub user: User,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct LogoutResult {
    /// True once the request holds no live session (also when it held none).
    pub success: bool,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct ChangePassword {
    pub success: bool,
    /// How many of the user's other sessions were revoked.
    pub revoked_sessions: i32,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct DeleteUser {
    pub deleted: bool,
    pub id: ID,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct RevokeSession {
    pub revoked: bool,
    pub id: ID,
}

/// Fields to change; those left out stay as they are.
#[derive(Debug, Clone, Default, InputObject)]
pub struct UpdateUserInput {
    pub email: Option<String>,
    /// "user" or "manager" (managers only).
    pub role: Option<String>,
    /// Managers only; deactivating ends the user's sessions.
    pub is_active: Option<bool>,
}

// === Accounts by email (django-graphql-auth's outputs) ===

/// `register`.
#[derive(Debug, Clone, SimpleObject)]
pub struct Register {
    pub success: bool,
    pub errors: Option<ExpectedErrorType>,
    /// The new user's tokens when they may log in at once; null while the address must be
    /// verified first.
    pub token: Option<String>,
    pub refresh_token: Option<String>,
}

/// `verifyAccount`.
#[derive(Debug, Clone, SimpleObject)]
pub struct VerifyAccount {
    pub success: bool,
    pub errors: Option<ExpectedErrorType>,
}

/// `resendActivationEmail`.
#[derive(Debug, Clone, SimpleObject)]
pub struct ResendActivationEmail {
    pub success: bool,
    pub errors: Option<ExpectedErrorType>,
}

/// `sendPasswordResetEmail`.
#[derive(Debug, Clone, SimpleObject)]
pub struct SendPasswordResetEmail {
    pub success: bool,
    pub errors: Option<ExpectedErrorType>,
}

/// `passwordReset`.
#[derive(Debug, Clone, SimpleObject)]
pub struct PasswordReset {
    pub success: bool,
    pub errors: Option<ExpectedErrorType>,
}

/// `passwordChange`.
#[derive(Debug, Clone, SimpleObject)]
pub struct PasswordChange {
    pub success: bool,
    pub errors: Option<ExpectedErrorType>,
    /// A new token pair for a bearer caller (whose old session ends); null for a session
    /// (cookie) caller, whose session goes on.
    pub token: Option<String>,
    pub refresh_token: Option<String>,
}

/// `requestEmailChange`.
#[derive(Debug, Clone, SimpleObject)]
pub struct RequestEmailChange {
    pub success: bool,
    pub errors: Option<ExpectedErrorType>,
}

/// `confirmEmailChange`.
#[derive(Debug, Clone, SimpleObject)]
pub struct ConfirmEmailChange {
    pub success: bool,
    pub errors: Option<ExpectedErrorType>,
}

/// A provider users may sign in with.
#[derive(Debug, Clone, SimpleObject)]
pub struct SocialProvider {
    /// The `provider` argument of the social operations.
    pub name: String,
    pub display_name: String,
    /// `oidc` or `github`.
    pub kind: String,
    /// The browser flow's start: `/auth/{provider}/login`.
    pub login_url: String,
}

/// A begun sign-in: send the browser to `authorizationUrl`; keep `state` for `socialAuth`.
#[derive(Debug, Clone, SimpleObject)]
pub struct SocialBegin {
    pub authorization_url: String,
    pub state: String,
    pub redirect_uri: String,
    /// Keep it to yourself (not in a URL) and pass it to `socialAuth` or `linkIdentity`. A
    /// browser need not: it is in the HttpOnly `social_binding` cookie too.
    pub binding: String,
}

/// A provider's account linked to the user.
#[derive(Debug, Clone, SimpleObject)]
pub struct ExternalIdentity {
    pub provider: String,
    pub subject: String,
    pub email: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_login_at: Option<chrono::DateTime<chrono::Utc>>,
}
