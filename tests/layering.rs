//! The crate's top-level modules form layers: each may use only the modules below it, so the
//! tree reads as the data flow (docs/architecture.md draws it). This test reads the sources and
//! fails on an import that reaches up or sideways, naming the file and the path, and on a
//! top-level module that has not been given a layer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom first. A module may use the ones before it in this list, never the ones after.
const LAYERS: &[&str] = &[
    // Leaves: no crate imports of their own.
    "error",
    "logsafe",
    "io_enum",
    "failpoint",
    "shutdown",
    "sql",
    "metrics",
    "http",
    "localpg",
    "admin",
    "auth",
    // The wire format, where rows live, and the config that names both.
    "protocol",
    "placement",
    "config",
    // Both ends of a connection, and planning.
    "client",
    "backend",
    "router",
    "reload",
    // Connections shared between sessions, and distributed transactions.
    "pool",
    "txn",
    // A session on several shards.
    "executor",
    // Accepting clients: login, the one-shard relays, the admin console, the client loop.
    "frontend",
    "fuzz",
    // Wiring and the binaries' entry points.
    "server",
    "signals",
    "demo",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a source text names through `crate::` (also in grouped imports such
/// as `use crate::{a::b, c}`).
fn crate_targets(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        // `shardgate::crate::` does not occur; skip identifiers that merely end in "crate".
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

#[test]
fn every_top_level_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut unplaced = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = rank(&module) else {
            unplaced.insert(module);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for target in crate_targets(&text) {
            if target == module || !target.chars().next().is_some_and(|c| c.is_lowercase()) {
                continue;
            }
            match rank(&target) {
                Some(r) if r < own => {}
                _ => violations.push(format!(
                    "{} uses crate::{target}, which is not below `{module}`",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "top-level modules without a layer in tests/layering.rs: {unplaced:?}"
    );
    assert!(
        violations.is_empty(),
        "imports against the layering:\n{}",
        violations.join("\n")
    );
}

#[test]
fn grouped_and_plain_crate_paths_are_both_read() {
    let text = "use crate::{alpha::X, beta};\nfn f() { crate::gamma::g(); my_crate::delta(); }";
    let found: Vec<String> = crate_targets(text).into_iter().collect();
    assert_eq!(found, ["alpha", "beta", "gamma"]);
}

#[test]
fn the_layers_name_every_module_the_crate_declares() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| {
            l.trim()
                .trim_start_matches("pub ")
                .strip_prefix("mod ")?
                .strip_suffix(';')
        })
        .collect();
    let layered: BTreeSet<&str> = LAYERS.iter().copied().collect();
    assert_eq!(declared, layered);
}
