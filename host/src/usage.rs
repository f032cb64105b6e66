//! The `ai_usage` table the host owns: its migrations, embedded in the binary, one set
//! per database kind (`migrations/` at the repository root), and applying them.
//!
//! Migrations run on a read-write connection of their own: the datasources plugins
//! query are read-only.

use std::str::FromStr;

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::{Connection, MySqlConnection, PgConnection, SqliteConnection};

use crate::capabilities::sql::{Kind, mysql_url};

static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");
static MYSQL: Migrator = sqlx::migrate!("../migrations/mysql");

/// One migration that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub description: String,
}

/// Why migrations could not be applied; the URL is never part of the message.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("unsupported database url (expected sqlite:, postgres:// or mysql://)")]
    Scheme,
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] MigrateError),
}

/// Applies every pending migration to the database at `url` (creating a SQLite file
/// that does not exist) and returns those it applied, oldest first.
pub async fn migrate(url: &str) -> Result<Vec<Applied>, MigrationError> {
    match Kind::of_url(url).ok_or(MigrationError::Scheme)? {
        Kind::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(MigrationError::Connect)?
                .create_if_missing(true);
            if let Some(dir) = options
                .get_filename()
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| MigrationError::Connect(e.into()))?;
            }
            let mut conn = SqliteConnection::connect_with(&options)
                .await
                .map_err(MigrationError::Connect)?;
            apply(&SQLITE, &mut conn).await
        }
        Kind::Postgres => {
            let mut conn = PgConnection::connect(url)
                .await
                .map_err(MigrationError::Connect)?;
            apply(&POSTGRES, &mut conn).await
        }
        Kind::MySql => {
            let mut conn = MySqlConnection::connect(&mysql_url(url))
                .await
                .map_err(MigrationError::Connect)?;
            apply(&MYSQL, &mut conn).await
        }
    }
}

async fn apply<C: Migrate>(
    migrator: &Migrator,
    conn: &mut C,
) -> Result<Vec<Applied>, MigrationError> {
    conn.ensure_migrations_table(&migrator.table_name).await?;
    let done: Vec<i64> = conn
        .list_applied_migrations(&migrator.table_name)
        .await?
        .iter()
        .map(|m| m.version)
        .collect();
    migrator.run_direct(None, conn, false).await?;
    Ok(migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !done.contains(&m.version))
        .map(|m| Applied {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_the_same_migrations() {
        let versions = |m: &Migrator| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert!(!versions(&SQLITE).is_empty());
        assert_eq!(versions(&SQLITE), versions(&POSTGRES));
        assert_eq!(versions(&SQLITE), versions(&MYSQL));
    }
}
