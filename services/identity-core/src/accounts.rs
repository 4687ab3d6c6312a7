//! Accounts by email: verifying an address, resetting a password, changing the address
//! (docs/accounts.md).
//!
//! Links carry a 256-bit random token; the database keeps its SHA-256 in `account_tokens`,
//! one live token per user and kind: a newer link replaces the older in the same statement
//! (`ON CONFLICT (user_id, kind)`), following a link deletes its row (`DELETE … RETURNING`:
//! of any number of simultaneous uses, one finds it), and a password change or reset deletes
//! every link of the user, sent or still queued.
//!
//! A request naming an address (reset, resend) does the same work whether or not an account
//! has it — two throttle counters and one outbox row — and answers the same. Which account
//! the address names is decided by the sender, later, when it makes the link (`letter`).

use std::time::Duration;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Statement, TransactionTrait, Value};

use crate::{
    ClientInfo, Identity, clock,
    entities::users,
    error::{CoreError, CoreResult},
    events::{Event, RevokeReason},
    mail::{self, Letter, MailKind, outbox::Claimed},
    passwords, throttle, tokens,
    users::{Principal, User, check_email, check_id, key},
};

/// The kinds of link, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkKind {
    Verify,
    Reset,
    EmailChange,
}

impl LinkKind {
    fn as_str(self) -> &'static str {
        match self {
            LinkKind::Verify => "verify",
            LinkKind::Reset => "reset",
            LinkKind::EmailChange => "email_change",
        }
    }
}

/// A link's token as presented, bounded before it is hashed.
fn check_token(token: &str) -> CoreResult<()> {
    tokens::check("token", token.trim(), tokens::OPAQUE_TOKEN_MAX_BYTES)
}

fn invalid_token() -> CoreError {
    CoreError::invalid("token", "is not valid: used, replaced by a newer link, or unknown")
}

fn expired_token() -> CoreError {
    CoreError::invalid("token", "has expired")
}

/// What a live link row says.
struct Link {
    user_id: String,
    email: String,
    expires_at: i64,
}

fn link_of(row: &sea_orm::QueryResult) -> CoreResult<Link> {
    Ok(Link {
        user_id: row.try_get("", "user_id")?,
        email: row.try_get("", "email")?,
        expires_at: row.try_get("", "expires_at")?,
    })
}

/// Issues a link of `kind` for the user (to `email`), replacing any older one; returns the
/// token to put in the link.
async fn issue(
    db: &impl ConnectionTrait,
    kind: LinkKind,
    user_id: &str,
    email: &str,
    ttl: Duration,
) -> CoreResult<String> {
    const UPSERT: &str = "INSERT INTO account_tokens (token_hash, user_id, kind, email, created_at, expires_at) \
        VALUES ($1, $2, $3, $4, $5, $6) \
        ON CONFLICT (user_id, kind) DO UPDATE SET token_hash = excluded.token_hash, email = excluded.email, \
            created_at = excluded.created_at, expires_at = excluded.expires_at";
    let (token, hash) = tokens::generate();
    let now = clock::now_millis();
    let values: [Value; 6] = [
        hash.into(),
        user_id.to_owned().into(),
        kind.as_str().into(),
        email.to_owned().into(),
        now.into(),
        (now + clock::millis(ttl)).into(),
    ];
    db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), UPSERT, values)).await?;
    Ok(token)
}

/// The live link of `kind` with `token`, without using it.
async fn peek(db: &impl ConnectionTrait, kind: LinkKind, token: &str) -> CoreResult<Link> {
    const SELECT: &str = "SELECT user_id, email, expires_at FROM account_tokens WHERE token_hash = $1 AND kind = $2";
    let values: [Value; 2] = [tokens::hash(token.trim()).into(), kind.as_str().into()];
    let row = db.query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), SELECT, values)).await?;
    let link = link_of(&row.ok_or_else(invalid_token)?)?;
    if link.expires_at <= clock::now_millis() {
        return Err(expired_token());
    }
    Ok(link)
}

/// Uses the link of `kind` with `token`: deleted in the statement that finds it, so that one
/// use of many simultaneous ones gets it.
async fn take(db: &impl ConnectionTrait, kind: LinkKind, token: &str) -> CoreResult<Link> {
    const DELETE: &str =
        "DELETE FROM account_tokens WHERE token_hash = $1 AND kind = $2 RETURNING user_id, email, expires_at";
    let values: [Value; 2] = [tokens::hash(token.trim()).into(), kind.as_str().into()];
    let row = db.query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), DELETE, values)).await?;
    let link = link_of(&row.ok_or_else(invalid_token)?)?;
    if link.expires_at <= clock::now_millis() {
        return Err(expired_token());
    }
    Ok(link)
}

/// Voids every link of the user, sent or still queued (a password changed or reset).
pub(crate) async fn void_links(db: &impl ConnectionTrait, user_id: &str) -> CoreResult<()> {
    let sql = "DELETE FROM account_tokens WHERE user_id = $1";
    db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, [user_id.to_owned().into()])).await?;
    crate::mail::outbox::void_queued_links(db, user_id).await
}

// === impl Identity: the flows ===

impl Identity {
    /// Queues a new verification link to `email` if it names an account not yet verified.
    /// Answers the same either way.
    pub async fn resend_verification(&self, email: &str, client: &ClientInfo) -> CoreResult<()> {
        self.request_by_address(MailKind::Verify, email, client).await
    }

    /// Queues a password-reset link to `email` if it names an active account. Answers the
    /// same either way.
    pub async fn request_password_reset(&self, email: &str, client: &ClientInfo) -> CoreResult<()> {
        self.request_by_address(MailKind::Reset, email, client).await
    }

    /// The same work for every address: the address checked, both throttle counters taken,
    /// one outbox row.
    async fn request_by_address(&self, kind: MailKind, email: &str, client: &ClientInfo) -> CoreResult<()> {
        let email = email.trim();
        check_email("email", email)?;
        self.throttle_mail(email, client).await?;
        self.queue_mail(self.db(), kind, None, email).await?;
        self.wake_sender();
        Ok(())
    }

    /// Per address asked for and per client, whatever the address.
    async fn throttle_mail(&self, email: &str, client: &ClientInfo) -> CoreResult<()> {
        let settings = &self.settings().email;
        throttle::rate(self.db(), "mail-address", &key(email), settings.address_limit, settings.limit_window).await?;
        throttle::rate(self.db(), "mail-client", &client.ip, settings.client_limit, settings.limit_window).await
    }

    /// Marks the address of the link's account verified. A link works once, and only while
    /// the account still has the address it was sent to.
    pub async fn verify_email(&self, token: &str) -> CoreResult<User> {
        check_token(token)?;
        let link = take(self.db(), LinkKind::Verify, token).await?;
        let sql = "UPDATE users SET email_verified = TRUE, updated_at = $3 WHERE id = $1 AND email_key = $2";
        let values: [Value; 3] = [link.user_id.clone().into(), key(&link.email).into(), clock::now().into()];
        let updated = self
            .db()
            .execute_raw(Statement::from_sql_and_values(self.db().get_database_backend(), sql, values))
            .await?;
        if updated.rows_affected() == 0 {
            return Err(invalid_token());
        }
        self.publish(Event::UserChanged { user_id: link.user_id.clone() }).await;
        tracing::info!(user_id = %link.user_id, "email address verified");
        self.find_user(&link.user_id).await?.ok_or_else(invalid_token)
    }

    /// Sets a new password with a reset link (once): voids every other link, marks the address
    /// verified (the link proved it), and revokes every session of the user. `user_id`, when
    /// given (dj-rest-auth's `uid`), must name the link's user. Returns the user and how many
    /// sessions were revoked.
    pub async fn reset_password(&self, token: &str, new_password: &str, user_id: &str) -> CoreResult<(User, u32)> {
        CoreError::check_all([
            check_token(token),
            passwords::check_presented("new_password", new_password),
            if user_id.is_empty() { Ok(()) } else { check_id("user_id", user_id) },
        ])?;
        // Checked before the link is used, so that a refused password does not spend it.
        let link = peek(self.db(), LinkKind::Reset, token).await?;
        if !user_id.is_empty() && user_id != link.user_id {
            return Err(CoreError::invalid("user_id", "does not match the link"));
        }
        let user = self.find_user(&link.user_id).await?.ok_or_else(invalid_token)?;
        passwords::check_policy("new_password", new_password, &user.username)?;
        let hash = self.passwords().hash(new_password).await?;

        let txn = self.db().begin().await?;
        let link = take(&txn, LinkKind::Reset, token).await?;
        let now = clock::now();
        let backend = txn.get_database_backend();
        let set_password = "UPDATE credentials SET password_hash = $2, updated_at = $3 WHERE user_id = $1";
        let values: [Value; 3] = [link.user_id.clone().into(), hash.into(), now.into()];
        txn.execute_raw(Statement::from_sql_and_values(backend, set_password, values)).await?;
        void_links(&txn, &link.user_id).await?;
        let verify = "UPDATE users SET email_verified = TRUE, updated_at = $3 WHERE id = $1 AND email_key = $2";
        let values: [Value; 3] = [link.user_id.clone().into(), key(&link.email).into(), now.into()];
        txn.execute_raw(Statement::from_sql_and_values(backend, verify, values)).await?;
        txn.commit().await?;

        tracing::info!(user_id = %link.user_id, "password reset");
        let revoked = self.revoke_user_sessions(&link.user_id, RevokeReason::PasswordChanged, None).await?;
        self.publish(Event::UserChanged { user_id: link.user_id.clone() }).await;
        let user = self.find_user(&link.user_id).await?.ok_or_else(invalid_token)?;
        Ok((user, revoked))
    }

    /// The caller asks to move to `new_email`: a confirmation link goes there, a notice to the
    /// current address. Nothing changes until the link is followed.
    pub async fn request_email_change(
        &self,
        caller: Option<&Principal>,
        new_email: &str,
        client: &ClientInfo,
    ) -> CoreResult<()> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        let new_email = new_email.trim();
        check_email("new_email", new_email)?;
        let user = self.find_user(&caller.user.id).await?.ok_or(CoreError::NotFound("user"))?;
        if key(new_email) == key(&user.email) {
            return Err(CoreError::invalid("new_email", "is already the address of the account"));
        }
        // Throttled before anything is looked up: the answer tells whether an address is taken.
        self.throttle_mail(new_email, client).await?;
        let taken = users::Entity::find().filter(users::Column::EmailKey.eq(key(new_email))).one(self.db()).await?;
        if taken.is_some() {
            return Err(CoreError::AlreadyExists { field: "email" });
        }
        let txn = self.db().begin().await?;
        self.queue_mail(&txn, MailKind::EmailChange, Some(&user.id), new_email).await?;
        self.queue_mail(&txn, MailKind::EmailChangeNotice, Some(&user.id), &user.email).await?;
        txn.commit().await?;
        self.wake_sender();
        tracing::info!(user_id = %user.id, "email change requested");
        Ok(())
    }

    /// Moves the link's account to the address the link was sent to (once); it is verified.
    pub async fn confirm_email_change(&self, token: &str) -> CoreResult<User> {
        check_token(token)?;
        let link = take(self.db(), LinkKind::EmailChange, token).await?;
        let sql = "UPDATE users SET email = $2, email_key = $3, email_verified = TRUE, updated_at = $4 WHERE id = $1";
        let values: [Value; 4] =
            [link.user_id.clone().into(), link.email.clone().into(), key(&link.email).into(), clock::now().into()];
        match self.db().execute_raw(Statement::from_sql_and_values(self.db().get_database_backend(), sql, values)).await
        {
            Ok(done) if done.rows_affected() == 0 => return Err(invalid_token()),
            Ok(_) => {}
            Err(error) if crate::store::is_unique_violation(&error) => {
                return Err(CoreError::AlreadyExists { field: "email" });
            }
            Err(error) => return Err(error.into()),
        }
        self.publish(Event::UserChanged { user_id: link.user_id.clone() }).await;
        tracing::info!(user_id = %link.user_id, "email address changed");
        self.find_user(&link.user_id).await?.ok_or_else(invalid_token)
    }

    // === The sender's half: what a queued message becomes ===

    /// The letter for a claimed message, with a fresh link where it needs one; `None` when
    /// there is nothing to send (no such account, or nothing left to do for it).
    pub(crate) async fn letter(&self, kind: MailKind, claimed: &Claimed) -> CoreResult<Option<Letter>> {
        let settings = &self.settings().email;
        let base = mail::base(&settings.public_url);
        let user = match &claimed.user_id {
            Some(id) => users::Entity::find_by_id(id.clone()).one(self.db()).await?,
            None => {
                users::Entity::find().filter(users::Column::EmailKey.eq(key(&claimed.recipient))).one(self.db()).await?
            }
        };
        let Some(user) = user.filter(|user| user.is_active) else { return Ok(None) };
        let mut values = vec![("username", user.username.clone()), ("email", user.email.clone())];
        let (to, link) = match kind {
            MailKind::Verify => {
                if user.email_verified {
                    return Ok(None);
                }
                let token =
                    issue(self.db(), LinkKind::Verify, &user.id, &user.email, settings.verification_ttl).await?;
                values.push(("expires", mail::lifetime(settings.verification_ttl)));
                (user.email.clone(), Some(format!("{base}/account/verify-email?key={token}")))
            }
            MailKind::Reset => {
                let token = issue(self.db(), LinkKind::Reset, &user.id, &user.email, settings.reset_ttl).await?;
                values.push(("expires", mail::lifetime(settings.reset_ttl)));
                (user.email.clone(), Some(format!("{base}/account/reset-password?uid={}&token={token}", user.id)))
            }
            MailKind::EmailChange => {
                let new_email = claimed.recipient.clone();
                let token = issue(self.db(), LinkKind::EmailChange, &user.id, &new_email, settings.change_ttl).await?;
                values[1] = ("email", new_email.clone());
                values.push(("expires", mail::lifetime(settings.change_ttl)));
                (new_email, Some(format!("{base}/account/confirm-email?key={token}")))
            }
            MailKind::EmailChangeNotice => {
                values.push(("new_email", self.pending_email(&user.id).await?.unwrap_or_default()));
                values.push(("account", format!("{base}/")));
                (claimed.recipient.clone(), None)
            }
        };
        if let Some(link) = &link {
            values.push(("link", link.clone()));
        }
        Ok(Some(Letter { kind, to, values, link }))
    }

    /// The address a pending email change of the user goes to (the newest queued).
    async fn pending_email(&self, user_id: &str) -> CoreResult<Option<String>> {
        let sql = "SELECT recipient FROM outbox WHERE user_id = $1 AND kind = $2 ORDER BY created_at DESC LIMIT 1";
        let values: [Value; 2] = [user_id.to_owned().into(), MailKind::EmailChange.as_str().into()];
        let row = self
            .db()
            .query_one_raw(Statement::from_sql_and_values(self.db().get_database_backend(), sql, values))
            .await?;
        Ok(row.map(|row| row.try_get("", "recipient")).transpose()?)
    }
}
