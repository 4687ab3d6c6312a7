//! Signing keys get a lifecycle and are encrypted at rest.
//!
//! - `activates_at` (Unix ms, the database's clock): when the key starts signing; before it,
//!   it is published only. Existing keys activated when they were created.
//! - `retires_at` (ms): when it stops signing (its successor's activation); it is published
//!   and verifies until its last token has expired.
//! - `revoked_at` (ms): revoked (leaked): neither published nor verifying, its private key
//!   erased. The old `retired_at` (seconds; keys neither published nor verifying) becomes it.
//! - `private_key_sealed`, `kek_id`: the private key encrypted under a key-encryption key that
//!   the database never holds. Existing plaintext keys are sealed by the service on its first
//!   start with a KEK (a migration cannot: it has no KEK), which then empties
//!   `private_key_pem`.
//! - The `maintenance` row `signing_keys` counts changes to the key set: every change is a
//!   compare-and-set on it, so replicas and operator commands acting at once make one change.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "ALTER TABLE signing_keys ADD COLUMN activates_at BIGINT NOT NULL DEFAULT 0",
            "UPDATE signing_keys SET activates_at = created_at * 1000",
            "ALTER TABLE signing_keys ADD COLUMN retires_at BIGINT NULL",
            "ALTER TABLE signing_keys ADD COLUMN revoked_at BIGINT NULL",
            "UPDATE signing_keys SET revoked_at = retired_at * 1000 WHERE retired_at IS NOT NULL",
            "ALTER TABLE signing_keys DROP COLUMN retired_at",
            "ALTER TABLE signing_keys ADD COLUMN private_key_sealed TEXT NULL",
            "ALTER TABLE signing_keys ADD COLUMN kek_id VARCHAR(64) NULL",
            "INSERT INTO maintenance (task, last_run_at) VALUES ('signing_keys', 0)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DELETE FROM maintenance WHERE task = 'signing_keys'",
            "ALTER TABLE signing_keys ADD COLUMN retired_at BIGINT NULL",
            "UPDATE signing_keys SET retired_at = revoked_at / 1000 WHERE revoked_at IS NOT NULL",
            "ALTER TABLE signing_keys DROP COLUMN kek_id",
            "ALTER TABLE signing_keys DROP COLUMN private_key_sealed",
            "ALTER TABLE signing_keys DROP COLUMN revoked_at",
            "ALTER TABLE signing_keys DROP COLUMN retires_at",
            "ALTER TABLE signing_keys DROP COLUMN activates_at",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
