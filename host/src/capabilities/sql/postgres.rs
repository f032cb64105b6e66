//! PostgreSQL datasources. Each statement runs in a `READ ONLY` transaction whose
//! `statement_timeout` is the call's remaining time, on a connection that asks the
//! server to look for a vanished client every [`CLIENT_CHECK_INTERVAL_MS`] (so a
//! statement whose call was abandoned — its connection closed — stops soon after,
//! PostgreSQL 14 or later). After a statement that ran to its end the transaction is
//! rolled back and the session reset to what a new connection has (no advisory locks,
//! prepared statements, cursors, listeners, temporary tables or settings left);
//! otherwise the connection is closed without reading the rest of the result.
//!
//! One value is read whole before the byte cap can apply: PostgreSQL allows values of
//! up to 1 GB, and the driver reads each row at once. The statement's time and the
//! row and byte caps bound the rest.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, Postgres};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Database, Row};

use super::{Call, Error, Lease, QueryError, Rows, Value, fetch, get, raw_type, unsupported};
use crate::limits::SQL_MAX_BYTES;

/// How often, in milliseconds, the server checks that the client is still there
/// while a statement runs: a statement abandoned by the host stops within this.
const CLIENT_CHECK_INTERVAL_MS: &str = "250";

/// Resets a session to what a new connection has, after the rollback. `DISCARD ALL`
/// itself cannot run in a multi-statement string, so this is its documented
/// equivalent, in one round trip.
const RESET: &str = "ROLLBACK; CLOSE ALL; RESET ALL; DEALLOCATE ALL; UNLISTEN *; \
                     SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD SEQUENCES; \
                     DISCARD TEMP";

/// Connect options for `url`. No statement cache: the reset deallocates every
/// prepared statement.
pub(super) fn options(url: &str) -> Result<PgConnectOptions, String> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(|e| e.to_string())?
        .statement_cache_capacity(0)
        .disable_statement_logging()
        .options([("client_connection_check_interval", CLIENT_CHECK_INTERVAL_MS)]))
}

/// Runs `call` in a read-only transaction on a pooled connection (see the module's
/// header).
pub(super) async fn query(pool: &PgPool, call: Call) -> Result<Rows, QueryError> {
    let mut lease = Lease::acquire(pool).await?;
    let ms = call.timeout.as_millis().max(1);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "BEGIN READ ONLY; SET LOCAL statement_timeout = {ms}"
    )))
    .execute(lease.conn())
    .await?;
    let rows = fetch(lease.conn(), call, decode).await;
    if QueryError::statement_finished(&rows)
        && sqlx::raw_sql(RESET).execute(lease.conn()).await.is_ok()
    {
        lease.release();
    }
    rows
}

/// Functions that reach the server's files or programs, checked in every overload.
const SERVER_FILE_FUNCTIONS: &str = "'pg_read_file', 'pg_read_binary_file', 'pg_ls_dir', \
     'pg_stat_file', 'lo_import', 'lo_export', 'pg_file_write', 'pg_file_rename', \
     'pg_file_unlink', 'pg_logdir_ls'";

/// The role `options` connects as, and the powers its sessions can reach over the
/// database server's programs and files (empty when none), judged by what a session
/// can do: for the role itself and every role it is a member of by any path
/// (inherited or `NOINHERIT`, which `SET ROLE` reaches), whether it is a superuser,
/// one of the predefined roles for server files and programs, may run any overload
/// of a function that reads or writes server files, or (before PostgreSQL 16, where
/// `CREATEROLE` can grant any role) may create roles.
pub(super) async fn server_powers(
    options: &PgConnectOptions,
) -> Result<(String, Vec<String>), sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    let found: (String, Vec<String>) = sqlx::query_as(AssertSqlSafe(format!(
        "WITH reach AS (
           SELECT r.oid, r.rolname, r.rolsuper, r.rolcreaterole FROM pg_roles r
           WHERE pg_has_role(current_user, r.oid, 'MEMBER'))
         SELECT current_user::text, ARRAY(SELECT DISTINCT power FROM (
           SELECT 'superuser' AS power FROM reach WHERE rolsuper
           UNION ALL
           SELECT rolname::text FROM reach WHERE rolname IN
             ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')
           UNION ALL
           SELECT 'CREATEROLE' FROM reach
           WHERE rolcreaterole AND current_setting('server_version_num')::int < 160000
           UNION ALL
           SELECT 'EXECUTE on ' || p.oid::regprocedure::text FROM reach, pg_proc p
           WHERE p.proname IN ({SERVER_FILE_FUNCTIONS})
             AND has_function_privilege(reach.oid, p.oid, 'EXECUTE')
         ) powers ORDER BY 1)"
    )))
    .fetch_one(&mut conn)
    .await?;
    let _ = conn.close().await;
    let (role, mut powers) = found;
    // A superuser holds every other power too: name just that.
    if powers.iter().any(|p| p == "superuser") {
        powers.retain(|p| p == "superuser");
    }
    Ok((role, powers))
}

/// A value as the contract's type. One larger than the byte cap is refused before
/// it is copied.
fn decode(row: &<Postgres as Database>::Row, i: usize) -> Result<Value, Error> {
    let raw = row
        .try_get_raw(i)
        .map_err(|e| Error::Database(e.to_string()))?;
    if raw.as_bytes().map_or(0, <[u8]>::len) as u64 > SQL_MAX_BYTES {
        return Err(Error::TooLarge(SQL_MAX_BYTES));
    }
    typed(row, i).map_err(Error::Database)
}

fn typed(row: &<Postgres as Database>::Row, i: usize) -> Result<Value, String> {
    let (type_name, null) = raw_type::<Postgres>(row, i)?;
    if null {
        return Ok(Value::Null);
    }
    Ok(match type_name.as_str() {
        "BOOL" => Value::Boolean(get::<Postgres, bool>(row, i)?),
        "INT2" => Value::Integer(get::<Postgres, i16>(row, i)?.into()),
        "INT4" => Value::Integer(get::<Postgres, i32>(row, i)?.into()),
        "INT8" => Value::Integer(get::<Postgres, i64>(row, i)?),
        "OID" => Value::Integer(
            get::<Postgres, sqlx::postgres::types::Oid>(row, i)?
                .0
                .into(),
        ),
        "FLOAT4" => Value::Real(get::<Postgres, f32>(row, i)?.into()),
        "FLOAT8" => Value::Real(get::<Postgres, f64>(row, i)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UNKNOWN" => {
            Value::Text(get::<Postgres, String>(row, i)?)
        }
        "BYTEA" => Value::Blob(get::<Postgres, Vec<u8>>(row, i)?),
        other => return Err(unsupported(other, i, "value::text or value::float8")),
    })
}
