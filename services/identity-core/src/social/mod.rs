//! Signing in with an external provider (OpenID Connect, GitHub), and the identities that
//! link a provider's account to a user. The rules, and why (`docs/social-login.md`):
//!
//! - A sign-in starts with `begin_social`: a 256-bit `state` that travels through the
//!   provider, a 256-bit `binding` that the client who began keeps to itself (an HttpOnly
//!   cookie), both stored only as one hash (single use, ten minutes); a `nonce` and a PKCE
//!   verifier kept server side; and the provider's URL.
//! - `complete_social` takes the sign-in of the state **and** binding (one statement deletes
//!   it: a replayed or concurrent completion finds nothing; a state that leaked with the code,
//!   in a log or a `Referer`, completes nothing without the binding), exchanges the code, and
//!   verifies what the provider says. Failed completions are throttled per client (its
//!   network), reserved before they are evaluated as failed logins are.
//! - An identity (provider, subject) belongs to one user. A known identity logs its user in.
//!   An unknown one whose address a local account has is linked to it only when the provider
//!   says the address is verified **and** the local account verified it: otherwise anyone who
//!   registers the victim's address at a careless provider would own the account — and never
//!   to a manager's or an admin's account. Refused, the user logs in and links the provider
//!   explicitly (`begin_social` with `link`), which needs the account's own address verified
//!   (a squatter who signed up with someone's address links nothing to it). Any other unknown
//!   identity with an address the provider verified creates a user (a unique username derived
//!   from the profile, no password: the reset flow sets one); an unverified one creates
//!   nothing (its owner could reset the password and inherit the link), and is refused
//!   before any account is looked up (the answer tells nothing about who has an account).
//! - The first proof of an account's address (a verification or reset link) unlinks the
//!   identities linked before it (`accounts::mark_verified`).
//! - Unlinking the last way to log in (no password, one identity) is refused, atomically.

mod config;
mod protocol;

use std::{collections::HashSet, time::Duration};

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, Statement,
    TransactionTrait, Value, sea_query::Expr,
};
use unicode_normalization::UnicodeNormalization;

pub use config::{ProviderKind, ProviderSettings, load_providers, parse_providers};

use crate::{
    Identity, clock,
    entities::{credentials, external_identities, users},
    error::{CoreError, CoreResult, DeadReason, SocialError},
    sessions::{ClientInfo, LoginOutcome},
    settings::EmailVerification,
    store, throttle, tokens,
    users::{Principal, Role, User, check_email, check_username, key},
};

/// How long a started sign-in may take at the provider.
const STATE_TTL: Duration = Duration::from_secs(10 * 60);
/// Sign-ins a client (its network) may start per window: each writes a row.
const BEGIN_LIMIT: u32 = 60;
const BEGIN_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Bounds on what callers and providers send.
const CODE_BYTES: usize = 2048;
const STATE_BYTES: usize = 128;
const SUBJECT_BYTES: usize = 255;
const NEXT_BYTES: usize = 1024;
const REDIRECT_BYTES: usize = 2048;
/// The marker of a password nobody can type (Django's convention): users created by a
/// provider have one until they set a password with a reset link.
pub(crate) const UNUSABLE_PASSWORD_PREFIX: &str = "!";

/// The configured providers and the HTTP client that speaks to them.
pub(crate) struct Social {
    providers: Vec<protocol::Provider>,
    http: reqwest::Client,
}

impl Social {
    pub(crate) fn new(providers: &[ProviderSettings]) -> CoreResult<Self> {
        let providers = providers.iter().cloned().map(protocol::Provider::new).collect();
        Ok(Social { providers, http: protocol::http_client()? })
    }
}

/// A provider as a "Sign in with …" button shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    pub name: String,
    pub display_name: String,
    pub kind: ProviderKind,
}

/// A started sign-in: where to send the browser, the state that travels through the provider,
/// and the binding the client keeps to itself (it completes nothing without it).
#[derive(Debug, Clone)]
pub struct Begun {
    pub authorization_url: String,
    pub state: String,
    pub binding: String,
    pub redirect_uri: String,
}

/// A provider's account linked to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    pub provider: String,
    pub subject: String,
    /// The address the provider gave when it was linked or last used.
    pub email: String,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

impl From<external_identities::Model> for ExternalIdentity {
    fn from(row: external_identities::Model) -> Self {
        ExternalIdentity {
            provider: row.provider,
            subject: row.subject,
            email: row.email,
            created_at: row.created_at,
            last_login_at: row.last_login_at,
        }
    }
}

/// What a completed sign-in did.
#[derive(Debug, Clone)]
pub enum SocialOutcome {
    /// A session for the provider's user; `created` when the sign-in made the user.
    LoggedIn { login: Box<LoginOutcome>, created: bool, next: String },
    /// The caller's account now has this identity (a sign-in started with `link`).
    Linked { identity: ExternalIdentity, next: String },
}

/// A started sign-in as stored.
struct Started {
    provider: String,
    nonce: String,
    pkce_verifier: String,
    redirect_uri: String,
    next: String,
    link_user_id: Option<String>,
    expires_at: i64,
}

/// Where to go after signing in: a path on our origin, or `/`. `//host` and `/\host` are
/// other origins to a browser.
fn safe_next(next: &str) -> String {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.len() <= NEXT_BYTES
        && !next.chars().any(char::is_control);
    if local { next.to_owned() } else { "/".to_owned() }
}

/// A username from what the provider says: its letters, digits and `@.+-_`, in one script;
/// else `user`.
fn username_base(profile: &protocol::Profile) -> String {
    let from_email = profile.email.as_deref().and_then(|email| email.split('@').next());
    for candidate in [profile.username.as_deref(), from_email].into_iter().flatten() {
        let cleaned: String = candidate
            .trim()
            .nfkc()
            .filter(|c| c.is_alphanumeric() || "@.+-_".contains(*c))
            .take(crate::users::limits::USERNAME_CHARS - 8)
            .collect();
        if check_username("username", &cleaned).is_ok() {
            return cleaned;
        }
    }
    "user".to_owned()
}

fn refused(error: SocialError) -> CoreError {
    CoreError::Social(error)
}

/// What a sign-in is stored by: the hash of its state and binding together, so that only the
/// two together find it (and the lookup by hash compares nothing secret).
fn state_key(state: &str, binding: &str) -> String {
    tokens::hash(&format!("{state}\n{binding}"))
}

/// Deletes the stored sign-in of `state` and `binding` and returns it: single use.
async fn take_state(db: &impl ConnectionTrait, state: &str, binding: &str) -> CoreResult<Option<Started>> {
    const TAKE: &str = "DELETE FROM social_states WHERE state_hash = $1 \
        RETURNING provider, nonce, pkce_verifier, redirect_uri, next_path, link_user_id, expires_at";
    let values: [Value; 1] = [state_key(state, binding).into()];
    let row = db.query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), TAKE, values)).await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Started {
        provider: row.try_get("", "provider")?,
        nonce: row.try_get("", "nonce")?,
        pkce_verifier: row.try_get("", "pkce_verifier")?,
        redirect_uri: row.try_get("", "redirect_uri")?,
        next: row.try_get("", "next_path")?,
        link_user_id: row.try_get("", "link_user_id")?,
        expires_at: row.try_get("", "expires_at")?,
    }))
}

/// What a resolution step could not settle because a concurrent one changed the facts.
enum Step<T> {
    Done(T),
    Again,
}

// === impl Identity: social login ===

impl Identity {
    /// The configured providers, in the file's order.
    pub fn social_providers(&self) -> Vec<ProviderInfo> {
        self.social()
            .providers
            .iter()
            .map(|provider| ProviderInfo {
                name: provider.settings.name.clone(),
                display_name: provider.settings.display_name.clone(),
                kind: provider.settings.kind,
            })
            .collect()
    }

    fn provider(&self, name: &str) -> CoreResult<&protocol::Provider> {
        self.social()
            .providers
            .iter()
            .find(|provider| provider.settings.name == name)
            .ok_or(CoreError::NotFound("provider"))
    }

    /// The redirect URI: `{public_url}/auth/{provider}/callback` when none is asked for, else
    /// the one asked for if it is that or one of the provider's `redirect_uris`.
    fn redirect_uri(&self, provider: &protocol::Provider, asked: &str) -> CoreResult<String> {
        let base = crate::mail::base(&self.settings().email.public_url);
        let default = format!("{base}/auth/{}/callback", provider.settings.name);
        if asked.is_empty() || asked == default {
            return Ok(default);
        }
        if asked.len() <= REDIRECT_BYTES && provider.settings.redirect_uris.iter().any(|uri| uri == asked) {
            return Ok(asked.to_owned());
        }
        Err(CoreError::invalid("redirect_uri", "is not a redirect URI configured for this provider"))
    }

    /// Starts a sign-in with `provider` (with `link`, for the caller's account, whose address
    /// must be verified): the URL to send the browser to, the state, and the binding for the
    /// client to keep. `next` is kept if it is a local path.
    pub async fn begin_social(
        &self,
        caller: Option<&Principal>,
        provider: &str,
        redirect_uri: &str,
        next: &str,
        link: bool,
        client: &ClientInfo,
    ) -> CoreResult<Begun> {
        let provider = self.provider(provider)?;
        let redirect_uri = self.redirect_uri(provider, redirect_uri)?;
        let link_user_id = match link {
            true => {
                let caller = caller.ok_or(CoreError::Unauthenticated)?;
                self.check_may_link(&caller.user.id).await?;
                Some(caller.user.id.clone())
            }
            false => None,
        };
        throttle::rate(self.db(), "social-begin", &throttle::network(&client.ip), BEGIN_LIMIT, BEGIN_WINDOW).await?;
        let (state, _) = tokens::generate();
        let (binding, _) = tokens::generate();
        let (nonce, _) = tokens::generate();
        let request = provider.authorization(&self.social().http, &state, &nonce, &redirect_uri).await?;
        const INSERT: &str = "INSERT INTO social_states (state_hash, provider, nonce, pkce_verifier, redirect_uri, \
            next_path, link_user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let now = clock::now_millis();
        let values: [Value; 9] = [
            state_key(&state, &binding).into(),
            provider.settings.name.clone().into(),
            nonce.into(),
            request.pkce_verifier.into(),
            redirect_uri.clone().into(),
            safe_next(next).into(),
            link_user_id.into(),
            now.into(),
            (now + clock::millis(STATE_TTL)).into(),
        ];
        self.db().execute_raw(Statement::from_sql_and_values(self.db().get_database_backend(), INSERT, values)).await?;
        Ok(Begun { authorization_url: request.url, state, binding, redirect_uri })
    }

    /// A provider is linked only to an account whose address its holder has proven: one that
    /// signed up with someone else's address must not hold a way in once the owner claims it.
    async fn check_may_link(&self, user_id: &str) -> CoreResult<()> {
        let user = users::Entity::find_by_id(user_id.to_owned()).one(self.db()).await?;
        match user {
            Some(user) if user.email_verified => Ok(()),
            Some(_) => {
                tracing::info!(%user_id, "link refused: the account's address is not verified");
                Err(CoreError::EmailNotVerified)
            }
            None => Err(CoreError::Unauthenticated),
        }
    }

    /// Completes a sign-in: takes the sign-in of the state and binding (once), exchanges the
    /// code, verifies the provider's answer and logs in (or, for a sign-in started with `link`,
    /// links the identity to the caller, who must be the one who started it).
    ///
    /// Throttled per client (its network), with the budget of failed logins for one account:
    /// the attempt's slot is reserved before it is evaluated, so a burst evaluates at most the
    /// budget; a success gives it back, as does a provider or database that could not answer
    /// (not the client's doing). Nothing is counted per provider or per account, so no client
    /// can lock another out.
    #[allow(clippy::too_many_arguments)]
    pub async fn complete_social(
        &self,
        caller: Option<&Principal>,
        provider_name: &str,
        code: &str,
        state: &str,
        binding: &str,
        redirect_uri: &str,
        client: ClientInfo,
    ) -> CoreResult<SocialOutcome> {
        let provider = self.provider(provider_name)?;
        if code.is_empty() || code.len() > CODE_BYTES {
            return Err(CoreError::invalid("code", format!("must be 1 to {CODE_BYTES} bytes")));
        }
        let reservation = throttle::reserve_client(self.db(), &self.settings().throttle, "social", &client.ip).await?;
        let outcome = self.complete_reserved(caller, provider, code, state, binding, redirect_uri, client).await;
        let not_the_clients = matches!(
            &outcome,
            Err(CoreError::Social(SocialError::ProviderUnavailable) | CoreError::Unavailable | CoreError::Internal(_))
        );
        if outcome.is_ok() || not_the_clients {
            reservation.release(self.db()).await?;
        }
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    async fn complete_reserved(
        &self,
        caller: Option<&Principal>,
        provider: &protocol::Provider,
        code: &str,
        state: &str,
        binding: &str,
        redirect_uri: &str,
        client: ClientInfo,
    ) -> CoreResult<SocialOutcome> {
        let provider_name = provider.settings.name.as_str();
        if state.is_empty() || state.len() > STATE_BYTES || binding.is_empty() || binding.len() > STATE_BYTES {
            tracing::info!(provider = provider_name, client_ip = %client.ip, "social login refused: no state or binding");
            return Err(refused(SocialError::StateInvalid));
        }
        let started = take_state(self.db(), state, binding).await?;
        let started = started.filter(|started| {
            started.provider == provider_name
                && started.expires_at > clock::now_millis()
                && (redirect_uri.is_empty() || redirect_uri == started.redirect_uri)
        });
        let Some(started) = started else {
            tracing::info!(provider = provider_name, client_ip = %client.ip, "social login refused: unknown state or binding");
            return Err(refused(SocialError::StateInvalid));
        };
        if let Some(user_id) = &started.link_user_id {
            let caller = caller.ok_or(CoreError::Unauthenticated)?;
            if &caller.user.id != user_id {
                tracing::info!(provider = provider_name, "link refused: started by another user");
                return Err(refused(SocialError::StateInvalid));
            }
        }
        let profile = provider
            .profile(&self.social().http, code, &started.pkce_verifier, &started.nonce, &started.redirect_uri)
            .await?;
        if profile.subject.is_empty() || profile.subject.len() > SUBJECT_BYTES {
            return Err(refused(SocialError::TokenInvalid));
        }
        // An address we could not mail is no address.
        let email = profile.email.as_deref().map(str::trim).filter(|email| check_email("email", email).is_ok());
        let profile = protocol::Profile { email: email.map(str::to_owned), ..profile };
        let next = started.next;
        Ok(match started.link_user_id {
            Some(user_id) => {
                let identity = self.link(&user_id, provider_name, &profile).await?;
                SocialOutcome::Linked { identity, next }
            }
            None => {
                let (login, created) = self.social_login(provider_name, &profile, client).await?;
                SocialOutcome::LoggedIn { login: Box::new(login), created, next }
            }
        })
    }

    /// The user of the identity, found, linked by a verified address, or created; then a
    /// session. A concurrent completion that created or linked first is found on the next
    /// round.
    async fn social_login(
        &self,
        provider: &str,
        profile: &protocol::Profile,
        client: ClientInfo,
    ) -> CoreResult<(LoginOutcome, bool)> {
        for _ in 0..3 {
            let step = self.resolve(provider, profile).await?;
            if let Step::Done((user, created)) = step {
                let login = self.open_social_session(user, provider, client, created).await?;
                return Ok((login, created));
            }
        }
        Err(CoreError::internal("social login: the user could not be settled in three rounds"))
    }

    async fn resolve(&self, provider: &str, profile: &protocol::Profile) -> CoreResult<Step<(users::Model, bool)>> {
        let db = self.db();
        let known = external_identities::Entity::find()
            .filter(external_identities::Column::Provider.eq(provider))
            .filter(external_identities::Column::Subject.eq(profile.subject.clone()))
            .one(db)
            .await?;
        if let Some(identity) = known {
            let mut update = external_identities::Entity::update_many()
                .col_expr(external_identities::Column::LastLoginAt, Expr::value(clock::now()))
                .filter(external_identities::Column::Id.eq(identity.id.clone()));
            if let Some(email) = &profile.email {
                update = update.col_expr(external_identities::Column::Email, Expr::value(email.clone()));
            }
            update.exec(db).await?;
            let user = users::Entity::find_by_id(identity.user_id).one(db).await?;
            // Deleted since: the identity went with it (cascade); resolve again.
            return Ok(user.map_or(Step::Again, |user| Step::Done((user, false))));
        }
        // Only an address the provider vouches for can link or make an account; one it did not
        // verify may be someone else's. Refused before any account is looked up, so that the
        // answer says nothing about who has an account here.
        let email = match (&profile.email, profile.email_verified) {
            (Some(email), true) => email.clone(),
            (email, _) => {
                tracing::info!(%provider, shared = email.is_some(), "social login refused: no address the provider verified");
                return Err(refused(SocialError::EmailRequired));
            }
        };
        let local = users::Entity::find().filter(users::Column::EmailKey.eq(key(&email))).one(db).await?;
        if let Some(local) = local {
            // Both sides verified, and not a manager's or an admin's account: a privileged
            // account is linked by its holder, logged in, or not at all.
            let privileged = local.role != Role::User.as_str();
            if !local.email_verified || privileged {
                tracing::info!(
                    %provider, user_id = %local.id, local_verified = local.email_verified, privileged,
                    "social login refused: a local account has the address; no automatic link"
                );
                return Err(refused(SocialError::EmailInUse));
            }
            let inserted = insert_identity(db, &local.id, provider, profile).await?;
            if !inserted {
                return Ok(Step::Again);
            }
            tracing::info!(%provider, user_id = %local.id, "identity linked by its verified address");
            return Ok(Step::Done((local, false)));
        }
        Ok(match self.create_social_user(provider, profile, &email).await? {
            Some(user) => Step::Done((user, true)),
            None => Step::Again,
        })
    }

    /// A new user for the identity, in one transaction with it; the address is the provider's,
    /// verified by it. `None` if a unique key was taken meanwhile.
    async fn create_social_user(
        &self,
        provider: &str,
        profile: &protocol::Profile,
        email: &str,
    ) -> CoreResult<Option<users::Model>> {
        let username = self.free_username(&username_base(profile)).await?;
        let now = clock::now();
        let row = users::Model {
            id: tokens::new_id(),
            username_key: key(&username),
            username,
            email: email.to_owned(),
            email_key: key(email),
            role: Role::User.as_str().to_owned(),
            is_active: true,
            date_joined: now,
            last_login: None,
            updated_at: now,
            email_verified: true,
        };
        let (unusable, _) = tokens::generate();
        let txn = self.db().begin().await?;
        let inserted = users::Entity::insert(users::ActiveModel::from(row.clone())).exec_without_returning(&txn).await;
        match inserted {
            Err(error) if store::is_unique_violation(&error) => return Ok(None),
            other => other?,
        };
        credentials::Entity::insert(credentials::ActiveModel {
            user_id: Set(row.id.clone()),
            password_hash: Set(format!("{UNUSABLE_PASSWORD_PREFIX}{unusable}")),
            updated_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        if !insert_identity(&txn, &row.id, provider, profile).await? {
            return Ok(None);
        }
        txn.commit().await?;
        tracing::info!(%provider, user_id = %row.id, "user created by a social login");
        Ok(Some(row))
    }

    /// `base`, else `base2` … `base9`, else `base-` and six random hex digits.
    async fn free_username(&self, base: &str) -> CoreResult<String> {
        let candidates: Vec<String> =
            std::iter::once(base.to_owned()).chain((2..10).map(|n| format!("{base}{n}"))).collect();
        let keys: Vec<String> = candidates.iter().map(|candidate| key(candidate)).collect();
        let taken: HashSet<String> = users::Entity::find()
            .filter(users::Column::UsernameKey.is_in(keys))
            .all(self.db())
            .await?
            .into_iter()
            .map(|user| user.username_key)
            .collect();
        if let Some(free) = candidates.into_iter().find(|candidate| !taken.contains(&key(candidate))) {
            return Ok(free);
        }
        let (random, _) = tokens::generate();
        Ok(format!("{base}-{}", &crate::tokens::hash(&random)[..6]))
    }

    /// The login seam's last step for a provider's user: the same refusals as a password login
    /// (inactive; an unverified address when verification is required), then a session.
    async fn open_social_session(
        &self,
        user: users::Model,
        provider: &str,
        client: ClientInfo,
        created: bool,
    ) -> CoreResult<LoginOutcome> {
        if !user.is_active {
            tracing::info!(%provider, user_id = %user.id, "social login refused: user inactive");
            return Err(CoreError::SessionDead(DeadReason::UserInactive));
        }
        let user = User::from(user);
        if self.settings().email.verification == EmailVerification::Required && !user.email_verified {
            tracing::info!(user_id = %user.id, "social login refused: email address not verified");
            if !created {
                self.resend_after_login(&user, &client).await?;
            }
            return Err(CoreError::EmailNotVerified);
        }
        let credential = credentials::Entity::find_by_id(user.id.clone())
            .one(self.db())
            .await?
            .ok_or(CoreError::NotFound("user"))?;
        tracing::info!(%provider, user_id = %user.id, "social login");
        self.open_session(user, client, &credential.password_hash).await
    }

    /// Links the identity to `user_id` (a sign-in started with `link`), whose address must
    /// still be verified; already linked to them is fine, to another user is refused.
    async fn link(&self, user_id: &str, provider: &str, profile: &protocol::Profile) -> CoreResult<ExternalIdentity> {
        let db = self.db();
        self.check_may_link(user_id).await?;
        insert_identity(db, user_id, provider, profile).await?;
        let identity = external_identities::Entity::find()
            .filter(external_identities::Column::Provider.eq(provider))
            .filter(external_identities::Column::Subject.eq(profile.subject.clone()))
            .one(db)
            .await?
            .ok_or(CoreError::NotFound("identity"))?;
        if identity.user_id != user_id {
            tracing::info!(%provider, %user_id, "link refused: the identity is another user's");
            return Err(refused(SocialError::LinkedElsewhere));
        }
        tracing::info!(%provider, %user_id, "identity linked");
        Ok(identity.into())
    }

    /// The caller's linked identities, oldest first.
    pub async fn list_identities(&self, caller: Option<&Principal>) -> CoreResult<Vec<ExternalIdentity>> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        let rows = external_identities::Entity::find()
            .filter(external_identities::Column::UserId.eq(caller.user.id.clone()))
            .order_by_asc(external_identities::Column::CreatedAt)
            .order_by_asc(external_identities::Column::Id)
            .all(self.db())
            .await?;
        Ok(rows.into_iter().map(ExternalIdentity::from).collect())
    }

    /// Removes one of the caller's identities, unless it is their last way to log in (no
    /// usable password and no other identity): decided and done in one statement, which on
    /// PostgreSQL first locks the user's row so that two unlinks cannot each leave the other.
    pub async fn unlink_identity(&self, caller: Option<&Principal>, provider: &str, subject: &str) -> CoreResult<()> {
        let caller = caller.ok_or(CoreError::Unauthenticated)?;
        if provider.is_empty() || provider.len() > 32 || subject.is_empty() || subject.len() > SUBJECT_BYTES {
            return Err(CoreError::NotFound("identity"));
        }
        let user_id = caller.user.id.clone();
        let txn = self.db().begin().await?;
        let backend = txn.get_database_backend();
        if backend == DbBackend::Postgres {
            let lock = "SELECT id FROM users WHERE id = $1 FOR UPDATE";
            txn.execute_raw(Statement::from_sql_and_values(backend, lock, [user_id.clone().into()])).await?;
        }
        let delete = format!(
            "DELETE FROM external_identities WHERE user_id = $1 AND provider = $2 AND subject = $3 AND (\
                EXISTS (SELECT 1 FROM credentials WHERE user_id = $1 AND password_hash NOT LIKE '{UNUSABLE_PASSWORD_PREFIX}%') \
                OR (SELECT COUNT(*) FROM external_identities WHERE user_id = $1) > 1)"
        );
        let values: [Value; 3] = [user_id.clone().into(), provider.into(), subject.into()];
        let deleted = txn.execute_raw(Statement::from_sql_and_values(backend, delete, values)).await?;
        if deleted.rows_affected() == 0 {
            let exists = external_identities::Entity::find()
                .filter(external_identities::Column::UserId.eq(user_id.clone()))
                .filter(external_identities::Column::Provider.eq(provider))
                .filter(external_identities::Column::Subject.eq(subject))
                .one(&txn)
                .await?;
            return Err(match exists {
                Some(_) => refused(SocialError::LastLoginMethod),
                None => CoreError::NotFound("identity"),
            });
        }
        txn.commit().await?;
        tracing::info!(%provider, %user_id, "identity unlinked");
        Ok(())
    }

    fn social(&self) -> &Social {
        &self.inner.social
    }
}

/// Inserts the identity unless (provider, subject) is already someone's; whether it did.
async fn insert_identity(
    db: &impl ConnectionTrait,
    user_id: &str,
    provider: &str,
    profile: &protocol::Profile,
) -> CoreResult<bool> {
    let now = clock::now();
    let insert = "INSERT INTO external_identities (id, user_id, provider, subject, email, created_at, last_login_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (provider, subject) DO NOTHING";
    let values: [Value; 6] = [
        tokens::new_id().into(),
        user_id.into(),
        provider.into(),
        profile.subject.clone().into(),
        profile.email.clone().unwrap_or_default().into(),
        now.into(),
    ];
    let inserted = db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), insert, values)).await?;
    Ok(inserted.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_our_origin() {
        for (next, kept) in [
            ("/profile?tab=1", "/profile?tab=1"),
            ("//evil.example/x", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example/", "/"),
            ("javascript:alert(1)", "/"),
            ("", "/"),
            ("/a\r\nb", "/"),
        ] {
            assert_eq!(safe_next(next), kept, "{next}");
        }
    }

    #[test]
    fn usernames_come_from_the_profile_or_the_address() {
        let profile = |username: Option<&str>, email: Option<&str>| protocol::Profile {
            subject: "s".into(),
            email: email.map(str::to_owned),
            email_verified: true,
            username: username.map(str::to_owned),
        };
        assert_eq!(username_base(&profile(Some("octo cat!"), None)), "octocat");
        assert_eq!(username_base(&profile(None, Some("zoë@example.com"))), "zoë");
        assert_eq!(username_base(&profile(Some("rооt"), Some("x@example.com"))), "x");
        assert_eq!(username_base(&profile(Some("!!!"), None)), "user");
    }
}
