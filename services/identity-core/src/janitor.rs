//! The janitor: deletes what is past its life — dead sessions (expired, revoked or idle) with
//! their refresh tokens, expired refresh tokens of live sessions, and login counters already
//! forgotten, expired email links, and outbox messages sent or abandoned — in small batches, so that no statement holds the database for long. Replicas
//! sharing a database take turns: each interval one of them claims the run (a conditional
//! update of the `maintenance` row), the others skip it.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, TransactionTrait, Value};

use crate::{CoreResult, Identity, clock};

/// Rows deleted in one statement.
const BATCH: i64 = 500;
/// The pause between two batches, in which other writers get the database.
const BREATHE: Duration = Duration::from_millis(10);

/// What one sweep deleted, by table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub login_attempts: u64,
    pub account_tokens: u64,
    pub outbox: u64,
    /// Social sign-ins started and never completed.
    pub social_states: u64,
}

impl Identity {
    /// Claims the janitor's run: true when the last run, by any replica, began at least
    /// nine tenths of `interval` ago (a tick a little late must not skip a whole interval) —
    /// for exactly one replica however many ask at once. A shorter interval set at a restart
    /// applies at once.
    pub async fn claim_janitor_run(&self, interval: Duration) -> CoreResult<bool> {
        let now = clock::now_millis();
        let claim = "UPDATE maintenance SET last_run_at = $1 WHERE task = 'janitor' AND last_run_at <= $2";
        let values: [Value; 2] = [now.into(), now.saturating_sub(clock::millis(interval) / 10 * 9).into()];
        let db = self.db();
        let result = db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), claim, values)).await?;
        Ok(result.rows_affected() == 1)
    }

    /// Deletes, batch by batch, every row that died more than `retention` ago.
    pub async fn sweep(&self, retention: Duration) -> CoreResult<Swept> {
        let now = clock::now();
        let cutoff = now.saturating_sub(clock::secs(retention));
        // `last_seen_at` is written at most once per touch interval: a session is idle-dead
        // only when even the freshest use not yet written would be too old.
        let lifetime = self.lifetime();
        let idle_cutoff = cutoff
            .saturating_sub(clock::secs(self.settings().session_idle_ttl))
            .saturating_sub(lifetime.touch_interval());
        let mut swept = Swept::default();
        loop {
            let (sessions, tokens) = dead_sessions(self.db(), cutoff, idle_cutoff).await?;
            swept.sessions += sessions;
            swept.refresh_tokens += tokens;
            if sessions < BATCH as u64 {
                break;
            }
            tokio::time::sleep(BREATHE).await;
        }
        let expired_tokens = "DELETE FROM refresh_tokens WHERE id IN \
            (SELECT id FROM refresh_tokens WHERE expires_at < $1 LIMIT $2)";
        swept.refresh_tokens += batches(self.db(), expired_tokens, || vec![cutoff.into(), BATCH.into()]).await?;
        // A counter is forgotten once its window passed without failure and it is not locked.
        let now_ms = clock::now_millis();
        let window = clock::millis(self.settings().throttle.failure_window);
        let forgotten = now_ms.saturating_sub(window).saturating_sub(clock::millis(retention));
        let counters = "DELETE FROM login_attempts WHERE throttle_key IN \
            (SELECT throttle_key FROM login_attempts WHERE last_failure_at < $1 AND locked_until <= $2 LIMIT $3)";
        swept.login_attempts +=
            batches(self.db(), counters, || vec![forgotten.into(), now_ms.into(), BATCH.into()]).await?;
        // Email links (times in ms) expired `retention` ago; messages sent or abandoned as long.
        let cutoff_ms = now_ms.saturating_sub(clock::millis(retention));
        let links = "DELETE FROM account_tokens WHERE token_hash IN \
            (SELECT token_hash FROM account_tokens WHERE expires_at < $1 LIMIT $2)";
        swept.account_tokens += batches(self.db(), links, || vec![cutoff_ms.into(), BATCH.into()]).await?;
        let done = "DELETE FROM outbox WHERE id IN \
            (SELECT id FROM outbox WHERE sent_at < $1 OR failed_at < $1 LIMIT $2)";
        swept.outbox += batches(self.db(), done, || vec![cutoff_ms.into(), BATCH.into()]).await?;
        // Started sign-ins are useless once expired: no retention.
        let started = "DELETE FROM social_states WHERE state_hash IN \
            (SELECT state_hash FROM social_states WHERE expires_at < $1 LIMIT $2)";
        swept.social_states += batches(self.db(), started, || vec![now_ms.into(), BATCH.into()]).await?;
        Ok(swept)
    }
}

/// One batch of dead sessions, with their refresh tokens, in one transaction: (sessions,
/// refresh tokens) deleted.
async fn dead_sessions(db: &DatabaseConnection, cutoff: i64, idle_cutoff: i64) -> CoreResult<(u64, u64)> {
    const DEAD: &str = "SELECT id FROM sessions \
        WHERE expires_at < $1 OR revoked_at < $1 OR last_seen_at < $2 ORDER BY id LIMIT $3";
    let backend = db.get_database_backend();
    let values = || -> Vec<Value> { vec![cutoff.into(), idle_cutoff.into(), BATCH.into()] };
    let transaction = db.begin().await?;
    let tokens = transaction
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!("DELETE FROM refresh_tokens WHERE session_id IN ({DEAD})"),
            values(),
        ))
        .await?
        .rows_affected();
    let sessions = transaction
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!("DELETE FROM sessions WHERE id IN ({DEAD})"),
            values(),
        ))
        .await?
        .rows_affected();
    transaction.commit().await?;
    Ok((sessions, tokens))
}

/// Runs a `DELETE … LIMIT` statement until a batch comes back short; the rows deleted.
async fn batches(db: &DatabaseConnection, sql: &str, values: impl Fn() -> Vec<Value>) -> CoreResult<u64> {
    let mut total = 0;
    loop {
        let statement = Statement::from_sql_and_values(db.get_database_backend(), sql, values());
        let deleted = db.execute_raw(statement).await?.rows_affected();
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
        tokio::time::sleep(BREATHE).await;
    }
}
