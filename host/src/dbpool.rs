//! A database pool of any kind the host speaks, and the connect options it is made
//! from: the one per-dialect type that the plugins' datasources
//! (`capabilities::sql`), the usage store and the migrations share. Code that differs
//! by dialect matches on [`DbPool`] or [`DbOptions`] once and is generic over sqlx's
//! `Database` from there.

use std::str::FromStr;
use std::time::Duration;

use sqlx::error::ErrorKind;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use crate::dburl::{Kind, mysql_url};

/// How to connect to one database.
#[derive(Debug, Clone)]
pub enum DbOptions {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
}

/// Why a URL gives no connect options.
#[derive(Debug, thiserror::Error)]
pub enum DbOptionsError {
    #[error("not a sqlite:, postgres:// or mysql:// URL")]
    Scheme,
    #[error("{0}")]
    Url(sqlx::Error),
}

impl DbOptions {
    /// The options `url` says, its kind by its scheme (MySQL URLs in SQLAlchemy's
    /// forms too, see [`mysql_url`]).
    pub fn from_url(url: &str) -> Result<DbOptions, DbOptionsError> {
        let kind = Kind::of_url(url).ok_or(DbOptionsError::Scheme)?;
        Ok(match kind {
            Kind::Sqlite => {
                DbOptions::Sqlite(SqliteConnectOptions::from_str(url).map_err(DbOptionsError::Url)?)
            }
            Kind::Postgres => {
                DbOptions::Postgres(PgConnectOptions::from_str(url).map_err(DbOptionsError::Url)?)
            }
            Kind::MySql => DbOptions::MySql(
                MySqlConnectOptions::from_str(&mysql_url(url)).map_err(DbOptionsError::Url)?,
            ),
        })
    }

    /// The database kind.
    pub fn kind(&self) -> Kind {
        match self {
            DbOptions::Sqlite(_) => Kind::Sqlite,
            DbOptions::Postgres(_) => Kind::Postgres,
            DbOptions::MySql(_) => Kind::MySql,
        }
    }
}

/// Whether `e` is the database refusing a row's values, which retrying cannot change,
/// rather than a failure of the database (a lost connection, a deadlock, a timeout):
/// a foreign key, not-null, check or unique constraint, or a value too long or out of
/// range for its column.
pub fn refuses_the_values(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    let constraint = matches!(
        db.kind(),
        ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation
            | ErrorKind::UniqueViolation
    );
    // PostgreSQL: string_data_right_truncation, numeric_value_out_of_range.
    // MySQL/MariaDB: ER_DATA_TOO_LONG, ER_WARN_DATA_OUT_OF_RANGE.
    let value = matches!(
        db.code().as_deref(),
        Some("22001" | "22003" | "1406" | "1264")
    );
    constraint || value
}

/// A pool of connections to one database.
#[derive(Debug, Clone)]
pub enum DbPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

impl DbPool {
    /// The dialect it speaks.
    pub fn kind(&self) -> Kind {
        match self {
            DbPool::Sqlite(_) => Kind::Sqlite,
            DbPool::Postgres(_) => Kind::Postgres,
            DbPool::MySql(_) => Kind::MySql,
        }
    }

    /// A pool of at most `size` connections made with `options`, none kept idle, that
    /// connects on first use (so a database that is down does not stop the host) and
    /// waits at most `acquire` for a connection (sqlx's default without one).
    pub fn lazy(options: &DbOptions, size: u32, acquire: Option<Duration>) -> DbPool {
        fn pool<DB: sqlx::Database>(
            size: u32,
            acquire: Option<Duration>,
        ) -> sqlx::pool::PoolOptions<DB> {
            let pool = sqlx::pool::PoolOptions::new()
                .max_connections(size)
                .min_connections(0);
            match acquire {
                Some(timeout) => pool.acquire_timeout(timeout),
                None => pool,
            }
        }
        match options {
            DbOptions::Sqlite(o) => {
                DbPool::Sqlite(pool(size, acquire).connect_lazy_with(o.clone()))
            }
            DbOptions::Postgres(o) => {
                DbPool::Postgres(pool(size, acquire).connect_lazy_with(o.clone()))
            }
            DbOptions::MySql(o) => DbPool::MySql(pool(size, acquire).connect_lazy_with(o.clone())),
        }
    }
}
