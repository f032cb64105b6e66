//! The repository's tidy checks, run with the tests (as rust-analyzer's `tidy`): the
//! host's module layout (no import cycle, no oversized file), no long function, and
//! the docs agreeing with the code — ARCHITECTURE.md's dependency table and `unsafe`
//! count, every backticked repository path, every Markdown link, and short prose lines.
//! Each test prints every problem it finds, with the file and what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file longer than this holds more than one concern: split it.
const MAX_FILE_LINES: usize = 600;
/// A function longer than this (from its `fn` line to its closing brace, comments and
/// blank lines included) does more than one step: name the steps.
const MAX_FN_LINES: usize = 80;
/// A Markdown line outside code blocks longer than this is unreadable in a diff and
/// in an editor without wrapping.
const MAX_PROSE_LINE: usize = 200;
/// Where the functions are counted: the host and everything compiled into plugins.
const FN_ROOTS: [&str; 3] = ["host/src", "plugins", "sdk/src"];
/// Top-level entries of the repository a backticked path may start with.
const REPO_DIRS: [&str; 12] = [
    "host",
    "plugins",
    "sdk",
    "scripts",
    "docs",
    "wit",
    "migrations",
    "test-programs",
    "bench",
    "examples",
    "deploy",
    ".ci",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files under `dir` whose extension is `extension`, build output left out.
fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() && entry.file_name() != "target" {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == extension) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The `.rs` files under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    files(dir, "rs")
}

/// A file's code without its tests: `tests.rs` files hold none, and a module's
/// `#[cfg(test)] mod tests` comes last by convention.
fn non_test(path: &Path, text: &str) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod tests"))
        .unwrap_or(lines.len());
    lines[..end].join("\n")
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn report(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// --- The host's module layout -------------------------------------------------------

/// Each top-level module of `host/src` and the top-level modules its non-test code
/// names as `crate::…`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("host/src");
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in rust_files(&src) {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let targets = deps.entry(module.clone()).or_default();
        for line in non_test(&path, &read(&path)).lines() {
            let code = line.split("//").next().unwrap();
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    targets.insert(name);
                }
            }
        }
    }
    deps
}

#[test]
fn host_modules_import_each_other_without_a_cycle() {
    let deps = imports();
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for next in deps.get(&m).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        false
    };
    let problems = deps
        .iter()
        .flat_map(|(m, targets)| targets.iter().map(move |t| (m, t)))
        .filter(|(m, t)| reaches(t, m))
        .map(|(m, t)| format!("{m} imports {t}, which imports {m} back (directly or not)"))
        .collect();
    report(
        "import cycles among host/src's top-level modules (see ARCHITECTURE.md, \"Dependency direction\")",
        problems,
    );
}

#[test]
fn no_host_source_file_is_over_the_line_cap() {
    let problems = rust_files(&root().join("host/src"))
        .into_iter()
        .map(|p| (relative(&p), read(&p).lines().count()))
        .filter(|(_, n)| *n > MAX_FILE_LINES)
        .map(|(p, n)| format!("{p} has {n} lines (at most {MAX_FILE_LINES}): split it by concern"))
        .collect();
    report("oversized files", problems);
}

/// The name of the function declared on `line`, if it declares one.
fn declared_fn(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    let qualifiers = [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ];
    while let Some(q) = qualifiers.iter().find(|q| rest.starts_with(*q)) {
        rest = &rest[q.len()..];
    }
    rest = rest.strip_prefix("extern \"C\" ").unwrap_or(rest);
    let rest = rest.strip_prefix("fn ")?;
    Some(&rest[..rest.find(['(', '<']).unwrap_or(rest.len())])
}

/// The functions of `code` (rustfmt's layout) longer than `MAX_FN_LINES`, with the line
/// they start on and their length.
fn long_functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut long = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = declared_fn(line) else {
            continue;
        };
        let indent = &line[..line.len() - line.trim_start().len()];
        // The signature ends on the line that opens the body (or ends a declaration).
        let Some(open) = (start..lines.len()).find(|&i| {
            let l = lines[i].trim_end();
            l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
        }) else {
            continue;
        };
        if !lines[open].trim_end().ends_with('{') {
            continue;
        }
        let close_line = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&i| lines[i].trim_end() == close_line) {
            let length = end - start + 1;
            if length > MAX_FN_LINES {
                long.push((name.to_string(), start + 1, length));
            }
        }
    }
    long
}

#[test]
fn no_function_is_over_the_line_cap() {
    let mut problems = Vec::new();
    for dir in FN_ROOTS {
        for path in rust_files(&root().join(dir)) {
            for (name, line, length) in long_functions(&non_test(&path, &read(&path))) {
                problems.push(format!(
                    "{}:{line}: fn {name} has {length} lines (at most {MAX_FN_LINES}): name its steps",
                    relative(&path)
                ));
            }
        }
    }
    report("long functions", problems);
}

#[test]
fn the_line_cap_counts_a_function_from_fn_to_its_brace() {
    let body = "        step();\n".repeat(MAX_FN_LINES - 1);
    let long = format!("impl X {{\n    pub async fn long(&self) {{\n{body}    }}\n}}\n");
    let short = long.replacen("        step();\n", "", 1);
    assert_eq!(
        long_functions(&long),
        [("long".to_string(), 2, MAX_FN_LINES + 1)]
    );
    assert_eq!(long_functions(&short), []);
    assert_eq!(long_functions("trait T {\n    fn f(&self);\n}\n"), []);
}

// --- ARCHITECTURE.md against the code -------------------------------------------------

/// The dependency table of ARCHITECTURE.md ("Dependency direction"): each module it
/// names and the modules it says that one imports (`leaves` name modules importing none;
/// an indented line goes on with the previous module's list).
fn documented_imports(architecture: &str) -> BTreeMap<String, BTreeSet<String>> {
    let section = architecture
        .split("## Dependency direction")
        .nth(1)
        .expect("the section");
    let table = section
        .split("```")
        .nth(1)
        .expect("the table, in a code block");
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut last = String::new();
    for line in table.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with(' ') {
            let more = line.split('(').next().unwrap().split_whitespace();
            documented
                .get_mut(&last)
                .unwrap()
                .extend(more.map(str::to_string));
            continue;
        }
        let (head, tail) = line.split_once('→').unwrap_or((line, ""));
        let tail = tail.split('(').next().unwrap();
        let targets: BTreeSet<String> = tail.split_whitespace().map(str::to_string).collect();
        let mut names = head.split_whitespace();
        if head.trim_start().starts_with("leaves") {
            names.next();
            for name in names {
                documented.insert(name.to_string(), BTreeSet::new());
            }
        } else {
            for name in names {
                last = name.to_string();
                documented.insert(name.to_string(), targets.clone());
            }
        }
    }
    documented
}

#[test]
fn architecture_lists_each_modules_imports() {
    let documented = documented_imports(&read(&root().join("ARCHITECTURE.md")));
    let actual = imports();
    let mut problems = Vec::new();
    for (module, targets) in &actual {
        match documented.get(module) {
            None => problems.push(format!("{module} is missing (it imports: {targets:?})")),
            Some(said) if said != targets => problems.push(format!(
                "{module}: the table says {said:?}, the code imports {targets:?}"
            )),
            Some(_) => {}
        }
    }
    for module in documented.keys().filter(|m| !actual.contains_key(*m)) {
        problems.push(format!(
            "{module} is in the table but is not a module of host/src"
        ));
    }
    report(
        "ARCHITECTURE.md's dependency table disagrees with host/src's imports",
        problems,
    );
}

#[test]
fn architecture_counts_the_unsafe_sites() {
    let sites: usize = rust_files(&root().join("host/src"))
        .iter()
        .map(|p| {
            non_test(p, &read(p))
                .matches("#[allow(unsafe_code)]")
                .count()
        })
        .sum();
    let architecture = read(&root().join("ARCHITECTURE.md"));
    let said = architecture
        .split(" `unsafe` sites")
        .next()
        .and_then(|before| before.split_whitespace().last())
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(
        said,
        Some(sites),
        "ARCHITECTURE.md (\"Invariants\") must say \"{sites} `unsafe` sites\": host/src has {sites} \
         `#[allow(unsafe_code)]`"
    );
}

// --- Markdown: paths, links, line length ------------------------------------------------

/// The repository's Markdown files: the top-level ones, `docs/`, the plugins', the
/// templates' and the migrations'.
fn markdown_files() -> Vec<PathBuf> {
    let root = root();
    let mut pages: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "BENCHMARKS.md"]
        .iter()
        .map(|f| root.join(f))
        .collect();
    for dir in ["docs", "plugins", "host/templates", "migrations"] {
        pages.extend(files(&root.join(dir), "md"));
    }
    pages.sort();
    pages
}

/// A Markdown file's lines outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut in_code = false;
    let mut prose = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code {
            prose.push((i + 1, line));
        }
    }
    prose
}

/// The spans between backticks on a line.
fn backticked(line: &str) -> impl Iterator<Item = &str> {
    line.split('`').skip(1).step_by(2)
}

/// Whether a backticked span names a repository path this check can test: it starts at
/// a top-level folder of the repository, or is a Rust file named relative to its folder.
/// Patterns (`plugins/*`, `{a,b}`, `LANG`) and routes are left alone.
fn repository_path(span: &str) -> bool {
    let pattern = span.contains(['*', '{', '…', '<', ' ', '$', ':'])
        || span
            .split('/')
            .any(|s| s.len() > 1 && s.chars().all(|c| c.is_ascii_uppercase()));
    let first = span.split('/').next().unwrap();
    !pattern && (REPO_DIRS.contains(&first) && span.contains('/') || span.ends_with(".rs"))
}

/// Whether `span` names an existing path: from the repository's root, or (a Rust file)
/// as the end of some Rust file's path in the repository.
fn path_exists(span: &str, rust: &[String]) -> bool {
    root().join(span.trim_end_matches('/')).exists()
        || span.ends_with(".rs") && rust.iter().any(|p| p.ends_with(&format!("/{span}")))
}

#[test]
fn backticked_repository_paths_exist() {
    let rust: Vec<String> = ["host", "plugins", "sdk", "test-programs", "bench"]
        .iter()
        .flat_map(|d| rust_files(&root().join(d)))
        .map(|p| relative(&p))
        .collect();
    let mut places: Vec<(String, usize, String)> = Vec::new();
    for file in markdown_files() {
        for (n, line) in prose_lines(&read(&file)) {
            places.push((relative(&file), n, line.to_string()));
        }
    }
    // Module headers describe their layout too.
    for path in rust_files(&root().join("host/src")) {
        for (i, line) in read(&path).lines().enumerate() {
            if line.starts_with("//!") {
                places.push((relative(&path), i + 1, line.to_string()));
            }
        }
    }
    let problems = places
        .iter()
        .flat_map(|(file, n, line)| {
            backticked(line)
                .filter(|s| repository_path(s) && !path_exists(s, &rust))
                .map(move |s| format!("{file}:{n}: `{s}` does not exist"))
                .collect::<Vec<_>>()
        })
        .collect();
    report(
        "paths in the docs that name no file of the repository",
        problems,
    );
}

/// GitHub's anchor for a heading: lower case, spaces as dashes, other punctuation gone.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose_lines(text)
        .into_iter()
        .filter_map(|(_, l)| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect()
}

/// The targets of a line's Markdown links and images: `[text](target)`.
fn link_targets(line: &str) -> Vec<&str> {
    line.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &line[at + 2..];
            rest.find(')').map(|end| &rest[..end])
        })
        .collect()
}

#[test]
fn markdown_links_point_at_files_and_headings_that_exist() {
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
                let linked = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                let place = format!("{}:{n}: ({target})", relative(&file));
                if !linked.exists() {
                    problems.push(format!("{place}: no such file"));
                } else if !fragment.is_empty()
                    && linked.extension().is_some_and(|e| e == "md")
                    && !anchors(&read(&linked)).contains(fragment)
                {
                    problems.push(format!("{place}: no heading with this anchor"));
                }
            }
        }
    }
    report("broken links in the docs", problems);
}

#[test]
fn markdown_prose_lines_are_short() {
    let problems = markdown_files()
        .iter()
        .flat_map(|file| {
            prose_lines(&read(file))
                .into_iter()
                .filter(|(_, l)| l.chars().count() > MAX_PROSE_LINE)
                .map(|(n, l)| format!("{}:{n}: {} characters", relative(file), l.chars().count()))
                .collect::<Vec<_>>()
        })
        .collect();
    report(
        &format!("Markdown lines over {MAX_PROSE_LINE} characters outside code blocks: wrap them"),
        problems,
    );
}
