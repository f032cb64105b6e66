//! The docs' examples, run: every ```` ```console ```` block of README.md and
//! `docs/*.md` is a command and its output, and this test runs each command against a
//! real `healthhost serve` of the repository's `config.toml` and compares what it
//! prints with what the page shows (`docs/testing.md`, "Examples in the docs").
//!
//! In a block, a line starting with `$ ` is a command (a line ending in `\` continues
//! it on the next); the lines up to the next command are its output, where `...` alone
//! matches any number of lines and `[..]` any text within a line. Each command runs
//! alone in `bash` in the served config's folder, with `healthhost` on the `PATH`,
//! stderr merged into stdout, and `localhost:8080` rewritten to the host's address.
//! A page's blocks share one host, in order.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{BIN, Host, has_run, mariadb, postgres};

/// The usage tokens the served config reads from the environment.
const ENV: [(&str, &str); 2] = [
    ("HEALTHHOST_USAGE_TOKEN", "s3cret"),
    ("HEALTHHOST_USAGE_READ_TOKEN", "r3ad"),
];
/// The address the docs show, replaced by the served host's.
const DOCS_ADDRESSES: [&str; 2] = ["localhost:8080", "127.0.0.1:8080"];

/// One command of a console block and the output the page shows for it.
#[derive(Debug)]
struct Example {
    line: usize,
    command: String,
    output: Vec<String>,
}

/// The examples of a Markdown page, in order.
fn examples(text: &str) -> Vec<Example> {
    let mut found: Vec<Example> = Vec::new();
    let mut in_console = false;
    let mut continued = false;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        if fence {
            in_console = !in_console && line.trim() == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        if continued {
            let last = found.last_mut().unwrap();
            last.command.push('\n');
            last.command.push_str(line);
        } else if let Some(command) = line.strip_prefix("$ ") {
            found.push(Example {
                line: i + 1,
                command: command.to_owned(),
                output: Vec::new(),
            });
        } else if let Some(last) = found.last_mut() {
            last.output.push(line.trim_end().to_owned());
        } else {
            panic!("line {}: a console block starts with a `$ ` command", i + 1);
        }
        continued = line.ends_with('\\');
    }
    found
}

/// Whether `line` matches `pattern`, where `[..]` stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The lines of the first code block after `marker` in `text`.
pub fn block_after(text: &str, marker: &str) -> Vec<String> {
    let after = &text[text.find(marker).expect("the marker is on the page")..];
    let block = after.split("```").nth(1).expect("a code block follows");
    block.lines().skip(1).map(str::to_owned).collect()
}

/// Whether `lines` match `patterns`, where a `...` pattern stands for any lines.
pub fn lines_match(patterns: &[String], lines: &[&str]) -> bool {
    match patterns.split_first() {
        None => lines.is_empty(),
        Some((p, rest)) if p == "..." => {
            (0..=lines.len()).any(|skip| lines_match(rest, &lines[skip..]))
        }
        Some((p, rest)) => lines
            .split_first()
            .is_some_and(|(line, more)| line_matches(p, line) && lines_match(rest, more)),
    }
}

/// The repository's `config.toml` as the host serves it here: the built-in plugins
/// built from source, the port and cache `Host` sets, and OpenRouter at a name that
/// never resolves (RFC 6761), so that the examples show what a machine without internet
/// sees on any machine.
fn served_config() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("config.toml")).unwrap();
    let plugins = [
        ("check_database", test_artifacts::CHECK_DATABASE),
        ("check_scheduler", test_artifacts::CHECK_SCHEDULER),
        ("check_openrouter", test_artifacts::CHECK_OPENROUTER),
        ("check_telegram", test_artifacts::CHECK_TELEGRAM),
    ];
    let text = plugins.iter().fold(text, |text, (name, path)| {
        text.replace(&format!("target/wasm32-wasip2/release/{name}.wasm"), path)
    });
    text.replace("https://openrouter.ai", "https://openrouter.invalid")
        .lines()
        .filter(|l| !l.starts_with("listen = "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the console examples of `text` (the page `page`) in `dir`, against the host at
/// `address` when there is one: a description of each mismatch.
pub fn mismatches(page: &str, text: &str, dir: &Path, address: Option<&str>) -> Vec<String> {
    examples(text)
        .iter()
        .filter_map(|example| run(page, example, dir, address))
        .collect()
}

/// Runs `example` in `dir` against the host at `address`: the mismatch, if any.
fn run(page: &str, example: &Example, dir: &Path, address: Option<&str>) -> Option<String> {
    let command = match address {
        Some(address) => DOCS_ADDRESSES
            .iter()
            .fold(example.command.clone(), |c, docs| c.replace(docs, address)),
        None => example.command.clone(),
    };
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(dir)
        .env("PATH", path)
        .envs(ENV)
        .env("HEALTHHOST_LOG", "off")
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("TELEGRAM_BOT_TOKEN")
        .env_remove("DATABASE_URL")
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    (!lines_match(&example.output, &lines)).then(|| {
        format!(
            "{page}:{}: $ {}\n--- the page shows:\n{}\n--- it printed:\n{}",
            example.line,
            example.command,
            example.output.join("\n"),
            lines.join("\n")
        )
    })
}

/// The pages with examples: README.md and the pages under `docs/`.
fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(Result::unwrap)
    {
        if entry.path().extension().is_some_and(|e| e == "md") {
            pages.push(entry.path());
        }
    }
    pages.sort();
    pages
}

#[tokio::test(flavor = "multi_thread")]
async fn console_examples_in_the_docs_print_what_they_show() {
    // The examples' SQL datasources, with their read-only roles.
    postgres().await;
    mariadb().await;
    let mut failed = Vec::new();
    let mut ran = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        if examples(&text).is_empty() {
            continue;
        }
        ran += examples(&text).len();
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        let host = Host::start_with_env(&served_config(), &ENV).await;
        host.wait_for("/health", |_, v| {
            v["checks"].as_object().unwrap().values().all(has_run)
        })
        .await;
        let address = host.base.trim_start_matches("http://");
        failed.extend(mismatches(&name, &text, &host.dir.0, Some(address)));
    }
    assert!(ran > 0, "no console example found in the docs");
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn example_patterns_match_what_they_say() {
    let text = "```console\n$ echo a \\\n  b\na [..] c\n...\nend\n```\n```sh\n$ not run\n```\n";
    let found = examples(text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].command, "echo a \\\n  b");
    assert!(lines_match(&found[0].output, &["a x y c", "end"]));
    assert!(lines_match(&found[0].output, &["a  c", "1", "2", "end"]));
    assert!(!lines_match(&found[0].output, &["a c", "end"]));
    assert!(!lines_match(&found[0].output, &["a x c", "end", "more"]));
    assert!(!line_matches("x[..]y[..]z", "xzy"));
}
