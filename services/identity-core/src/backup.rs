//! `identity-service backup`: a consistent copy of a running SQLite database. Copying the file
//! is not one — recent writes live in the `-wal` file beside it until a checkpoint — so the copy
//! is SQLite's own `VACUUM INTO`, a snapshot of one read transaction (the service keeps
//! writing meanwhile), written to a new file readable by its owner only, then renamed into
//! place. PostgreSQL has its own tools (`pg_dump`; see docs/operations.md).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

use crate::store::{self, owner_only_file};

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the database is PostgreSQL: back it up with pg_dump (see docs/operations.md)")]
    NotSqlite,
    #[error("the database is in memory: there is nothing to back up")]
    InMemory,
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{0} exists: a backup never overwrites a file")]
    TargetExists(PathBuf),
    #[error("{0}")]
    Io(String),
    #[error("database: {0}")]
    Database(String),
    #[error("the copy failed its integrity check: {0}")]
    Corrupt(String),
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub users: i64,
    pub took: Duration,
    /// Where the generated key-encryption key was copied (beside the copy), if there was one.
    pub kek: Option<PathBuf>,
}

/// Copies the SQLite database at `url` to `target` (which must not exist), and checks the copy.
pub async fn backup(url: &str, target: &Path) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    if store::is_postgres(url) {
        return Err(BackupError::NotSqlite);
    }
    let source = store::sqlite_file(url).ok_or(BackupError::InMemory)?;
    if !Path::new(source).exists() {
        return Err(BackupError::Missing(source.into()));
    }
    if target.exists() {
        return Err(BackupError::TargetExists(target.into()));
    }
    // Written beside the target under another name, renamed when complete: a file at `target`
    // is always a whole backup.
    let file_name =
        target.file_name().ok_or_else(|| BackupError::Io(format!("{} is not a file name", target.display())))?;
    let partial = target.with_file_name(format!(".{}.partial-{}", file_name.to_string_lossy(), std::process::id()));
    owner_only_file(&partial)
        .map_err(|error| BackupError::Io(format!("cannot create {}: {error}", partial.display())))?;
    let checked = async {
        copy_into(url, &partial).await?;
        verify(&partial).await
    };
    let users = match checked.await {
        Ok(users) => users,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    std::fs::File::open(&partial)
        .and_then(|file| file.sync_all())
        .and_then(|()| std::fs::rename(&partial, target))
        .map_err(|error| {
            let _ = std::fs::remove_file(&partial);
            BackupError::Io(format!("cannot move the backup to {}: {error}", target.display()))
        })?;
    let bytes = std::fs::metadata(target).map(|metadata| metadata.len()).unwrap_or(0);
    let kek = copy_generated_kek(url, target)?;
    Ok(BackupReport { path: target.into(), bytes, users, took: started.elapsed(), kek })
}

/// The key-encryption key generated beside the database (none set by the operator) goes with
/// the copy, to `<target stem>.kek`, readable by its owner only: without it the copy's signing
/// keys cannot sign. Where the operator set the KEK, they keep it; nothing is copied.
fn copy_generated_kek(url: &str, target: &Path) -> Result<Option<PathBuf>, BackupError> {
    let Some(source) = crate::keys::sealing::kek_file(url).filter(|source| source.exists()) else { return Ok(None) };
    let Some(copy) = crate::keys::sealing::kek_beside(target) else { return Ok(None) };
    let failed = |error: std::io::Error| {
        BackupError::Io(format!("cannot copy the key-encryption key to {}: {error}", copy.display()))
    };
    let text = std::fs::read(&source).map_err(failed)?;
    owner_only_file(&copy).map_err(failed)?;
    std::fs::write(&copy, text).map_err(failed)?;
    Ok(Some(copy))
}

/// Connects read-only, never creating the database.
async fn connect(url: &str) -> Result<DatabaseConnection, BackupError> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).sqlx_logging(false).map_sqlx_sqlite_opts(|sqlite| {
        sqlite.read_only(true).create_if_missing(false).busy_timeout(Duration::from_secs(30))
    });
    Database::connect(options).await.map_err(|error| BackupError::Database(error.to_string()))
}

async fn copy_into(url: &str, partial: &Path) -> Result<(), BackupError> {
    let db = connect(url).await?;
    let into = Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "VACUUM INTO $1",
        [partial.to_string_lossy().into_owned().into()],
    );
    let copied = db.execute_raw(into).await.map(drop).map_err(|error| BackupError::Database(error.to_string()));
    let _ = db.close().await;
    copied
}

/// The copy's integrity check, and how many users it holds.
async fn verify(path: &Path) -> Result<i64, BackupError> {
    let db = connect(&format!("sqlite://{}", path.display())).await?;
    let query = |sql: &str| Statement::from_string(DbBackend::Sqlite, sql.to_owned());
    let database = |error: sea_orm::DbErr| BackupError::Database(error.to_string());
    let check = db.query_one_raw(query("PRAGMA integrity_check")).await.map_err(database)?;
    let verdict: String = check.and_then(|row| row.try_get_by_index(0).ok()).unwrap_or_default();
    if verdict != "ok" {
        return Err(BackupError::Corrupt(verdict));
    }
    let users = db.query_one_raw(query("SELECT COUNT(*) FROM users")).await.map_err(database)?;
    let users = users.and_then(|row| row.try_get_by_index::<i64>(0).ok()).unwrap_or(0);
    let _ = db.close().await;
    Ok(users)
}
