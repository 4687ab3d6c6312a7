//! Opening the database (SQLite or PostgreSQL), applying migrations, and the one place where
//! database errors become domain errors.

use std::{path::Path, time::Duration};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr, SqlErr, Statement,
    Value,
    sqlx::{
        self,
        sqlite::{SqliteJournalMode, SqliteSynchronous},
    },
};

use crate::{
    clock,
    error::{CoreError, CoreResult},
    events::RevokeReason,
};

/// How the store talks to its database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connect, pool-acquire and SQLite busy timeout: how long a call may wait on the
    /// database before it answers `Unavailable`.
    pub timeout: Duration,
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { timeout: Duration::from_secs(5), max_connections: 10 }
    }
}

/// Connects and migrates. SQLite files get WAL, `synchronous=NORMAL`, a busy timeout, and
/// their directory created.
pub async fn open(url: &str, options: &StoreOptions) -> Result<DatabaseConnection, CoreError> {
    if let Some(file) = sqlite_file(url).map(Path::new) {
        if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            owner_only_dirs(dir).map_err(|error| {
                CoreError::internal(format!("cannot create the database directory {}: {error}", dir.display()))
            })?;
        }
        // The file holds password hashes and signing keys: made readable by its owner only
        // (SQLite gives its -wal and -shm files the same mode).
        if !file.exists() && url.contains("mode=rwc") {
            owner_only_file(file).map_err(|error| {
                CoreError::internal(format!("cannot create the database {}: {error}", file.display()))
            })?;
        }
    }
    let timeout = options.timeout;
    let mut connect = ConnectOptions::new(url.to_owned());
    connect
        .max_connections(options.max_connections)
        .min_connections(0)
        .connect_timeout(timeout)
        .acquire_timeout(timeout)
        .idle_timeout(Duration::from_secs(300))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |sqlite| {
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(timeout)
                .foreign_keys(true)
        });
    let db = Database::connect(connect).await.map_err(CoreError::from)?;
    Migrator::up(&db, None).await.map_err(CoreError::from)?;
    Ok(db)
}

/// The advisory lock replicas take while they start: migrating, loading or making the signing
/// key and creating the bootstrap manager happen one replica at a time, so replicas started
/// together agree on one schema, one key set and one manager. On SQLite (one process) there is
/// nothing to take.
pub struct StartupLock {
    connection: Option<DatabaseConnection>,
}

/// The lock's key: "identity" in ASCII.
const STARTUP_LOCK: i64 = 0x6964_656e_7469_7479;

impl StartupLock {
    /// Waits for the lock (on a connection of its own: advisory locks belong to a session).
    pub(crate) async fn acquire(url: &str, options: &StoreOptions) -> Result<Self, CoreError> {
        if !is_postgres(url) {
            return Ok(StartupLock { connection: None });
        }
        let mut connect = ConnectOptions::new(url.to_owned());
        connect
            .max_connections(1)
            .min_connections(1)
            .connect_timeout(options.timeout)
            .acquire_timeout(options.timeout)
            .sqlx_logging(false);
        let connection = Database::connect(connect).await?;
        let lock = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_lock($1)",
            [Value::from(STARTUP_LOCK)],
        );
        connection.execute_raw(lock).await?;
        Ok(StartupLock { connection: Some(connection) })
    }

    /// Lets the next replica start. (Dropped instead, the lock goes with its connection.)
    pub async fn release(self) {
        let Some(connection) = self.connection else { return };
        let unlock = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_unlock($1)",
            [Value::from(STARTUP_LOCK)],
        );
        if let Err(error) = connection.execute_raw(unlock).await {
            tracing::warn!(%error, "releasing the startup lock");
        }
        let _ = connection.close().await;
    }
}

/// Creates `dir` and its missing parents, those it creates readable by their owner only.
pub(crate) fn owner_only_dirs(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates an empty file readable and writable by its owner only; fails if it exists.
pub(crate) fn owner_only_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

pub(crate) fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Is the database answering? (Readiness.)
pub async fn ping(db: &DatabaseConnection) -> Result<(), CoreError> {
    db.execute_unprepared("SELECT 1").await.map(|_| ()).map_err(CoreError::from)
}

/// The file of a `sqlite:` URL, unless it is in memory.
pub(crate) fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Whether the error says the database could not be reached or was busy, rather than that
/// the statement was wrong.
fn is_unavailable(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            match error.as_ref() {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::BeginFailed => true,
                sqlx::Error::Database(db) => {
                    let Some(code) = db.code() else { return false };
                    let code = code.as_ref();
                    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                        // SQLite: BUSY (5) and LOCKED (6), with their extended codes.
                        code.parse::<i32>().is_ok_and(|n| n & 0xff == 5 || n & 0xff == 6)
                    } else {
                        // PostgreSQL's SQLSTATE: class 08 (connection exception), admin
                        // shutdown, crash shutdown, cannot connect now, too many connections.
                        // (Never SQLite's numbers: 22021, a NUL byte in a string, is 5 modulo
                        // 256 and is the caller's fault.)
                        code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
                    }
                }
                _ => false,
            }
        }
        _ => false,
    }
}

pub(crate) fn is_unique_violation(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

impl From<DbErr> for CoreError {
    fn from(error: DbErr) -> Self {
        if is_unavailable(&error) {
            tracing::warn!(%error, "database unavailable");
            CoreError::Unavailable
        } else {
            CoreError::Internal(format!("database: {error}"))
        }
    }
}

/// Revokes every live session of a user but `except`, in one statement and within the caller's
/// transaction (a password reset revokes in the transaction that sets the password, so that
/// one never holds without the other). Returns their ids, for `announce_all_revoked` once the
/// transaction commits. Here, below `sessions`, `users` and `accounts`, which all run it.
pub(crate) async fn revoke_sessions_in(
    db: &impl ConnectionTrait,
    user_id: &str,
    reason: RevokeReason,
    except: Option<&str>,
) -> CoreResult<Vec<String>> {
    const REVOKE: &str = "UPDATE sessions SET revoked_at = $2, revoke_reason = $3 \
        WHERE user_id = $1 AND revoked_at IS NULL AND id <> $4 RETURNING id";
    let values: [Value; 4] =
        [user_id.to_owned().into(), clock::now().into(), reason.as_str().into(), except.unwrap_or("").into()];
    let rows = db.query_all_raw(Statement::from_sql_and_values(db.get_database_backend(), REVOKE, values)).await?;
    let ids = rows.iter().map(|row| row.try_get::<String>("", "id")).collect::<Result<Vec<_>, _>>()?;
    for session_id in &ids {
        tracing::info!(%session_id, reason = reason.as_str(), "session revoked");
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_are_found_in_urls() {
        assert_eq!(sqlite_file("sqlite://data/identity.db?mode=rwc"), Some("data/identity.db"));
        assert_eq!(sqlite_file("sqlite:/tmp/x.db"), Some("/tmp/x.db"));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://localhost/db"), None);
    }
}
