//! Users: sign-up, profiles, roles, deletion and password changes. Every operation takes the
//! caller (if any) and enforces who may do what; transports only map in and out.

use std::sync::Arc;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
    sea_query::Expr,
};

use unicode_normalization::UnicodeNormalization;
use unicode_security::MixedScript;

use crate::{
    Identity, clock,
    entities::{credentials, users},
    error::{CoreError, CoreResult},
    events::{Event, RevokeReason},
    keys::Claims,
    mail::{MailKind, outbox::Queued},
    passwords::{self, Verified},
    store::{self, revoke_sessions_in},
    tokens,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Manager => "manager",
        }
    }

    pub fn parse(field: &'static str, value: &str) -> CoreResult<Self> {
        match value {
            "user" => Ok(Role::User),
            "manager" => Ok(Role::Manager),
            _ => Err(CoreError::invalid(field, "must be \"user\" or \"manager\"")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: String,
    pub role: Role,
    pub is_active: bool,
    pub date_joined: i64,
    pub last_login: Option<i64>,
    /// The user followed a link sent to `email`.
    pub email_verified: bool,
}

impl From<users::Model> for User {
    fn from(row: users::Model) -> Self {
        User {
            role: if row.role == "manager" { Role::Manager } else { Role::User },
            id: row.id,
            username: row.username,
            email: row.email,
            is_active: row.is_active,
            date_joined: row.date_joined,
            last_login: row.last_login,
            email_verified: row.email_verified,
        }
    }
}

/// Who is calling: a user, through one live session (made by `sessions` from a credential).
/// Every operation on someone's behalf takes one and decides by it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub session_id: String,
    /// The verified claims when the credential was an access token.
    pub claims: Option<Arc<Claims>>,
    pub session_expires_at: i64,
}

impl Principal {
    pub fn is_manager(&self) -> bool {
        self.user.role == Role::Manager
    }
}

#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password: String,
    /// "user" when empty.
    pub role: String,
}

/// The fields an update names (AIP-134 `update_mask`), with their new values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub email: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

impl UserPatch {
    /// Builds a patch from mask paths and the values of a user message. Unknown or empty
    /// masks are refused rather than guessed at.
    pub fn from_mask(paths: &[String], email: &str, role: &str, is_active: bool) -> CoreResult<Self> {
        if paths.is_empty() {
            return Err(CoreError::invalid("update_mask", "must name at least one of email, role, is_active"));
        }
        let mut patch = UserPatch::default();
        for path in paths {
            match path.as_str() {
                "email" => patch.email = Some(email.to_owned()),
                "role" => patch.role = Some(Role::parse("user.role", role)?),
                "is_active" => patch.is_active = Some(is_active),
                other => {
                    return Err(CoreError::invalid(
                        "update_mask",
                        format!("unknown field {other:?}; allowed: email, role, is_active"),
                    ));
                }
            }
        }
        Ok(patch)
    }
}

/// A page of users and the token of the next one.
#[derive(Debug, Clone)]
pub struct UserPage {
    pub users: Vec<User>,
    pub next_page_token: String,
}

pub const MAX_PAGE_SIZE: u64 = 1000;
pub const DEFAULT_PAGE_SIZE: u64 = 50;

/// The input bounds of the user API (docs/identity-service.md, "Input limits").
pub mod limits {
    /// Django's username length.
    pub const USERNAME_CHARS: usize = 150;
    /// RFC 5321's longest forward path.
    pub const EMAIL_BYTES: usize = 254;
    /// What a login may be: a username or an email.
    pub const LOGIN_CHARS: usize = 254;
    /// Ids are UUIDs (36 characters); anything much longer is not one of ours.
    pub const ID_BYTES: usize = 64;
}

/// A username as stored: trimmed, in Unicode NFKC (so that `ｒｏｏｔ` in full-width forms is
/// `root`).
pub fn normalize_username(username: &str) -> String {
    username.trim().nfkc().collect()
}

/// Usernames (after `normalize_username`): 1 to 150 letters, digits and `@.+-_` (Django's
/// rule), and the letters of one script (Unicode UTS #39 "single script": `rооt` with
/// Cyrillic `о`s is refused, so it cannot pass for `root`).
pub fn check_username(field: &'static str, username: &str) -> CoreResult<()> {
    if username.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    if username.chars().count() > limits::USERNAME_CHARS {
        return Err(CoreError::invalid(field, format!("must be at most {} characters", limits::USERNAME_CHARS)));
    }
    if !username.chars().all(|c| c.is_alphanumeric() || "@.+-_".contains(c)) {
        return Err(CoreError::invalid(field, "may contain only letters, digits and @.+-_"));
    }
    if !username.is_single_script() {
        return Err(CoreError::invalid(
            field,
            "must not mix letters of different scripts (such as Latin and Cyrillic)",
        ));
    }
    Ok(())
}

/// An address as one user types it to another: `local@domain.tld`, at most 254 bytes, no
/// display name, no quoted local part, no IP-literal domain.
pub fn check_email(field: &'static str, email: &str) -> CoreResult<()> {
    let bad = || CoreError::invalid(field, "must be a valid email address");
    if email.len() > limits::EMAIL_BYTES {
        return Err(CoreError::invalid(field, format!("must be at most {} bytes", limits::EMAIL_BYTES)));
    }
    if email.starts_with('"') || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let options = email_address::Options::default().with_required_tld().without_display_text().without_domain_literal();
    email_address::EmailAddress::parse_with_options(email, options).map(|_| ()).map_err(|_| bad())
}

/// A login as typed (username or email), bounded before anything looks it up.
pub(crate) fn check_login(field: &'static str, login: &str) -> CoreResult<()> {
    if login.trim().is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    if login.chars().count() > limits::LOGIN_CHARS {
        return Err(CoreError::invalid(field, format!("must be at most {} characters", limits::LOGIN_CHARS)));
    }
    // No username or email holds one; PostgreSQL refuses a NUL in any string.
    if login.chars().any(char::is_control) {
        return Err(CoreError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// An id the caller sends (a user's or a session's).
pub(crate) fn check_id(field: &'static str, id: &str) -> CoreResult<()> {
    if id.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    if id.len() > limits::ID_BYTES {
        return Err(CoreError::invalid(field, format!("must be at most {} bytes", limits::ID_BYTES)));
    }
    // Ids are UUIDs: letters, digits and hyphens.
    if !id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-') {
        return Err(CoreError::invalid(field, "is not an id (letters, digits and - only)"));
    }
    Ok(())
}

/// Checks `IDENTITY_BOOTSTRAP_MANAGER` (`username:password`) before anything starts, by the
/// rules of a sign-up.
pub fn check_bootstrap_manager(username: &str, password: &str) -> CoreResult<()> {
    let username = normalize_username(username);
    CoreError::check_all([
        check_username("username", &username),
        passwords::check_policy("password", password, &username),
    ])
}

/// The lookup key of a username or email: NFKC, case folded, NFKC again (Unicode's
/// NFKC_Casefold, near enough). Keys decide uniqueness: `Alice`, `ALICE` and `ａｌｉｃｅ` are
/// one user.
pub(crate) fn key(value: &str) -> String {
    let normal: String = value.trim().nfkc().collect();
    caseless::default_case_fold_str(&normal).nfkc().collect()
}

/// How a user came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joined {
    /// Signed up, or created by a manager: the address is to be verified.
    SignedUp,
    /// `IDENTITY_BOOTSTRAP_MANAGER`: configured by the operator.
    Bootstrap,
}

fn is_manager(caller: Option<&Principal>) -> bool {
    caller.is_some_and(Principal::is_manager)
}

// === impl Identity: users ===

impl Identity {
    /// Sign-up (anyone, role "user") or creation by a manager (any role).
    pub async fn create_user(&self, caller: Option<&Principal>, new: NewUser) -> CoreResult<User> {
        let username = normalize_username(&new.username);
        let email = new.email.trim().to_owned();
        CoreError::check_all([
            check_username("username", &username),
            check_email("email", &email),
            passwords::check_policy("password", &new.password, &username),
            if new.role.is_empty() { Ok(()) } else { Role::parse("role", &new.role).map(|_| ()) },
        ])?;
        let role = if new.role.is_empty() { Role::User } else { Role::parse("role", &new.role)? };
        if role != Role::User && !is_manager(caller) {
            return Err(CoreError::Forbidden("only a manager may create a user with this role"));
        }
        let hash = self.passwords().hash(&new.password).await?;
        let user = self.insert_user(&username, &email, role, hash, Joined::SignedUp).await?;
        self.wake_sender();
        Ok(user)
    }

    /// Inserts the user and its credential; a user who signed up (or was created by a
    /// manager) is sent a verification link in the same transaction.
    pub(crate) async fn insert_user(
        &self,
        username: &str,
        email: &str,
        role: Role,
        hash: String,
        joined: Joined,
    ) -> CoreResult<User> {
        let now = clock::now();
        let row = users::Model {
            id: tokens::new_id(),
            username: username.to_owned(),
            username_key: key(username),
            email: email.to_owned(),
            email_key: key(email),
            role: role.as_str().to_owned(),
            is_active: true,
            date_joined: now,
            last_login: None,
            updated_at: now,
            // The operator named the bootstrap manager's address; nobody else's is proven yet.
            email_verified: joined == Joined::Bootstrap,
        };
        let db = self.db();
        let txn = db.begin().await?;
        let inserted = users::Entity::insert(users::ActiveModel::from(row.clone())).exec_without_returning(&txn).await;
        if let Err(error) = inserted {
            if store::is_unique_violation(&error) {
                drop(txn);
                return Err(CoreError::AlreadyExists { field: self.taken_field(username).await? });
            }
            return Err(error.into());
        }
        credentials::Entity::insert(credentials::ActiveModel {
            user_id: Set(row.id.clone()),
            password_hash: Set(hash),
            updated_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        if joined == Joined::SignedUp {
            let message =
                Queued { kind: MailKind::Verify, user_id: Some(&row.id), recipient: &row.email, new_email: None };
            self.queue_mail(&txn, message).await?;
        }
        txn.commit().await?;
        tracing::info!(user_id = %row.id, role = role.as_str(), "user created");
        Ok(row.into())
    }

    /// Which unique field a failed insert collided on.
    async fn taken_field(&self, username: &str) -> CoreResult<&'static str> {
        let by_name = users::Entity::find().filter(users::Column::UsernameKey.eq(key(username))).one(self.db()).await?;
        Ok(if by_name.is_some() { "username" } else { "email" })
    }

    /// The caller itself, or anyone for a manager.
    pub async fn get_user(&self, caller: Option<&Principal>, id: &str) -> CoreResult<User> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        check_id("id", id)?;
        if caller.user.id != id && !caller.is_manager() {
            return Err(CoreError::Forbidden("only a manager may read other users"));
        }
        self.find_user(id).await?.ok_or(CoreError::NotFound("user"))
    }

    pub(crate) async fn find_user(&self, id: &str) -> CoreResult<Option<User>> {
        Ok(users::Entity::find_by_id(id.to_owned()).one(self.db()).await?.map(User::from))
    }

    /// Managers only; keyset paging by id (ids are time-ordered UUIDv7).
    pub async fn list_users(
        &self,
        caller: Option<&Principal>,
        page_size: i64,
        page_token: &str,
    ) -> CoreResult<UserPage> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        if !caller.is_manager() {
            return Err(CoreError::Forbidden("only a manager may list users"));
        }
        if page_size < 0 {
            return Err(CoreError::invalid("page_size", "must not be negative"));
        }
        let size = if page_size == 0 { DEFAULT_PAGE_SIZE } else { (page_size as u64).min(MAX_PAGE_SIZE) };
        let mut query = users::Entity::find().order_by_asc(users::Column::Id).limit(size + 1);
        if !page_token.is_empty() {
            // The token is the id of the last user of the previous page: clients of the
            // GraphQL `users(after:)` can pass an id they hold.
            if uuid::Uuid::parse_str(page_token).is_err() {
                return Err(CoreError::invalid("page_token", "is not a token this service issued"));
            }
            query = query.filter(users::Column::Id.gt(page_token.to_owned()));
        }
        let mut rows = query.all(self.db()).await?;
        let next_page_token = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last().map(|row| row.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(UserPage { users: rows.into_iter().map(User::from).collect(), next_page_token })
    }

    /// Managers only: email (at once, and then unverified; every link sent to the old address
    /// is void), role, is_active. A role change is announced to the user's live sessions;
    /// deactivation revokes them. A user's own email is changed by `request_email_change`,
    /// which asks for the password; asked for here, it is refused.
    pub async fn update_user(&self, caller: Option<&Principal>, id: &str, patch: UserPatch) -> CoreResult<User> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        check_id("user.id", id)?;
        let own = caller.user.id == id;
        if !own && !caller.is_manager() {
            return Err(CoreError::Forbidden("only a manager may change other users"));
        }
        if (patch.role.is_some() || patch.is_active.is_some()) && !caller.is_manager() {
            return Err(CoreError::Forbidden("only a manager may change role or is_active"));
        }
        if let Some(email) = &patch.email {
            check_email("user.email", email.trim())?;
        }
        if !caller.is_manager() {
            // Only the email can be in the patch here (checked above).
            if let Some(email) = &patch.email
                && key(email) != key(&caller.user.email)
            {
                return Err(CoreError::invalid(
                    "user.email",
                    "is changed by RequestEmailChange, which asks for the current password",
                ));
            }
            return self.find_user(id).await?.ok_or(CoreError::NotFound("user"));
        }
        let before = self.find_user(id).await?.ok_or(CoreError::NotFound("user"))?;
        let mut row =
            users::ActiveModel { id: Set(id.to_owned()), updated_at: Set(clock::now()), ..Default::default() };
        let moved = patch.email.as_ref().is_some_and(|email| key(email) != key(&before.email));
        if let Some(email) = &patch.email {
            row.email = Set(email.trim().to_owned());
            row.email_key = Set(key(email.trim()));
            if moved {
                row.email_verified = Set(false);
            }
        }
        let deactivated = before.is_active && patch.is_active == Some(false);
        if let Some(role) = patch.role {
            row.role = Set(role.as_str().to_owned());
        }
        if let Some(is_active) = patch.is_active {
            row.is_active = Set(is_active);
        }
        // One transaction: the links sent to the old address die with it, the sessions with
        // the account's deactivation.
        let txn = self.db().begin().await?;
        if moved {
            crate::accounts::void_links(&txn, id).await?;
        }
        match users::Entity::update(row).exec(&txn).await {
            Ok(_) => {}
            Err(error) if store::is_unique_violation(&error) => {
                return Err(CoreError::AlreadyExists { field: "email" });
            }
            Err(error) => return Err(error.into()),
        }
        let revoked = if deactivated {
            revoke_sessions_in(&txn, id, RevokeReason::UserDeactivated, None).await?
        } else {
            Vec::new()
        };
        txn.commit().await?;
        let after = self.find_user(id).await?.ok_or(CoreError::NotFound("user"))?;
        self.publish(Event::UserChanged { user_id: id.to_owned() }).await;
        if after.role != before.role {
            self.announce_role_change(&after).await?;
        }
        self.announce_all_revoked(&revoked, RevokeReason::UserDeactivated).await?;
        Ok(after)
    }

    /// Managers only: revokes every session of the user, then deletes it.
    pub async fn delete_user(&self, caller: Option<&Principal>, id: &str) -> CoreResult<()> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        if !caller.is_manager() {
            return Err(CoreError::Forbidden("only a manager may delete users"));
        }
        check_id("id", id)?;
        if self.find_user(id).await?.is_none() {
            return Err(CoreError::NotFound("user"));
        }
        self.revoke_user_sessions(id, RevokeReason::UserDeleted, None).await?;
        users::Entity::delete_by_id(id.to_owned()).exec(self.db()).await?;
        self.publish(Event::UserChanged { user_id: id.to_owned() }).await;
        tracing::info!(user_id = %id, by = %caller.user.id, "user deleted");
        Ok(())
    }

    /// Self: checks the current password, stores the new one, revokes the caller's other
    /// sessions. Returns how many were revoked.
    pub async fn change_password(&self, caller: Option<&Principal>, current: &str, new: &str) -> CoreResult<u32> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        CoreError::check_all([
            passwords::check_presented("current_password", current),
            passwords::check_policy("new_password", new, &caller.user.username),
        ])?;
        self.check_current_password(&caller.user.id, current).await?;
        let hash = self.passwords().hash(new).await?;
        let txn = self.db().begin().await?;
        crate::accounts::void_links(&txn, &caller.user.id).await?;
        credentials::Entity::update_many()
            .col_expr(credentials::Column::PasswordHash, Expr::value(hash))
            .col_expr(credentials::Column::UpdatedAt, Expr::value(clock::now()))
            .filter(credentials::Column::UserId.eq(caller.user.id.clone()))
            .exec(&txn)
            .await?;
        let reason = RevokeReason::PasswordChanged;
        let revoked = revoke_sessions_in(&txn, &caller.user.id, reason, Some(&caller.session_id)).await?;
        txn.commit().await?;
        self.announce_all_revoked(&revoked, reason).await?;
        Ok(u32::try_from(revoked.len()).unwrap_or(u32::MAX))
    }

    /// Refuses (on `current_password`) a password that is not the user's.
    pub(crate) async fn check_current_password(&self, user_id: &str, current: &str) -> CoreResult<()> {
        let credential = credentials::Entity::find_by_id(user_id.to_owned())
            .one(self.db())
            .await?
            .ok_or(CoreError::NotFound("user"))?;
        if self.passwords().verify(current, Some(&credential.password_hash)).await? == Verified::No {
            return Err(CoreError::invalid("current_password", "is not the current password"));
        }
        Ok(())
    }

    /// Creates a manager from `username:password` when no manager exists yet.
    pub async fn ensure_manager(&self, username: &str, password: &str) -> CoreResult<Option<User>> {
        let managers =
            users::Entity::find().filter(users::Column::Role.eq(Role::Manager.as_str())).one(self.db()).await?;
        if managers.is_some() {
            return Ok(None);
        }
        let username = &normalize_username(username);
        check_bootstrap_manager(username, password)?;
        let email = if username.contains('@') { username.to_owned() } else { format!("{username}@localhost") };
        let hash = self.passwords().hash(password).await?;
        self.insert_user(username, &email, Role::Manager, hash, Joined::Bootstrap).await.map(Some)
    }

    /// Finds a user by username or email (either, case-insensitively) with its hash.
    pub(crate) async fn find_login(&self, login: &str) -> CoreResult<Option<(users::Model, credentials::Model)>> {
        let login = key(login.trim());
        let mut rows = users::Entity::find()
            .filter(
                Condition::any()
                    .add(users::Column::UsernameKey.eq(login.clone()))
                    .add(users::Column::EmailKey.eq(login.clone())),
            )
            .all(self.db())
            .await?;
        // A username match wins over another user's email that happens to be equal.
        rows.sort_by_key(|row| row.username_key != login);
        let Some(user) = rows.into_iter().next() else { return Ok(None) };
        let credential = credentials::Entity::find_by_id(user.id.clone()).one(self.db()).await?;
        Ok(credential.map(|credential| (user, credential)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_djangos_rule_in_one_script() {
        for good in ["alice.b+c-d_e@x", "zoë", "Дмитрий", "山田太郎", "やまだ", "user42"] {
            assert!(check_username("username", &normalize_username(good)).is_ok(), "{good}");
        }
        assert!(check_username("username", "").is_err());
        assert!(check_username("username", "has space").is_err());
        assert!(check_username("username", &"a".repeat(151)).is_err());
        assert!(check_username("username", "a\u{200b}b").is_err(), "zero-width space");
        // Latin r and t around Cyrillic о: a look-alike of "root".
        let error = check_username("username", "r\u{43e}\u{43e}t").unwrap_err().to_string();
        assert!(error.contains("scripts"), "{error}");
    }

    #[test]
    fn usernames_are_stored_in_nfkc_and_looked_up_by_their_case_fold() {
        assert_eq!(normalize_username(" ｒｏｏｔ "), "root");
        assert_eq!(key("ROOT"), key("root"));
        assert_eq!(key("ｒｏｏｔ"), "root");
        assert_eq!(key("Straße"), key("STRASSE"));
        assert_ne!(key("r\u{43e}\u{43e}t"), key("root"));
    }

    #[test]
    fn emails_are_bare_addresses_with_a_dotted_domain() {
        for good in ["a@example.com", "first.last+tag@sub.example.co.uk", "zoë@exämple.com"] {
            assert!(check_email("email", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "@example.com",
            "a@b",
            "a@@b.c",
            "a b@c.d",
            "a@.com",
            "<script>@x.com",
            "\"<script>\"@x.com",
            "Alice <a@example.com>",
            "a@[127.0.0.1]",
            "a@example.com\n",
        ] {
            assert!(check_email("email", bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(check_email("email", &long).unwrap_err().to_string().contains("254 bytes"));
    }

    #[test]
    fn the_bootstrap_manager_is_checked_like_a_sign_up() {
        assert!(check_bootstrap_manager("root", "change me please").is_ok());
        let error = check_bootstrap_manager("root", "short").unwrap_err().to_string();
        assert_eq!(error, "password: must be at least 8 characters");
    }

    #[test]
    fn masks_name_known_fields_only() {
        let patch = UserPatch::from_mask(&["role".into(), "is_active".into()], "", "manager", false).unwrap();
        assert_eq!(patch, UserPatch { email: None, role: Some(Role::Manager), is_active: Some(false) });
        assert!(UserPatch::from_mask(&[], "", "", false).is_err());
        assert!(UserPatch::from_mask(&["password".into()], "", "", false).is_err());
        assert!(UserPatch::from_mask(&["role".into()], "", "admin", false).is_err());
    }
}
