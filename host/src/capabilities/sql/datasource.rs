//! Datasources: what the operator defined (name → URL of a SQLite, PostgreSQL or
//! MySQL/MariaDB database), parsed and validated once, with pools that connect on
//! first use and the check that refuses a role with powers over the database server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OnceCell;

use super::worker::Workers;
use super::{describe, mysql, postgres, sqlite};
use crate::dbpool::{DbOptions, DbPool};
use crate::dburl::{DatasourceError, DatasourceSpec, Kind};
use crate::limits::{SQL_POOL_SIZE, SQL_ROLE_RECHECK};
use crate::sync::lock;

/// Where a datasource's statements run.
#[derive(Clone)]
pub(super) enum Connections {
    /// On a pool of this process.
    Pool(DbPool),
    /// In worker processes, whatever the dialect (see `worker`).
    Workers(Arc<Workers>),
}

/// One operator-defined database. The pool is created on first use (a clone made
/// before that creates its own).
#[derive(Clone)]
pub struct Datasource {
    /// What the operator defined: name, URL, kind, password, the role opt-out.
    spec: DatasourceSpec,
    options: DbOptions,
    /// The executable that runs plugin statements in worker processes, if any;
    /// otherwise they run in this process.
    workers: Option<PathBuf>,
    pool: OnceCell<Connections>,
    /// When the role was last found to hold no server powers.
    role_checked: Arc<Mutex<Option<Instant>>>,
}

impl Datasource {
    /// Parses and checks a datasource (see [`DatasourceSpec::parse`]).
    pub fn parse(name: &str, url: &str) -> Result<Datasource, DatasourceError> {
        DatasourceSpec::parse(name, url).map(Datasource::new)
    }

    /// The datasource `spec` defines, its connections restricted as the dialect's
    /// module says; nothing connects until a query.
    pub fn new(spec: DatasourceSpec) -> Datasource {
        let url = spec.url();
        // `DatasourceSpec::parse` read the URL the same way: this cannot fail.
        let unreadable = "a DatasourceSpec's URL was read when it was parsed";
        let options = match spec.kind() {
            Kind::Sqlite => DbOptions::Sqlite(sqlite::options(url).expect(unreadable)),
            Kind::Postgres => DbOptions::Postgres(postgres::options(url).expect(unreadable)),
            Kind::MySql => DbOptions::MySql(mysql::options(url).expect(unreadable)),
        };
        Datasource {
            spec,
            options,
            workers: None,
            pool: OnceCell::new(),
            role_checked: Arc::default(),
        }
    }

    /// Lets plugins query this datasource even when its role can run programs or read
    /// and write files on the database server (see [`Datasource::check_role`]).
    pub fn unsafe_allow_privileged_role(mut self, allow: bool) -> Self {
        self.spec = self.spec.unsafe_allow_privileged_role(allow);
        self
    }

    /// The database kind.
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// The datasource's name.
    pub fn name(&self) -> &str {
        self.spec.name()
    }

    /// The datasource's URL (it may hold a password: never log it).
    pub fn url(&self) -> &str {
        self.spec.url()
    }

    pub(super) async fn pool(&self) -> &Connections {
        self.pool
            .get_or_init(|| async {
                match &self.workers {
                    Some(exe) => Connections::Workers(Arc::new(Workers::new(
                        exe.clone(),
                        self.name(),
                        self.url(),
                    ))),
                    None => Connections::Pool(DbPool::lazy(&self.options, SQL_POOL_SIZE, None)),
                }
            })
            .await
    }

    /// Refuses a role that can run programs on the database server or read and write
    /// its files (PostgreSQL: superuser, `pg_execute_server_program`,
    /// `pg_read_server_files`, `pg_write_server_files`, or membership of such a role;
    /// MySQL/MariaDB: `FILE` or `SUPER`, also through a role), unless the operator
    /// allowed it. Connects once outside the pool; SQLite has no roles.
    pub async fn check_role(&self) -> Result<(), RoleError> {
        if self.spec.allows_privileged_role() {
            return Ok(());
        }
        let found = match &self.options {
            DbOptions::Sqlite(_) => return Ok(()),
            DbOptions::Postgres(o) => postgres::server_powers(o).await,
            DbOptions::MySql(o) => mysql::server_powers(o).await,
        };
        match found {
            Ok((_, powers)) if powers.is_empty() => {
                *lock(&self.role_checked) = Some(Instant::now());
                Ok(())
            }
            Ok((role, powers)) => Err(RoleError::Privileged {
                datasource: self.name().to_owned(),
                role,
                powers,
                kind: self.kind(),
            }),
            Err(e) => Err(RoleError::Unreachable {
                datasource: self.name().to_owned(),
                reason: describe(&e),
            }),
        }
    }

    /// [`Datasource::check_role`], unless it passed within [`SQL_ROLE_RECHECK`].
    pub(super) async fn check_role_if_due(&self) -> Result<(), RoleError> {
        let last = *lock(&self.role_checked);
        match last {
            Some(at) if at.elapsed() < SQL_ROLE_RECHECK => Ok(()),
            _ => self.check_role().await,
        }
    }
}

/// Names the datasource and its kind, never its URL (which may hold a password).
impl std::fmt::Debug for Datasource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datasource")
            .field("name", &self.name())
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// Why a datasource's role may not be granted to plugins.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error(
        "datasource '{datasource}': role '{role}' holds {} — a plugin granted this datasource could use {}; connect as a role that can only read ({}), or set `unsafe_allow_privileged_role = true` on the datasource to accept the risk",
        powers.join(", "),
        if powers.len() == 1 { "it" } else { "them" },
        read_only_role_hint(*kind)
    )]
    Privileged {
        datasource: String,
        role: String,
        powers: Vec<String>,
        kind: Kind,
    },
    #[error("datasource '{datasource}': cannot check its role: {reason}")]
    Unreachable { datasource: String, reason: String },
}

/// How to make a role that can only read, in one line (`docs/security.md`, "Read-only roles", has the whole SQL).
fn read_only_role_hint(kind: Kind) -> &'static str {
    match kind {
        Kind::Postgres => {
            "e.g. CREATE ROLE healthhost_reader LOGIN; GRANT pg_read_all_data TO healthhost_reader"
        }
        Kind::MySql => {
            "e.g. CREATE USER 'healthhost_reader'@'%'; GRANT SELECT ON app.* TO 'healthhost_reader'@'%'"
        }
        Kind::Sqlite => "",
    }
}

/// Every datasource the operator defined, by name.
#[derive(Default)]
pub struct Datasources {
    by_name: BTreeMap<String, Arc<Datasource>>,
}

impl Datasources {
    /// Adds a datasource, replacing one of the same name.
    pub fn insert(&mut self, datasource: Datasource) {
        self.by_name
            .insert(datasource.name().to_owned(), Arc::new(datasource));
    }

    /// The datasource called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Datasource>> {
        self.by_name.get(name)
    }

    /// From now on, plugin statements run in worker processes of executable `exe`
    /// (`healthhost sql-worker`), where one that overruns its time or memory can be
    /// killed without the host (see `worker`).
    pub fn run_in_workers(&mut self, exe: &Path) {
        for datasource in self.by_name.values_mut() {
            let mut isolated = (**datasource).clone();
            isolated.workers = Some(exe.to_owned());
            *datasource = Arc::new(isolated);
        }
    }

    /// Passwords found in datasource URLs: secrets to scrub from every output.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.by_name.values().filter_map(|d| d.spec.password())
    }
}
