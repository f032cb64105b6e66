//! SQLite datasources. The file is opened read-only, and every connection a plugin
//! uses carries an authorizer that lets a statement only read: `SELECT`, `WITH`
//! (recursive too), functions other than `load_extension`, and pragmas that only
//! report. That closes the whole class of statements that reach beyond the file or
//! leave state on the connection — `ATTACH` (which reads any SQLite file the host
//! can), `VACUUM INTO` (which writes one anywhere), temporary tables, transactions,
//! pragmas that change settings — with a typed `denied`. Limits on the connection cap
//! one value at [`SQL_MAX_BYTES`] (so `zeroblob(900000000)` fails before it is
//! allocated) and attached databases at none, and a progress handler stops the
//! statement when the call's time is up or the call was abandoned.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use libsqlite3_sys as ffi;
use sqlx::sqlite::{LockedSqliteHandle, Sqlite, SqliteConnectOptions, SqlitePool};
use sqlx::{ConnectOptions, Database};

use super::{Call, Error, Lease, QueryError, Rows, Value, fetch, get, raw_type};
use crate::limits::SQL_MAX_BYTES;

/// Virtual-machine steps between two looks at the clock: about a millisecond of work
/// or less, so a runaway statement stops within a millisecond or so of its deadline,
/// while the check itself costs nothing measurable.
const PROGRESS_STEPS: i32 = 1000;

/// Pragmas that only report, allowed with an argument that names an object (or none).
const REPORTING_PRAGMAS: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// Pragmas that report without an argument and change a setting with one: allowed
/// only without.
const SETTING_PRAGMAS: &[&str] = &[
    "application_id",
    "auto_vacuum",
    "cache_size",
    "collation_list",
    "compile_options",
    "data_version",
    "encoding",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "journal_mode",
    "max_page_count",
    "page_count",
    "page_size",
    "schema_version",
    "user_version",
];

/// Functions a plugin may not call, although they only read.
const DENIED_FUNCTIONS: &[&str] = &["load_extension", "fts3_tokenizer"];

/// Connect options for `url`: read-only, and never creating the file.
pub(super) fn options(url: &str) -> Result<SqliteConnectOptions, String> {
    Ok(SqliteConnectOptions::from_str(url)
        .map_err(|e| e.to_string())?
        .read_only(true)
        .create_if_missing(false)
        .disable_statement_logging())
}

/// Runs `call` on a pooled connection restricted as the module says.
pub(super) async fn query(pool: &SqlitePool, call: Call) -> Result<Rows, QueryError> {
    let mut lease = Lease::acquire(pool).await?;
    let abandoned = Arc::new(AtomicBool::new(false));
    restrict(
        &mut lease.conn().lock_handle().await?,
        call.stop_at,
        abandoned.clone(),
    );
    let _stop = StopWhenDropped(abandoned);
    let rows = fetch(lease.conn(), call, decode).await;
    // The authorizer keeps any state from being made: a finished statement leaves
    // the connection as it found it.
    if QueryError::statement_finished(&rows) {
        lease.release();
    }
    rows
}

/// Stops the connection's statement when the call is dropped: it timed out, or the
/// run was cancelled.
struct StopWhenDropped(Arc<AtomicBool>);

impl Drop for StopWhenDropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Installs the authorizer, the limits and the progress handler on a connection.
/// Done on every call, since the pool cannot say whether a connection is new.
fn restrict(handle: &mut LockedSqliteHandle<'_>, stop_at: Instant, abandoned: Arc<AtomicBool>) {
    let db = handle.as_raw_handle().as_ptr();
    let max_length = c_int::try_from(SQL_MAX_BYTES).unwrap_or(c_int::MAX);
    // SAFETY: `db` is the open connection of `handle`, and while the locked handle
    // lives sqlx's worker thread makes no call on it. `authorize` has the signature
    // SQLite expects, uses no user data (null), and neither panics nor unwinds.
    #[allow(unsafe_code)]
    unsafe {
        ffi::sqlite3_set_authorizer(db, Some(authorize), std::ptr::null_mut());
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, 0);
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_LENGTH, max_length);
    }
    handle.set_progress_handler(PROGRESS_STEPS, move || {
        !abandoned.load(Ordering::Relaxed) && Instant::now() < stop_at
    });
}

/// SQLite's authorizer: decides, while a statement is prepared, each action it would
/// take. Allows reading only (see the module's header).
#[allow(unsafe_code)]
unsafe extern "C" fn authorize(
    _user_data: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    _database: *const c_char,
    _trigger_or_view: *const c_char,
) -> c_int {
    // SAFETY: SQLite passes null or a NUL-terminated string that lives for the call.
    let text = |p: *const c_char| (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes());
    let listed = |list: &[&str], name: Option<&[u8]>| {
        name.is_some_and(|n| list.iter().any(|l| l.as_bytes().eq_ignore_ascii_case(n)))
    };
    let allowed = match action {
        ffi::SQLITE_SELECT | ffi::SQLITE_READ | ffi::SQLITE_RECURSIVE => true,
        // arg2 is the function's name.
        ffi::SQLITE_FUNCTION => !listed(DENIED_FUNCTIONS, text(arg2)),
        // arg1 is the pragma's name, arg2 its argument.
        ffi::SQLITE_PRAGMA => {
            listed(REPORTING_PRAGMAS, text(arg1))
                || (arg2.is_null() && listed(SETTING_PRAGMAS, text(arg1)))
        }
        _ => false,
    };
    if allowed {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_DENY
    }
}

/// The typed error for what the restrictions refused, if `e` is one of them.
pub(super) fn error(datasource: &str, e: &sqlx::Error) -> Option<Error> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    let primary = db.code()?.parse::<c_int>().ok()? & 0xff;
    // A denied function comes back as a plain error with SQLite's fixed text.
    let denied_function = db.message().starts_with("not authorized to use function");
    match primary {
        _ if denied_function => Some(Error::Denied(format!("{datasource}: {}", db.message()))),
        ffi::SQLITE_AUTH => Some(Error::Denied(format!(
            "{datasource}: {} (plugins may only read: SELECT, WITH and reporting pragmas)",
            db.message()
        ))),
        // A value over the cap, or (in a worker) a row or sort over its memory.
        ffi::SQLITE_TOOBIG | ffi::SQLITE_NOMEM => Some(Error::TooLarge(SQL_MAX_BYTES)),
        // The path is the operator's, never shown to a plugin.
        ffi::SQLITE_CANTOPEN => Some(Error::Database(format!(
            "{datasource}: cannot open the database file: it does not exist or cannot be read \
             (SQLite datasources are opened read-only and never created)"
        ))),
        ffi::SQLITE_INTERRUPT => Some(Error::Timeout),
        _ => None,
    }
}

/// SQLite is dynamically typed: the value's own storage class decides.
fn decode(row: &<Sqlite as Database>::Row, i: usize) -> Result<Value, Error> {
    typed(row, i).map_err(Error::Database)
}

fn typed(row: &<Sqlite as Database>::Row, i: usize) -> Result<Value, String> {
    let (type_name, null) = raw_type::<Sqlite>(row, i)?;
    if null {
        return Ok(Value::Null);
    }
    Ok(match type_name.as_str() {
        "INTEGER" | "INT" | "BIGINT" => Value::Integer(get::<Sqlite, i64>(row, i)?),
        "BOOLEAN" => Value::Boolean(get::<Sqlite, bool>(row, i)?),
        "REAL" | "FLOAT" | "DOUBLE" | "NUMERIC" => Value::Real(get::<Sqlite, f64>(row, i)?),
        "BLOB" => Value::Blob(get::<Sqlite, Vec<u8>>(row, i)?),
        _ => Value::Text(get::<Sqlite, String>(row, i)?),
    })
}
