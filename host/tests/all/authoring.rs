//! What plugin authors use beside `check` itself: fixtures that answer HTTP and SQL
//! offline (under the same grants and limits), the diagnostics beside the verdict, grant
//! files, and the contract check before compiling. The built-in plugins are the
//! subjects: real components, answered by fixtures instead of the network.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::common::{BIN, healthhost, stderr, stdout};

use serde_json::Value;

const MODELS: &str = "https://openrouter.ai/api/v1/models";

/// `check` on the openrouter built-in, granted its origin.
fn openrouter(extra: &[&str]) -> Output {
    let mut args = vec![
        "check",
        test_artifacts::CHECK_OPENROUTER,
        "--allow-http",
        "https://openrouter.ai",
    ];
    args.extend_from_slice(extra);
    healthhost(&args)
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(output), stderr(output)))
}

/// A scratch folder for this test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hh_authoring_{test}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn fixtures_answer_http_so_pass_and_fail_are_repeatable_offline() {
    let pass = openrouter(&["--respond", &format!("GET {MODELS} -> 200 {{\"data\":[]}}")]);
    assert_eq!(
        pass.status.code(),
        Some(0),
        "{}{}",
        stdout(&pass),
        stderr(&pass)
    );
    assert!(
        stdout(&pass).contains("openrouter_latency_seconds{}"),
        "{}",
        stdout(&pass)
    );

    let fail = openrouter(&["--respond", &format!("{MODELS} -> 503")]);
    assert_eq!(fail.status.code(), Some(2));
    assert!(
        stdout(&fail).starts_with("check_openrouter: FAIL - Status 503\n"),
        "{}",
        stdout(&fail)
    );
}

#[test]
fn a_call_no_fixture_answers_is_refused_with_the_list_of_fixtures() {
    let out = openrouter(&[
        "--respond",
        "GET https://openrouter.ai/api/v1/other -> 200",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let report = json(&out);
    let expected = format!(
        "no fixture answers GET {MODELS}; the fixtures are: GET https://openrouter.ai/api/v1/other"
    );
    assert_eq!(report["message"], expected.as_str());
    assert_eq!(
        report["diagnostics"]["refused"],
        serde_json::json!([{"capability": "http", "call": format!("GET {MODELS}"), "why": expected}])
    );
}

#[test]
fn fixtures_do_not_widen_grants() {
    let out = healthhost(&[
        "check",
        test_artifacts::CHECK_OPENROUTER,
        "--respond",
        &format!("GET {MODELS} -> 200"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(
        text.starts_with("check_openrouter: FAIL - origin https://openrouter.ai:443 not granted\n"),
        "{text}"
    );
    assert!(
        text.contains("note: http call refused: GET https://openrouter.ai/api/v1/models (origin https://openrouter.ai:443 not granted)"),
        "{text}"
    );
}

#[test]
fn a_fixture_delay_past_the_time_left_is_a_timeout() {
    let dir = scratch("delay");
    let fixtures = dir.join("slow.toml");
    std::fs::write(
        &fixtures,
        format!("[[http]]\nurl = \"{MODELS}\"\ndelay = \"30s\"\n"),
    )
    .unwrap();
    let out = openrouter(&["--fixtures", fixtures.to_str().unwrap(), "--timeout", "1s"]);
    // The host leaves the plugin a share of its time to report the timeout itself.
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("check_openrouter: FAIL - Timeout\n"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fixtures_answer_sql_for_a_datasource_the_grant_file_names() {
    let dir = scratch("sql");
    let grants = dir.join("scheduler.toml");
    std::fs::write(
        &grants,
        "grants.sql = [\"main\"]\ngrants.metrics = [\"scheduler_jobs\"]\nsettings = { min_jobs = 2 }\n",
    )
    .unwrap();
    let statement = "main: SELECT next_run_time, id FROM apscheduler_jobs";
    let run = |rows: &str| {
        healthhost(&[
            "check",
            test_artifacts::CHECK_SCHEDULER,
            "--grants",
            grants.to_str().unwrap(),
            "--sql",
            &format!("{statement} -> {rows}"),
            "--json",
        ])
    };
    let far = 4_000_000_000_u64;
    let out = run(&format!("[[{far}, \"a\"], [null, \"b\"]]"));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let report = json(&out);
    assert_eq!(report["message"], "2 jobs scheduled");
    // Granted: scheduler_jobs; the other two samples would stay out of /metrics.
    let not_exported: Vec<&str> = report["diagnostics"]["samples_not_exported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        not_exported,
        ["scheduler_overdue_jobs", "scheduler_latency_seconds"]
    );

    let out = run(&format!("[[{far}, \"a\"]]"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        json(&out)["message"],
        "1 jobs scheduled, expected at least 2"
    );

    let out = run("error: no such table: apscheduler_jobs");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out)["message"], "scheduler job store not found");

    // Without fixtures, a granted datasource must be defined.
    let out = healthhost(&[
        "check",
        test_artifacts::CHECK_SCHEDULER,
        "--grants",
        grants.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out)
            .contains("grants datasource 'main', which is not defined: pass --datasource main=URL"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn diagnostics_name_unread_settings_with_the_likely_key_and_defaults_used() {
    let out = openrouter(&[
        "--respond",
        &format!("GET {MODELS} -> 200"),
        "--set",
        "timeoutms=50",
        "--set",
        "colour=blue",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for note in [
        "note: setting 'colour' was given but never read\n",
        "note: setting 'timeoutms' was given but never read; did you mean 'timeout_ms'?\n",
        "note: setting 'base_url' was read but not given (the plugin's default applied)\n",
        "note: serve would not export sample 'openrouter_latency_seconds': its name is not in grants.metrics\n",
    ] {
        assert!(text.contains(note), "missing {note:?} in:\n{text}");
    }
}

#[test]
fn a_grant_file_supplies_grants_settings_and_limits_and_flags_override_it() {
    let dir = scratch("grants");
    let grants = dir.join("openrouter.toml");
    std::fs::write(
        &grants,
        "timeout = \"2s\"\ngrants.http = [\"http://127.0.0.1:9\"]\ngrants.metrics = [\"openrouter_latency_seconds\"]\n[settings]\nbase_url = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let grants = grants.to_str().unwrap();
    let out = healthhost(&[
        "check",
        test_artifacts::CHECK_OPENROUTER,
        "--grants",
        grants,
        "--respond",
        "GET http://127.0.0.1:9/api/v1/models -> 200",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let diagnostics = &json(&out)["diagnostics"];
    assert_eq!(diagnostics["samples_not_exported"], serde_json::json!([]));
    assert_eq!(
        diagnostics["settings_missing"],
        serde_json::json!(["timeout_ms"])
    );

    // A flag's setting overrides the file's; the file's origin is still granted.
    let out = healthhost(&[
        "check",
        test_artifacts::CHECK_OPENROUTER,
        "--grants",
        grants,
        "--set",
        "base_url=https://openrouter.ai",
        "--respond",
        &format!("GET {MODELS} -> 200"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).contains("origin https://openrouter.ai:443 not granted"),
        "{}",
        stdout(&out)
    );

    // A broken grant file is named with line and column.
    std::fs::write(
        dir.join("bad.toml"),
        "timeout = \"2s\"\nintreval = \"5s\"\n",
    )
    .unwrap();
    let bad = dir.join("bad.toml");
    let out = healthhost(&[
        "check",
        test_artifacts::CHECK_OPENROUTER,
        "--grants",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains(&format!("{}:2:1:", bad.display())),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_fixtures_are_named_with_their_position() {
    let dir = scratch("badfixtures");
    let file = dir.join("f.toml");
    std::fs::write(
        &file,
        "[[http]]\nurl = \"not a url\"\n\n[[sql]]\ndatasource = \"main\"\nstatement = \"SELECT 1\"\ncolumns = [\"a\"]\nrows = [[1, 2]]\n",
    )
    .unwrap();
    let out = openrouter(&["--fixtures", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains(":2:7: http[0].url: not a URL"), "{err}");
    assert!(
        err.contains(":8:9: sql[0].rows: a row has 2 value(s) but there are 1 column(s)"),
        "{err}"
    );
    for (flag, spec) in [
        ("--respond", "GET http://x"),
        ("--sql", "SELECT 1 -> [[1]]"),
    ] {
        let out = openrouter(&[flag, spec]);
        assert_eq!(out.status.code(), Some(3));
        assert!(
            stderr(&out).contains(&format!("invalid {flag} '{spec}'")),
            "{}",
            stderr(&out)
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_component_of_another_world_is_told_what_the_host_speaks() {
    let out = healthhost(&["check", test_artifacts::WRONG_WORLD]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("this host speaks healthhost:plugin@0.1.0, world `check` (print it with `healthhost wit`)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

// ---------------------------------------------------------------------------------
// `healthhost new`: each template, built with its language's tools and run by its own
// test script (pass, warn and fail on its fixtures), as an author would.

/// Where `scripts/test` installed componentize-py and componentize-js.
fn plugin_tools() -> PathBuf {
    match std::env::var_os("HEALTHHOST_PLUGIN_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "HEALTHHOST_PLUGIN_TOOLS is not set: run the tests with ./scripts/test, which installs componentize-py and componentize-js into target/plugin-tools and sets it"
        ),
    }
}

/// Writes a project with `healthhost new`, runs its `test.sh`, and returns its folder.
fn template_passes_its_own_test(
    lang: &str,
    prepare: impl FnOnce(&std::path::Path, &mut Command),
) -> PathBuf {
    let dir = scratch(&format!("new_{lang}"));
    let project = dir.join("json-status");
    let out = healthhost(&[
        "new",
        "json-status",
        "--lang",
        lang,
        "--dir",
        project.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("./test.sh"), "{}", stdout(&out));
    let mut test = Command::new(project.join("test.sh"));
    test.env("HEALTHHOST", BIN)
        .env("HEALTHHOST_LOG", "off")
        // A cache of its own: the first fixture compiles, the next two reuse it.
        .env("XDG_CACHE_HOME", dir.join("cache"));
    prepare(&project, &mut test);
    let out = test.output().unwrap();
    assert!(
        out.status.success(),
        "{lang} template's test.sh failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for verdict in [
        "json-status: PASS",
        "json-status: WARN",
        "json-status: FAIL",
    ] {
        assert!(text.contains(verdict), "{verdict} missing in:\n{text}");
    }
    assert!(
        text.contains("ok: pass, warn and fail as expected"),
        "{text}"
    );
    // docs/writing-plugins.md shows what test.sh prints.
    let page = include_str!("../../../docs/writing-plugins.md");
    let shown = crate::docs::block_after(page, "`./test.sh` prints");
    let printed: Vec<&str> = text.trim_end().lines().map(str::trim_end).collect();
    assert!(
        crate::docs::lines_match(&shown, &printed),
        "docs/writing-plugins.md shows:\n{}\n{lang}'s test.sh printed:\n{text}",
        shown.join("\n")
    );
    // The project's README shows `healthhost check` on a fixture: it prints that.
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    let failed = crate::docs::mismatches(&format!("{lang} README.md"), &readme, &project, None);
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    dir
}

#[test]
fn the_rust_template_passes_warns_and_fails_on_its_fixtures() {
    let dir = template_passes_its_own_test("rust", |_, test| {
        // One target folder for every run of this test, beside the workspace's.
        test.env(
            "CARGO_TARGET_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/template-rust"),
        );
    });
    std::fs::remove_dir_all(dir).unwrap();
}

/// Makes the project's check throw instead of running (`source` is the file, `call`
/// the statement that runs the check, `throw` its replacement), rebuilds it, and
/// returns the run's report.
fn uncaught(dir: &std::path::Path, source: &str, call: &str, throw: &str, path: &str) -> Value {
    let project = dir.join("json-status");
    let file = project.join(source);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(call), "{source} no longer has {call:?}");
    std::fs::write(&file, text.replace(call, throw)).unwrap();
    let build = Command::new(project.join("build.sh"))
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", stderr(&build));
    let wasm = project.join("json-status.wasm");
    let out = healthhost(&[
        "check",
        wasm.to_str().unwrap(),
        "--set",
        "url=http://127.0.0.1:8080/status",
        "--compiler",
        "winch",
        "--no-cache",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    json(&out)
}

#[test]
fn the_python_template_passes_warns_and_fails_on_its_fixtures() {
    let tools = plugin_tools();
    let path = format!(
        "{}:{}",
        tools.join("py/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = template_passes_its_own_test("python", |_, test| {
        test.env("PATH", &path);
    });
    // An uncaught exception is the run's message, in Python's words.
    let report = uncaught(
        &dir,
        "app.py",
        "return run()",
        "raise RuntimeError('boom: the check has a bug')",
        &path,
    );
    assert_eq!(report["reason"], "trap");
    assert_eq!(report["message"], "RuntimeError: boom: the check has a bug");
    // A compile that needs more than its memory limit fails that plugin's load, in
    // the compiler's process, not the host.
    let wasm = dir.join("json-status/json-status.wasm");
    let out = healthhost(&[
        "check",
        wasm.to_str().unwrap(),
        "--compile-memory",
        "64MiB",
        "--no-cache",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(
            "cannot compile the plugin: it needs more than the compile memory limit of 64 MiB (`compile_memory`)"
        ),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_js_template_passes_warns_and_fails_on_its_fixtures() {
    let tools = plugin_tools();
    let dir = template_passes_its_own_test("js", |project, _| {
        // The pinned componentize-js, installed once per test run.
        std::os::unix::fs::symlink(tools.join("js/node_modules"), project.join("node_modules"))
            .unwrap();
    });
    let report = uncaught(
        &dir,
        "check.js",
        "return run();",
        "throw new Error('boom: the check has a bug');",
        &std::env::var("PATH").unwrap_or_default(),
    );
    assert_eq!(report["reason"], "trap");
    assert_eq!(report["message"], "boom: the check has a bug");
    std::fs::remove_dir_all(dir).unwrap();
}
