//! The refresh grace hands a retried refresh the successor already issued: each rotated refresh
//! token keeps that successor sealed (`successor_sealed`, erased when the grace closes; a
//! partial index finds the ones still sealed). Login throttling stores hashed keys from now
//! on: the old rows, which held logins as typed, are dropped. Usernames and emails are looked
//! up by their NFKC case fold: existing keys are recomputed.

use std::collections::HashSet;

use sea_orm_migration::{
    prelude::*,
    sea_orm::{ConnectionTrait, Statement, Value},
};
use unicode_normalization::UnicodeNormalization;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE refresh_tokens ADD COLUMN successor_sealed TEXT NULL").await?;
        db.execute_unprepared(
            "CREATE INDEX idx_refresh_tokens_sealed ON refresh_tokens (rotated_at) WHERE successor_sealed IS NOT NULL",
        )
        .await?;
        db.execute_unprepared("DELETE FROM login_attempts").await?;
        refold_user_keys(db).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX idx_refresh_tokens_sealed").await?;
        db.execute_unprepared("ALTER TABLE refresh_tokens DROP COLUMN successor_sealed").await?;
        Ok(())
    }
}

/// The lookup key of a username or email as of this migration: NFKC, case folded, NFKC again
/// (Unicode's NFKC_Casefold, near enough). Before it, keys were plain lower case.
fn fold(value: &str) -> String {
    let normal: String = value.nfkc().collect();
    caseless::default_case_fold_str(&normal).nfkc().collect()
}

/// Recomputes every key that the new folding changes (only non-ASCII ones can). A key that
/// would collide with another user's keeps its old value, so no account is lost: such a user
/// logs in by the exact name or address they signed up with.
async fn refold_user_keys(db: &SchemaManagerConnection<'_>) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let rows =
        db.query_all_raw(Statement::from_string(backend, "SELECT id, username_key, email_key FROM users")).await?;
    let mut users = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get("", "id")?;
        let username: String = row.try_get("", "username_key")?;
        let email: String = row.try_get("", "email_key")?;
        users.push((id, username, email));
    }
    let mut usernames: HashSet<String> = users.iter().map(|(_, username, _)| username.clone()).collect();
    let mut emails: HashSet<String> = users.iter().map(|(_, _, email)| email.clone()).collect();
    for (id, username, email) in users {
        for (column, old, taken) in [("username_key", username, &mut usernames), ("email_key", email, &mut emails)] {
            let new = fold(&old);
            if new == old || taken.contains(&new) {
                continue;
            }
            taken.insert(new.clone());
            let sql = format!("UPDATE users SET {column} = $1 WHERE id = $2");
            let values: [Value; 2] = [new.into(), id.clone().into()];
            db.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_case_and_compatibility_forms() {
        assert_eq!(fold("alice"), "alice");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("ＡＬＩＣＥ"), "alice");
        assert_eq!(fold("ΟΔΟΣ"), fold("οδος"));
    }
}
