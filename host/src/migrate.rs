//! The host's own tables and their migrations, per dialect, with sqlx's migrator: the
//! `ai_usage` table ([`USAGE`], `migrations/{sqlite,postgres,mysql}`) and the check
//! history ([`HISTORY`], `migrations/history/…`). Each set keeps its own migrations
//! table, so either applies whether or not the host owns the other, and each refuses a
//! table another tool created (see `docs/operations.md`, "Sharing the bot's database").

use std::sync::LazyLock;

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::{
    Connection, Database, Executor, IntoArguments, MySqlConnection, PgConnection, SqliteConnection,
    Type,
};

use crate::dbpool::{DbOptions, DbOptionsError};

/// One set of tables the host owns: its migrations per dialect, and how to tell that
/// its main table exists without them (another tool made it).
pub struct MigrationSet {
    /// The set's main table, in messages.
    table: &'static str,
    /// Where the applied migrations are recorded.
    migrations_table: &'static str,
    sqlite: Migrator,
    postgres: Migrator,
    mysql: Migrator,
    /// Per dialect: 1 when `table` exists and `migrations_table` does not.
    foreign: [String; 3],
}

/// The `ai_usage` table, its migrations recorded in sqlx's default table.
pub static USAGE: LazyLock<MigrationSet> = LazyLock::new(|| MigrationSet {
    table: "ai_usage",
    migrations_table: "_sqlx_migrations",
    sqlite: sqlx::migrate!("../migrations/sqlite"),
    postgres: sqlx::migrate!("../migrations/postgres"),
    mysql: sqlx::migrate!("../migrations/mysql"),
    foreign: foreign_queries("ai_usage", "_sqlx_migrations"),
});

/// The check history tables (`hh_…`), their migrations recorded apart from
/// `ai_usage`'s.
pub static HISTORY: LazyLock<MigrationSet> = LazyLock::new(|| {
    let table = "_healthhost_history_migrations";
    let named = |mut m: Migrator| {
        m.dangerous_set_table_name(table);
        m
    };
    MigrationSet {
        table: "hh_result",
        migrations_table: table,
        sqlite: named(sqlx::migrate!("../migrations/history/sqlite")),
        postgres: named(sqlx::migrate!("../migrations/history/postgres")),
        mysql: named(sqlx::migrate!("../migrations/history/mysql")),
        foreign: foreign_queries("hh_result", table),
    }
});

/// Per dialect, a query answering 1 when `table` exists without `migrations`.
fn foreign_queries(table: &str, migrations: &str) -> [String; 3] {
    [
        format!(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table}') \
             AND NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{migrations}')"
        ),
        format!(
            "SELECT CASE WHEN to_regclass('{table}') IS NOT NULL \
             AND to_regclass('{migrations}') IS NULL THEN 1::int8 ELSE 0::int8 END"
        ),
        format!(
            "SELECT CAST(EXISTS (SELECT 1 FROM information_schema.TABLES \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}') \
             AND NOT EXISTS (SELECT 1 FROM information_schema.TABLES \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{migrations}') AS SIGNED)"
        ),
    ]
}

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
    /// The set's table exists but healthhost did not create it (its migrations table
    /// is missing): its schema is another tool's (for `ai_usage`, the bot's Alembic),
    /// and stays as it is.
    #[error(
        "{table} exists but was not created by healthhost (there is no {migrations} table): \
         its schema belongs to another tool, so healthhost leaves it as it is{}",
        if *table == "ai_usage" {
            "; recording and the report use the columns it has (set usage.migrate = false \
             to skip this check)"
        } else {
            " (set migrate = false in its section to skip this check)"
        }
    )]
    Foreign {
        table: &'static str,
        migrations: &'static str,
    },
}

/// Applies every pending migration of `set` to the database at `url` (creating a SQLite
/// file that does not exist) and returns those it applied, oldest first.
pub async fn migrate(url: &str, set: &MigrationSet) -> Result<Vec<Applied>, MigrationError> {
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
            refuse_foreign(&mut conn, set, 0).await?;
            apply(&set.sqlite, &mut conn).await
        }
        DbOptions::Postgres(options) => {
            let mut conn = PgConnection::connect_with(&options)
                .await
                .map_err(MigrationError::Connect)?;
            refuse_foreign(&mut conn, set, 1).await?;
            apply(&set.postgres, &mut conn).await
        }
        DbOptions::MySql(options) => {
            let mut conn = MySqlConnection::connect_with(&options)
                .await
                .map_err(MigrationError::Connect)?;
            refuse_foreign(&mut conn, set, 2).await?;
            apply(&set.mysql, &mut conn).await
        }
    }
}

/// Fails with [`MigrationError::Foreign`] when the set's table is another tool's.
async fn refuse_foreign<'c, C>(
    conn: &'c mut C,
    set: &MigrationSet,
    dialect: usize,
) -> Result<(), MigrationError>
where
    &'c mut C: Executor<'c>,
    i64: for<'r> sqlx::Decode<'r, <&'c mut C as Executor<'c>>::Database>
        + Type<<&'c mut C as Executor<'c>>::Database>,
    usize: sqlx::ColumnIndex<<<&'c mut C as Executor<'c>>::Database as Database>::Row>,
    <<&'c mut C as Executor<'c>>::Database as Database>::Arguments:
        IntoArguments<<&'c mut C as Executor<'c>>::Database>,
{
    let foreign: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(set.foreign[dialect].clone()))
        .fetch_one(conn)
        .await
        .map_err(MigrationError::Inspect)?;
    if foreign != 0 {
        return Err(MigrationError::Foreign {
            table: set.table,
            migrations: set.migrations_table,
        });
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
        for set in [&*USAGE, &*HISTORY] {
            assert!(!versions(&set.sqlite).is_empty(), "{}", set.table);
            assert_eq!(
                versions(&set.sqlite),
                versions(&set.postgres),
                "{}",
                set.table
            );
            assert_eq!(versions(&set.sqlite), versions(&set.mysql), "{}", set.table);
        }
        assert_eq!(HISTORY.sqlite.table_name, "_healthhost_history_migrations");
    }
}
