//! Domain types to and from protobuf messages.

use identity_core::{Claims, LoginOutcome, SessionEvent, SessionEventKind, SessionView, User};
use identity_proto::pb;
use prost_types::Timestamp;

pub fn timestamp(unix_seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds: unix_seconds, nanos: 0 })
}

/// A new session, as `Login` and a completed social sign-in answer.
pub fn login(outcome: LoginOutcome) -> pb::LoginResponse {
    pb::LoginResponse {
        user: Some(user(&outcome.user)),
        session_id: outcome.session_id,
        session_token: outcome.session_token,
        access_token: outcome.tokens.access_token,
        refresh_token: outcome.tokens.refresh_token,
        access_expires_at: timestamp(outcome.tokens.access_expires_at),
        refresh_expires_at: timestamp(outcome.tokens.refresh_expires_at),
    }
}

pub fn user(user: &User) -> pb::User {
    pb::User {
        id: user.id.clone(),
        username: user.username.clone(),
        email: user.email.clone(),
        role: user.role.as_str().to_owned(),
        is_active: user.is_active,
        date_joined: timestamp(user.date_joined),
        last_login: user.last_login.and_then(timestamp),
        email_verified: user.email_verified,
    }
}

pub fn session(session: &SessionView) -> pb::Session {
    pb::Session {
        id: session.id.clone(),
        user_id: session.user_id.clone(),
        created_at: timestamp(session.created_at),
        last_seen_at: timestamp(session.last_seen_at),
        expires_at: timestamp(session.expires_at),
        idle_expires_at: timestamp(session.idle_expires_at),
        client_ip: session.client_ip.clone(),
        user_agent: session.user_agent.clone(),
        current: session.current,
    }
}

pub fn session_event(event: SessionEvent) -> pb::WatchSessionResponse {
    let (kind, reason) = match event.kind {
        SessionEventKind::Revoked { reason } => (pb::SessionEventKind::Revoked, reason.as_str().to_owned()),
        SessionEventKind::RoleChanged => (pb::SessionEventKind::RoleChanged, String::new()),
        SessionEventKind::Expired => (pb::SessionEventKind::Expired, String::new()),
    };
    pb::WatchSessionResponse {
        kind: kind.into(),
        session_id: event.session_id,
        user_id: event.user_id,
        role: event.role,
        reason,
        at: timestamp(event.at),
    }
}

/// The claims of an access token, field by field, and the payload exactly as the token has it.
pub fn claims(claims: &Claims) -> pb::Claims {
    pb::Claims {
        iss: claims.iss.clone(),
        aud: claims.aud.clone(),
        sub: claims.sub.clone(),
        exp: claims.exp,
        iat: claims.iat,
        jti: claims.jti.clone(),
        sid: claims.sid.clone(),
        username: claims.username.clone(),
        email: claims.email.clone(),
        role: claims.role.clone(),
        hasura: Some(pb::HasuraClaims {
            allowed_roles: claims.hasura.allowed_roles.clone(),
            default_role: claims.hasura.default_role.clone(),
            user_id: claims.hasura.user_id.clone(),
        }),
        payload_json: claims.to_json().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use identity_core::keys::HasuraClaims;

    use super::*;

    #[test]
    fn claims_keep_their_types_and_the_payload_its_integers() {
        let source = Claims {
            iss: "http://127.0.0.1:8080".into(),
            aud: "identity".into(),
            sub: "u1".into(),
            exp: 1_700_000_300,
            iat: 1_700_000_000,
            jti: "j".into(),
            sid: "s".into(),
            username: "alice".into(),
            email: "alice@example.com".into(),
            role: "user".into(),
            hasura: HasuraClaims {
                allowed_roles: vec!["user".into()],
                default_role: "user".into(),
                user_id: "u1".into(),
            },
        };
        let converted = claims(&source);
        assert_eq!((converted.exp, converted.sid.as_str()), (1_700_000_300, "s"));
        assert_eq!(converted.hasura.unwrap().allowed_roles, ["user"]);
        let payload: serde_json::Value = serde_json::from_str(&converted.payload_json).unwrap();
        assert_eq!(payload["exp"], serde_json::json!(1_700_000_300i64));
        assert!(payload["exp"].is_i64());
        assert_eq!(payload["https://hasura.io/jwt/claims"]["x-hasura-user-id"], "u1");
    }
}
