//! Accounts by email: verifying an address, resetting a password, changing the address
//! (docs/accounts.md).
//!
//! Links carry a 256-bit random token; the database keeps its SHA-256 in `account_tokens`,
//! one live token per user and kind: a newer link replaces the older in the same statement
//! (`ON CONFLICT (user_id, kind)`), following a link deletes its row (`DELETE … RETURNING`:
//! of any number of simultaneous uses, one finds it), and a password change or reset, or a new
//! address, voids every link of the user, sent or still queued. A link is good only for the
//! address it was sent to: a reset sent before the account moved is refused after.
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
    mail::{
        self, Letter, MailKind,
        outbox::{self, Claimed, Queued},
    },
    passwords,
    store::revoke_sessions_in,
    throttle, tokens,
    users::{Principal, User, check_email, check_id, key},
};

/// A link's token as presented, bounded before it is hashed.
fn check_token(token: &str) -> CoreResult<()> {
    tokens::check("token", token.trim(), tokens::OPAQUE_TOKEN_MAX_BYTES)
}

fn invalid_token() -> CoreError {
    CoreError::invalid("token", "is not valid: used, replaced by a newer link, or unknown")
}

/// What a live link row says. A link's kind is the kind of mail that carries it.
struct Link {
    user_id: String,
    email: String,
}

/// The link of `kind` that `row` holds, unless it has expired.
fn live_link(row: Option<sea_orm::QueryResult>) -> CoreResult<Link> {
    let row = row.ok_or_else(invalid_token)?;
    if row.try_get::<i64>("", "expires_at")? <= clock::now_millis() {
        return Err(CoreError::invalid("token", "has expired"));
    }
    Ok(Link { user_id: row.try_get("", "user_id")?, email: row.try_get("", "email")? })
}

/// Issues a link of `kind` for the user (to `email`), replacing any older one; returns the
/// token to put in the link.
async fn issue(
    db: &impl ConnectionTrait,
    kind: MailKind,
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
async fn peek(db: &impl ConnectionTrait, kind: MailKind, token: &str) -> CoreResult<Link> {
    const SELECT: &str = "SELECT user_id, email, expires_at FROM account_tokens WHERE token_hash = $1 AND kind = $2";
    let values: [Value; 2] = [tokens::hash(token.trim()).into(), kind.as_str().into()];
    live_link(db.query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), SELECT, values)).await?)
}

/// Uses the link of `kind` with `token`: deleted in the statement that finds it, so that one
/// use of many simultaneous ones gets it.
async fn take(db: &impl ConnectionTrait, kind: MailKind, token: &str) -> CoreResult<Link> {
    const DELETE: &str =
        "DELETE FROM account_tokens WHERE token_hash = $1 AND kind = $2 RETURNING user_id, email, expires_at";
    let values: [Value; 2] = [tokens::hash(token.trim()).into(), kind.as_str().into()];
    live_link(db.query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), DELETE, values)).await?)
}

/// Deletes every link of the user that was sent.
async fn delete_links(db: &impl ConnectionTrait, user_id: &str) -> CoreResult<()> {
    let sql = "DELETE FROM account_tokens WHERE user_id = $1";
    db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, [user_id.to_owned().into()])).await?;
    Ok(())
}

/// Voids every link of the user, sent or still queued (a password changed; an address set by a
/// manager). Run it first in its transaction: queued rows are locked before links, in the
/// order the sender takes them (`mail::outbox`).
pub(crate) async fn void_links(db: &impl ConnectionTrait, user_id: &str) -> CoreResult<()> {
    outbox::void_queued_links(db, user_id).await?;
    delete_links(db, user_id).await
}

/// What marking an address verified found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// The address had not been proven before: this is its first proof.
    First,
    /// It was verified already.
    Again,
    /// The account no longer has this address.
    Moved,
}

/// Marks the user's address verified if it is still `email`; says whether this was the
/// address's first proof. At the first proof, the provider accounts linked while nobody had
/// proven the address are unlinked, in the caller's transaction: whoever held the account then
/// (a squatter who signed up with the address, or an address set by a manager) may have linked
/// one of theirs, and the address's owner takes the account without them.
async fn mark_verified(db: &impl ConnectionTrait, user_id: &str, email: &str) -> CoreResult<Proof> {
    let backend = db.get_database_backend();
    let first = "UPDATE users SET email_verified = TRUE, updated_at = $3 \
        WHERE id = $1 AND email_key = $2 AND email_verified = FALSE";
    let values: [Value; 3] = [user_id.to_owned().into(), key(email).into(), clock::now().into()];
    if db.execute_raw(Statement::from_sql_and_values(backend, first, values)).await?.rows_affected() == 1 {
        let unlink = "DELETE FROM external_identities WHERE user_id = $1";
        let dropped =
            db.execute_raw(Statement::from_sql_and_values(backend, unlink, [user_id.to_owned().into()])).await?;
        if dropped.rows_affected() > 0 {
            tracing::info!(%user_id, unlinked = dropped.rows_affected(), "identities unlinked: linked before the address was proven");
        }
        return Ok(Proof::First);
    }
    let still = "SELECT id FROM users WHERE id = $1 AND email_key = $2";
    let values: [Value; 2] = [user_id.to_owned().into(), key(email).into()];
    let found = db.query_one_raw(Statement::from_sql_and_values(backend, still, values)).await?;
    Ok(if found.is_some() { Proof::Again } else { Proof::Moved })
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
        self.queue_mail(self.db(), Queued { kind, user_id: None, recipient: email, new_email: None }).await?;
        self.wake_sender();
        Ok(())
    }

    /// Per client (its network), whatever the address; then per address asked for *from that
    /// client*: nobody elsewhere can use up someone's budget and so keep their links from
    /// them. A request the client limit refuses takes nothing from the address's budget.
    async fn throttle_mail(&self, email: &str, client: &ClientInfo) -> CoreResult<()> {
        let settings = &self.settings().email;
        let network = throttle::network(&client.ip);
        throttle::rate(self.db(), "mail-client", &network, settings.client_limit, settings.limit_window).await?;
        let address = format!("{}\n{network}", key(email));
        throttle::rate(self.db(), "mail-address", &address, settings.address_limit, settings.limit_window).await
    }

    /// After a refused login for an unverified address (verification required): a new link to
    /// the address, unless one is live or on its way (a user who just signed up keeps the link
    /// in their mailbox working), and within the same limits as a resend; over them, none.
    pub(crate) async fn resend_after_login(&self, user: &User, client: &ClientInfo) -> CoreResult<()> {
        const OUTSTANDING: &str = "SELECT user_id FROM account_tokens WHERE user_id = $1 AND kind = $2 AND expires_at > $4 \
            UNION ALL SELECT recipient_key FROM outbox WHERE kind = $2 AND sent_at IS NULL AND failed_at IS NULL \
                AND (user_id = $1 OR recipient_key = $3)";
        let values: [Value; 4] = [
            user.id.clone().into(),
            MailKind::Verify.as_str().into(),
            key(&user.email).into(),
            clock::now_millis().into(),
        ];
        let db = self.db();
        if db
            .query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), OUTSTANDING, values))
            .await?
            .is_some()
        {
            return Ok(());
        }
        match self.throttle_mail(&user.email, client).await {
            Ok(()) => {}
            Err(CoreError::Throttled { .. }) => return Ok(()),
            Err(error) => return Err(error),
        }
        let message =
            Queued { kind: MailKind::Verify, user_id: Some(&user.id), recipient: &user.email, new_email: None };
        self.queue_mail(self.db(), message).await?;
        self.wake_sender();
        Ok(())
    }

    /// Marks the address of the link's account verified. A link works once, and only while
    /// the account still has the address it was sent to. The address's first proof unlinks
    /// the provider accounts linked before it (`mark_verified`).
    pub async fn verify_email(&self, token: &str) -> CoreResult<User> {
        check_token(token)?;
        let txn = self.db().begin().await?;
        let link = take(&txn, MailKind::Verify, token).await?;
        if mark_verified(&txn, &link.user_id, &link.email).await? == Proof::Moved {
            return Err(invalid_token());
        }
        txn.commit().await?;
        self.publish(Event::UserChanged { user_id: link.user_id.clone() }).await;
        tracing::info!(user_id = %link.user_id, "email address verified");
        self.find_user(&link.user_id).await?.ok_or_else(invalid_token)
    }

    /// Sets a new password with a reset link (once), while the account is active and still has
    /// the address the link was sent to: voids every other link, marks the address verified
    /// (the link proved it; at its first proof, the provider accounts linked before are unlinked), and
    /// revokes every session of the user — all in one transaction.
    /// `user_id`, when given (dj-rest-auth's `uid`), must name the link's user. Returns the
    /// user and how many sessions were revoked.
    pub async fn reset_password(&self, token: &str, new_password: &str, user_id: &str) -> CoreResult<(User, u32)> {
        CoreError::check_all([
            check_token(token),
            passwords::check_presented("new_password", new_password),
            if user_id.is_empty() { Ok(()) } else { check_id("user_id", user_id) },
        ])?;
        // Checked before the link is used, so that a refused password does not spend it.
        let link = peek(self.db(), MailKind::Reset, token).await?;
        if !user_id.is_empty() && user_id != link.user_id {
            return Err(CoreError::invalid("user_id", "does not match the link"));
        }
        let user = self.find_user(&link.user_id).await?.ok_or_else(invalid_token)?;
        passwords::check_policy("new_password", new_password, &user.username)?;
        let hash = self.passwords().hash(new_password).await?;

        let txn = self.db().begin().await?;
        outbox::void_queued_links(&txn, &link.user_id).await?;
        let link = take(&txn, MailKind::Reset, token).await?;
        let owner = "SELECT id FROM users WHERE id = $1 AND email_key = $2 AND is_active = TRUE";
        let values: [Value; 2] = [link.user_id.clone().into(), key(&link.email).into()];
        if txn.query_one_raw(Statement::from_sql_and_values(txn.get_database_backend(), owner, values)).await?.is_none()
        {
            // The account moved to another address (or was deactivated) since the link left.
            return Err(invalid_token());
        }
        let set_password = "UPDATE credentials SET password_hash = $2, updated_at = $3 WHERE user_id = $1";
        let values: [Value; 3] = [link.user_id.clone().into(), hash.into(), clock::now().into()];
        txn.execute_raw(Statement::from_sql_and_values(txn.get_database_backend(), set_password, values)).await?;
        delete_links(&txn, &link.user_id).await?;
        mark_verified(&txn, &link.user_id, &link.email).await?;
        let revoked = revoke_sessions_in(&txn, &link.user_id, RevokeReason::PasswordChanged, None).await?;
        txn.commit().await?;

        tracing::info!(user_id = %link.user_id, "password reset");
        self.announce_all_revoked(&revoked, RevokeReason::PasswordChanged).await?;
        self.publish(Event::UserChanged { user_id: link.user_id.clone() }).await;
        let user = self.find_user(&link.user_id).await?.ok_or_else(invalid_token)?;
        Ok((user, u32::try_from(revoked.len()).unwrap_or(u32::MAX)))
    }

    /// The caller asks to move to `new_email`, proving it with their password (a session alone
    /// could otherwise move the account to an attacker's address, and take it with a reset
    /// link): a confirmation link goes there, a notice to the current address. Nothing changes
    /// until the link is followed.
    pub async fn request_email_change(
        &self,
        caller: Option<&Principal>,
        new_email: &str,
        current_password: &str,
        client: &ClientInfo,
    ) -> CoreResult<()> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        let new_email = new_email.trim();
        CoreError::check_all([
            check_email("new_email", new_email),
            passwords::check_presented("current_password", current_password),
        ])?;
        let user = self.find_user(&caller.user.id).await?.ok_or(CoreError::NotFound("user"))?;
        if key(new_email) == key(&user.email) {
            return Err(CoreError::invalid("new_email", "is already the address of the account"));
        }
        self.check_current_password(&user.id, current_password).await?;
        // Throttled before anything is looked up: the answer tells whether an address is taken.
        self.throttle_mail(new_email, client).await?;
        let taken = users::Entity::find().filter(users::Column::EmailKey.eq(key(new_email))).one(self.db()).await?;
        if taken.is_some() {
            return Err(CoreError::AlreadyExists { field: "email" });
        }
        let txn = self.db().begin().await?;
        let to_new =
            Queued { kind: MailKind::EmailChange, user_id: Some(&user.id), recipient: new_email, new_email: None };
        self.queue_mail(&txn, to_new).await?;
        let notice = Queued {
            kind: MailKind::EmailChangeNotice,
            user_id: Some(&user.id),
            recipient: &user.email,
            new_email: Some(new_email),
        };
        self.queue_mail(&txn, notice).await?;
        txn.commit().await?;
        self.wake_sender();
        tracing::info!(user_id = %user.id, "email change requested");
        Ok(())
    }

    /// Moves the link's account to the address the link was sent to (once); it is verified,
    /// and every other link of the user (a reset sent to the old address) is void.
    pub async fn confirm_email_change(&self, token: &str) -> CoreResult<User> {
        check_token(token)?;
        let link = peek(self.db(), MailKind::EmailChange, token).await?;
        let txn = self.db().begin().await?;
        // Queued rows first (by the old address too, before it changes), then links: the order
        // the sender locks them in.
        outbox::void_queued_links(&txn, &link.user_id).await?;
        let link = take(&txn, MailKind::EmailChange, token).await?;
        delete_links(&txn, &link.user_id).await?;
        let sql = "UPDATE users SET email = $2, email_key = $3, email_verified = TRUE, updated_at = $4 WHERE id = $1";
        let values: [Value; 4] =
            [link.user_id.clone().into(), link.email.clone().into(), key(&link.email).into(), clock::now().into()];
        match txn.execute_raw(Statement::from_sql_and_values(txn.get_database_backend(), sql, values)).await {
            Ok(done) if done.rows_affected() == 0 => return Err(invalid_token()),
            Ok(_) => {}
            Err(error) if crate::store::is_unique_violation(&error) => {
                return Err(CoreError::AlreadyExists { field: "email" });
            }
            Err(error) => return Err(error.into()),
        }
        txn.commit().await?;
        self.publish(Event::UserChanged { user_id: link.user_id.clone() }).await;
        tracing::info!(user_id = %link.user_id, "email address changed");
        self.find_user(&link.user_id).await?.ok_or_else(invalid_token)
    }

    // === The sender's half: what a queued message becomes ===

    /// The letter for a claimed message, with a fresh link where it needs one; `None` when
    /// there is nothing to send (no such account, nothing left to do for it, or the message
    /// was voided since it was claimed). The link is made in a transaction that holds the
    /// outbox row (`outbox::hold`), so that a void cannot slip between the two.
    pub(crate) async fn letter(&self, kind: MailKind, claimed: &Claimed) -> CoreResult<Option<Letter>> {
        let txn = self.db().begin().await?;
        if !outbox::hold(&txn, claimed).await? {
            return Ok(None);
        }
        let Some(letter) = self.write_letter(&txn, kind, claimed).await? else { return Ok(None) };
        txn.commit().await?;
        Ok(Some(letter))
    }

    async fn write_letter(
        &self,
        db: &impl ConnectionTrait,
        kind: MailKind,
        claimed: &Claimed,
    ) -> CoreResult<Option<Letter>> {
        let settings = &self.settings().email;
        let base = mail::base(&settings.public_url);
        let user = match &claimed.user_id {
            Some(id) => users::Entity::find_by_id(id.clone()).one(db).await?,
            None => users::Entity::find().filter(users::Column::EmailKey.eq(key(&claimed.recipient))).one(db).await?,
        };
        let Some(user) = user.filter(|user| user.is_active) else { return Ok(None) };
        let mut values = vec![("username", user.username.clone()), ("email", user.email.clone())];
        let (to, link) = match kind {
            MailKind::Verify => {
                if user.email_verified {
                    return Ok(None);
                }
                let token = issue(db, kind, &user.id, &user.email, settings.verification_ttl).await?;
                values.push(("expires", mail::lifetime(settings.verification_ttl)));
                (user.email.clone(), Some(format!("{base}/account/verify-email?key={token}")))
            }
            MailKind::Reset => {
                let token = issue(db, kind, &user.id, &user.email, settings.reset_ttl).await?;
                values.push(("expires", mail::lifetime(settings.reset_ttl)));
                (user.email.clone(), Some(format!("{base}/account/reset-password?uid={}&token={token}", user.id)))
            }
            MailKind::EmailChange => {
                let new_email = claimed.recipient.clone();
                let token = issue(db, kind, &user.id, &new_email, settings.change_ttl).await?;
                values[1] = ("email", new_email.clone());
                values.push(("expires", mail::lifetime(settings.change_ttl)));
                (new_email, Some(format!("{base}/account/confirm-email?key={token}")))
            }
            MailKind::EmailChangeNotice => {
                values.push(("new_email", claimed.new_email.clone().unwrap_or_default()));
                values.push(("account", format!("{base}/")));
                (claimed.recipient.clone(), None)
            }
        };
        if let Some(link) = &link {
            values.push(("link", link.clone()));
        }
        Ok(Some(Letter { kind, to, values, link }))
    }
}
