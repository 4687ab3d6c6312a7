//! A database of each test's own: a fresh SQLite file, or a fresh PostgreSQL database on
//! `TEST_DATABASE_URL`'s server, dropped after; and, beside it, the directory its services
//! write mail to when they have no SMTP server.

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

/// A database of the test's own, dropped after it.
pub struct TestDb {
    pub url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    /// Where the services on this database write mail when they have no SMTP server.
    outbox: tempfile::TempDir,
}

impl TestDb {
    pub async fn new() -> Self {
        match std::env::var("TEST_DATABASE_URL").ok().filter(|url| !url.is_empty()) {
            Some(admin) => {
                let name = format!("t_{}", uuid::Uuid::new_v4().simple());
                let db = Database::connect(&admin).await.expect("TEST_DATABASE_URL must be reachable");
                db.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
                db.close().await.ok();
                let (prefix, _) = admin.rsplit_once('/').expect("TEST_DATABASE_URL needs a /database");
                TestDb {
                    url: format!("{prefix}/{name}"),
                    postgres: Some((admin, name)),
                    _dir: None,
                    outbox: tempfile::tempdir().unwrap(),
                }
            }
            None => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("identity.db").display());
                TestDb { url, postgres: None, _dir: Some(dir), outbox: tempfile::tempdir().unwrap() }
            }
        }
    }

    /// The outbox directory of the services on this database (`config` sets it): `.eml`
    /// files when no SMTP server is configured. Made by the service at its first message.
    pub fn outbox_dir(&self) -> std::path::PathBuf {
        self.outbox.path().join("outbox")
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// A direct connection, for the few checks a client cannot make (what is stored).
    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(&self.url).await.unwrap()
    }
}

/// The one integer `sql` selects (a `COUNT(*)`, say).
pub async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    let statement = Statement::from_string(db.get_database_backend(), sql.to_owned());
    db.query_one_raw(statement).await.unwrap().unwrap().try_get_by_index::<i64>(0).unwrap()
}

/// Waits until `sql` (a `SELECT COUNT(*) …`) counts `expected`; fails after `limit`, saying
/// what it counted last.
pub async fn count_reaches(db: &DatabaseConnection, sql: &str, expected: i64, limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let counted = count(db, sql).await;
        if counted == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sql}: {counted}, not {expected}, after {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else { return };
        // Drop runs outside any runtime we may block: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(db) = Database::connect(&admin).await {
                    let _ = db.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
                    let _ = db.close().await;
                }
            });
        })
        .join();
    }
}
