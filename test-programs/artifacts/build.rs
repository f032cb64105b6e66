//! Compiles every guest crate (`test-programs/guests/*` and `plugins/*`) for
//! `wasm32-wasip2` in release mode, in a target directory of its own (so it never
//! waits on the outer build's lock), and writes one path constant per guest.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const GUEST_DIRS: [&str; 2] = ["test-programs/guests", "plugins"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("guests");

    require_target();
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    // The guests' SDK (the built-ins depend on it).
    println!("cargo:rerun-if-changed={}", root.join("sdk").display());
    let guests = find_guests(&root);

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for (package, _) in &guests {
        cmd.args(["-p", package]);
    }
    // The outer build's flags, wrappers and profile settings are for the host, not for
    // the guests; keep the jobserver so the guests share the outer -j.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_PROFILE_") {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("failed to run cargo for the guests");
    assert!(
        status.success(),
        "building the guest components failed (see the cargo output above)"
    );

    let mut code = String::new();
    for (package, dir) in &guests {
        let file = package.replace('-', "_");
        let wasm = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{file}.wasm"));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        let constant = file.to_uppercase();
        writeln!(code, "/// `{}`, built from `{}`.", package, dir.display()).unwrap();
        writeln!(
            code,
            "pub const {constant}: &str = {:?};",
            wasm.display().to_string()
        )
        .unwrap();
    }
    std::fs::write(out_dir.join("artifacts.rs"), code).unwrap();
}

/// Fails with instructions when the wasm32-wasip2 standard library is not installed.
fn require_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .expect("failed to run rustc");
    let libdir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !Path::new(&libdir).exists() {
        panic!("the {TARGET} target is not installed: run `rustup target add {TARGET}`");
    }
}

/// Every guest crate: (package name, directory).
fn find_guests(root: &Path) -> Vec<(String, PathBuf)> {
    let mut guests = Vec::new();
    for parent in GUEST_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let manifest = dir.join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else {
                continue;
            };
            let name = text
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("name = ")
                        .map(|v| v.trim_matches('"').to_owned())
                })
                .unwrap_or_else(|| panic!("{} has no package name", manifest.display()));
            println!("cargo:rerun-if-changed={}", dir.join("src").display());
            println!("cargo:rerun-if-changed={}", manifest.display());
            guests.push((name, dir.strip_prefix(root).unwrap().to_owned()));
        }
    }
    guests.sort();
    guests
}
