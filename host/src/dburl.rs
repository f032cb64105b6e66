//! Database URLs, as the operator writes them: the kind a URL names, SQLAlchemy's
//! forms read as sqlx's, and a datasource's definition ([`DatasourceSpec`]) checked
//! once, where it is written (the config file, a `--datasource` flag). The SQL
//! capability connects from a spec; the host's own tables use the same URLs.

use std::borrow::Cow;
use std::str::FromStr;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// The database kinds a datasource can be, chosen by its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

impl Kind {
    /// The kind of a database URL: `sqlite:`, `postgres:`/`postgresql:`,
    /// `mysql:`/`mariadb:`.
    pub fn of_url(url: &str) -> Option<Kind> {
        match url.split(':').next()?.to_ascii_lowercase().as_str() {
            "sqlite" => Some(Kind::Sqlite),
            "postgres" | "postgresql" => Some(Kind::Postgres),
            "mysql" | "mariadb" => Some(Kind::MySql),
            _ => None,
        }
    }
}

/// A database URL as sqlx reads it. SQLAlchemy's forms (the bot's `DATABASE_URL`)
/// name a driver after the scheme, which says nothing to sqlx: `postgresql+asyncpg://`
/// is `postgresql://`, `mysql+aiomysql://` is `mysql://`. SQLAlchemy's SQLite paths
/// have one slash more: `sqlite+aiosqlite:///data/bot.db` is the relative
/// `sqlite://data/bot.db`, `sqlite+aiosqlite:////var/bot.db` the absolute
/// `sqlite:///var/bot.db`, and no path is an in-memory database. Other URLs are
/// returned as they are.
pub fn normalize_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let Some((base, _driver)) = scheme.split_once('+') else {
        return Cow::Borrowed(url);
    };
    if !base.eq_ignore_ascii_case("sqlite") {
        return Cow::Owned(format!("{base}://{rest}"));
    }
    match rest.strip_prefix('/').unwrap_or(rest) {
        "" => Cow::Borrowed("sqlite::memory:"),
        path => Cow::Owned(format!("sqlite://{path}")),
    }
}

/// sqlx knows MariaDB URLs as `mysql://`.
pub fn mysql_url(url: &str) -> String {
    match url.get(..8) {
        Some(scheme) if scheme.eq_ignore_ascii_case("mariadb:") => format!("mysql:{}", &url[8..]),
        _ => url.to_owned(),
    }
}

/// A datasource URL that cannot be used; carries the datasource name and why.
#[derive(Debug, thiserror::Error)]
pub enum DatasourceError {
    #[error(
        "datasource '{name}': unsupported url scheme '{scheme}' (expected sqlite:, postgres:// or mysql://, e.g. \"postgres://user@127.0.0.1:5432/app\")"
    )]
    Scheme { name: String, scheme: String },
    #[error("datasource '{name}': invalid url: {reason}")]
    Url { name: String, reason: String },
    #[error("datasource name '{0}' is invalid: use letters, digits, '-' and '_'")]
    Name(String),
}

/// One datasource as the operator defined it: a valid name and a URL sqlx reads
/// (normalized), of a known kind. Nothing is connected.
#[derive(Clone, PartialEq, Eq)]
pub struct DatasourceSpec {
    name: String,
    url: String,
    kind: Kind,
    password: Option<String>,
    allow_privileged_role: bool,
}

impl DatasourceSpec {
    /// Checks a datasource: its name, and a URL `sqlite:PATH` / `sqlite://PATH`,
    /// `postgres://...` / `postgresql://...`, `mysql://...` / `mariadb://...` (or
    /// SQLAlchemy's forms of them) that sqlx can read.
    pub fn parse(name: &str, url: &str) -> Result<DatasourceSpec, DatasourceError> {
        let url = &*normalize_url(url);
        if !crate::names::valid_check_name(name) {
            return Err(DatasourceError::Name(name.to_owned()));
        }
        let kind = Kind::of_url(url).ok_or_else(|| DatasourceError::Scheme {
            name: name.to_owned(),
            scheme: url.split(':').next().unwrap_or_default().to_owned(),
        })?;
        let read = match kind {
            Kind::Sqlite => SqliteConnectOptions::from_str(url).map(drop),
            Kind::Postgres => PgConnectOptions::from_str(url).map(drop),
            Kind::MySql => MySqlConnectOptions::from_str(&mysql_url(url)).map(drop),
        };
        read.map_err(|e| DatasourceError::Url {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        let password = url::Url::parse(url)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
            .filter(|p| !p.is_empty());
        Ok(DatasourceSpec {
            name: name.to_owned(),
            url: url.to_owned(),
            kind,
            password,
            allow_privileged_role: false,
        })
    }

    /// Lets plugins query this datasource even when its role can run programs or read
    /// and write files on the database server.
    pub fn unsafe_allow_privileged_role(mut self, allow: bool) -> Self {
        self.allow_privileged_role = allow;
        self
    }

    /// Whether the operator allowed a privileged role.
    pub fn allows_privileged_role(&self) -> bool {
        self.allow_privileged_role
    }

    /// The datasource's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL as sqlx reads it (it may hold a password: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The URL's password, a secret to scrub from every output.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

/// Names the datasource and its kind, never its URL (which may hold a password).
impl std::fmt::Debug for DatasourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasourceSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}
