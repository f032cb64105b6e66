//! MySQL and MariaDB datasources. Each statement runs in a read-only session *and*
//! transaction (DDL commits implicitly and would escape a read-only transaction
//! alone), with the server's statement time limit set to the call's remaining time
//! (MariaDB `max_statement_time`, MySQL `max_execution_time`). A MySQL session keeps
//! user variables, named locks, temporary tables and prepared statements, and the
//! driver has no session reset: every connection is closed after its one statement,
//! so nothing a plugin does reaches the next query.
//!
//! One value is at most the server's `max_allowed_packet` (16 MiB by default on
//! MariaDB, 64 MiB on MySQL): the server refuses to build or send a larger one.

use std::str::FromStr;

use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlConnection, MySqlPool};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Database, Executor};

use super::{
    Call, Error, Lease, QueryError, Rows, Value, fetch, get, mysql_url, raw_type, unsupported,
};

/// MySQL's error number for an unknown system variable: the server is MySQL, not
/// MariaDB, and names its statement limit otherwise.
const ER_UNKNOWN_SYSTEM_VARIABLE: &str = "1193";

/// Connect options for `url` (`mysql://` or `mariadb://`).
pub(super) fn options(url: &str) -> Result<MySqlConnectOptions, String> {
    Ok(MySqlConnectOptions::from_str(&mysql_url(url))
        .map_err(|e| e.to_string())?
        .disable_statement_logging())
}

/// Runs `call` in a read-only session and transaction on a connection of its own
/// (see the module's header).
pub(super) async fn query(pool: &MySqlPool, call: Call) -> Result<Rows, QueryError> {
    let mut lease = Lease::acquire(pool).await?;
    let conn = lease.conn();
    conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
    limit_statement_time(conn, call.timeout).await?;
    conn.execute("START TRANSACTION READ ONLY").await?;
    fetch(lease.conn(), call, decode).await
    // The lease is dropped without release: the connection is closed.
}

/// Sets the server's time limit for the session's statements.
async fn limit_statement_time(
    conn: &mut MySqlConnection,
    timeout: std::time::Duration,
) -> Result<(), sqlx::Error> {
    let mariadb = format!(
        "SET SESSION max_statement_time = {:.3}",
        timeout.as_secs_f64().max(0.001)
    );
    match conn.execute(AssertSqlSafe(mariadb)).await {
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some(ER_UNKNOWN_SYSTEM_VARIABLE) =>
        {
            let ms = timeout.as_millis().max(1);
            conn.execute(AssertSqlSafe(format!(
                "SET SESSION max_execution_time = {ms}"
            )))
            .await
            .map(drop)
        }
        other => other.map(drop),
    }
}

/// The account `options` connects as, and which of `FILE` and `SUPER` its sessions
/// can hold (empty when neither): judged by what a session can do, not by a list of
/// grants. Its own privileges, and each role it could enable (`SET ROLE`, default or
/// not) with every role granted to that one, as the server itself reports them
/// (`SHOW GRANTS` in a session with the role set). `ALL PRIVILEGES` holds both.
pub(super) async fn server_powers(
    options: &MySqlConnectOptions,
) -> Result<(String, Vec<String>), sqlx::Error> {
    let mut conn = MySqlConnection::connect_with(options).await?;
    let account: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
        .fetch_one(&mut conn)
        .await?;
    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(ROLE_NAME AS CHAR) FROM information_schema.APPLICABLE_ROLES
         WHERE GRANTEE = CURRENT_USER()",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut grants: Vec<String> = Vec::new();
    let sessions = std::iter::once("NONE".to_owned())
        .chain(roles.iter().map(|r| format!("`{}`", r.replace('`', "``"))));
    for role in sessions {
        conn.execute(AssertSqlSafe(format!("SET ROLE {role}")))
            .await?;
        grants.extend(
            sqlx::query_scalar::<_, String>("SHOW GRANTS")
                .fetch_all(&mut conn)
                .await?,
        );
    }
    let _ = conn.close().await;
    let powers = ["FILE", "SUPER"]
        .into_iter()
        .filter(|power| grants.iter().any(|g| grants_globally(g, power)))
        .map(str::to_owned)
        .collect();
    Ok((account, powers))
}

/// Whether the `SHOW GRANTS` line `grant` gives `privilege` on every database
/// (`GRANT SELECT, FILE ON *.* TO …`, or `ALL PRIVILEGES`).
fn grants_globally(grant: &str, privilege: &str) -> bool {
    let Some((privileges, _)) = grant
        .strip_prefix("GRANT ")
        .and_then(|g| g.split_once(" ON *.* TO "))
    else {
        return false;
    };
    privileges
        .split(", ")
        .any(|p| p == privilege || p == "ALL PRIVILEGES")
}

fn decode(row: &<MySql as Database>::Row, i: usize) -> Result<Value, Error> {
    typed(row, i).map_err(Error::Database)
}

fn typed(row: &<MySql as Database>::Row, i: usize) -> Result<Value, String> {
    let (type_name, null) = raw_type::<MySql>(row, i)?;
    if null {
        return Ok(Value::Null);
    }
    Ok(match type_name.as_str() {
        "BOOLEAN" => Value::Boolean(get::<MySql, bool>(row, i)?),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            Value::Integer(get::<MySql, i64>(row, i)?)
        }
        t if t.ends_with("UNSIGNED") => {
            let n = get::<MySql, u64>(row, i)?;
            Value::Integer(
                i64::try_from(n)
                    .map_err(|_| format!("column {i}: {n} does not fit a signed 64-bit integer"))?,
            )
        }
        "FLOAT" => Value::Real(get::<MySql, f32>(row, i)?.into()),
        "DOUBLE" => Value::Real(get::<MySql, f64>(row, i)?),
        "DECIMAL" | "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT"
        | "ENUM" | "SET" | "JSON" => Value::Text(get::<MySql, String>(row, i)?),
        "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            Value::Blob(get::<MySql, Vec<u8>>(row, i)?)
        }
        other => return Err(unsupported(other, i, "CAST(value AS CHAR)")),
    })
}

#[cfg(test)]
mod tests {
    use super::grants_globally;

    #[test]
    fn global_grants_of_a_privilege_are_found_in_show_grants_lines() {
        for (line, file) in [
            ("GRANT FILE ON *.* TO `r`", true),
            ("GRANT SELECT, FILE ON *.* TO `u`@`%`", true),
            (
                "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION",
                true,
            ),
            ("GRANT SELECT ON `test`.* TO `u`@`%`", false),
            ("GRANT ALL PRIVILEGES ON `app`.* TO `u`@`%`", false),
            ("GRANT `file_role` TO `u`@`%`", false),
            ("GRANT USAGE ON *.* TO `u`@`%`", false),
        ] {
            assert_eq!(grants_globally(line, "FILE"), file, "{line}");
        }
    }
}
