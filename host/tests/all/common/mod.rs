//! Test helpers shared by the integration tests: a stand-in HTTP server on loopback,
//! the machine's databases (failing with instructions when one is missing), a real
//! `healthhost serve` process ([`Host`]), and shortcuts for loading the guests built
//! from source by `test-artifacts`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use healthhost::capabilities::sql::Datasources;
use healthhost::config::grants::{Grants, Settings};
use healthhost::limits::Limits;
use healthhost::runtime::{Plugin, RunReport, Runtime};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

pub const BIN: &str = env!("CARGO_BIN_EXE_healthhost");

/// Runs `healthhost ARGS` to the end, without its log.
pub fn healthhost(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("HEALTHHOST_LOG", "off")
        .output()
        .expect("the healthhost binary runs")
}

/// A command's standard output, as text.
pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A command's standard error, as text.
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";
/// The least-privilege role plugins use on PostgreSQL (made by [`postgres`]).
pub const POSTGRES_READER_URL: &str = "postgres://healthhost_reader@127.0.0.1:5432/test";
/// The least-privilege account plugins use on MariaDB (made by [`mariadb`]).
pub const MARIADB_READER_URL: &str = "mysql://healthhost_reader@127.0.0.1:3306/test";

/// Makes the read-only role of `docs/security.md` on PostgreSQL; concurrent tests may
/// race to it.
const POSTGRES_READER_SETUP: &str = "DO $$ BEGIN
        CREATE ROLE healthhost_reader LOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END $$;
    GRANT pg_read_all_data TO healthhost_reader;";
/// Makes the read-only account of `docs/security.md` on MariaDB (TCP from 127.0.0.1 matches
/// `localhost` or `%`, depending on name resolution).
const MARIADB_READER_SETUP: &str = "CREATE USER IF NOT EXISTS 'healthhost_reader'@'%';
    CREATE USER IF NOT EXISTS 'healthhost_reader'@'localhost';
    GRANT SELECT ON test.* TO 'healthhost_reader'@'%';
    GRANT SELECT ON test.* TO 'healthhost_reader'@'localhost';";

/// What the stand-in answers to one request.
#[derive(Clone)]
pub enum Reply {
    /// Status, extra headers and body.
    Respond(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Accept the request and never answer.
    Hang,
    /// Answer 200 with this body after a delay of this many milliseconds.
    Slow(u64, &'static str),
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::Respond(
            200,
            vec![("content-type", "application/json".into())],
            body.into(),
        )
    }

    pub fn status(code: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::Respond(
            code,
            vec![("content-type", "application/json".into())],
            body.into(),
        )
    }

    pub fn redirect(location: impl Into<String>) -> Reply {
        Reply::Respond(302, vec![("location", location.into())], Vec::new())
    }
}

/// A minimal HTTP/1.1 server on 127.0.0.1 with an ephemeral port, answering by path.
pub struct StandIn {
    pub origin: String,
    pub requests: Arc<std::sync::Mutex<Vec<String>>>,
}

impl StandIn {
    /// Serves `routes` (path → reply); unknown paths get 404. Runs until the test ends.
    pub async fn start(routes: HashMap<String, Reply>) -> StandIn {
        StandIn::serve(routes, false, None).await
    }

    /// Like [`StandIn::start`], but a request without an `Authorization` header gets
    /// 401 with a Basic challenge, as a registry with passwords answers.
    pub async fn start_basic(routes: HashMap<String, Reply>) -> StandIn {
        StandIn::serve(routes, true, None).await
    }

    /// Like [`StandIn::start`], over HTTPS with the certificate `cert` (PEM) and its
    /// key `key` (PKCS#8 PEM).
    pub async fn start_tls(routes: HashMap<String, Reply>, cert: &str, key: &str) -> StandIn {
        use tokio_rustls::rustls;
        let certs: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(cert.as_bytes())
            .map(Result::unwrap)
            .collect();
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        StandIn::serve(routes, false, Some(acceptor)).await
    }

    async fn serve(
        routes: HashMap<String, Reply>,
        basic: bool,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let origin = format!("{scheme}://{}", listener.local_addr().unwrap());
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        let routes = Arc::new(routes);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (routes, seen, tls) = (routes.clone(), seen.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(socket) = tls.accept(socket).await {
                                answer(socket, &routes, &seen, basic).await;
                            }
                        }
                        None => answer(socket, &routes, &seen, basic).await,
                    }
                });
            }
        });
        StandIn { origin, requests }
    }

    /// A TCP server that accepts connections and never sends a byte; returns its
    /// `host:port`.
    pub async fn start_silent() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        addr
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

/// Reads one request from `socket` and answers it from `routes`, recording its head in
/// `seen`; without an `Authorization` header and with `basic`, a Basic challenge.
async fn answer(
    mut socket: impl AsyncRead + AsyncWrite + Unpin,
    routes: &HashMap<String, Reply>,
    seen: &std::sync::Mutex<Vec<String>>,
    basic: bool,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let anonymous = !head.to_ascii_lowercase().contains("\nauthorization:");
    seen.lock().unwrap().push(head);
    let reply = if basic && anonymous {
        let challenge = ("www-authenticate", "Basic realm=\"test\"".to_owned());
        Reply::Respond(401, vec![challenge], b"{}".to_vec())
    } else {
        routes
            .get(&path)
            .cloned()
            .unwrap_or(Reply::status(404, "{}"))
    };
    match reply {
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Reply::Slow(ms, body) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let out = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(out.as_bytes()).await;
        }
        Reply::Respond(code, headers, body) => {
            let mut out = format!(
                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            let _ = socket.write_all(out.as_bytes()).await;
            let _ = socket.write_all(&body).await;
        }
    }
    let _ = socket.shutdown().await;
}

/// Routes from (path, reply) pairs.
pub fn routes<const N: usize>(pairs: [(&str, Reply); N]) -> HashMap<String, Reply> {
    pairs.into_iter().map(|(p, r)| (p.to_owned(), r)).collect()
}

/// CPU time (user + system) a process has used, in clock ticks, from /proc.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A memory figure of a process's /proc status in KiB: `VmRSS`, `VmHWM` (the peak).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Whether a check (an entry of `/health`, or `/health/{check}`) has run: it has an
/// outcome, and not `loading`.
pub fn has_run(check: &Value) -> bool {
    !check["outcome"].is_null() && check["outcome"] != "loading"
}

/// Connects to the machine's PostgreSQL as its superuser, or fails saying how to
/// start it; makes sure the read-only role of [`POSTGRES_READER_URL`] exists.
pub async fn postgres() -> sqlx::PgPool {
    let pool = sqlx::PgPool::connect(POSTGRES_URL)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required at {POSTGRES_URL} ({e}); start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            )
        });
    sqlx::raw_sql(POSTGRES_READER_SETUP)
        .execute(&pool)
        .await
        .expect("creating the read-only role");
    pool
}

/// Connects to the machine's MariaDB as root, or fails saying how to start it; makes
/// sure the read-only account of [`MARIADB_READER_URL`] exists.
pub async fn mariadb() -> sqlx::MySqlPool {
    let pool = sqlx::MySqlPool::connect(MARIADB_URL)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MariaDB is required at {MARIADB_URL} ({e}); start it with \
             `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`"
            )
        });
    sqlx::raw_sql(MARIADB_READER_SETUP)
        .execute(&pool)
        .await
        .expect("creating the read-only account");
    pool
}

/// A pool on a SQLite file, created if missing.
pub async fn sqlite(path: &std::path::Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    sqlx::SqlitePool::connect_with(options).await.unwrap()
}

/// A table name unique to this test process and call.
pub fn unique_table(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Settings from (key, value) pairs.
pub fn settings<const N: usize>(pairs: [(&str, &str); N]) -> Settings {
    let mut s = Settings::default();
    for (k, v) in pairs {
        s.set(k, v);
    }
    s
}

/// Loads a guest by its artifact path under `name`, with no settings.
pub fn load(
    runtime: &Runtime,
    name: &str,
    wasm: &str,
    grants: Grants,
    limits: Limits,
) -> Arc<Plugin> {
    load_with(runtime, name, wasm, grants, Settings::default(), limits)
}

/// Loads a guest by its artifact path under `name`, with `settings`.
pub fn load_with(
    runtime: &Runtime,
    name: &str,
    wasm: &str,
    grants: Grants,
    settings: Settings,
    limits: Limits,
) -> Arc<Plugin> {
    let path = std::path::Path::new(wasm);
    Arc::new(
        runtime
            .load_file(name, path, None, grants, settings, limits)
            .unwrap_or_else(|e| panic!("loading {wasm}: {e}")),
    )
}

/// Runs the misbehave guest once in `mode` with extra grants, settings and limits.
pub async fn misbehave(
    runtime: &Runtime,
    grants: Grants,
    mut settings: Settings,
    limits: Limits,
    mode: &str,
) -> RunReport {
    settings.set("mode", mode);
    let wasm = test_artifacts::MISBEHAVE;
    let plugin = load_with(runtime, "misbehave", wasm, grants, settings, limits);
    runtime.run(&plugin).await
}

/// A runtime with no datasources.
pub fn runtime() -> Runtime {
    Runtime::new(Datasources::default()).unwrap()
}

/// Limits with a short timeout, for runs meant to hit it. Fuel is unlimited so the
/// wall clock is the limit that trips: a fast machine burns the default fuel in a
/// few hundred milliseconds of spinning.
pub fn quick(timeout_ms: u64) -> Limits {
    Limits {
        timeout: Duration::from_millis(timeout_ms),
        fuel: u64::MAX,
        ..Limits::default()
    }
}

/// A database server the tests prepare tables in (PostgreSQL or MariaDB), for tests
/// that are the same on both.
pub enum Server {
    Postgres(sqlx::PgPool),
    MariaDb(sqlx::MySqlPool),
}

impl Server {
    /// The URL of the server's superuser.
    pub fn url(&self) -> &'static str {
        match self {
            Server::Postgres(_) => POSTGRES_URL,
            Server::MariaDb(_) => MARIADB_URL,
        }
    }

    /// The URL of the read-only role plugins are granted.
    pub fn reader_url(&self) -> &'static str {
        match self {
            Server::Postgres(_) => POSTGRES_READER_URL,
            Server::MariaDb(_) => MARIADB_READER_URL,
        }
    }

    /// Runs statements (several, separated by `;`).
    pub async fn exec(&self, sql: String) {
        let sql = sqlx::AssertSqlSafe(sql);
        match self {
            Server::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Server::MariaDb(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }
        .unwrap();
    }

    /// The first column of the first row, as an integer.
    pub async fn count(&self, sql: String) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql);
        match self {
            Server::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Server::MariaDb(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap()
    }

    /// A new empty database on this server (dropped by the caller), and its URL.
    pub async fn fresh_database(&self) -> (String, String) {
        let name = unique_table("hh_fresh");
        self.exec(format!("CREATE DATABASE {name}")).await;
        let url = format!("{}/{name}", self.url().rsplit_once('/').unwrap().0);
        (name, url)
    }
}

// ---------------------------------------------------------------------------------
// A real `healthhost serve` process

/// A running `healthhost serve` on an ephemeral port, killed when dropped.
pub struct Host {
    pub child: Child,
    pub base: String,
    pub dir: TempDir,
    /// What the server logged after it listened.
    log: Arc<Mutex<Vec<String>>>,
}

/// A fresh folder under the system's temporary directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(unique_table("hh_serve"));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Host {
    /// Writes `config` (with `listen` on an ephemeral port and the compile cache in
    /// the folder) to a fresh folder and starts serving it.
    pub async fn start(config: &str) -> Host {
        Host::start_with_env(config, &[]).await
    }

    /// Like [`Host::start`], with extra environment variables.
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Host {
        Host::spawn(TempDir::new(), config, env).await
    }

    /// Like [`Host::start`], in `dir` (which may hold a plugins folder and cache).
    pub async fn start_in(dir: TempDir, config: &str) -> Host {
        Host::spawn(dir, config, &[]).await
    }

    /// Like [`Host::start_in`], with extra environment variables.
    pub async fn start_in_with_env(dir: TempDir, config: &str, env: &[(&str, &str)]) -> Host {
        Host::spawn(dir, config, env).await
    }

    /// Like [`Host::start_in`], running the executable `bin` instead of [`BIN`].
    pub async fn start_from(bin: &Path, dir: TempDir, config: &str) -> Host {
        Host::spawn_bin(bin, dir, config, &[]).await
    }

    async fn spawn(dir: TempDir, config: &str, env: &[(&str, &str)]) -> Host {
        Host::spawn_bin(Path::new(BIN), dir, config, env).await
    }

    async fn spawn_bin(bin: &Path, dir: TempDir, config: &str, env: &[(&str, &str)]) -> Host {
        let path = dir.0.join("config.toml");
        std::fs::write(
            &path,
            format!("listen = \"127.0.0.1:0\"\ncache_dir = \"cache\"\n{config}"),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&path)
            .env("HEALTHHOST_LOG", "info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        let base = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stderr).lines();
            let mut seen = String::new();
            for line in lines.by_ref() {
                let line = line.unwrap();
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let base = rest.split_whitespace().next().unwrap().to_owned();
                    // Keep draining so the server never blocks on a full pipe, and
                    // keep the lines for tests that read the log.
                    std::thread::spawn(move || {
                        for line in lines.map_while(Result::ok) {
                            kept.lock().unwrap().push(line);
                        }
                    });
                    return base;
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            panic!("the server exited before listening:\n{seen}");
        })
        .await
        .unwrap();
        Host {
            child,
            base,
            dir,
            log,
        }
    }

    /// The lines the server has logged since it listened, so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until no plugin is still loading (`serve` answers while they compile),
    /// without running anything: on-demand checks run when `/health` asks.
    pub async fn wait_loaded(&self) {
        for _ in 0..1200 {
            let (_, _, text) = self.get("/metrics").await;
            if text.contains("\nadtrobot_plugin_loads_pending 0\n") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("plugins still loading after a minute");
    }

    /// Sends the server `signal` (`TERM`, `INT`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Kills the server and hands back its folder.
    pub fn stop(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, TempDir(std::path::PathBuf::new()))
    }

    pub async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    pub async fn json(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.get(path).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
        )
    }

    /// Polls `path` until `done` holds for its JSON (bounded; an ordering wait, not a
    /// timing assertion).
    pub async fn wait_for(&self, path: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
        for _ in 0..600 {
            let (status, body) = self.json(path).await;
            if done(status, &body) {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, body) = self.json(path).await;
        panic!("{path} never reached the expected state: {status} {body}");
    }

    /// POSTs a JSON `body` to `path`, with `Authorization: Bearer <token>` when given;
    /// returns the status, headers and body text.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// A strict reader of the Prometheus text exposition format

/// One series line of a `/metrics` exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Series {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `/metrics` as strictly as Prometheus does, failing with the line number and
/// why: metric and label names valid, label values quoted with only `\\`, `\"` and
/// `\n` escapes, unique label names per series (no `__name__`), every series once,
/// `# TYPE` at most once per family and before its series, no blank lines.
pub fn parse_exposition(text: &str) -> Result<Vec<Series>, String> {
    let mut series: Vec<Series> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut typed = std::collections::HashSet::new();
    let Some(body) = text.strip_suffix('\n') else {
        return Err("the exposition does not end with a newline".into());
    };
    for (i, line) in body.split('\n').enumerate() {
        let fail = |why: &str| Err(format!("line {}: {why}: {line:?}", i + 1));
        if line.is_empty() {
            return fail("blank line");
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !metric_name(name) {
                        return fail("invalid metric name in TYPE");
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return fail("unknown type");
                    }
                    if !typed.insert(name.to_owned()) || series.iter().any(|s| s.name == name) {
                        return fail("TYPE repeated or after the family's series");
                    }
                }
                (Some("HELP"), Some(name), _) if !metric_name(name) => {
                    return fail("invalid metric name in HELP");
                }
                _ => {}
            }
            continue;
        }
        let parsed = match series_line(line) {
            Ok(parsed) => parsed,
            Err(why) => return fail(why),
        };
        let mut names: Vec<&str> = parsed.labels.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return fail("duplicate label names");
        }
        let mut key = parsed.labels.clone();
        key.sort();
        if !seen.insert((parsed.name.clone(), format!("{key:?}"))) {
            return fail("duplicate series");
        }
        series.push(parsed);
    }
    Ok(series)
}

fn metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn label_name(name: &str) -> bool {
    name != "__name__" && !name.contains(':') && metric_name(name)
}

/// `name{labels} value [timestamp]`.
fn series_line(line: &str) -> Result<Series, &'static str> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !metric_name(name) {
        return Err("invalid metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=').ok_or("label without '='")?;
            let label = &inner[..eq];
            if !label_name(label) {
                return Err("invalid label name");
            }
            let quoted = inner[eq + 1..]
                .strip_prefix('"')
                .ok_or("unquoted label value")?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        _ => return Err("invalid escape in a label value"),
                    },
                    (_, '\n') => return Err("raw newline in a label value"),
                    (_, c) => value.push(c),
                }
            };
            labels.push((label.to_owned(), value));
            inner = &quoted[end + 1..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = match fields.next().ok_or("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| "invalid value")?,
    };
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return Err("invalid timestamp");
    }
    if fields.next().is_some() {
        return Err("trailing fields");
    }
    Ok(Series {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The value of the series `name` whose labels include every pair of `labels`.
pub fn series_value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
}

/// Puts `bytes` at `dir/name` the way `docs/drop-ins.md` tells operators to: written under
/// another name, then renamed into place. The modification time is set in the past so
/// the file counts as settled at once.
pub fn drop_file(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}.partial"));
    std::fs::write(&tmp, bytes).unwrap();
    let file = std::fs::File::options().write(true).open(&tmp).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(10))
        .unwrap();
    drop(file);
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}
