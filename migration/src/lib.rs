//! The schema of the identity service as sea-orm migrations, one file per migration, the same
//! on SQLite and PostgreSQL. Migrations never import the entities: they describe tables as they
//! were at that point in history.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_initial;
mod m20261202_000001_refresh_grace_and_keys;
mod m20261202_000002_janitor;
mod m20261202_000003_key_lifecycle;
mod m20261204_000001_accounts_by_email;
mod m20261205_000001_social_login;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261202_000001_refresh_grace_and_keys::Migration),
            Box::new(m20261202_000002_janitor::Migration),
            Box::new(m20261202_000003_key_lifecycle::Migration),
            Box::new(m20261204_000001_accounts_by_email::Migration),
            Box::new(m20261205_000001_social_login::Migration),
        ]
    }
}
