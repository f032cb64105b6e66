//! What a statement may be on PostgreSQL and MySQL/MariaDB, judged from its parse
//! tree: defence in depth behind the read-only role, transaction and session, the way
//! SQLite's authorizer judges each action (see `sqlite`).
//!
//! A statement is parsed with the dialect's grammar (sqlparser, never string
//! matching) and passes only if it is one query (`SELECT`, `WITH`, `VALUES`, `TABLE`)
//! or a `SHOW`, that locks no rows, writes into nothing (`SELECT … INTO`), and calls
//! no function a read-only check never needs but a plugin could use against its
//! neighbours or the server: session settings (`set_config`), advisory and named
//! locks, signalling other sessions, reading server files, large objects, other
//! servers (`dblink`). Everything else — `SET`, `SET STATEMENT … FOR` (which would
//! lift the host's statement time limit), `DO` blocks, `CALL`, `KILL`, several
//! statements, a text the grammar does not know — is refused with a typed `denied`
//! naming the reason, before it reaches the server. The parser's own depth limit
//! bounds its work on a nested statement.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, ObjectNamePart, Query, Select, Statement, Visit, Visitor};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;

use crate::dburl::Kind;

/// PostgreSQL functions refused in a plugin's statement, by what they reach.
const POSTGRES_FUNCTIONS: &[&str] = &[
    // Session settings, which outlive the statement on a pooled connection.
    "set_config",
    // Advisory locks: state shared with every other session of the server.
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    // Other sessions and the server itself: a role can always signal its own
    // backends, other plugins' and the host's among them.
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_log_backend_memory_contexts",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_notify",
    "pg_logical_emit_message",
    // The server's files.
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_dir",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_ls_logicalsnapdir",
    "pg_ls_logicalmapdir",
    "pg_ls_replslotdir",
    // Large objects: files on the server, and rows a read-only check never needs.
    "lo_import",
    "lo_export",
    "lo_creat",
    "lo_create",
    "lo_unlink",
    "lo_open",
    "lo_close",
    "lo_put",
    "lo_get",
    "lo_from_bytea",
    "lo_truncate",
    "lo_lseek",
    "lo_tell",
    "loread",
    "lowrite",
    // Connections to other servers, as the server.
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "dblink_send_query",
];

/// MySQL/MariaDB functions refused in a plugin's statement, by what they reach.
const MYSQL_FUNCTIONS: &[&str] = &[
    // Named locks: state shared with every other session of the server.
    "get_lock",
    "release_lock",
    "release_all_locks",
    "is_free_lock",
    "is_used_lock",
    // The server's files.
    "load_file",
    // Waits on replication, which hold a connection for as long as they like.
    "master_pos_wait",
    "source_pos_wait",
    "master_gtid_wait",
    "wait_for_executed_gtid_set",
    "wait_until_sql_thread_after_gtids",
];

/// Why `statement` may not run on a database of `kind` (PostgreSQL or MySQL/MariaDB;
/// SQLite's authorizer judges its own), or `Ok` when it may.
pub(super) fn screen(kind: Kind, statement: &str) -> Result<(), String> {
    let (dialect, functions): (&dyn Dialect, &[&str]) = match kind {
        Kind::Postgres => (&PostgreSqlDialect {}, POSTGRES_FUNCTIONS),
        Kind::MySql => (&MySqlDialect {}, MYSQL_FUNCTIONS),
        Kind::Sqlite => return Ok(()),
    };
    let parsed = Parser::parse_sql(dialect, statement)
        .map_err(|e| format!("not a statement a read-only check may run ({e})"))?;
    let [statement] = parsed.as_slice() else {
        return Err(format!(
            "{} statements: a call runs exactly one",
            parsed.len()
        ));
    };
    match statement {
        Statement::Query(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCollation { .. }
        | Statement::ShowCharset(_) => {}
        _ => {
            return Err(
                "only a query (SELECT, WITH, VALUES, TABLE) or a SHOW may run: a check reads"
                    .to_owned(),
            );
        }
    }
    match statement.visit(&mut Refusals { functions }) {
        ControlFlow::Break(reason) => Err(reason),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Walks a parse tree and breaks with the first reason to refuse it.
struct Refusals {
    functions: &'static [&'static str],
}

impl Refusals {
    /// Refuses `name` when it calls one of the refused functions (by its last part:
    /// `pg_catalog.set_config` is `set_config`).
    fn call(&self, name: &ObjectName) -> ControlFlow<String> {
        let Some(ObjectNamePart::Identifier(last)) = name.0.last() else {
            return ControlFlow::Continue(());
        };
        let called = last.value.to_ascii_lowercase();
        if self.functions.contains(&called.as_str()) {
            return ControlFlow::Break(format!(
                "{called}() reaches beyond the statement (other sessions, locks, settings or the server's files): a check does not need it"
            ));
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Refusals {
    type Break = String;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if query.locks.is_empty() {
            return ControlFlow::Continue(());
        }
        ControlFlow::Break(
            "FOR UPDATE/SHARE locks rows that others wait for: a check only reads".to_owned(),
        )
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<String> {
        if select.into.is_none() {
            return ControlFlow::Continue(());
        }
        ControlFlow::Break("SELECT … INTO writes: a check only reads".to_owned())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Function(function) => self.call(&function.name),
            _ => ControlFlow::Continue(()),
        }
    }

    /// A table-valued function in `FROM` (`pg_ls_dir('.')`) is a relation here.
    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<String> {
        self.call(relation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(statement: &str) -> Result<(), String> {
        screen(Kind::Postgres, statement)
    }

    fn my(statement: &str) -> Result<(), String> {
        screen(Kind::MySql, statement)
    }

    #[test]
    fn queries_a_check_runs_pass() {
        for statement in [
            "SELECT 1",
            "select count(*) from jobs where next_run_time < extract(epoch from now())",
            "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
            "SELECT $1::text, now() - interval '5 minutes'",
            "SELECT * FROM generate_series(1, 3)",
            "SELECT current_setting('server_version_num')",
            "SHOW server_version",
            "VALUES (1), (2)",
        ] {
            assert_eq!(pg(statement), Ok(()), "{statement}");
        }
        for statement in [
            "SELECT 1",
            "SELECT COUNT(*) FROM jobs WHERE next_run_time < UNIX_TIMESTAMP()",
            "SELECT ?, NOW()",
            "SHOW GLOBAL STATUS LIKE 'Threads_connected'",
            "SHOW VARIABLES LIKE 'version'",
        ] {
            assert_eq!(my(statement), Ok(()), "{statement}");
        }
    }

    #[test]
    fn statements_that_are_not_one_query_are_refused() {
        for statement in [
            "SET statement_timeout = 0",
            "DO $$ BEGIN PERFORM 1; END $$",
            "CALL p()",
            "SELECT 1; SELECT 2",
            "BEGIN",
            "DELETE FROM jobs",
            "SELECT 1 FROM jobs FOR UPDATE",
            "SELECT 1 INTO new_table",
            "SELEKT 1",
        ] {
            assert!(pg(statement).is_err(), "{statement}");
        }
        for statement in [
            "SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(100)",
            "SET @x = 1",
            "KILL 42",
            "SELECT * FROM jobs LOCK IN SHARE MODE",
            "SELECT 1 INTO OUTFILE '/tmp/x'",
            "SELECT 1 INTO @x",
            "DO SLEEP(1)",
        ] {
            assert!(my(statement).is_err(), "{statement}");
        }
    }

    #[test]
    fn functions_that_reach_beyond_the_statement_are_refused_wherever_they_are() {
        let postgres = [
            "SELECT set_config('x.y', 'v', false)",
            "SELECT PG_CATALOG.SET_CONFIG('x.y', 'v', false)",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
            "SELECT 1 WHERE pg_try_advisory_lock(1)",
            "SELECT * FROM pg_ls_dir('.')",
            "SELECT (SELECT pg_read_file('/etc/passwd', 0, 10))",
            "WITH f AS (SELECT lo_import('/etc/passwd')) SELECT * FROM f",
            "SELECT coalesce(NULL, pg_cancel_backend(1))",
        ];
        let mysql = [
            "SELECT GET_LOCK('x', 10)",
            "SELECT IS_USED_LOCK('x')",
            "SELECT LOAD_FILE('/etc/passwd')",
            "SELECT 1 FROM dual WHERE release_lock('x') IS NULL",
        ];
        let cases = postgres.map(|s| (Kind::Postgres, s)).into_iter();
        for (kind, statement) in cases.chain(mysql.map(|s| (Kind::MySql, s))) {
            let reason = screen(kind, statement).unwrap_err();
            assert!(reason.contains("()"), "{statement}: {reason}");
        }
    }

    #[test]
    fn a_deeply_nested_statement_is_refused_not_a_crash() {
        let deep = format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(pg(&deep).is_err());
        assert!(my(&deep).is_err());
    }
}
