//! The login use case, in named steps: find the account, reserve a throttle slot, verify the
//! password, rehash it if the cost was raised, refuse an unverified address if verification is
//! required (mailing a new link), open the session. (A second factor will be one
//! more step between verifying and opening.)

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, Statement, Value,
    sea_query::Expr,
};

use super::{ClientInfo, LoginOutcome};
use crate::{
    Identity, clock,
    entities::{credentials, sessions, users},
    error::{CoreError, CoreResult},
    passwords::{self, Verified},
    settings::EmailVerification,
    throttle, tokens,
    users::User,
};

// === impl Identity: login ===

impl Identity {
    /// Username or email, and password. Throttled; one generic error for an unknown user, a
    /// wrong password and an inactive user, at the same cost. The steps: find the account,
    /// reserve a throttle slot, verify the password, rehash it if the cost was raised, open
    /// the session.
    pub async fn login(&self, login: &str, password: &str, client: ClientInfo) -> CoreResult<LoginOutcome> {
        CoreError::check_all([
            crate::users::check_login("username", login),
            passwords::check_presented("password", password),
        ])?;
        let found = self.find_login(login).await?;
        let reservation = self.reserve_attempt(login, found.as_ref().map(|(user, _)| user), &client).await?;
        let (user, checked, rehashed) = match self.verify_login(found, password).await {
            Ok(verified) => verified,
            Err(error) => {
                // The reservation stays: it counts as a failure.
                tracing::info!(client_ip = %client.ip, "login failed");
                return Err(error);
            }
        };
        reservation.succeeded(self.db()).await?;
        let current = match rehashed {
            Some(hash) => self.store_rehash(&user.id, &checked, hash).await?,
            None => checked,
        };
        // Told only to whoever knows the password: it says nothing of the account to others.
        // A new link goes out with it (an account made before verification was required has
        // never had one), within the mail limits.
        if self.settings().email.verification == EmailVerification::Required && !user.email_verified {
            tracing::info!(user_id = %user.id, "login refused: email address not verified");
            self.resend_after_login(&user, &client).await?;
            return Err(CoreError::EmailNotVerified);
        }
        self.open_session(user, client, &current).await
    }

    /// Login step: a throttle slot for this attempt, counted against the account (not the
    /// string typed: username and email are one account) and the client's address.
    async fn reserve_attempt(
        &self,
        login: &str,
        found: Option<&users::Model>,
        client: &ClientInfo,
    ) -> CoreResult<throttle::Reservation> {
        let account = match found {
            Some(user) => format!("id:{}", user.id),
            None => crate::users::key(login),
        };
        let settings = &self.settings().throttle;
        throttle::reserve(self.db(), settings, throttle::Counters::new(settings, &account, &client.ip)).await
    }

    /// Login step: the password checked against the account's hash (or a decoy of the same
    /// cost when there is no account). Returns the user, the hash it was checked against and,
    /// if that hash was weaker than today's cost, its replacement.
    async fn verify_login(
        &self,
        found: Option<(users::Model, credentials::Model)>,
        password: &str,
    ) -> CoreResult<(User, String, Option<String>)> {
        let hash = found.as_ref().map(|(_, credential)| credential.password_hash.as_str());
        let verdict = self.passwords().verify(password, hash).await?;
        match (found, verdict) {
            (Some((user, credential)), Verified::Yes) if user.is_active => {
                Ok((User::from(user), credential.password_hash, None))
            }
            (Some((user, credential)), Verified::YesRehashed(hash)) if user.is_active => {
                Ok((User::from(user), credential.password_hash, Some(hash)))
            }
            _ => Err(CoreError::InvalidCredentials),
        }
    }

    /// Login step: the password hash with today's cost, in place of the one checked — unless
    /// the password changed meanwhile (a reset, a change): then the login is refused, and the
    /// new password stays. Returns the hash now stored.
    async fn store_rehash(&self, user_id: &str, checked: &str, hash: String) -> CoreResult<String> {
        let updated = credentials::Entity::update_many()
            // `updated_at` says when the password changed: a rehash does not change it.
            .col_expr(credentials::Column::PasswordHash, Expr::value(hash.clone()))
            .filter(credentials::Column::UserId.eq(user_id.to_owned()))
            .filter(credentials::Column::PasswordHash.eq(checked.to_owned()))
            .exec(self.db())
            .await?;
        if updated.rows_affected == 0 {
            return Err(CoreError::InvalidCredentials);
        }
        tracing::info!(%user_id, "password rehashed with the current cost");
        Ok(hash)
    }

    /// Login step: a new session with its tokens — if the password is still the one checked.
    /// The session is written by one statement conditional on the stored hash (on PostgreSQL
    /// holding the credential's row, so that a concurrent change waits for it or it for the
    /// change): a reset or password change either finds this session and revokes it, or this
    /// login finds the new hash and is refused. No login with an old password outlives the
    /// change, however they interleave.
    pub(crate) async fn open_session(
        &self,
        user: User,
        client: ClientInfo,
        password_hash: &str,
    ) -> CoreResult<LoginOutcome> {
        let now = clock::now();
        users::Entity::update_many()
            .col_expr(users::Column::LastLogin, Expr::value(now))
            .filter(users::Column::Id.eq(user.id.clone()))
            .exec(self.db())
            .await?;
        let (session_token, token_hash) = tokens::generate();
        let session = sessions::Model {
            id: tokens::new_id(),
            user_id: user.id.clone(),
            token_hash,
            created_at: now,
            last_seen_at: now,
            expires_at: now + clock::secs(self.settings().refresh_ttl),
            revoked_at: None,
            revoke_reason: None,
            client_ip: truncate(&client.ip, 64),
            user_agent: truncate(&client.user_agent, 512),
        };
        if !insert_session_if_password_is(self.db(), &session, password_hash).await? {
            tracing::info!(user_id = %user.id, "login refused: the password changed while it was checked");
            return Err(CoreError::InvalidCredentials);
        }
        let user = User { last_login: Some(now), ..user };
        let (refresh_token, refresh_hash) = tokens::generate();
        super::refresh::insert_refresh(self.db(), &session.id, session.expires_at, refresh_hash, now).await?;
        let tokens = self.token_pair(&session, &user, refresh_token).await?;
        tracing::info!(user_id = %user.id, session_id = %session.id, "login");
        Ok(LoginOutcome { user, session_id: session.id, session_token, tokens })
    }
}

/// Inserts `session` if the user's stored password hash is still `password_hash`; whether it
/// did.
async fn insert_session_if_password_is(
    db: &DatabaseConnection,
    session: &sessions::Model,
    password_hash: &str,
) -> CoreResult<bool> {
    let backend = db.get_database_backend();
    let lock = if backend == DbBackend::Postgres { " FOR SHARE" } else { "" };
    // SQLite runs one writer at a time and takes its write lock before this statement reads.
    let sql = format!(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, last_seen_at, expires_at, client_ip, user_agent) \
         SELECT $1, $2, $3, $4, $4, $5, $6, $7 FROM credentials WHERE user_id = $2 AND password_hash = $8{lock}"
    );
    let values: [Value; 8] = [
        session.id.clone().into(),
        session.user_id.clone().into(),
        session.token_hash.clone().into(),
        session.created_at.into(),
        session.expires_at.into(),
        session.client_ip.clone().into(),
        session.user_agent.clone().into(),
        password_hash.to_owned().into(),
    ];
    let inserted = db.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    Ok(inserted.rows_affected() == 1)
}

fn truncate(value: &str, max_chars: usize) -> String {
    value.chars().take(max_chars).collect()
}
