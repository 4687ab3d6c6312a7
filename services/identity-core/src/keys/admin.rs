//! The operator's commands on the key set (`identity-service keys …`), against the configured
//! database while the service runs: each change lands as one compare-and-set like the
//! replicas' own, and is announced to them (PostgreSQL: at once; SQLite: the service's
//! once-a-second poll sees it).

use sea_orm::DatabaseConnection;

use super::{
    Changed, Changer,
    lifecycle::{self, KeyInfo, KeyState, Timing},
    sealing::Sealing,
};
use crate::{
    blocking::BlockingPool,
    entities::signing_keys,
    error::{CoreError, CoreResult},
    events::Event,
    replication,
    settings::{JwtAlg, Settings},
    store::{self, StartupLock, StoreOptions},
};

pub struct KeyAdmin {
    db: DatabaseConnection,
    timing: Timing,
    sealing: Sealing,
    pool: BlockingPool,
    postgres: bool,
}

/// What `keys list` shows: the keys and the database's clock they were read at.
pub struct KeyListing {
    pub now: i64,
    pub keys: Vec<KeyInfo>,
}

/// What `keys revoke` did.
pub struct Revoked {
    pub kid: String,
    /// The key that signs from now on (None under HS256: the secret signs).
    pub successor: Option<KeyInfo>,
}

impl KeyAdmin {
    /// Opens (and migrates) the database, and seals keys still stored in the clear.
    pub async fn open(database_url: &str, store: &StoreOptions, settings: &Settings) -> CoreResult<Self> {
        let sealing = Sealing::resolve(
            settings.keys.encryption_key.as_ref(),
            &settings.keys.previous_encryption_keys,
            database_url,
        )?;
        let lock = StartupLock::acquire(database_url, store).await?;
        let db = store::open(database_url, store).await?;
        lock.release().await;
        lifecycle::seal_plaintext(&db, &sealing).await?;
        Ok(KeyAdmin {
            db,
            timing: Timing::of(settings),
            sealing,
            pool: BlockingPool::new(1),
            postgres: store::is_postgres(database_url),
        })
    }

    /// Where the KEK was generated, if this command generated it.
    pub fn generated_kek(&self) -> Option<&std::path::Path> {
        self.sealing.generated.as_deref()
    }

    pub async fn list(&self) -> CoreResult<KeyListing> {
        let (_, now, rows) = lifecycle::read(&self.db).await?;
        let timing = deployment(&rows, now, &self.timing);
        Ok(KeyListing { now, keys: rows.iter().map(|row| lifecycle::info(row, now, &timing)).collect() })
    }

    /// A new key: published now, signing after the publish-ahead time, or at once.
    pub async fn rotate(&self, immediately: bool) -> CoreResult<KeyInfo> {
        let changed =
            self.change(|rows, now, timing| lifecycle::plan_rotate(rows, now, timing, immediately).map(Some)).await?;
        let kid = changed.and_then(|changed| changed.new_kid).ok_or_else(|| CoreError::internal("no key was made"))?;
        self.info(&kid).await
    }

    /// Revokes `kid`: out of the JWK set and refused at once, by every replica.
    pub async fn revoke(&self, kid: &str) -> CoreResult<Revoked> {
        self.change(|rows, now, timing| lifecycle::plan_revoke(rows, now, timing, kid).map(Some)).await?;
        let listing = self.list().await?;
        // The key signing now: the revoked one's successor (or, if it did not sign, the same).
        let successor = listing.keys.into_iter().find(|key| key.state == KeyState::Current);
        Ok(Revoked { kid: kid.to_owned(), successor })
    }

    /// Moves every stored key to the current KEK: (moved, already under it).
    pub async fn rewrap(&self) -> CoreResult<(Vec<String>, usize)> {
        lifecycle::rewrap(&self.db, &self.sealing).await
    }

    pub fn kek_id(&self) -> &str {
        self.sealing.current_id()
    }

    async fn info(&self, kid: &str) -> CoreResult<KeyInfo> {
        self.list().await?.keys.into_iter().find(|key| key.kid == kid).ok_or(CoreError::NotFound("signing key"))
    }

    async fn change(
        &self,
        plan: impl Fn(&[signing_keys::Model], i64, &Timing) -> CoreResult<Option<lifecycle::Intent>>,
    ) -> CoreResult<Option<Changed>> {
        let changer = Changer { db: &self.db, sealing: &self.sealing, pool: &self.pool };
        let changed = changer
            .change(&self.timing, |rows, now, configured| plan(rows, now, &deployment(rows, now, configured)))
            .await?;
        if changed.is_some() && self.postgres {
            replication::notify(&self.db, "keys-command", &Event::KeysChanged).await;
        }
        Ok(changed)
    }

    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

/// The timing with the algorithm the deployment signs with now (its current stored key's),
/// not the one this command was configured with: an operator running a command with another
/// `IDENTITY_JWT_ALG` must not switch the deployment's algorithm.
fn deployment(rows: &[signing_keys::Model], now: i64, configured: &Timing) -> Timing {
    let current = rows
        .iter()
        .filter(|row| lifecycle::state(row, now, configured) == KeyState::Current)
        .max_by_key(|row| row.activates_at)
        .and_then(|row| row.alg.parse::<JwtAlg>().ok());
    Timing { alg: current.unwrap_or(configured.alg), ..*configured }
}
