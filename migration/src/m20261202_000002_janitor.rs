//! The janitor deletes what is past its life: indexes on the columns it looks at, and the
//! `maintenance` table through which one replica per interval claims a periodic task.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEXES: [(&str, &str, &str); 5] = [
    ("idx_sessions_expires_at", "sessions", "expires_at"),
    ("idx_sessions_revoked_at", "sessions", "revoked_at"),
    ("idx_sessions_last_seen_at", "sessions", "last_seen_at"),
    ("idx_refresh_tokens_expires_at", "refresh_tokens", "expires_at"),
    ("idx_login_attempts_last_failure_at", "login_attempts", "last_failure_at"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE TABLE maintenance (task VARCHAR(64) NOT NULL PRIMARY KEY, last_run_at BIGINT NOT NULL)",
        )
        .await?;
        db.execute_unprepared("INSERT INTO maintenance (task, last_run_at) VALUES ('janitor', 0)").await?;
        for (name, table, column) in INDEXES {
            db.execute_unprepared(&format!("CREATE INDEX {name} ON {table} ({column})")).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, _, _) in INDEXES {
            db.execute_unprepared(&format!("DROP INDEX {name}")).await?;
        }
        db.execute_unprepared("DROP TABLE maintenance").await?;
        Ok(())
    }
}
