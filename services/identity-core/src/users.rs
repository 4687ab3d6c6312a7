//! Users: sign-up, profiles, roles, deletion and password changes. Every operation takes the
//! caller (if any) and enforces who may do what; transports only map in and out.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
    sea_query::Expr,
};

use crate::{
    Identity, clock,
    entities::{credentials, users},
    error::{CoreError, CoreResult},
    passwords::{self, Verified},
    sessions::Principal,
    store, tokens,
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
        }
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

/// Django's username rule: up to 150 letters, digits and `@.+-_`.
pub fn check_username(field: &'static str, username: &str) -> CoreResult<()> {
    if username.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    if username.chars().count() > 150 {
        return Err(CoreError::invalid(field, "must be at most 150 characters"));
    }
    if !username.chars().all(|c| c.is_alphanumeric() || "@.+-_".contains(c)) {
        return Err(CoreError::invalid(field, "may contain only letters, digits and @.+-_"));
    }
    Ok(())
}

pub fn check_email(field: &'static str, email: &str) -> CoreResult<()> {
    let bad = || CoreError::invalid(field, "must be a valid email address");
    if email.len() > 254 || email.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(())
}

/// Usernames and emails are unique regardless of case.
pub(crate) fn key(value: &str) -> String {
    value.to_lowercase()
}

fn is_manager(caller: Option<&Principal>) -> bool {
    caller.is_some_and(Principal::is_manager)
}

// === impl Identity: users ===

impl Identity {
    /// Sign-up (anyone, role "user") or creation by a manager (any role).
    pub async fn create_user(&self, caller: Option<&Principal>, new: NewUser) -> CoreResult<User> {
        let username = new.username.trim().to_owned();
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
        self.insert_user(&username, &email, role, hash).await
    }

    pub(crate) async fn insert_user(&self, username: &str, email: &str, role: Role, hash: String) -> CoreResult<User> {
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

    /// Self: email. Manager: email, role, is_active. A role change is announced to the user's
    /// live sessions; deactivation revokes them.
    pub async fn update_user(&self, caller: Option<&Principal>, id: &str, patch: UserPatch) -> CoreResult<User> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
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
        let before = self.find_user(id).await?.ok_or(CoreError::NotFound("user"))?;
        let mut row =
            users::ActiveModel { id: Set(id.to_owned()), updated_at: Set(clock::now()), ..Default::default() };
        if let Some(email) = &patch.email {
            row.email = Set(email.trim().to_owned());
            row.email_key = Set(key(email.trim()));
        }
        if let Some(role) = patch.role {
            row.role = Set(role.as_str().to_owned());
        }
        if let Some(is_active) = patch.is_active {
            row.is_active = Set(is_active);
        }
        match users::Entity::update(row).exec(self.db()).await {
            Ok(_) => {}
            Err(error) if store::is_unique_violation(&error) => {
                return Err(CoreError::AlreadyExists { field: "email" });
            }
            Err(error) => return Err(error.into()),
        }
        let after = self.find_user(id).await?.ok_or(CoreError::NotFound("user"))?;
        self.forget_user(id);
        if after.role != before.role {
            self.announce_role_change(&after).await?;
        }
        if before.is_active && !after.is_active {
            self.revoke_user_sessions(id, "user_deactivated", None).await?;
        }
        Ok(after)
    }

    /// Managers only: revokes every session of the user, then deletes it.
    pub async fn delete_user(&self, caller: Option<&Principal>, id: &str) -> CoreResult<()> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        if !caller.is_manager() {
            return Err(CoreError::Forbidden("only a manager may delete users"));
        }
        if self.find_user(id).await?.is_none() {
            return Err(CoreError::NotFound("user"));
        }
        self.revoke_user_sessions(id, "user_deleted", None).await?;
        users::Entity::delete_by_id(id.to_owned()).exec(self.db()).await?;
        self.forget_user(id);
        tracing::info!(user_id = %id, by = %caller.user.id, "user deleted");
        Ok(())
    }

    /// Self: checks the current password, stores the new one, revokes the caller's other
    /// sessions. Returns how many were revoked.
    pub async fn change_password(&self, caller: Option<&Principal>, current: &str, new: &str) -> CoreResult<u32> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        if current.is_empty() {
            return Err(CoreError::invalid("current_password", "must not be empty"));
        }
        passwords::check_policy("new_password", new, &caller.user.username)?;
        let credential = credentials::Entity::find_by_id(caller.user.id.clone())
            .one(self.db())
            .await?
            .ok_or(CoreError::NotFound("user"))?;
        if self.passwords().verify(current, Some(&credential.password_hash)).await? == Verified::No {
            return Err(CoreError::invalid("current_password", "is not the current password"));
        }
        let hash = self.passwords().hash(new).await?;
        credentials::Entity::update_many()
            .col_expr(credentials::Column::PasswordHash, Expr::value(hash))
            .col_expr(credentials::Column::UpdatedAt, Expr::value(clock::now()))
            .filter(credentials::Column::UserId.eq(caller.user.id.clone()))
            .exec(self.db())
            .await?;
        self.revoke_user_sessions(&caller.user.id, "password_changed", Some(&caller.session_id)).await
    }

    /// Creates a manager from `username:password` when no manager exists yet.
    pub async fn ensure_manager(&self, username: &str, password: &str) -> CoreResult<Option<User>> {
        let managers =
            users::Entity::find().filter(users::Column::Role.eq(Role::Manager.as_str())).one(self.db()).await?;
        if managers.is_some() {
            return Ok(None);
        }
        check_username("IDENTITY_BOOTSTRAP_MANAGER", username)?;
        passwords::check_policy("IDENTITY_BOOTSTRAP_MANAGER", password, username)?;
        let email = if username.contains('@') { username.to_owned() } else { format!("{username}@localhost") };
        let hash = self.passwords().hash(password).await?;
        self.insert_user(username, &email, Role::Manager, hash).await.map(Some)
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
    fn usernames_follow_djangos_rule() {
        assert!(check_username("username", "alice.b+c-d_e@x").is_ok());
        assert!(check_username("username", "").is_err());
        assert!(check_username("username", "has space").is_err());
        assert!(check_username("username", &"a".repeat(151)).is_err());
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert!(check_email("email", "a@example.com").is_ok());
        for bad in ["", "a", "@example.com", "a@b", "a@@b.c", "a b@c.d", "a@.com"] {
            assert!(check_email("email", bad).is_err(), "{bad}");
        }
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
