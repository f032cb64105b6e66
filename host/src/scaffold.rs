//! `healthhost new`: writes a ready plugin project in Rust, Python or JavaScript from
//! the templates embedded in the binary (`host/templates/`). Every project holds the
//! same check ("HTTP JSON status"), its build script, its grant file, fixtures for
//! pass, warn and fail, a test that runs `healthhost check` on each, a README, and
//! the contract (`wit/plugin.wit`) of this host; a Rust project also holds the SDK.
//!
//! The project is written into a temporary folder beside its destination and renamed
//! into place, so a failure leaves nothing half-written, and an existing folder is
//! never written into.

use std::path::{Path, PathBuf};

/// The languages there is a template for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the healthhost-plugin SDK (cargo, the wasm32-wasip2 target).
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js (Node.js and npm).
    Js,
}

/// One file of a template.
struct File {
    /// Where it goes in the project; `{{name}}` is replaced.
    path: &'static str,
    text: &'static str,
    /// Whether `{{name}}` and `{{name_snake}}` in `text` are replaced.
    substitute: bool,
    executable: bool,
}

/// A file whose placeholders are replaced.
const fn template(path: &'static str, text: &'static str) -> File {
    File {
        path,
        text,
        substitute: true,
        executable: false,
    }
}

/// A script whose placeholders are replaced.
const fn script(path: &'static str, text: &'static str) -> File {
    File {
        executable: true,
        ..template(path, text)
    }
}

/// A file copied as it is.
const fn verbatim(path: &'static str, text: &'static str) -> File {
    File {
        substitute: false,
        ..template(path, text)
    }
}

/// Every project: the grant file, the fixtures and the test that runs them.
const COMMON: &[File] = &[
    template(
        "{{name}}.toml",
        include_str!("../templates/common/{{name}}.toml"),
    ),
    template(
        "fixtures/pass.toml",
        include_str!("../templates/common/fixtures/pass.toml"),
    ),
    template(
        "fixtures/warn.toml",
        include_str!("../templates/common/fixtures/warn.toml"),
    ),
    template(
        "fixtures/fail.toml",
        include_str!("../templates/common/fixtures/fail.toml"),
    ),
    script("test.sh", include_str!("../templates/common/test.sh")),
    // Not `.gitignore` in this repository, where it would apply to the templates.
    template(".gitignore", include_str!("../templates/common/gitignore")),
    verbatim("wit/plugin.wit", crate::WIT),
];

const RUST: &[File] = &[
    template("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    template("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    script("build.sh", include_str!("../templates/rust/build.sh")),
    template("README.md", include_str!("../templates/rust/README.md")),
    template(
        "healthhost-plugin/Cargo.toml",
        include_str!("../templates/rust/sdk.Cargo.toml"),
    ),
    verbatim(
        "healthhost-plugin/src/lib.rs",
        include_str!("../../sdk/src/lib.rs"),
    ),
    verbatim("wit/words.rs", include_str!("../../wit/words.rs")),
];

const PYTHON: &[File] = &[
    template("app.py", include_str!("../templates/python/app.py")),
    template(
        "healthhost.py",
        include_str!("../templates/python/healthhost.py"),
    ),
    script("build.sh", include_str!("../templates/python/build.sh")),
    template("README.md", include_str!("../templates/python/README.md")),
];

const JS: &[File] = &[
    template("check.js", include_str!("../templates/js/check.js")),
    template(
        "healthhost.js",
        include_str!("../templates/js/healthhost.js"),
    ),
    template("package.json", include_str!("../templates/js/package.json")),
    script("build.sh", include_str!("../templates/js/build.sh")),
    template("README.md", include_str!("../templates/js/README.md")),
];

impl Lang {
    /// The language's name, for people.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }

    fn files(self) -> &'static [File] {
        match self {
            Lang::Rust => RUST,
            Lang::Python => PYTHON,
            Lang::Js => JS,
        }
    }
}

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("'{0}' cannot name a check: start with a letter, then letters, digits, '-' and '_'")]
    Name(String),
    #[error("{0} already exists: choose another NAME or --dir")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether `name` can name a check, a crate, a file and (as `name_snake`) a metric.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The README section every template ends its deployment with: publishing to a
/// registry, signed (`{{publish}}` in a template).
const PUBLISH: &str = include_str!("../templates/common/publish.md");

/// Writes the project for check `name` in `lang` into the new folder `dir`, and
/// returns the files written, relative to it.
pub fn create(name: &str, lang: Lang, dir: &Path) -> Result<Vec<String>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::Name(name.to_owned()));
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let snake = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{publish}}", PUBLISH)
            .replace("{{name_snake}}", &snake)
            .replace("{{name}}", name)
    };
    let staging = staging_dir(dir);
    let write = |path: &Path, text: &str, executable: bool| -> Result<(), ScaffoldError> {
        let error = |source| ScaffoldError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(error)?;
        }
        std::fs::write(path, text).map_err(error)?;
        if executable {
            set_executable(path).map_err(error)?;
        }
        Ok(())
    };
    let mut written = Vec::new();
    let result = COMMON
        .iter()
        .chain(lang.files())
        .try_for_each(|file| {
            let relative = fill(file.path);
            let text = if file.substitute {
                fill(file.text)
            } else {
                file.text.to_owned()
            };
            write(&staging.join(&relative), &text, file.executable)?;
            written.push(relative);
            Ok(())
        })
        .and_then(|()| {
            std::fs::rename(&staging, dir).map_err(|source| ScaffoldError::Write {
                path: dir.to_owned(),
                source,
            })
        });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|()| {
        written.sort();
        written
    })
}

/// A hidden folder beside `dir` to write the project into first.
fn staging_dir(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "project".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!(".{name}.new-{}", std::process::id()))
}

#[cfg(unix)]
fn set_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_suit_files_crates_and_metrics() {
        for good in ["redis", "http-status", "a_1"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "1abc", "-x", "a b", "a/b", "..", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn templates_leave_no_placeholder_behind() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let dir =
                std::env::temp_dir().join(format!("hh-scaffold-{}-{lang:?}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let files = create("my-check", lang, &dir).unwrap();
            assert!(files.contains(&"my-check.toml".to_owned()), "{files:?}");
            for file in files {
                let text = std::fs::read_to_string(dir.join(&file)).unwrap();
                assert!(!text.contains("{{"), "{lang:?} {file} keeps a placeholder");
            }
            let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
            assert!(
                readme.contains("healthhost push my-check.wasm oci://"),
                "{lang:?}"
            );
            let again = create("my-check", lang, &dir).unwrap_err();
            assert!(matches!(again, ScaffoldError::Exists(_)), "{again}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
