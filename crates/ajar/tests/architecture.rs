//! ARCHITECTURE.md's code map says which ajar crates each crate may depend
//! on; this test holds every `Cargo.toml` to it, so that the map stays true
//! (and a dependency that breaks the layering fails here, not in review).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Crate name → the words of its "may depend on" cell.
fn allowed() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    text.lines()
        .filter(|l| l.starts_with("| `ajar"))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            let name = cells[0].trim_matches('`').to_owned();
            let words = cells
                .last()
                .map(|cell| {
                    cell.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                        .filter(|w| !w.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            (name, words)
        })
        .collect()
}

/// The ajar crates `manifest` names under `[dependencies]`.
fn ajar_dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("read a manifest");
    let mut in_dependencies = false;
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        let key = line.split(['.', '=', ' ']).next().unwrap_or("");
        if in_dependencies && key.starts_with("ajar-") {
            found.push(key.to_owned());
        }
    }
    found
}

#[test]
fn every_crate_depends_only_on_what_the_code_map_allows() {
    let allowed = allowed();
    let mut problems = Vec::new();
    let mut crates = 0;
    for entry in std::fs::read_dir(root().join("crates")).expect("read crates/") {
        let dir = entry.expect("an entry").path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.exists() {
            continue;
        }
        crates += 1;
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Some(words) = allowed.get(&name) else {
            problems.push(format!("{name} has no row in ARCHITECTURE.md's code map"));
            continue;
        };
        for dependency in ajar_dependencies(&manifest) {
            let short = dependency.trim_start_matches("ajar-");
            let ok = words.iter().any(|w| w == "all" || w == short || w == &dependency);
            if !ok {
                problems.push(format!(
                    "{name} depends on {dependency}, which its row in ARCHITECTURE.md does not allow ({})",
                    words.join(" ")
                ));
            }
        }
    }
    assert!(crates >= 10, "found only {crates} crates under crates/");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
