//! Tests of the config file: a good file resolves, every problem is located, grant
//! files, usage, and environment references.

use super::resolve::resolve_sqlite_path;
use super::*;
use crate::limits;

fn parse(source: &str) -> Result<Config, Vec<Problem>> {
    Config::parse(source, Path::new("/etc/hh"), |var| match var {
        "TOKEN" => Some("s3cret".to_owned()),
        _ => None,
    })
}

const GOOD: &str = r#"
listen = "0.0.0.0:9090"
namespace = "svc"

[datasources.main]
url = "sqlite:data/app.db"

[checks.database]
plugin = "plugins/check_database.wasm"
critical = true
interval = "10s"
timeout = "3s"
grants.sql = ["main"]
grants.metrics = ["database_latency_seconds"]
settings.datasource = "main"

[checks.telegram]
plugin = "/opt/check_telegram.wasm"
grants.http = ["https://api.telegram.org"]
settings = { token = "${TOKEN}", missing = "${NOPE}", retries = 3 }
"#;

#[test]
fn resolves_a_good_file() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.namespace, "svc");
    let db = &config.checks[0];
    assert_eq!(db.name, "database");
    assert_eq!(db.plugin, Path::new("/etc/hh/plugins/check_database.wasm"));
    assert!(db.critical);
    assert_eq!(db.interval, Duration::from_secs(10));
    assert_eq!(db.limits.timeout, Duration::from_secs(3));
    assert_eq!(db.max_age, Duration::from_secs(33));
    assert!(db.grants.sql.allows("main"));
    assert_eq!(
        db.grants.metrics.iter().collect::<Vec<_>>(),
        ["database_latency_seconds"]
    );
    let tg = &config.checks[1];
    assert!(!tg.critical);
    assert_eq!(tg.settings.get("token"), Some("s3cret"));
    assert_eq!(tg.settings.secrets().collect::<Vec<_>>(), ["s3cret"]);
    assert_eq!(tg.settings.get("missing"), None);
    assert_eq!(tg.settings.get("retries"), Some("3"));
}

#[test]
fn database_url_overrides_main() {
    let config = Config::parse(GOOD, Path::new("/x"), |v| {
        (v == DATABASE_URL_ENV).then(|| "postgres://db/app".to_owned())
    })
    .unwrap();
    assert_eq!(config.datasources[0].kind(), crate::dburl::Kind::Postgres);
}

#[test]
fn database_url_in_sqlalchemy_form_is_accepted_and_a_bad_one_names_the_variable() {
    let with = |url: &'static str| {
        Config::parse(GOOD, Path::new("/srv/bot"), move |v| {
            (v == DATABASE_URL_ENV).then(|| url.to_owned())
        })
    };
    let config = with("postgresql+asyncpg://bot@db:5432/bot").unwrap();
    assert_eq!(config.datasources[0].url(), "postgresql://bot@db:5432/bot");
    let config = with("sqlite+aiosqlite:///data/bot.db").unwrap();
    assert_eq!(config.datasources[0].url(), "sqlite:///srv/bot/data/bot.db");
    let problems = with("redis://db").err().unwrap();
    assert_eq!(
        problems[0].key, "datasources.main.url (replaced by the environment variable DATABASE_URL)",
        "{problems:?}"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let problems = parse("listen = \"0.0.0.0:1\"\ncolour = \"blue\"\n")
        .err()
        .unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, 2);
    assert!(problems[0].message.contains("colour"), "{:?}", problems[0]);
}

#[test]
fn every_problem_is_reported_at_once_with_its_line_and_key() {
    let source = r#"listen = "nowhere"

[datasources.main]
url = "redis://x"

[checks.web]
plugin = "web.wasm"
interval = "often"
memory = "lots"
grants.http = ["example.com"]
grants.sql = ["missing"]
grants.metrics = ["ok_name", "bad-name", "health_check_status", "check_run_duration_seconds_count"]
"#;
    let problems = parse(source).err().unwrap();
    let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (1, "listen"),
            (4, "datasources.main.url"),
            (8, "checks.web.interval"),
            (9, "checks.web.memory"),
            (10, "checks.web.grants.http"),
            (11, "checks.web.grants.sql"),
            (12, "checks.web.grants.metrics"),
            (12, "checks.web.grants.metrics"),
            (12, "checks.web.grants.metrics"),
        ]
    );
}

#[test]
fn max_concurrent_runs_fits_the_plugin_pool_twice() {
    let most = limits::MAX_CONCURRENT_RUNS;
    // Non-critical and critical runs, each up to the setting, never fill the pool.
    assert!(2 * most <= limits::POOL_INSTANCES as usize);
    assert_eq!(
        parse(&format!("max_concurrent_runs = {most}"))
            .unwrap()
            .max_concurrent_runs,
        most
    );
    for value in [0, most + 1] {
        let problems = parse(&format!("max_concurrent_runs = {value}"))
            .err()
            .unwrap();
        assert_eq!(problems[0].key, "max_concurrent_runs");
        assert!(
            problems[0]
                .message
                .contains(&format!("between 1 and {most}")),
            "{}",
            problems[0].message
        );
    }
}

#[test]
fn compile_memory_is_a_size_with_a_floor() {
    assert_eq!(
        parse("").unwrap().compile_memory,
        limits::DEFAULT_COMPILE_MEMORY
    );
    assert_eq!(
        parse("compile_memory = \"512MiB\"").unwrap().compile_memory,
        512 * 1024 * 1024
    );
    for (value, says) in [
        ("1MiB", "must be at least 16MiB"),
        ("lots", "invalid size 'lots'"),
    ] {
        let problems = parse(&format!("compile_memory = \"{value}\""))
            .err()
            .unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "compile_memory");
        assert!(
            problems[0].message.contains(says),
            "{}",
            problems[0].message
        );
    }
}

#[test]
fn a_grant_file_is_a_check_table_without_plugin() {
    let config = parse(GOOD).unwrap();
    let wasm = PathBuf::from("/etc/hh/plugins.d/redis.wasm");
    let short_pin = config
        .drop_in(
            "redis",
            Some(wasm.clone()),
            Some("critical = true\ngrants.sql = [\"main\"]\nsha256 = \"AB\"\n"),
            |_| None,
        )
        .err()
        .unwrap();
    let got: Vec<(usize, &str)> = short_pin.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(got, [(3, "sha256")]);

    let problems = config
        .drop_in(
            "redis",
            Some(wasm.clone()),
            Some("plugin = \"x.wasm\"\ngrants.sql = [\"other\"]\n"),
            |_| None,
        )
        .err()
        .unwrap();
    let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(got, [(1, "plugin"), (2, "grants.sql")]);

    let none = config
        .drop_in("redis", Some(wasm.clone()), None, |_| None)
        .unwrap();
    assert_eq!(none.source, Source::Folder);
    assert!(!none.critical);
    assert!(none.grants.http.is_empty());
    assert_eq!(none.plugin, wasm);
    assert_eq!(none.limits, Limits::default());
}

#[test]
fn drop_in_folder_and_cache_resolve_against_the_config_folder() {
    let config = parse("plugins_dir = \"extra\"\ncache_dir = \"\"\n").unwrap();
    assert_eq!(config.plugins_dir, Path::new("/etc/hh/extra"));
    assert_eq!(config.cache_dir, None);
    let config = parse("").unwrap();
    assert_eq!(config.plugins_dir, Path::new("/etc/hh/plugins.d"));
    assert_eq!(config.watch_interval, DEFAULT_WATCH_INTERVAL);
}

#[test]
fn usage_defaults_leave_the_endpoint_off() {
    let config = parse(GOOD).unwrap();
    assert_eq!(
        config.usage,
        UsageConfig {
            token: None,
            read_token: None,
            max_batch: limits::DEFAULT_MAX_BATCH,
            max_label_values: limits::DEFAULT_MAX_LABEL_VALUES,
            datasource: "main".to_owned(),
            migrate: true,
        }
    );
    assert_eq!(config.usage_datasource().unwrap().name(), "main");
}

#[test]
fn usage_token_comes_from_the_environment_and_an_unset_variable_turns_it_off() {
    let with = |token: &str| {
        parse(&format!(
            "[datasources.main]\nurl = \"sqlite:a.db\"\n[usage]\ntoken = \"{token}\"\nmax_batch = 10\nmax_label_values = 3\n"
        ))
        .unwrap()
        .usage
    };
    let usage = with("${TOKEN}");
    assert_eq!(usage.token.as_deref(), Some("s3cret"));
    assert_eq!((usage.max_batch, usage.max_label_values), (10, 3));
    assert_eq!(with("${NOPE}").token, None);
    assert_eq!(with("literal").token.as_deref(), Some("literal"));
}

#[test]
fn usage_read_token_is_its_own_setting_and_needs_a_datasource() {
    let with = |usage: &str| {
        parse(&format!(
            "[datasources.main]\nurl = \"sqlite:a.db\"\n[usage]\n{usage}\n"
        ))
        .unwrap()
        .usage
    };
    let usage = with("read_token = \"${TOKEN}\"");
    assert_eq!(
        (usage.token, usage.read_token.as_deref()),
        (None, Some("s3cret"))
    );
    let usage = with("token = \"w\"\nread_token = \"${NOPE}\"");
    assert_eq!(
        (usage.token.as_deref(), usage.read_token),
        (Some("w"), None)
    );
    let problems = parse("[usage]\nread_token = \"r\"\n").err().unwrap();
    let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        got,
        [(1, "usage.datasource")],
        "reading needs the table too"
    );
    let problems = parse("[datasources.main]\nurl = \"sqlite:a.db\"\n[usage]\nread_token = \"\"\n")
        .err()
        .unwrap();
    let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(got, [(4, "usage.read_token")]);
}

#[test]
fn usage_problems_are_located() {
    let source = r#"[datasources.other]
url = "sqlite:a.db"

[usage]
token = ""
max_batch = 0
max_label_values = 0
datasource = "missing"
"#;
    let problems = parse(source).err().unwrap();
    let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (5, "usage.token"),
            (6, "usage.max_batch"),
            (7, "usage.max_label_values"),
            (8, "usage.datasource"),
        ]
    );
    let problems = parse("[usage]\ntoken = \"t\"\nmax_batch = 10001\n")
        .err()
        .unwrap();
    let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(got, [(1, "usage.datasource"), (3, "usage.max_batch")]);
}

#[test]
fn relative_sqlite_paths_resolve_against_the_config_folder() {
    assert_eq!(
        resolve_sqlite_path("sqlite:data/a.db", Path::new("/etc/hh")),
        "sqlite:///etc/hh/data/a.db"
    );
    assert_eq!(
        resolve_sqlite_path("sqlite:///abs/a.db", Path::new("/etc/hh")),
        "sqlite:///abs/a.db"
    );
    assert_eq!(
        resolve_sqlite_path("sqlite::memory:", Path::new("/etc/hh")),
        "sqlite::memory:"
    );
    assert_eq!(
        resolve_sqlite_path("postgres://x/y", Path::new("/etc/hh")),
        "postgres://x/y"
    );
}

#[test]
fn history_defaults_to_main_and_every_bad_key_is_named() {
    let config = parse("[datasources.main]\nurl = \"sqlite::memory:\"\n").unwrap();
    assert_eq!(config.history.datasource.as_deref(), Some("main"));
    assert_eq!(config.history.retention.raw, limits::HISTORY_RAW_RETENTION);
    assert_eq!(config.history.queue_rows, limits::HISTORY_QUEUE_ROWS);
    let memory_only = parse("listen = \"127.0.0.1:1\"\n").unwrap();
    assert_eq!(memory_only.history.datasource, None);

    let source = r#"[datasources.main]
url = "sqlite::memory:"

[history]
datasource = "elsewhere"
node = ""
queue_rows = 0
queue_bytes = "lots"
raw_retention = "10m"
day_retention = "soon"
"#;
    let problems = parse(source).err().unwrap();
    let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (5, "history.datasource"),
            (6, "history.node"),
            (7, "history.queue_rows"),
            (8, "history.queue_bytes"),
            (9, "history.raw_retention"),
            (10, "history.day_retention"),
        ]
    );
    assert!(
        problems[4].to_string().contains("must be at least 1h"),
        "{}",
        problems[4]
    );
}

#[test]
fn an_slo_is_a_percentage_over_an_uptime_window() {
    let check = |extra: &str| format!("[checks.c]\nplugin = \"c.wasm\"\n{extra}\n");
    let config = parse(&check("slo = \"99.9%\"")).unwrap();
    let slo = config.checks[0].slo.unwrap();
    assert!((slo.target - 0.999).abs() < 1e-12);
    assert_eq!(slo.window, Window::Month);
    let config = parse(&check("slo = \"99 %\"\nslo_window = \"7d\"")).unwrap();
    assert_eq!(config.checks[0].slo.unwrap().window, Window::Week);
    assert_eq!(parse(&check("")).unwrap().checks[0].slo, None);
    for bad in [
        "slo = \"100%\"",
        "slo = \"99.9\"",
        "slo = \"0%\"",
        "slo = \"x%\"",
    ] {
        let problems = parse(&check(bad)).err().unwrap();
        assert_eq!(problems[0].key, "checks.c.slo", "{bad}");
    }
    let problems = parse(&check("slo = \"99%\"\nslo_window = \"1y\""))
        .err()
        .unwrap();
    assert!(
        problems[0]
            .to_string()
            .contains("one of 24h, 7d, 30d, 90d, 365d"),
        "{}",
        problems[0]
    );
    let problems = parse(&check("slo_window = \"7d\"")).err().unwrap();
    assert_eq!(problems[0].key, "checks.c.slo_window");
}

#[test]
fn thresholds_are_nagios_ranges_per_sample_and_labels() {
    let check = |extra: &str| format!("[checks.c]\nplugin = \"c.wasm\"\n{extra}\n");
    let config = parse(&check(
        "thresholds.db_latency_seconds = { warn = \"0.5\", crit = \"2\" }\n\
         [[checks.c.thresholds.queue]]\nlabels = { queue = \"sms\" }\ncrit = \"@10:20\"\n\
         [[checks.c.thresholds.queue]]\nwarn = \"~:5\"\n",
    ))
    .unwrap();
    let t = &config.checks[0].thresholds;
    assert_eq!(t.len(), 3);
    assert_eq!(t[0].sample, "db_latency_seconds");
    assert_eq!(t[0].warn.as_ref().unwrap().as_str(), "0.5");
    assert_eq!(t[0].crit.as_ref().unwrap().as_str(), "2");
    assert_eq!(t[1].labels, [("queue".to_owned(), "sms".to_owned())]);
    assert!(t[1].crit.as_ref().unwrap().alerts(15.0));
    assert!(t[1].warn.is_none() && t[2].crit.is_none());
    assert!(parse(&check("")).unwrap().checks[0].thresholds.is_empty());
    for (bad, key, says) in [
        (
            "thresholds.q = { warn = \"5:1\" }",
            "checks.c.thresholds.q.warn",
            "starts above",
        ),
        (
            "thresholds.q = { crit = \"high\" }",
            "checks.c.thresholds.q.crit",
            "Nagios range",
        ),
        (
            "thresholds.q = { labels = { a = \"b\" } }",
            "checks.c.thresholds.q",
            "needs `warn`",
        ),
        (
            "thresholds.\"q-1\" = { warn = \"1\" }",
            "checks.c.thresholds.q-1",
            "sample name",
        ),
    ] {
        let problems = parse(&check(bad)).err().unwrap();
        assert_eq!(problems[0].key, key, "{bad}");
        assert!(problems[0].to_string().contains(says), "{}", problems[0]);
    }
    // An unknown key is refused, not ignored.
    assert!(parse(&check("thresholds.q = { warning = \"1\" }")).is_err());
}

#[test]
fn oci_plugins_registries_and_trust_resolve_and_every_mistake_is_named() {
    let config = parse(
        r#"
registry_mirror = "mirror"
[registries."reg.example:5000"]
username = "ci"
password = "${TOKEN}"
timeout = "30s"
[trust."reg.example:5000/checks"]
keys = ["keys/team.pub"]
keyless = [{ identity = "ci@example.com", issuer = "https://issuer.example" }]
[sigstore]
fulcio_roots = ["sigstore/fulcio.pem"]
rekor_keys = ["sigstore/rekor.pub"]
[checks.t]
plugin = "oci://reg.example:5000/checks/t:1"
"#,
    )
    .unwrap();
    let reference = config.checks[0].oci.as_ref().unwrap();
    assert_eq!(
        (reference.repository.as_str(), reference.tag.as_deref()),
        ("checks/t", Some("1"))
    );
    let settings = config.oci.settings("reg.example:5000");
    assert_eq!(settings.password.as_deref(), Some("s3cret"));
    assert_eq!(settings.timeout, Duration::from_secs(30));
    assert!(!settings.insecure);
    assert_eq!(
        config.oci.trust[0].keys,
        [PathBuf::from("/etc/hh/keys/team.pub")]
    );
    assert_eq!(config.oci.mirror, Some(PathBuf::from("/etc/hh/mirror")));
    assert_eq!(config.oci.trust[0].keyless[0].identity, "ci@example.com");
    assert_eq!(
        config.oci.rekor_keys,
        [PathBuf::from("/etc/hh/sigstore/rekor.pub")]
    );

    let problems = parse(
        r#"
[registries."https://reg.example"]
password = "${NOPE}"
[registries."plain.example"]
insecure = true
ca = "ca.pem"
[trust."reg.example"]
[trust."reg.example/ci"]
keyless = [{ identity = "ci@example.com", issuer = "" }]
[checks.t]
plugin = "oci://reg.example/Checks:1"
"#,
    )
    .unwrap_err();
    let text: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect();
    for expected in [
        "registries.\"https://reg.example\": a registry is written host or host:port",
        "registries.\"https://reg.example\".password: the variable NOPE is unset or empty",
        "registries.\"plain.example\".ca: `ca` is for an HTTPS registry",
        "trust.\"reg.example\": names no keys",
        "trust.\"reg.example/ci\".keyless: a keyless entry names both an identity and an issuer",
        "sigstore: keyless trust needs its root: fulcio_roots",
        "checks.t.plugin: 'Checks' is not a repository name",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(expected)),
            "{expected}: {text:#?}"
        );
    }
}
