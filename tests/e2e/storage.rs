//! The schema itself: the migrations step down and up again on each backend.

use e2e::*;
use migration::{Migrator, MigratorTrait};

#[tokio::test]
async fn migrations_step_down_and_up_again() {
    let db = TestDb::new().await;
    let conn = db.connect().await;
    Migrator::up(&conn, None).await.unwrap();
    assert!(Migrator::get_pending_migrations(&conn).await.unwrap().is_empty());
    Migrator::down(&conn, None).await.unwrap();
    assert_eq!(Migrator::get_pending_migrations(&conn).await.unwrap().len(), Migrator::migrations().len());
    Migrator::up(&conn, None).await.unwrap();
    conn.close().await.unwrap();
    // The service starts on the stepped database and works.
    let service = Service::start(config(&db)).await;
    sign_up(&mut service.users(), "pam").await;
    log_in(&mut service.auth(), "pam").await;
}
