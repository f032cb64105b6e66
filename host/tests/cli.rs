//! `healthhost check` and `healthhost wit` as plugin authors use them: exit codes
//! follow Nagios (0 pass, 1 warn, 2 fail, 3 could not run), bad input is one clear
//! line and exit 3, and `--json` is machine-readable.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_healthhost");

fn healthhost(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("HEALTHHOST_LOG", "off")
        .output()
        .expect("the healthhost binary runs")
}

fn check(extra: &[&str]) -> Output {
    let mut args = vec!["check", test_artifacts::MISBEHAVE];
    args.extend_from_slice(extra);
    healthhost(&args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
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
