//! GraphQL view types and their conversion from protobuf messages. Shapes follow
//! django-graphql-jwt (`ObtainJSONWebToken`, `Verify`, `Refresh`, `Revoke`), so its clients
//! work unchanged. No type carries password material.

use async_graphql::{ID, InputObject, InputValueResult, Scalar, ScalarType, SimpleObject, Value};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use identity_proto::pb;

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
    /// True for the session of this request.
    pub current: bool,
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
    /// An access token for the new user, as after `tokenAuth`.
    pub token: String,
    pub refresh_token: String,
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

// === conversions ===

pub fn time(timestamp: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    timestamp.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)).unwrap_or_default()
}

impl From<pb::User> for User {
    fn from(user: pb::User) -> Self {
        User {
            id: ID(user.id),
            date_joined: time(user.date_joined.as_ref()),
            last_login: user.last_login.as_ref().map(|t| time(Some(t))),
            profile: Profile { role: user.role.clone() },
            username: user.username,
            email: user.email,
            role: user.role,
            is_active: user.is_active,
        }
    }
}

impl From<pb::Session> for Session {
    fn from(session: pb::Session) -> Self {
        Session {
            id: ID(session.id),
            created_at: time(session.created_at.as_ref()),
            last_seen_at: time(session.last_seen_at.as_ref()),
            expires_at: time(session.expires_at.as_ref()),
            idle_expires_at: time(session.idle_expires_at.as_ref()),
            client_ip: session.client_ip,
            user_agent: session.user_agent,
            current: session.current,
        }
    }
}

/// A `google.protobuf.Struct` as JSON.
pub fn struct_json(value: Option<prost_types::Struct>) -> serde_json::Value {
    fn convert(value: prost_types::Value) -> serde_json::Value {
        use prost_types::value::Kind;
        match value.kind {
            Some(Kind::NullValue(_)) | None => serde_json::Value::Null,
            Some(Kind::BoolValue(b)) => b.into(),
            // Whole numbers (exp, iat) stay integers, as in the JWT.
            Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => (n as i64).into(),
            Some(Kind::NumberValue(n)) => n.into(),
            Some(Kind::StringValue(s)) => s.into(),
            Some(Kind::ListValue(list)) => list.values.into_iter().map(convert).collect(),
            Some(Kind::StructValue(fields)) => object(fields),
        }
    }
    fn object(fields: prost_types::Struct) -> serde_json::Value {
        fields.fields.into_iter().map(|(key, value)| (key, convert(value))).collect::<serde_json::Map<_, _>>().into()
    }
    value.map(object).unwrap_or_else(|| serde_json::json!({}))
}

/// The claims of a token the identity service just issued to us (no need to verify it).
pub fn token_payload(token: &str) -> serde_json::Value {
    token
        .split('.')
        .nth(1)
        .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| serde_json::json!({}))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost_types::value::Kind;

    use super::*;

    #[test]
    fn structs_become_json_with_integer_timestamps() {
        let mut fields = BTreeMap::new();
        fields.insert("exp".to_owned(), prost_types::Value { kind: Some(Kind::NumberValue(1_700_000_000.0)) });
        fields.insert("sub".to_owned(), prost_types::Value { kind: Some(Kind::StringValue("u1".into())) });
        let json = struct_json(Some(prost_types::Struct { fields }));
        assert_eq!(json, serde_json::json!({"exp": 1_700_000_000i64, "sub": "u1"}));
        assert_eq!(struct_json(None), serde_json::json!({}));
    }

    #[test]
    fn token_payloads_are_read_from_the_middle_part() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"u1"}"#);
        assert_eq!(token_payload(&format!("h.{payload}.s")), serde_json::json!({"sub": "u1"}));
        assert_eq!(token_payload("garbage"), serde_json::json!({}));
    }
}
