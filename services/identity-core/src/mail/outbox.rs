//! The outbox: messages queued by the flows, sent by every replica's sender, each once.
//!
//! A row is claimed by one conditional `UPDATE … RETURNING` that sets `claimed_until` (a lease):
//! however many replicas look at once, one gets it (on PostgreSQL they skip rows another has
//! locked instead of queueing behind it). The link is made in a transaction that first locks
//! the row again, still claimed by this lease and not voided (`hold`): a password change that
//! voids queued links (`void_queued_links`, which locks the same rows first) either runs before,
//! and the sender finds the row void, or after, and deletes the link just made. Sent, it is
//! marked `sent_at`; failed, it is
//! released with `next_attempt_at` one back-off later (1 s doubling up to `retry_max`) and
//! its error; still unsent `give_up_after` after it was queued, it is abandoned (`failed_at`).
//! A sender that dies holding a lease leaves the row to be claimed again when the lease ends.
//! An SMTP server that accepted a message just before the database went away may so receive it
//! twice: delivery is at least once, and exactly once whenever the database answers.
//!
//! Times in this table are Unix milliseconds.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};

use super::MailKind;
use crate::{Identity, clock, error::CoreResult, tokens};

/// How long a claim holds: longer than an SMTP exchange may take.
const LEASE: Duration = Duration::from_secs(120);
/// The first wait after a failed attempt; it doubles with each further one.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What became of one claimed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailOutcome {
    Sent,
    /// This attempt failed; another follows.
    Failed,
    /// Failed for longer than `give_up_after`: no more attempts.
    Abandoned,
    /// Nothing to send: the address has no account (a reset or resend for an unknown or
    /// already verified address), or the account is gone.
    Skipped,
}

impl MailOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MailOutcome::Sent => "sent",
            MailOutcome::Failed => "failed",
            MailOutcome::Abandoned => "abandoned",
            MailOutcome::Skipped => "skipped",
        }
    }
}

/// Told what the outbox does (the service turns it into metrics).
pub trait MailObserver: Send + Sync + 'static {
    /// A message was queued (for every request, known address or not).
    fn queued(&self, kind: MailKind);
    /// A claimed message's attempt ended so.
    fn attempted(&self, kind: MailKind, outcome: MailOutcome);
}

/// One message to queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queued<'a> {
    pub kind: MailKind,
    /// The account, when the flow knows it; otherwise the sender looks the recipient up.
    pub user_id: Option<&'a str>,
    pub recipient: &'a str,
    /// The address a change notice is about.
    pub new_email: Option<&'a str>,
}

/// Queues one message (within the caller's transaction, if it passes one).
pub(crate) async fn enqueue(db: &impl ConnectionTrait, message: Queued<'_>) -> CoreResult<()> {
    const INSERT: &str = "INSERT INTO outbox \
        (id, kind, user_id, recipient, recipient_key, new_email, created_at, next_attempt_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $7)";
    let now = clock::now_millis();
    let values: [Value; 7] = [
        tokens::new_id().into(),
        message.kind.as_str().into(),
        message.user_id.map(str::to_owned).into(),
        message.recipient.to_owned().into(),
        crate::users::key(message.recipient).into(),
        message.new_email.map(str::to_owned).into(),
        now.into(),
    ];
    db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), INSERT, values)).await?;
    Ok(())
}

/// Voids the links still queued for the user (by id, or by the address a request named): they
/// are never sent, like those already sent are refused (a password or address changed). Run
/// it first in its transaction, before any link is touched: it locks the rows a sender may be
/// making a link for (see the module's notes).
pub(crate) async fn void_queued_links(db: &impl ConnectionTrait, user_id: &str) -> CoreResult<()> {
    const VOID: &str = "UPDATE outbox SET failed_at = $2, last_error = 'void: the account changed' \
        WHERE sent_at IS NULL AND failed_at IS NULL AND kind <> $3 \
          AND (user_id = $1 OR recipient_key = (SELECT email_key FROM users WHERE id = $1))";
    let values: [Value; 3] =
        [user_id.to_owned().into(), clock::now_millis().into(), MailKind::EmailChangeNotice.as_str().into()];
    db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), VOID, values)).await?;
    Ok(())
}

/// A claimed row.
#[derive(Debug)]
pub(crate) struct Claimed {
    id: String,
    pub kind: Option<MailKind>,
    pub user_id: Option<String>,
    pub recipient: String,
    pub new_email: Option<String>,
    created_at: i64,
    attempts: i32,
    /// Our lease (`claimed_until`): what we write back is conditional on it still being ours.
    lease: i64,
}

/// Claims the next due message, if any.
async fn claim(db: &DatabaseConnection) -> CoreResult<Option<Claimed>> {
    // The outer condition repeats the inner one: of two senders that picked the same row, the
    // second finds it claimed once the first committed, and updates nothing. PostgreSQL skips
    // the rows another transaction holds (a sender making a link, a void in progress).
    let backend = db.get_database_backend();
    let skip_locked = if backend == DbBackend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let claim = format!(
        "UPDATE outbox SET claimed_until = $2, attempts = attempts + 1 \
        WHERE id = (SELECT id FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL \
                    AND next_attempt_at <= $1 AND claimed_until <= $1 ORDER BY next_attempt_at LIMIT 1{skip_locked}) \
          AND sent_at IS NULL AND failed_at IS NULL AND claimed_until <= $1 \
        RETURNING id, kind, user_id, recipient, new_email, created_at, attempts"
    );
    let now = clock::now_millis();
    let lease = now + clock::millis(LEASE);
    let values: [Value; 2] = [now.into(), lease.into()];
    let row = db.query_one_raw(Statement::from_sql_and_values(backend, claim, values)).await?;
    let Some(row) = row else { return Ok(None) };
    let kind: String = row.try_get("", "kind")?;
    Ok(Some(Claimed {
        id: row.try_get("", "id")?,
        kind: MailKind::parse(&kind),
        user_id: row.try_get("", "user_id")?,
        recipient: row.try_get("", "recipient")?,
        new_email: row.try_get("", "new_email")?,
        created_at: row.try_get("", "created_at")?,
        attempts: row.try_get("", "attempts")?,
        lease,
    }))
}

/// Locks the claimed row for the caller's transaction, if it is still ours and not voided;
/// returns whether it is.
pub(crate) async fn hold(db: &impl ConnectionTrait, claimed: &Claimed) -> CoreResult<bool> {
    const HOLD: &str = "UPDATE outbox SET claimed_until = claimed_until \
        WHERE id = $1 AND claimed_until = $2 AND sent_at IS NULL AND failed_at IS NULL";
    let values: [Value; 2] = [claimed.id.clone().into(), claimed.lease.into()];
    let done = db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), HOLD, values)).await?;
    Ok(done.rows_affected() == 1)
}

/// Records how the attempt on `claimed` ended, and returns the outcome to report. Written only
/// while the lease is ours: a sender that outlived its lease (a stalled SMTP exchange) leaves
/// the row to whoever claimed it since.
async fn settle(
    db: &DatabaseConnection,
    claimed: &Claimed,
    result: Result<bool, String>,
    retry_max: Duration,
    give_up_after: Duration,
) -> CoreResult<MailOutcome> {
    let now = clock::now_millis();
    let (sql, values, outcome): (&str, Vec<Value>, MailOutcome) = match result {
        Ok(sent) => (
            "UPDATE outbox SET sent_at = $2, claimed_until = 0, last_error = NULL WHERE id = $1 AND claimed_until = $3",
            vec![claimed.id.clone().into(), now.into(), claimed.lease.into()],
            if sent { MailOutcome::Sent } else { MailOutcome::Skipped },
        ),
        Err(error) if now - claimed.created_at >= clock::millis(give_up_after) => (
            "UPDATE outbox SET failed_at = $2, claimed_until = 0, last_error = $3 WHERE id = $1 AND claimed_until = $4",
            vec![claimed.id.clone().into(), now.into(), error.into(), claimed.lease.into()],
            MailOutcome::Abandoned,
        ),
        Err(error) => {
            let wait = backoff(claimed.attempts, retry_max);
            (
                "UPDATE outbox SET next_attempt_at = $2, claimed_until = 0, last_error = $3 \
                    WHERE id = $1 AND claimed_until = $4",
                vec![claimed.id.clone().into(), (now + clock::millis(wait)).into(), error.into(), claimed.lease.into()],
                MailOutcome::Failed,
            )
        }
    };
    db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, values)).await?;
    Ok(outcome)
}

/// The wait after the `attempts`-th failed attempt: 1 s, 2 s, 4 s … up to `retry_max`.
fn backoff(attempts: i32, retry_max: Duration) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(20);
    FIRST_RETRY.saturating_mul(1 << doublings).min(retry_max)
}

/// Messages not yet sent nor abandoned, and how long the oldest has waited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    pub depth: u64,
    pub oldest: Option<Duration>,
}

// === impl Identity: the sender ===

impl Identity {
    /// Sends every message due now, one after the other, and returns when none is left (or the
    /// database fails). Each replica runs this whenever it queued a message and every second;
    /// the claim decides which replica sends which message.
    pub async fn deliver_mail(&self) -> CoreResult<()> {
        let settings = &self.settings().email;
        while let Some(claimed) = claim(self.db()).await? {
            let Some(kind) = claimed.kind else {
                // A kind written by a newer version: leave it to that version, once a lease on.
                tracing::warn!(id = %claimed.id, "an outbox message of an unknown kind");
                continue;
            };
            let result = match self.letter(kind, &claimed).await {
                Ok(Some(letter)) => self.mail().send(&letter).await.map(|()| true),
                Ok(None) => Ok(false),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = &result {
                tracing::warn!(kind = kind.as_str(), attempt = claimed.attempts, %error, "a mail was not delivered");
            }
            let outcome = settle(self.db(), &claimed, result, settings.retry_max, settings.give_up_after).await?;
            self.mail().observer.attempted(kind, outcome);
        }
        Ok(())
    }

    /// The size and age of the queue (for metrics).
    pub async fn mail_backlog(&self) -> CoreResult<Backlog> {
        const SQL: &str = "SELECT COUNT(*) AS depth, MIN(created_at) AS oldest FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL";
        let db = self.db();
        let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), SQL)).await?;
        let Some(row) = row else { return Ok(Backlog::default()) };
        let depth: i64 = row.try_get("", "depth")?;
        let oldest: Option<i64> = row.try_get("", "oldest")?;
        let now = clock::now_millis();
        Ok(Backlog {
            depth: u64::try_from(depth).unwrap_or(0),
            oldest: oldest.map(|at| Duration::from_millis(u64::try_from(now - at).unwrap_or(0))),
        })
    }

    /// Waits until this process queues a message (the sender's cue besides its timer).
    pub async fn mail_queued(&self) {
        self.mail().queued.notified().await;
    }

    /// Queues a message (the caller wakes the sender once its transaction commits).
    pub(crate) async fn queue_mail(&self, db: &impl ConnectionTrait, message: Queued<'_>) -> CoreResult<()> {
        enqueue(db, message).await?;
        self.mail().observer.queued(message.kind);
        Ok(())
    }

    /// Wakes this replica's sender (after the transaction that queued commits).
    pub(crate) fn wake_sender(&self) {
        self.mail().queued.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_up_to_the_cap() {
        let cap = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=11).map(|attempt| backoff(attempt, cap).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(50, Duration::from_millis(200)), Duration::from_millis(200));
    }
}
