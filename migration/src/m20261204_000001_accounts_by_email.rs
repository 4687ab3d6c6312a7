//! Accounts by email.
//!
//! - `users.email_verified`: set when the user follows a link sent to the address. Existing
//!   users start unverified (nobody has proven their address yet); with
//!   `IDENTITY_EMAIL_VERIFICATION=required`, a login with the right password is refused and
//!   mails them a new link. Managers at `…@localhost` (the address the bootstrap manager is
//!   given; no link can reach it) start verified, as a bootstrap manager does today, so that
//!   turning verification on cannot lock the operator out.
//! - `account_tokens`: the one live link of each kind per user (`verify`, `reset`,
//!   `email_change`), by the SHA-256 of its token. The unique `(user_id, kind)` makes a newer
//!   link replace the older in one statement; following a link deletes its row (single use).
//!   Times are Unix milliseconds.
//! - `outbox`: messages to send. A row holds what to send and to whom, never a token: the sender
//!   makes the link when it sends. Senders claim a row with a conditional update
//!   (`claimed_until`), so each message leaves once whichever replica sends it.
//!   `recipient_key` is the recipient's lookup key (as `users.email_key`): a password change
//!   voids the links still queued for the user's address. `new_email` is the address a change
//!   notice is about. Two partial indexes find a user's pending rows for that void.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE",
            "UPDATE users SET email_verified = TRUE WHERE role = 'manager' AND email_key LIKE '%@localhost'",
            "CREATE TABLE account_tokens (\
                token_hash VARCHAR(64) NOT NULL PRIMARY KEY, \
                user_id VARCHAR(64) NOT NULL REFERENCES users (id) ON DELETE CASCADE, \
                kind VARCHAR(16) NOT NULL, \
                email VARCHAR(254) NOT NULL, \
                created_at BIGINT NOT NULL, \
                expires_at BIGINT NOT NULL)",
            "CREATE UNIQUE INDEX account_tokens_user_kind ON account_tokens (user_id, kind)",
            "CREATE TABLE outbox (\
                id VARCHAR(64) NOT NULL PRIMARY KEY, \
                kind VARCHAR(32) NOT NULL, \
                user_id VARCHAR(64) NULL, \
                recipient VARCHAR(254) NOT NULL, \
                recipient_key VARCHAR(254) NOT NULL, \
                new_email VARCHAR(254) NULL, \
                created_at BIGINT NOT NULL, \
                attempts INTEGER NOT NULL DEFAULT 0, \
                next_attempt_at BIGINT NOT NULL, \
                claimed_until BIGINT NOT NULL DEFAULT 0, \
                sent_at BIGINT NULL, \
                failed_at BIGINT NULL, \
                last_error TEXT NULL)",
            "CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL",
            "CREATE INDEX outbox_pending_user ON outbox (user_id) WHERE sent_at IS NULL AND failed_at IS NULL",
            "CREATE INDEX outbox_pending_recipient ON outbox (recipient_key) \
                WHERE sent_at IS NULL AND failed_at IS NULL",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in
            ["DROP TABLE outbox", "DROP TABLE account_tokens", "ALTER TABLE users DROP COLUMN email_verified"]
        {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
