//! Signing in with external providers.
//!
//! - `external_identities`: a provider's account (provider, subject) linked to a user; unique,
//!   so an identity belongs to one user. Deleted with the user.
//! - `social_states`: sign-ins started and not yet completed, by the SHA-256 of their `state`;
//!   a completion deletes its row (single use). The nonce and PKCE verifier are kept here,
//!   never sent to the browser. Times are Unix milliseconds.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "CREATE TABLE external_identities (\
                id VARCHAR(64) NOT NULL PRIMARY KEY, \
                user_id VARCHAR(64) NOT NULL REFERENCES users (id) ON DELETE CASCADE, \
                provider VARCHAR(32) NOT NULL, \
                subject VARCHAR(255) NOT NULL, \
                email VARCHAR(254) NOT NULL, \
                created_at BIGINT NOT NULL, \
                last_login_at BIGINT NULL)",
            "CREATE UNIQUE INDEX external_identities_subject ON external_identities (provider, subject)",
            "CREATE INDEX external_identities_user ON external_identities (user_id)",
            "CREATE TABLE social_states (\
                state_hash VARCHAR(64) NOT NULL PRIMARY KEY, \
                provider VARCHAR(32) NOT NULL, \
                nonce VARCHAR(128) NOT NULL, \
                pkce_verifier VARCHAR(128) NOT NULL, \
                redirect_uri TEXT NOT NULL, \
                next_path TEXT NOT NULL, \
                link_user_id VARCHAR(64) NULL REFERENCES users (id) ON DELETE CASCADE, \
                created_at BIGINT NOT NULL, \
                expires_at BIGINT NOT NULL)",
            "CREATE INDEX social_states_expires ON social_states (expires_at)",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in ["DROP TABLE social_states", "DROP TABLE external_identities"] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
