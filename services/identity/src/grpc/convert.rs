//! Domain types to and from protobuf messages.

use identity_core::{SessionView, User};
use identity_proto::pb;
use prost_types::{Struct, Timestamp, Value, value::Kind};

pub fn timestamp(unix_seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds: unix_seconds, nanos: 0 })
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

/// A JSON object as `google.protobuf.Struct` (non-objects give an empty struct).
pub fn json_struct(value: serde_json::Value) -> Struct {
    match json_value(value).kind {
        Some(Kind::StructValue(fields)) => fields,
        _ => Struct::default(),
    }
}

fn json_value(value: serde_json::Value) -> Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.into_iter().map(json_value).collect() })
        }
        serde_json::Value::Object(map) => {
            Kind::StructValue(Struct { fields: map.into_iter().map(|(k, v)| (k, json_value(v))).collect() })
        }
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_become_structs() {
        let value = serde_json::json!({
            "sub": "u1", "exp": 1700000000, "ok": true, "none": null,
            "roles": ["user"], "nested": {"x": 1.5}
        });
        let fields = json_struct(value).fields;
        assert_eq!(fields["sub"].kind, Some(Kind::StringValue("u1".into())));
        assert_eq!(fields["exp"].kind, Some(Kind::NumberValue(1_700_000_000.0)));
        assert_eq!(fields["ok"].kind, Some(Kind::BoolValue(true)));
        assert_eq!(fields["none"].kind, Some(Kind::NullValue(0)));
        match &fields["roles"].kind {
            Some(Kind::ListValue(list)) => assert_eq!(list.values[0].kind, Some(Kind::StringValue("user".into()))),
            other => panic!("{other:?}"),
        }
        match &fields["nested"].kind {
            Some(Kind::StructValue(s)) => assert_eq!(s.fields["x"].kind, Some(Kind::NumberValue(1.5))),
            other => panic!("{other:?}"),
        }
        assert!(json_struct(serde_json::json!([1])).fields.is_empty());
    }
}
