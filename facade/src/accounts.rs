//! Accounts by email — sign-up, address verification, password reset and change, email
//! change — as forms: what the identity service refuses, told field by field the way Django's
//! forms tell it, for GraphQL's `errors` (django-graphql-auth's shape) and REST's field lists
//! (dj-rest-auth's). Pure rules; the transports (`graphql::accounts`, `rest::accounts`) call
//! the identity service and decide which refusals are the form's.

use crate::error::{ApiError, ErrorKind};

/// The field of errors about the form as a whole (an invalid link, say).
pub const NON_FIELD: &str = "non_field_errors";

/// Django's words when the password and its confirmation differ.
pub const PASSWORD_MISMATCH: &str = "The two password fields didn’t match.";

/// How one operation names the fields the identity service names: (the service's field, the
/// form's field, snake_case). A field not listed is the form's as a whole ([`NON_FIELD`]).
pub type FieldNames = &'static [(&'static str, &'static str)];

/// One error of one form field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The form's field, snake_case as the request names it (`new_password2`), or
    /// [`NON_FIELD`].
    pub field: &'static str,
    pub message: String,
    /// Django's code: `password_mismatch`, `unique`, `invalid_token`, `expired_token`,
    /// `password_too_short`, `password_incorrect`, `invalid`, ...
    pub code: &'static str,
}

/// Every error of a form, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormErrors(pub Vec<FieldError>);

impl FormErrors {
    /// The password and its confirmation (`field`) differ: refused before the identity service
    /// is asked.
    pub fn password_mismatch(field: &'static str) -> Self {
        FormErrors(vec![FieldError { field, message: PASSWORD_MISMATCH.to_owned(), code: "password_mismatch" }])
    }

    /// No caller (django-graphql-auth's `login_required`: `Unauthenticated.`).
    pub fn unauthenticated() -> Self {
        FormErrors(vec![FieldError {
            field: NON_FIELD,
            message: "Unauthenticated.".to_owned(),
            code: "unauthenticated",
        }])
    }

    /// The form errors of a refusal by the identity service: bad fields (`INVALID_ARGUMENT`)
    /// and taken names (`ALREADY_EXISTS`). `None` for any other failure (throttled,
    /// unavailable, unauthenticated, ...): not the form's to show.
    pub fn of(error: &ApiError, names: FieldNames) -> Option<Self> {
        let form_field =
            |field: &str| names.iter().find(|(ours, _)| *ours == field).map_or(NON_FIELD, |(_, form)| *form);
        match error.kind {
            ErrorKind::BadUserInput if error.violations.is_empty() => {
                Some(FormErrors(vec![FieldError { field: NON_FIELD, message: error.message.clone(), code: "invalid" }]))
            }
            ErrorKind::BadUserInput => Some(FormErrors(
                error
                    .violations
                    .iter()
                    .map(|(field, reason)| {
                        let form = form_field(field);
                        let (code, message) = describe(field, form, reason);
                        FieldError { field: form, message, code }
                    })
                    .collect(),
            )),
            ErrorKind::Conflict => {
                // The identity service names the taken field in a violation.
                let taken = error.violations.first().map_or("email", |(field, _)| field.as_str());
                let message = format!("A user with that {taken} already exists.");
                Some(FormErrors(vec![FieldError { field: form_field(taken), message, code: "unique" }]))
            }
            _ => None,
        }
    }

    /// django-graphql-auth's `errors`: `{"newPassword2": [{"message": ..., "code": ...}],
    /// "nonFieldErrors": [...]}`, fields in camelCase.
    pub fn to_graphql(&self) -> serde_json::Value {
        let mut errors = serde_json::Map::new();
        for error in &self.0 {
            let entry = errors.entry(camel_case(error.field)).or_insert_with(|| serde_json::json!([]));
            if let Some(list) = entry.as_array_mut() {
                list.push(serde_json::json!({ "message": error.message, "code": error.code }));
            }
        }
        serde_json::Value::Object(errors)
    }

    /// dj-rest-auth's field lists: each field with its messages, in the order found.
    pub fn by_field(&self) -> Vec<(&'static str, Vec<String>)> {
        let mut fields: Vec<(&'static str, Vec<String>)> = Vec::new();
        for error in &self.0 {
            match fields.iter_mut().find(|(field, _)| *field == error.field) {
                Some((_, messages)) => messages.push(error.message.clone()),
                None => fields.push((error.field, vec![error.message.clone()])),
            }
        }
        fields
    }

    /// Every message in one line, for a `detail`.
    pub fn summary(&self) -> String {
        self.0.iter().map(|error| error.message.as_str()).collect::<Vec<_>>().join(" ")
    }
}

/// Whether the identity service refused a link's token for being no longer (or never) good —
/// used, replaced by a newer link, unknown, or expired — rather than malformed (empty, too
/// long). dj-rest-auth answers the former with its 404.
pub fn is_dead_link(error: &ApiError) -> bool {
    error.kind == ErrorKind::BadUserInput
        && error.violations.iter().any(|(field, reason)| {
            field == "token" && (reason.starts_with("is not valid") || reason.starts_with("has expired"))
        })
}

/// Django's code and a sentence for a violation the identity service reported on `field` (the
/// form's `form`).
fn describe(field: &str, form: &str, reason: &str) -> (&'static str, String) {
    match field {
        // Asked to confirm another change (an email change): django-graphql-auth's words, and
        // the form's name for the field.
        "current_password" if form == "password" && reason.starts_with("is not the current password") => {
            ("invalid_password", "Invalid password.".to_owned())
        }
        "current_password" if form == "password" => ("invalid", sentence(form, reason)),
        // A link's token: "has expired", or "is not valid: used, replaced by a newer link, or
        // unknown" (django-graphql-auth's words).
        "token" if reason.starts_with("has expired") => ("expired_token", "Expired token.".to_owned()),
        "token" => ("invalid_token", "Invalid token.".to_owned()),
        "current_password" if reason.starts_with("is not the current password") => {
            ("password_incorrect", "Your old password was entered incorrectly. Please enter it again.".to_owned())
        }
        "password" | "new_password" => {
            let code = if reason.starts_with("must be at least") {
                "password_too_short"
            } else if reason.contains("entirely numeric") {
                "password_entirely_numeric"
            } else if reason.contains("differ from the username") {
                "password_too_similar"
            } else {
                "invalid"
            };
            (code, sentence(field, reason))
        }
        _ => ("invalid", sentence(field, reason)),
    }
}

/// `new_password`, `must be at least 8 characters` → `New password must be at least 8
/// characters.`
fn sentence(field: &str, reason: &str) -> String {
    let label = field.replace('_', " ");
    let mut chars = label.chars();
    let label = chars.next().map(|first| first.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default();
    let reason = reason.trim_end_matches('.');
    format!("{label} {reason}.")
}

/// `new_password2` → `newPassword2`, `non_field_errors` → `nonFieldErrors`.
fn camel_case(snake: &str) -> String {
    let mut parts = snake.split('_');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(violations: &[(&str, &str)]) -> ApiError {
        ApiError {
            violations: violations.iter().map(|(field, reason)| ((*field).to_owned(), (*reason).to_owned())).collect(),
            ..ApiError::new(ErrorKind::BadUserInput, "bad input")
        }
    }

    const RESET: FieldNames = &[("new_password", "new_password1"), ("token", "token"), ("user_id", "uid")];

    #[test]
    fn a_mismatch_is_a_password_mismatch_on_the_confirmation() {
        let errors = FormErrors::password_mismatch("new_password2");
        assert_eq!(
            errors.to_graphql(),
            serde_json::json!({"newPassword2": [{"message": "The two password fields didn’t match.", "code": "password_mismatch"}]})
        );
        assert_eq!(errors.by_field(), vec![("new_password2", vec![PASSWORD_MISMATCH.to_owned()])]);
    }

    #[test]
    fn link_tokens_are_invalid_or_expired() {
        let expired = FormErrors::of(&invalid(&[("token", "has expired")]), RESET).unwrap();
        assert_eq!(
            expired.0,
            vec![FieldError { field: "token", message: "Expired token.".into(), code: "expired_token" }]
        );
        let used = invalid(&[("token", "is not valid: used, replaced by a newer link, or unknown")]);
        // Not named by the operation: the form's as a whole (django-graphql-auth's place for it).
        let errors = FormErrors::of(&used, &[]).unwrap();
        assert_eq!(
            errors.to_graphql(),
            serde_json::json!({"nonFieldErrors": [{"message": "Invalid token.", "code": "invalid_token"}]})
        );
    }

    #[test]
    fn dead_links_are_told_from_malformed_ones() {
        assert!(is_dead_link(&invalid(&[("token", "is not valid: used, replaced by a newer link, or unknown")])));
        assert!(is_dead_link(&invalid(&[("token", "has expired")])));
        assert!(!is_dead_link(&invalid(&[("token", "must not be empty")])));
        assert!(!is_dead_link(&invalid(&[("new_password", "has expired")])));
        let throttled = ApiError {
            violations: vec![("token".to_owned(), "has expired".to_owned())],
            ..ApiError::new(ErrorKind::TooManyRequests, "slow down")
        };
        assert!(!is_dead_link(&throttled));
    }

    #[test]
    fn password_policy_violations_carry_djangos_codes() {
        let cases = [
            ("must be at least 8 characters", "password_too_short", "New password must be at least 8 characters."),
            ("must not be entirely numeric", "password_entirely_numeric", "New password must not be entirely numeric."),
            ("must differ from the username", "password_too_similar", "New password must differ from the username."),
            ("must be at most 1024 bytes", "invalid", "New password must be at most 1024 bytes."),
        ];
        for (reason, code, message) in cases {
            let errors = FormErrors::of(&invalid(&[("new_password", reason)]), RESET).unwrap();
            assert_eq!(errors.0, vec![FieldError { field: "new_password1", message: message.into(), code }]);
        }
        let wrong = invalid(&[("current_password", "is not the current password")]);
        let errors = FormErrors::of(&wrong, &[("current_password", "old_password")]).unwrap();
        assert_eq!((errors.0[0].field, errors.0[0].code), ("old_password", "password_incorrect"));
        let errors = FormErrors::of(&wrong, &[("current_password", "password")]).unwrap();
        assert_eq!(
            errors.to_graphql(),
            serde_json::json!({"password": [{"message": "Invalid password.", "code": "invalid_password"}]})
        );
        let empty = invalid(&[("current_password", "must not be empty")]);
        let errors = FormErrors::of(&empty, &[("current_password", "password")]).unwrap();
        assert_eq!(
            errors.0,
            vec![FieldError { field: "password", message: "Password must not be empty.".into(), code: "invalid" }]
        );
    }

    #[test]
    fn every_violation_is_listed_and_grouped_by_field() {
        let error = invalid(&[("username", "must not be empty"), ("email", "must be a valid email address")]);
        let errors = FormErrors::of(&error, &[("username", "username"), ("email", "email")]).unwrap();
        assert_eq!(
            errors.to_graphql(),
            serde_json::json!({
                "username": [{"message": "Username must not be empty.", "code": "invalid"}],
                "email": [{"message": "Email must be a valid email address.", "code": "invalid"}],
            })
        );
        let twice = FormErrors(vec![
            FieldError { field: "email", message: "a".into(), code: "invalid" },
            FieldError { field: NON_FIELD, message: "b".into(), code: "invalid" },
            FieldError { field: "email", message: "c".into(), code: "invalid" },
        ]);
        assert_eq!(
            twice.by_field(),
            vec![("email", vec!["a".to_owned(), "c".to_owned()]), (NON_FIELD, vec!["b".to_owned()])]
        );
        assert_eq!(twice.summary(), "a b c");
        // Bad input without violations is the form's as a whole.
        let bare = FormErrors::of(&ApiError::new(ErrorKind::BadUserInput, "no"), &[]).unwrap();
        assert_eq!(bare.0, vec![FieldError { field: NON_FIELD, message: "no".into(), code: "invalid" }]);
    }

    #[test]
    fn a_taken_name_is_unique_on_its_field() {
        let taken = |field: &str| ApiError {
            violations: vec![(field.to_owned(), "is taken".to_owned())],
            ..ApiError::new(ErrorKind::Conflict, format!("a user with this {field} already exists"))
        };
        let errors = FormErrors::of(&taken("email"), &[("email", "new_email")]).unwrap();
        assert_eq!(
            errors.to_graphql(),
            serde_json::json!({"newEmail": [{"message": "A user with that email already exists.", "code": "unique"}]})
        );
        let errors = FormErrors::of(&taken("username"), &[("username", "username")]).unwrap();
        assert_eq!((errors.0[0].field, errors.0[0].code), ("username", "unique"));
    }

    #[test]
    fn failures_that_are_not_the_forms_stay_errors() {
        for kind in [
            ErrorKind::Unauthenticated,
            ErrorKind::Forbidden,
            ErrorKind::EmailNotVerified,
            ErrorKind::NotFound,
            ErrorKind::TooManyRequests,
            ErrorKind::ServiceUnavailable,
            ErrorKind::Internal,
        ] {
            assert_eq!(FormErrors::of(&ApiError::new(kind, "x"), &[]), None, "{kind:?}");
        }
    }

    #[test]
    fn fields_are_camel_cased_for_graphql() {
        assert_eq!(camel_case("new_password2"), "newPassword2");
        assert_eq!(camel_case("non_field_errors"), "nonFieldErrors");
        assert_eq!(camel_case("password1"), "password1");
    }
}
