//! Every conversion from the identity service's messages (`pb`) to the facade's view types:
//! GraphQL's (`graphql::types`, `graphql::subscriptions`) and REST's (`rest`). Views never
//! convert themselves.

use async_graphql::ID;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use identity_proto::pb;

use crate::{
    graphql::{
        subscriptions::{SessionEvent, SessionEventKind},
        types::{ExternalIdentity, GenericScalar, Profile, Session, SocialProvider, User},
    },
    rest::{
        UserView,
        social::{IdentityView, SocialProviderView},
    },
};

/// A protobuf timestamp as a UTC date (the epoch when unset).
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
            verified: user.email_verified,
        }
    }
}

/// (device, browser, system) of a `User-Agent`, for people, by woothee's table.
pub fn describe_user_agent(user_agent: &str) -> (String, String, String) {
    static PARSER: std::sync::LazyLock<woothee::parser::Parser> =
        std::sync::LazyLock::new(woothee::parser::Parser::new);
    let known = |value: &str| !value.is_empty() && value != woothee::woothee::VALUE_UNKNOWN;
    let Some(parsed) = PARSER.parse(user_agent) else {
        return ("unknown device".into(), "unknown browser".into(), "unknown system".into());
    };
    let device = match parsed.category {
        "pc" => "computer",
        "smartphone" | "mobilephone" => {
            if user_agent.contains("iPad") || (parsed.os == "Android" && !user_agent.contains("Mobile")) {
                "tablet"
            } else {
                "phone"
            }
        }
        "crawler" => "bot",
        "appliance" => "appliance",
        _ => "unknown device",
    };
    // "156.0.0.0" reads as 156, "128.0" as 128, "17.5" stays.
    let version = parsed.version.split('.').take(2).collect::<Vec<_>>().join(".");
    let version = version.strip_suffix(".0").unwrap_or(&version);
    let browser = match (known(parsed.name), known(version)) {
        (true, true) => format!("{} {}", parsed.name, version),
        (true, false) => parsed.name.to_owned(),
        _ => "unknown browser".to_owned(),
    };
    let os = if known(parsed.os) { parsed.os.to_owned() } else { "unknown system".to_owned() };
    (device.to_owned(), browser, os)
}

impl From<pb::Session> for Session {
    fn from(session: pb::Session) -> Self {
        let (device, browser, os) = describe_user_agent(&session.user_agent);
        Session {
            device,
            browser,
            os,
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

impl From<pb::User> for UserView {
    fn from(user: pb::User) -> Self {
        UserView {
            date_joined: time(user.date_joined.as_ref()).to_rfc3339(),
            last_login: user.last_login.as_ref().map(|at| time(Some(at)).to_rfc3339()),
            id: user.id,
            username: user.username,
            email: user.email,
            role: user.role,
            is_active: user.is_active,
            email_verified: user.email_verified,
        }
    }
}

impl From<pb::Provider> for SocialProvider {
    fn from(provider: pb::Provider) -> Self {
        SocialProvider {
            login_url: format!("/auth/{}/login", provider.name),
            name: provider.name,
            display_name: provider.display_name,
            kind: provider.kind,
        }
    }
}

impl From<pb::ExternalIdentity> for ExternalIdentity {
    fn from(identity: pb::ExternalIdentity) -> Self {
        ExternalIdentity {
            created_at: time(identity.created_at.as_ref()),
            last_login_at: identity.last_login_at.as_ref().map(|at| time(Some(at))),
            provider: identity.provider,
            subject: identity.subject,
            email: identity.email,
        }
    }
}

impl From<pb::Provider> for SocialProviderView {
    fn from(provider: pb::Provider) -> Self {
        SocialProviderView {
            login_url: format!("/auth/{}/login", provider.name),
            name: provider.name,
            display_name: provider.display_name,
            kind: provider.kind,
        }
    }
}

impl From<pb::ExternalIdentity> for IdentityView {
    fn from(identity: pb::ExternalIdentity) -> Self {
        IdentityView {
            created_at: time(identity.created_at.as_ref()).to_rfc3339(),
            last_login_at: identity.last_login_at.as_ref().map(|at| time(Some(at)).to_rfc3339()),
            provider: identity.provider,
            subject: identity.subject,
            email: identity.email,
        }
    }
}

impl SessionEvent {
    /// `None` for a kind this facade does not know.
    pub fn from_pb(event: pb::WatchSessionResponse) -> Option<Self> {
        let kind = match event.kind() {
            pb::SessionEventKind::Revoked => SessionEventKind::Revoked,
            pb::SessionEventKind::RoleChanged => SessionEventKind::RoleChanged,
            pb::SessionEventKind::Expired => SessionEventKind::Expired,
            pb::SessionEventKind::Unspecified => return None,
        };
        Some(SessionEvent {
            kind,
            at: time(event.at.as_ref()),
            session_id: ID(event.session_id),
            user_id: ID(event.user_id),
            role: event.role,
            reason: event.reason,
        })
    }
}

impl From<Option<pb::Claims>> for GenericScalar {
    /// A token's payload exactly as the token carries it (integers stay integers), from the
    /// claims the identity service verified.
    fn from(claims: Option<pb::Claims>) -> Self {
        let payload = claims.and_then(|claims| serde_json::from_str(&claims.payload_json).ok());
        GenericScalar(payload.unwrap_or_else(|| serde_json::json!({})))
    }
}

impl GenericScalar {
    /// The payload of a token the identity service just issued to us (no need to verify it).
    pub fn of_issued_token(token: &str) -> Self {
        let payload = token
            .split('.')
            .nth(1)
            .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        GenericScalar(payload.unwrap_or_else(|| serde_json::json!({})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_keep_their_integers() {
        let claims = pb::Claims { payload_json: r#"{"exp":1700000000,"sub":"u1"}"#.into(), ..Default::default() };
        let GenericScalar(json) = GenericScalar::from(Some(claims));
        assert_eq!(json, serde_json::json!({"exp": 1_700_000_000i64, "sub": "u1"}));
        assert!(json["exp"].is_i64());
        assert_eq!(GenericScalar::from(None).0, serde_json::json!({}));
    }

    #[test]
    fn token_payloads_are_read_from_the_middle_part() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"u1"}"#);
        assert_eq!(GenericScalar::of_issued_token(&format!("h.{payload}.s")).0, serde_json::json!({"sub": "u1"}));
        assert_eq!(GenericScalar::of_issued_token("garbage").0, serde_json::json!({}));
    }

    #[test]
    fn users_convert_for_both_transports() {
        let user = pb::User {
            id: "u1".into(),
            username: "ann".into(),
            role: "manager".into(),
            date_joined: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            email_verified: true,
            ..Default::default()
        };
        let graphql = User::from(user.clone());
        assert_eq!((graphql.profile.role.as_str(), graphql.last_login, graphql.verified), ("manager", None, true));
        let rest = UserView::from(user);
        assert_eq!(rest.date_joined, "2023-11-14T22:13:20+00:00");
        assert!(rest.email_verified);
    }

    #[test]
    fn user_agents_read_as_devices_and_browsers() {
        let chrome_linux =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
        let (device, browser, os) = describe_user_agent(chrome_linux);
        assert_eq!((device.as_str(), os.as_str()), ("computer", "Linux"));
        assert_eq!(browser, "Chrome 126");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        let (device, browser, os) = describe_user_agent(iphone);
        assert_eq!((device.as_str(), os.as_str()), ("phone", "iPhone"));
        assert!(browser.starts_with("Safari"), "{browser}");
        let (device, browser, os) = describe_user_agent("");
        assert_eq!(
            (device.as_str(), browser.as_str(), os.as_str()),
            ("unknown device", "unknown browser", "unknown system")
        );
    }
}
