//! The crate's top-level modules form layers: each may use only the modules below it, so the
//! tree reads as the data flow (docs/architecture.md draws it). This test reads the sources and
//! fails on an import that reaches up or sideways, naming the file and the path, and on a
//! top-level module that has not been given a layer. Below the top level, no room (a module with
//! its submodules) may import one that imports it back, directly or through others, except the
//! planners that recurse into each other by design.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom first. A module may use the ones before it in this list, never the ones after.
const LAYERS: &[&str] = &[
    // Leaves: no crate imports of their own.
    "error",
    "logsafe",
    "io_enum",
    "failpoint",
    "kept_wait",
    "shutdown",
    "start_progress",
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
    // Moving slots between shards, and a proxy's part in it.
    "moves",
    // Wiring and the binaries' entry points.
    "server",
    "signals",
    "slot_commands",
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

/// Module paths (`executor::merge::rows`) of every source file under `src`, with the file's
/// text up to its unit tests.
fn modules() -> Vec<(Vec<String>, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap().with_extension("");
        let mut path: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if path.last().is_some_and(|l| l == "mod") {
            path.pop();
        }
        if path == ["lib"] || path == ["main"] {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
        out.push((path, code));
    }
    out
}

/// The modules `code` (in module `own`) names through `crate::`, `super::` or `self::` paths,
/// each as the longest path that is a module; `use super::{a, b}` names both.
fn named_modules(
    own: &[String],
    code: &str,
    known: &BTreeSet<Vec<String>>,
) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .find(|p| rest.starts_with(*p))
            .filter(|_| !code[..at].chars().next_back().is_some_and(word));
        if starts.is_none() {
            at += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let end = rest
            .find(|c: char| !(word(c) || c == ':' || c == '{' || c == '}' || c == ',' || c == ' '))
            .unwrap_or(rest.len());
        let path = &rest[..end];
        at += end.max(1);
        let (head, group) = match path.find("::{") {
            Some(g) => (&path[..g], Some(&path[g + 3..])),
            None => (path, None),
        };
        let mut base: Vec<String> = Vec::new();
        let mut segments = head.split("::").filter(|s| !s.is_empty()).peekable();
        match segments.peek().copied() {
            Some("crate") => {
                segments.next();
            }
            Some("self") => {
                segments.next();
                base = own.to_vec();
            }
            _ => {
                base = own.to_vec();
                while segments.peek() == Some(&"super") {
                    segments.next();
                    base.pop();
                }
            }
        }
        let head: Vec<String> = base
            .into_iter()
            .chain(segments.map(|s| s.trim().to_string()))
            .collect();
        let tails: Vec<Vec<String>> = match group {
            Some(g) => g
                .split(',')
                .map(|p| {
                    p.trim()
                        .trim_end_matches('}')
                        .split("::")
                        .map(|s| s.trim().to_string())
                        .collect()
                })
                .collect(),
            None => vec![Vec::new()],
        };
        for tail in tails {
            let full: Vec<String> = head.iter().cloned().chain(tail).collect();
            if let Some(n) = (1..=full.len()).rev().find(|n| known.contains(&full[..*n])) {
                found.insert(full[..n].to_vec());
            }
        }
    }
    found
}

/// The planners of statements that hold other statements (a cursor's query, a subquery, an
/// aggregate's rewritten query, a utility statement's target) plan those by calling back into
/// `router::plan`, which dispatches to them: a recursion by design, and the one circle allowed.
const RECURSIVE_PLANNERS: &[&str] = &[
    "router::aggregate",
    "router::cursor",
    "router::plan",
    "router::subquery",
    "router::utility",
];

#[test]
fn no_two_rooms_import_each_other_even_through_others() {
    let modules = modules();
    let known: BTreeSet<Vec<String>> = modules.iter().map(|(p, _)| p.clone()).collect();
    // A module and its submodules are one room. An import between two modules counts as one
    // between the rooms that hold them side by side: `executor::merge::rows` using
    // `executor::session::state` is `executor::merge` using `executor::session`. Imports
    // within a room (a child using its parent) do not count.
    let mut edges: std::collections::BTreeMap<Vec<String>, BTreeSet<Vec<String>>> =
        Default::default();
    for (own, code) in &modules {
        for target in named_modules(own, code, &known) {
            let shared = own.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if shared >= own.len() || shared >= target.len() {
                continue;
            }
            let (from, to) = (own[..=shared].to_vec(), target[..=shared].to_vec());
            edges.entry(to.clone()).or_default();
            edges.entry(from).or_default().insert(to);
        }
    }
    // A room that reaches itself through the edges is on a circle.
    let mut on_circles = BTreeSet::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&Vec<String>> = edges[start].iter().collect();
        while let Some(m) = stack.pop() {
            if m == start {
                on_circles.insert(start.join("::"));
                break;
            }
            if seen.insert(m) {
                stack.extend(edges.get(m).into_iter().flatten());
            }
        }
    }
    let allowed: BTreeSet<String> = RECURSIVE_PLANNERS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        on_circles, allowed,
        "rooms on an import circle (only the recursive planners may be)"
    );
}

#[test]
fn relative_and_grouped_paths_name_their_modules() {
    let known: BTreeSet<Vec<String>> = [
        "executor::merge",
        "executor::merge::rows",
        "executor::session",
        "executor::txn",
        "pool",
    ]
    .iter()
    .map(|m| m.split("::").map(String::from).collect())
    .collect();
    let own: Vec<String> = ["executor", "merge", "groups"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let code = "use super::rows::{drain, Window};\nuse crate::executor::{session::Exec, txn};\n\
                fn f() { super::super::txn::x(); crate::pool::y(); my_crate::z(); }";
    let found: BTreeSet<String> = named_modules(&own, code, &known)
        .into_iter()
        .map(|m| m.join("::"))
        .collect();
    let expected: BTreeSet<String> = [
        "executor::merge::rows",
        "executor::session",
        "executor::txn",
        "pool",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(found, expected);
}
