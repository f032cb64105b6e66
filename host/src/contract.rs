//! The plugin contract as a component's outer imports and exports name it, checked
//! before the component is compiled: a component built for another version of the
//! contract, or by a tool left at its defaults (componentize-js imports `wasi:http`
//! and exports a fetch handler unless told not to), is told so in one plain line
//! instead of after a full compile in the linker's words.
//!
//! Only names are read here (the top-level import and export sections, skipping the
//! nested modules that hold the code), so it takes microseconds even for a Python
//! plugin. Types are left to the linker, which still checks every one.

use wasmparser::{Chunk, ComponentTypeRef, Parser, Payload};

/// The contract's package and version, as plugins import it.
pub const PACKAGE: &str = "healthhost:plugin";
/// The contract version this host speaks.
pub const VERSION: &str = "0.1.0";
/// The interfaces of the contract a plugin may import.
const INTERFACES: [&str; 5] = ["types", "http", "sql", "config", "log"];
/// The function a plugin must export.
const EXPORT: &str = "check";

/// What is wrong with a component's imports or exports, as one line with its fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{problem}; this host speaks {PACKAGE}@{VERSION}, world `{EXPORT}` (print it with `healthhost wit`){}",
    hint.map(|h| format!(": {h}")).unwrap_or_default()
)]
pub struct ContractError {
    problem: String,
    hint: Option<&'static str>,
}

/// A component's outer interface imports and its exports, by name.
struct Names {
    imports: Vec<String>,
    exports: Vec<String>,
}

/// Reads the names of the outer component's imports and exports; `None` when the bytes
/// are not a component (the compiler says why).
fn names(wasm: &[u8]) -> Option<Names> {
    let mut names = Names {
        imports: Vec::new(),
        exports: Vec::new(),
    };
    let mut parser = Parser::new(0);
    let mut data = wasm;
    loop {
        let Ok(Chunk::Parsed { consumed, payload }) = parser.parse(data, true) else {
            return None;
        };
        data = &data[consumed..];
        match payload {
            Payload::Version { encoding, .. } if encoding != wasmparser::Encoding::Component => {
                return None;
            }
            Payload::ComponentImportSection(section) => {
                for import in section {
                    let import = import.ok()?;
                    // Interfaces are instances; a world's `use` also imports types
                    // by plain name, which the linker checks.
                    if matches!(import.ty, ComponentTypeRef::Instance(_)) {
                        names.imports.push(import.name.name.to_owned());
                    }
                }
            }
            Payload::ComponentExportSection(section) => {
                for export in section {
                    names.exports.push(export.ok()?.name.name.to_owned());
                }
            }
            // Nested modules and components are the code: skip them whole.
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => data = data.get(unchecked_range.len()..)?,
            Payload::End(_) => return Some(names),
            _ => {}
        }
    }
}

/// Checks `wasm`'s imports and exports against the contract. Bytes that are not a
/// component pass: compiling them gives the better message.
pub fn check(wasm: &[u8]) -> Result<(), ContractError> {
    let Some(names) = names(wasm) else {
        return Ok(());
    };
    let error = |problem: String, hint| Err(ContractError { problem, hint });
    for import in &names.imports {
        if let Some(interface) = import.strip_prefix(&format!("{PACKAGE}/")) {
            let (interface, version) = interface.split_once('@').unwrap_or((interface, ""));
            if !compatible(version) {
                return error(
                    format!("it targets {PACKAGE}@{version}"),
                    Some("rebuild it against this host's contract"),
                );
            }
            if !INTERFACES.contains(&interface) {
                return error(
                    format!("it imports `{import}`, which the contract does not have"),
                    Some("rebuild it against this host's contract"),
                );
            }
        } else if import.starts_with("wasi:http/") {
            return error(
                format!(
                    "it imports `{import}`, which the host does not provide (requests go through {PACKAGE}/http)"
                ),
                Some("with componentize-js, build with `-d http -d fetch-event`"),
            );
        } else if !import.starts_with("wasi:") {
            return error(
                format!("it imports `{import}`, which the host does not provide"),
                None,
            );
        }
    }
    if !names.exports.iter().any(|e| e == EXPORT) {
        let exports = if names.exports.is_empty() {
            "nothing".to_owned()
        } else {
            names
                .exports
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let hint = if names.exports.iter().any(|e| e.starts_with("wasi:http/")) {
            Some("with componentize-js, build with `-d http -d fetch-event` and export `check`")
        } else {
            Some("export a function `check: func() -> report` (world `check`)")
        };
        return error(
            format!("it exports {exports}, not the function `{EXPORT}`"),
            hint,
        );
    }
    Ok(())
}

/// Whether a plugin built against contract `version` links with this host's: the same
/// version, or (semver, as wasmtime's linker matches) the same minor of a 0.x.
fn compatible(version: &str) -> bool {
    let minor = |v: &str| v.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
    version == VERSION || (VERSION.starts_with("0.") && minor(version) == minor(VERSION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_the_same_zero_minor_link() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.3"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.0.0"));
        assert!(!compatible(""));
    }

    /// A component importing an (empty) instance under each of `imports` and exporting
    /// the first one under each of `exports`: only the names matter here.
    fn component(imports: &[&str], exports: &[&str]) -> Vec<u8> {
        use wasm_encoder::{
            Component, ComponentExportKind, ComponentExportSection, ComponentImportSection,
            ComponentTypeRef, ComponentTypeSection, InstanceType,
        };
        let mut component = Component::new();
        let mut types = ComponentTypeSection::new();
        types.instance(&InstanceType::new());
        component.section(&types);
        let mut section = ComponentImportSection::new();
        for name in imports {
            section.import(*name, ComponentTypeRef::Instance(0));
        }
        component.section(&section);
        let mut section = ComponentExportSection::new();
        for name in exports {
            section.export(*name, ComponentExportKind::Instance, 0, None);
        }
        component.section(&section);
        component.finish()
    }

    fn problem(imports: &[&str], exports: &[&str]) -> String {
        check(&component(imports, exports)).unwrap_err().to_string()
    }

    #[test]
    fn the_contract_and_wasi_pass() {
        let wasm = component(
            &["wasi:cli/environment@0.2.3", "healthhost:plugin/http@0.1.0"],
            &["check"],
        );
        assert_eq!(check(&wasm), Ok(()));
    }

    #[test]
    fn a_mismatch_is_one_line_naming_both_sides_and_the_fix() {
        let text = problem(&["healthhost:plugin/http@0.2.0"], &["check"]);
        assert_eq!(
            text,
            "it targets healthhost:plugin@0.2.0; this host speaks healthhost:plugin@0.1.0, world `check` (print it with `healthhost wit`): rebuild it against this host's contract"
        );
        let text = problem(&["healthhost:plugin/files@0.1.0"], &["check"]);
        assert!(
            text.starts_with(
                "it imports `healthhost:plugin/files@0.1.0`, which the contract does not have"
            ),
            "{text}"
        );
        let text = problem(&["redis:client/commands"], &["check"]);
        assert!(
            text.starts_with("it imports `redis:client/commands`, which the host does not provide"),
            "{text}"
        );
    }

    #[test]
    fn a_js_build_with_its_defaults_is_told_the_flags() {
        let text = problem(
            &["wasi:http/types@0.2.0"],
            &["wasi:http/incoming-handler@0.2.0"],
        );
        assert!(text.contains("`-d http -d fetch-event`"), "{text}");
        let text = problem(&[], &["wasi:http/incoming-handler@0.2.0"]);
        assert!(
            text.starts_with(
                "it exports `wasi:http/incoming-handler@0.2.0`, not the function `check`"
            ),
            "{text}"
        );
        assert!(text.contains("`-d http -d fetch-event`"), "{text}");
        let text = problem(&[], &[]);
        assert!(
            text.starts_with("it exports nothing, not the function `check`"),
            "{text}"
        );
    }

    #[test]
    fn bytes_that_are_not_a_component_are_left_to_the_compiler() {
        assert_eq!(check(b"hello"), Ok(()));
        assert_eq!(check(b"\0asm\x01\0\0\0"), Ok(()));
    }
}
