//! `identity-service backup PATH` copies a running SQLite database consistently while sign-ups
//! keep arriving: every sign-up acknowledged before the backup began is in the copy, the copy
//! passes SQLite's integrity check, is readable by its owner only, and a service started on it
//! logs those users in. The database file and its directory are created owner-only too.

use std::{
    os::unix::fs::PermissionsExt,
    sync::{Arc, Mutex},
    time::Duration,
};

use e2e::*;
use sea_orm::Database;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn run_backup(url: &str, target: &std::path::Path) -> (bool, String) {
    let output = tokio::process::Command::new(binary("identity-service"))
        .env_clear()
        .env("IDENTITY_DATABASE_URL", url)
        .arg("backup")
        .arg(target)
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_users_sign_up_holds_every_acknowledged_one_and_serves_them() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    if db.is_postgres() {
        // PostgreSQL is backed up with its own tools; the command says so and writes nothing.
        let (ok, said) = run_backup(&db.url, &dir.path().join("copy.db")).await;
        assert!(!ok && said.contains("pg_dump"), "{said}");
        assert!(!dir.path().join("copy.db").exists());
        return;
    }
    let file = dir.path().join("data/identity.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let identity = IdentityProcess::start(&[("IDENTITY_DATABASE_URL", url.as_str())]).await;
    assert_eq!(mode(&file), 0o600, "the database file is readable by others");
    assert_eq!(mode(file.parent().unwrap()), 0o700, "the database directory is open to others");

    // Four writers sign users up without pause, noting each acknowledged one.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (mut users, acknowledged, stop) = (identity.users(), acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let name = format!("w{writer}n{n}");
                sign_up(&mut users, &name).await;
                acknowledged.lock().unwrap().push(name);
            }
        }));
    }
    eventually(Duration::from_secs(60), || async { (acknowledged.lock().unwrap().len() >= 40).then_some(()) }).await;

    let before: Vec<String> = acknowledged.lock().unwrap().clone();
    let target = dir.path().join("backups/identity-copy.db");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let (ok, said) = run_backup(&url, &target).await;
    let after = acknowledged.lock().unwrap().len();
    assert!(ok, "{said}");
    // Writers keep going a little after, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(mode(&target), 0o600, "the backup is readable by others");
    // The same file again is refused, never overwritten.
    let (again, refusal) = run_backup(&url, &target).await;
    assert!(!again && refusal.contains("exists"), "{refusal}");

    // Every sign-up acknowledged before the backup is in it; none that started after it.
    let copy_url = format!("sqlite://{}", target.display());
    let copy = Database::connect(&copy_url).await.unwrap();
    let users = count(&copy, "SELECT COUNT(*) FROM users").await as usize;
    assert!(
        users >= before.len() && users <= after + 4,
        "{users} users: {} acknowledged before, {after} after",
        before.len()
    );
    for name in &before {
        let sql = format!("SELECT COUNT(*) FROM users WHERE username = '{name}'");
        assert_eq!(count(&copy, &sql).await, 1, "{name} was acknowledged before the backup and is missing");
    }
    assert!(said.contains(&format!("backed up {users} users")), "{said}");
    copy.close().await.unwrap();

    // A service started on the copy logs those users in (their passwords and its keys are there).
    let restored = IdentityProcess::start(&[("IDENTITY_DATABASE_URL", copy_url.as_str())]).await;
    let mut auth = restored.auth();
    for name in before.iter().step_by(10) {
        log_in(&mut auth, name).await;
    }
    restored.kill().await;
    identity.kill().await;
}
