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

/// The role `options` connects as, and the powers it holds over the database server's
/// programs and files (empty when none).
pub(super) async fn server_powers(
    options: &PgConnectOptions,
) -> Result<(String, Vec<String>), sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    let found: (String, Vec<String>) = sqlx::query_as(
        "SELECT current_user::text, array_remove(ARRAY[
           CASE WHEN EXISTS (SELECT 1 FROM pg_roles r
                             WHERE r.rolsuper AND pg_has_role(current_user, r.oid, 'MEMBER'))
                THEN 'superuser' END,
           CASE WHEN pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER')
                THEN 'pg_execute_server_program' END,
           CASE WHEN pg_has_role(current_user, 'pg_read_server_files', 'MEMBER')
                THEN 'pg_read_server_files' END,
           CASE WHEN pg_has_role(current_user, 'pg_write_server_files', 'MEMBER')
                THEN 'pg_write_server_files' END,
           CASE WHEN has_function_privilege('pg_read_file(text)', 'EXECUTE')
                THEN 'EXECUTE on pg_read_file' END,
           CASE WHEN has_function_privilege('pg_read_binary_file(text)', 'EXECUTE')
                THEN 'EXECUTE on pg_read_binary_file' END,
           CASE WHEN has_function_privilege('pg_ls_dir(text)', 'EXECUTE')
                THEN 'EXECUTE on pg_ls_dir' END,
           CASE WHEN has_function_privilege('lo_import(text)', 'EXECUTE')
                THEN 'EXECUTE on lo_import' END,
           CASE WHEN has_function_privilege('lo_export(oid, text)', 'EXECUTE')
                THEN 'EXECUTE on lo_export' END
         ], NULL)",
    )
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
