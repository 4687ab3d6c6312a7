//! The login use case, in named steps: find the account, reserve a throttle slot, verify the
//! password, rehash it if the cost was raised, refuse an unverified address if verification is
//! required, open the session. (A second factor will be one
//! more step between verifying and opening.)

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};

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
        let (user, rehashed) = match self.verify_login(found, password).await {
            Ok(verified) => verified,
            Err(error) => {
                // The reservation stays: it counts as a failure.
                tracing::info!(client_ip = %client.ip, "login failed");
                return Err(error);
            }
        };
        reservation.succeeded(self.db()).await?;
        if let Some(hash) = rehashed {
            self.store_rehash(&user.id, hash).await?;
        }
        // Told only to whoever knows the password: it says nothing of the account to others.
        if self.settings().email.verification == EmailVerification::Required && !user.email_verified {
            tracing::info!(user_id = %user.id, "login refused: email address not verified");
            return Err(CoreError::EmailNotVerified);
        }
        self.open_session(user, client).await
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
    /// cost when there is no account). Returns the user and, if the hash was weaker than
    /// today's cost, its replacement.
    async fn verify_login(
        &self,
        found: Option<(users::Model, credentials::Model)>,
        password: &str,
    ) -> CoreResult<(User, Option<String>)> {
        let hash = found.as_ref().map(|(_, credential)| credential.password_hash.as_str());
        let verdict = self.passwords().verify(password, hash).await?;
        match (found, verdict) {
            (Some((user, _)), Verified::Yes) if user.is_active => Ok((User::from(user), None)),
            (Some((user, _)), Verified::YesRehashed(hash)) if user.is_active => Ok((User::from(user), Some(hash))),
            _ => Err(CoreError::InvalidCredentials),
        }
    }

    /// Login step: the password hash with today's cost.
    async fn store_rehash(&self, user_id: &str, hash: String) -> CoreResult<()> {
        credentials::Entity::update_many()
            .col_expr(credentials::Column::PasswordHash, Expr::value(hash))
            .col_expr(credentials::Column::UpdatedAt, Expr::value(clock::now()))
            .filter(credentials::Column::UserId.eq(user_id.to_owned()))
            .exec(self.db())
            .await?;
        tracing::info!(%user_id, "password rehashed with the current cost");
        Ok(())
    }

    /// Login step: a new session with its tokens.
    async fn open_session(&self, user: User, client: ClientInfo) -> CoreResult<LoginOutcome> {
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
        sessions::Entity::insert(sessions::ActiveModel::from(session.clone()))
            .exec_without_returning(self.db())
            .await?;
        let user = User { last_login: Some(now), ..user };
        let (refresh_token, refresh_hash) = tokens::generate();
        super::refresh::insert_refresh(self.db(), &session.id, session.expires_at, refresh_hash, now).await?;
        let tokens = self.token_pair(&session, &user, refresh_token).await?;
        tracing::info!(user_id = %user.id, session_id = %session.id, "login");
        Ok(LoginOutcome { user, session_id: session.id, session_token, tokens })
    }
}

fn truncate(value: &str, max_chars: usize) -> String {
    value.chars().take(max_chars).collect()
}
