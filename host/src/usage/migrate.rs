//! The `ai_usage` table's migrations: applied per dialect with sqlx's migrator, and
//! refused on a table another tool created (see `docs/operations.md`, "Sharing the bot's database").

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::{
    Connection, Database, Executor, IntoArguments, MySqlConnection, PgConnection, SqliteConnection,
    Type,
};

use crate::dbpool::{DbOptions, DbOptionsError};

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
    #[error("cannot read the database's schema: {0}")]
    Inspect(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] MigrateError),
    /// `ai_usage` exists but healthhost did not create it (no `_sqlx_migrations`): its
    /// schema is another tool's (the bot's Alembic), and stays as it is.
    #[error(
        "ai_usage exists but was not created by healthhost (there is no _sqlx_migrations table): \
         its schema belongs to another tool, so healthhost leaves it as it is; recording and \
         the report use the columns it has (set usage.migrate = false to skip this check)"
    )]
    Foreign,
}

/// Applies every pending migration to the database at `url` (creating a SQLite file
/// that does not exist) and returns those it applied, oldest first.
pub async fn migrate(url: &str) -> Result<Vec<Applied>, MigrationError> {
    let options = DbOptions::from_url(url).map_err(|e| match e {
        DbOptionsError::Scheme => MigrationError::Scheme,
        DbOptionsError::Url(e) => MigrationError::Connect(e),
    })?;
    match options {
        DbOptions::Sqlite(options) => {
            let options = options.create_if_missing(true);
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
            refuse_foreign(&mut conn, SQLITE_FOREIGN).await?;
            apply(&SQLITE, &mut conn).await
        }
        DbOptions::Postgres(options) => {
            let mut conn = PgConnection::connect_with(&options)
                .await
                .map_err(MigrationError::Connect)?;
            refuse_foreign(&mut conn, POSTGRES_FOREIGN).await?;
            apply(&POSTGRES, &mut conn).await
        }
        DbOptions::MySql(options) => {
            let mut conn = MySqlConnection::connect_with(&options)
                .await
                .map_err(MigrationError::Connect)?;
            refuse_foreign(&mut conn, MYSQL_FOREIGN).await?;
            apply(&MYSQL, &mut conn).await
        }
    }
}

/// Whether `ai_usage` exists without the host's migration history, as one integer.
const SQLITE_FOREIGN: &str = "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ai_usage') \
     AND NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')";
const POSTGRES_FOREIGN: &str = "SELECT CASE WHEN to_regclass('ai_usage') IS NOT NULL \
     AND to_regclass('_sqlx_migrations') IS NULL THEN 1::int8 ELSE 0::int8 END";
const MYSQL_FOREIGN: &str = "SELECT CAST(EXISTS (SELECT 1 FROM information_schema.TABLES \
       WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'ai_usage') \
     AND NOT EXISTS (SELECT 1 FROM information_schema.TABLES \
       WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '_sqlx_migrations') AS SIGNED)";

/// Fails with [`MigrationError::Foreign`] when `ai_usage` is another tool's.
async fn refuse_foreign<'c, C>(conn: &'c mut C, sql: &'static str) -> Result<(), MigrationError>
where
    &'c mut C: Executor<'c>,
    i64: for<'r> sqlx::Decode<'r, <&'c mut C as Executor<'c>>::Database>
        + Type<<&'c mut C as Executor<'c>>::Database>,
    usize: sqlx::ColumnIndex<<<&'c mut C as Executor<'c>>::Database as Database>::Row>,
    <<&'c mut C as Executor<'c>>::Database as Database>::Arguments:
        IntoArguments<<&'c mut C as Executor<'c>>::Database>,
{
    let foreign: i64 = sqlx::query_scalar(sql)
        .fetch_one(conn)
        .await
        .map_err(MigrationError::Inspect)?;
    if foreign != 0 {
        return Err(MigrationError::Foreign);
    }
    Ok(())
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
