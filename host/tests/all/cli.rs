//! `healthhost check` and `healthhost wit` as plugin authors use them: exit codes
//! follow Nagios (0 pass, 1 warn, 2 fail, 3 could not run), bad input is one clear
//! line and exit 3, `--json` is machine-readable, secrets are scrubbed before every
//! cut, and a plugin's text cannot forge lines or drive the terminal.

use std::process::{Command, Output};

use crate::common::{BIN, healthhost, stderr, stdout};

fn check(extra: &[&str]) -> Output {
    let mut args = vec!["check", test_artifacts::MISBEHAVE];
    args.extend_from_slice(extra);
    healthhost(&args)
}

#[test]
fn exit_status_follows_the_verdict() {
    for (mode, code, label) in [
        ("pass", 0, "PASS"),
        ("warn", 1, "WARN"),
        ("fail", 2, "FAIL"),
    ] {
        let out = check(&["--set", &format!("mode={mode}"), "--set", "message=hello"]);
        assert_eq!(out.status.code(), Some(code), "{mode}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.starts_with(&format!("misbehave: {label} - hello\n")),
            "{text}"
        );
        assert!(text.contains("fuel"), "{text}");
        assert!(text.contains("misbehave_value{kind=\"test\"} 1"), "{text}");
    }
}

#[test]
fn broken_limits_exit_3_with_the_reason() {
    let cases = [
        (
            vec![
                "--set",
                "mode=spin",
                "--timeout",
                "200ms",
                "--fuel",
                "100000000000",
            ],
            "ERROR TIMEOUT",
        ),
        (
            vec!["--set", "mode=spin", "--fuel", "100000"],
            "ERROR OUT-OF-FUEL",
        ),
        (
            vec!["--set", "mode=alloc", "--memory", "8MiB"],
            "ERROR MEMORY",
        ),
        (vec!["--set", "mode=panic"], "ERROR TRAP"),
    ];
    for (args, expected) in cases {
        let out = check(&args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert!(
            stdout(&out).contains(expected),
            "{args:?}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn json_report_is_machine_readable() {
    let out = check(&["--set", "mode=warn", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(report["check"], "misbehave");
    assert_eq!(report["outcome"], "warn");
    assert!(report["fuel_consumed"].as_u64().unwrap() > 0);
    assert!(report["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(report["latency_ms"].is_number());

    let out = check(&["--set", "mode=spin", "--fuel", "1000", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "error");
    assert_eq!(report["reason"], "out-of-fuel");
}

#[test]
fn grants_come_from_flags() {
    let out = check(&[
        "--set",
        "mode=sql",
        "--datasource",
        "db=sqlite::memory:",
        "--set",
        "datasource=db",
        "--set",
        "statement=SELECT 40 + 2",
    ]);
    assert_eq!(
        stdout(&out).lines().next().unwrap(),
        "misbehave: PASS - rows:1 first:42"
    );
}

#[test]
fn secrets_from_the_environment_never_reach_the_output() {
    let out = Command::new(BIN)
        .args([
            "check",
            test_artifacts::MISBEHAVE,
            "--set",
            "mode=secret",
            "--secret-env",
            "token=HH_TEST_TOKEN",
        ])
        .env("HH_TEST_TOKEN", "999:TOPSECRET")
        .env("HEALTHHOST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains("TOPSECRET"), "{all}");
    assert!(all.contains("token is [REDACTED]"), "{all}");
}

#[test]
fn bad_input_is_one_line_and_exit_3() {
    let garbage = std::env::temp_dir().join(format!("hh-garbage-{}.wasm", std::process::id()));
    std::fs::write(&garbage, b"not wasm").unwrap();
    let garbage = garbage.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["check", "/nonexistent/plugin.wasm"],
            "cannot read /nonexistent/plugin.wasm",
        ),
        (vec!["check", &garbage], "not a valid WebAssembly component"),
        (
            vec!["check", test_artifacts::WRONG_WORLD],
            "does not implement the healthhost:plugin/check world",
        ),
        (
            vec!["check", test_artifacts::TRIVIAL, "--timeout", "soon"],
            "invalid duration 'soon'",
        ),
        (
            vec!["check", test_artifacts::TRIVIAL, "--memory", "lots"],
            "invalid size 'lots'",
        ),
        (
            vec![
                "check",
                test_artifacts::TRIVIAL,
                "--allow-http",
                "example.com",
            ],
            "invalid http origin 'example.com'",
        ),
        (
            vec!["check", test_artifacts::TRIVIAL, "--datasource", "main"],
            "invalid --datasource 'main'",
        ),
        (
            vec![
                "check",
                test_artifacts::TRIVIAL,
                "--datasource",
                "main=redis://x",
            ],
            "unsupported url scheme 'redis'",
        ),
        (
            vec!["check", test_artifacts::TRIVIAL, "--timeout", "2h"],
            "timeout must be between",
        ),
        (
            vec!["check", test_artifacts::TRIVIAL, "--no-such-flag"],
            "--no-such-flag",
        ),
        (vec!["frobnicate"], "frobnicate"),
    ];
    for (args, expected) in cases {
        let out = healthhost(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line, got {err}"
        );
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    std::fs::remove_file(garbage).unwrap();
}

#[test]
fn wit_prints_the_contract() {
    let out = healthhost(&["wit"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("package healthhost:plugin@"), "{text}");
    assert!(text.contains("world check"), "{text}");
}

#[test]
fn help_documents_every_check_flag() {
    let out = healthhost(&["check", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for flag in [
        "--allow-http",
        "--datasource",
        "--set",
        "--secret-env",
        "--timeout",
        "--fuel",
        "--memory",
        "--json",
        "--cache-dir",
        "--no-cache",
    ] {
        assert!(text.contains(flag), "{flag} missing from help");
    }
}

#[test]
fn validate_refuses_a_granted_datasource_whose_role_holds_server_powers() {
    let dir = std::env::temp_dir().join(format!("hh_cli_roles_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    let write = |opt_in: &str| {
        std::fs::write(
            &config,
            format!(
                "plugins_dir = \"none\"\ncache_dir = \"\"\n\
                 [datasources.main]\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\n{opt_in}\
                 [checks.db]\nplugin = \"{}\"\ngrants.sql = [\"main\"]\n",
                test_artifacts::CHECK_DATABASE
            ),
        )
        .unwrap();
    };
    write("");
    let out = healthhost(&["validate", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("datasource 'main': role 'postgres' holds superuser")
            && err.contains("CREATE ROLE healthhost_reader")
            && err.contains("unsafe_allow_privileged_role"),
        "{err}"
    );
    write("unsafe_allow_privileged_role = true\n");
    let out = healthhost(&["validate", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `healthhost check` of the misbehave guest with a secret `token` from the
/// environment and plugin log lines shown.
fn check_with_secret(secret: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args([
            "check",
            test_artifacts::MISBEHAVE,
            "--secret-env",
            "token=HH_TEST_TOKEN",
        ])
        .args(extra)
        .env("HH_TEST_TOKEN", secret)
        .env("HEALTHHOST_LOG", "info")
        .output()
        .unwrap()
}

const SECRET: &str = "Zq9Secret42";

/// Forms of [`SECRET`] and of its prefixes that must never be printed.
const LEAKS: [&str; 4] = ["Zq9", "%5aq9", "%5A%71", "q9Secret"];

fn assert_no_leak(out: &Output) {
    let all = format!("{}{}", stdout(out), stderr(out));
    for leak in LEAKS {
        assert!(!all.contains(leak), "{leak} printed:\n{all}");
    }
}

#[test]
fn secrets_are_scrubbed_before_the_message_and_log_line_cuts_and_in_any_encoding() {
    let message = format!("message={}{SECRET}", "x".repeat(1020));
    let log = format!("print_log={}{SECRET}", "y".repeat(4092));
    let encoded = "print_stdout=GET /bot%5aq9%53ecret42/x and %5A%71%39%53%65%63%72%65%74%34%32\n";
    let out = check_with_secret(
        SECRET,
        &[
            "--set",
            "mode=samples",
            "--set",
            &message,
            "--set",
            &log,
            "--set",
            encoded,
            "--set",
            "samples=misbehave_value{url=/bot%5aq9%53ecret42/x};misbehave_Zq9Secret42",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_no_leak(&out);
    let text = stdout(&out);
    assert_eq!(
        text.lines().next().unwrap(),
        format!("misbehave: PASS - {}[RED", "x".repeat(1020))
    );
    assert!(
        text.contains("misbehave_value{url=\"/bot[REDACTED]/x\"} 1"),
        "{text}"
    );
    assert!(text.contains("samples dropped: secret 1"), "{text}");
    assert!(
        stderr(&out).contains(&format!("{}[RED", "y".repeat(50))),
        "the log line is scrubbed, then cut at 4 KiB: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("GET /bot[REDACTED]/x and [REDACTED]"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn refused_calls_are_scrubbed_in_their_reasons_too_in_text_and_json() {
    // Both reasons quote the plugin's own text: an HTTP header name the host refuses,
    // and the statement no SQL fixture answers.
    let http = [
        "--set",
        "mode=http",
        "--set",
        "url=https://example.com/",
        "--set",
        "header=Zq9Secret42 x: v",
        "--allow-http",
        "https://example.com",
    ];
    let sql = [
        "--set",
        "mode=sql",
        "--set",
        "statement=SELECT 'Zq9Secret42'",
        "--datasource",
        "main=sqlite::memory:",
        "--sql",
        "main: SELECT 1 -> [[1]]",
    ];
    for (args, reason) in [
        (&http[..], "invalid header name '[REDACTED] x'"),
        (&sql[..], "no fixture answers main: SELECT '[REDACTED]'"),
    ] {
        for json in [false, true] {
            let mut args = args.to_vec();
            if json {
                args.push("--json");
            }
            let out = check_with_secret(SECRET, &args);
            assert_no_leak(&out);
            let all = format!("{}{}", stdout(&out), stderr(&out));
            assert!(all.contains(reason), "{reason} missing:\n{all}");
        }
    }
}

#[test]
fn a_secret_straddling_the_stderr_capture_cut_does_not_leak_into_the_trap_message() {
    use healthhost::limits::STDIO_CAPTURE_BYTES;
    // Short lines up to 4 bytes before the capture cap, then the secret across it.
    let lines = "z".repeat(99) + "\n";
    let mut filler = lines.repeat((STDIO_CAPTURE_BYTES - 4) / 100);
    filler.push_str(&"z".repeat(STDIO_CAPTURE_BYTES - 4 - filler.len() - 1));
    filler.push('\n');
    assert_eq!(filler.len(), STDIO_CAPTURE_BYTES - 4);
    let stderr_setting = format!("print_stderr={filler}{SECRET}");
    let out = check_with_secret(SECRET, &["--set", "mode=panic", "--set", &stderr_setting]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_no_leak(&out);
    let first = stdout(&out).lines().next().unwrap().to_owned();
    assert!(first.starts_with("misbehave: ERROR TRAP - "), "{first}");
    assert!(
        first.ends_with(" [RED"),
        "the last stderr line, scrubbed then cut: {first}"
    );
}

#[test]
fn control_characters_from_a_plugin_cannot_forge_output_lines_or_drive_the_terminal() {
    let message = "down\n\x1b]0;owned\x07\x1b[2J\u{202e}";
    let out = check(&[
        "--name",
        "evil\rname",
        "--set",
        "mode=samples",
        "--set",
        &format!("message={message}"),
        "--set",
        "samples=misbehave_value{kind=a\nFORGED b}",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        !text.contains(['\x1b', '\x07', '\r', '\u{202e}']),
        "{text:?}"
    );
    assert_eq!(
        text.lines().next().unwrap(),
        "evil\\rname: PASS - down\\n\\x1b]0;owned\\x07\\x1b[2J\\u{202e}"
    );
    assert!(
        text.contains("misbehave_value{kind=\"a\\nFORGED b\"} 1"),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("FORGED")), "{text}");

    let out = check(&[
        "--set",
        "mode=fail",
        "--set",
        &format!("message={message}"),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["message"], message, "JSON keeps the text as it is");

    let out = Command::new(BIN)
        .args(["check", test_artifacts::MISBEHAVE])
        .args(["--set", "print_log=ok\nFORGED ERROR host line\x1b[31m"])
        .args(["--set", "print_stdout=out\nFORGED stdout\x1b[2J\n"])
        .env("HEALTHHOST_LOG", "info")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(!err.lines().any(|l| l.starts_with("FORGED")), "{err}");
    assert!(
        err.contains("ok\\nFORGED ERROR host line\\x1b[31m"),
        "{err}"
    );
    assert!(err.contains("FORGED stdout\\x1b[2J"), "{err}");
}

#[test]
fn check_shows_the_samples_it_keeps_and_why_it_drops_the_others() {
    let samples = "samples=misbehave_value{a=1,a=2};misbehave_value{le=1};misbehave_value=inf;misbehave_value{kind=ok}";
    let out = check(&["--set", "mode=samples", "--set", samples]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("  misbehave_value{kind=\"ok\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("  samples dropped: invalid-value 1, invalid-label 1, reserved-label 1\n"),
        "{text}"
    );

    let out = check(&[
        "--set",
        "mode=samples",
        "--set",
        samples,
        "--set",
        "repeat=10001",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["samples"].as_array().unwrap().len(),
        healthhost::limits::REPORT_MAX_SAMPLES
    );
    assert_eq!(
        report["samples_dropped"],
        serde_json::json!({"invalid-value": 10001, "invalid-label": 10001, "reserved-label": 10001, "too-many": 10001 - 64})
    );
}

#[test]
fn the_adtrobot_production_profile_validates() {
    // Plugin paths point at the release build; the tests' builds stand in for it.
    let dir = std::env::temp_dir().join(format!("hh_cli_adtrobot_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut profile = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/adtrobot.toml"
    ))
    .unwrap();
    for (name, built) in [
        ("check_database", test_artifacts::CHECK_DATABASE),
        ("check_scheduler", test_artifacts::CHECK_SCHEDULER),
        ("check_openrouter", test_artifacts::CHECK_OPENROUTER),
        ("check_telegram", test_artifacts::CHECK_TELEGRAM),
    ] {
        let placeholder = format!("../target/wasm32-wasip2/release/{name}.wasm");
        assert!(profile.contains(&placeholder), "{placeholder}");
        profile = profile.replace(&placeholder, built);
    }
    let config = dir.join("adtrobot.toml");
    std::fs::write(&config, profile).unwrap();
    let validate = |env: &[(&str, &str)]| {
        Command::new(BIN)
            .args(["validate", "--config", config.to_str().unwrap()])
            .env("HEALTHHOST_LOG", "off")
            .env_remove("HEALTHHOST_READER_URL")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let bot_env = [
        (
            "DATABASE_URL",
            "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        ),
        (
            "HEALTHHOST_READER_URL",
            "postgresql://healthhost_reader@127.0.0.1:5432/test",
        ),
        ("HEALTHHOST_USAGE_TOKEN", "usage-token"),
        ("HEALTHHOST_DETAILS_TOKEN", "details-token"),
    ];
    let out = validate(&bot_env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ok, 4 check(s), 2 datasource(s)"),
        "{}",
        stdout(&out)
    );
    // Without the reader's URL the error names the variable.
    let out = validate(&bot_env[..1]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("the environment variable HEALTHHOST_READER_URL is not set"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_plugin_file_is_named_once_with_what_to_check() {
    let out = healthhost(&[
        "check",
        "/nonexistent/target/wasm32-wasip2/release/mine.wasm",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("crate-type = [\"cdylib\"]"), "{err}");
}

#[test]
fn check_keeps_compiled_plugins_in_the_cache_unless_told_not_to() {
    let dir = std::env::temp_dir().join(format!("hh_cli_cache_{}", std::process::id()));
    let cache = dir.join("cache");
    let entries = || {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "cwasm")
                })
                .count()
            })
            .unwrap_or(0)
    };
    let out = check(&["--no-cache"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!cache.exists());
    // The entry's inode: a store renames a new file into place, a hit leaves it.
    let inode = || {
        use std::os::unix::fs::MetadataExt;
        let entry = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .unwrap();
        std::fs::metadata(entry).unwrap().ino()
    };
    let mut first = None;
    for _ in 0..2 {
        let out = check(&["--cache-dir", cache.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(entries(), 1, "one entry");
        let now = inode();
        assert_eq!(
            *first.get_or_insert(now),
            now,
            "the second check used the entry"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_reader_that_goes_away_ends_no_command_with_a_panic() {
    // As `healthhost wit | head -0`: stdout is a pipe whose reader is already gone.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .arg("wit")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn thresholds_judge_the_samples_and_nagios_gets_its_line() {
    let dir = crate::common::TempDir::new();
    let grants = dir.0.join("misbehave.toml");
    std::fs::write(
        &grants,
        "[thresholds.misbehave_latency_seconds]\nwarn = \"0.5\"\ncrit = \"2\"\n\
         [[thresholds.misbehave_queue]]\nlabels = { queue = \"sms\" }\ncrit = \"10\"\n",
    )
    .unwrap();
    let grants = grants.display().to_string();
    let run = |latency: &str, sms: &str| {
        let samples = format!(
            "samples=misbehave_latency_seconds={latency};misbehave_queue{{queue=sms}}={sms};\
             misbehave_queue{{queue=mail}}=50"
        );
        let args = [
            "--grants",
            &grants,
            "--set",
            "mode=samples",
            "--set",
            &samples,
        ];
        check(&[&args[..], &["--set", "message=ok", "--nagios"]].concat())
    };
    let out = run("0.7", "3");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "MISBEHAVE WARNING - ok; warn threshold \"0.5\" crossed: misbehave_latency_seconds = 0.7 \
         | 'misbehave_latency_seconds'=0.7s;0.5;2 'misbehave_queue{queue:sms}'=3;;10 \
         'misbehave_queue{queue:mail}'=50\n"
    );
    let out = run("0.1", "11");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).starts_with(
            "MISBEHAVE CRITICAL - ok; crit threshold \"10\" crossed: \
             misbehave_queue{queue=\"sms\"} = 11 |"
        ),
        "{}",
        stdout(&out)
    );
    // The human report says the same.
    let samples = "samples=misbehave_latency_seconds=3";
    let out = check(&[
        "--grants",
        &grants,
        "--set",
        "mode=samples",
        "--set",
        samples,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).starts_with(
            "misbehave: FAIL - crit threshold \"2\" crossed: misbehave_latency_seconds = 3\n"
        ),
        "{}",
        stdout(&out)
    );

    // A run without a verdict is UNKNOWN, with the reason.
    let out = check(&["--set", "mode=spin", "--timeout", "200ms", "--nagios"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout(&out).starts_with("MISBEHAVE UNKNOWN - timeout: "),
        "{}",
        stdout(&out)
    );

    // A range that is none is refused, named by its key.
    std::fs::write(
        dir.0.join("bad.toml"),
        "thresholds.x_seconds.warn = \"10:5\"\n",
    )
    .unwrap();
    let bad = dir.0.join("bad.toml").display().to_string();
    let out = check(&["--grants", &bad, "--set", "mode=pass"]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("thresholds.x_seconds.warn") && err.contains("'10:5' starts above its end"),
        "{err}"
    );
}
