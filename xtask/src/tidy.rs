//! Repository checks run as tests (rust-analyzer's `tidy`): house rules
//! kept by code rather than by review.
//!
//! Layering: in every crate of the workspace, no top-level module (a file
//! or a folder right under `src/`) imports, directly or through others, a
//! module that imports it back. The check reads the sources as text: every
//! `crate::name` outside comments and literals, in `use` lines or inline,
//! grouped `crate::{a, b::c}` included, is an import of `name` when that is
//! a top-level module. Crate roots (`lib.rs`, `main.rs`, `src/bin/`) declare
//! modules and dispatch, and take no part.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::effects::paths;

/// Who imports whom: module → (imported module → where, as `file:line`).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The crates of the workspace: the root's folders with a `Cargo.toml`
/// and a `src/`.
fn crates() -> Vec<(String, PathBuf)> {
    let root = paths::root();
    let mut crates: Vec<(String, PathBuf)> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| dir.join("Cargo.toml").is_file() && dir.join("src").is_dir())
        .filter_map(|dir| Some((dir.file_name()?.to_str()?.to_owned(), dir.join("src"))))
        .collect();
    crates.sort();
    crates
}

/// The top-level module a path under `src/` belongs to; `None` for the
/// crate roots.
fn top_module(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        file if relative.components().count() == 1 => file.strip_suffix(".rs").map(str::to_owned),
        dir => Some(dir.to_owned()),
    }
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|x| x == "rs") {
            found.push(path);
        }
    }
}

/// The first identifier of `text`.
fn ident(text: &str) -> &str {
    let text = text.trim_start();
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}

/// The names each `crate::` path of `code` starts with (for a group
/// `crate::{a, b::c}`, each of its items'), with the line it is on.
fn crate_paths(code: &str) -> Vec<(String, usize)> {
    let text = blank_comments_and_literals(code);
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let line = text[..at].matches('\n').count() + 1;
        let rest = &text[at + "crate::".len()..];
        let names = match rest.strip_prefix('{') {
            Some(group) => items(group),
            None => vec![ident(rest)],
        };
        found.extend(names.into_iter().filter(|n| !n.is_empty()).map(|n| (n.to_owned(), line)));
    }
    found
}

/// `code` with its comments and the insides of its string and character
/// literals turned into spaces (line breaks kept, so lines still count),
/// leaving only what the compiler reads as paths.
fn blank_comments_and_literals(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let next = |k: usize| chars.get(i + k).copied();
        let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        // Where the literal or comment starting here ends (exclusive).
        let end = match (chars[i], next(1)) {
            ('/', Some('/')) => (i..chars.len()).find(|&k| chars[k] == '\n').unwrap_or(chars.len()),
            ('/', Some('*')) => {
                let (mut k, mut depth) = (i + 2, 1);
                while k < chars.len() && depth > 0 {
                    match (chars[k], chars.get(k + 1)) {
                        ('/', Some('*')) => (depth, k) = (depth + 1, k + 1),
                        ('*', Some('/')) => (depth, k) = (depth - 1, k + 1),
                        _ => {}
                    }
                    k += 1;
                }
                k
            }
            ('"', _) => {
                let mut k = i + 1;
                while k < chars.len() && chars[k] != '"' {
                    k += if chars[k] == '\\' { 2 } else { 1 };
                }
                k + 1
            }
            ('r', Some('"' | '#')) if !after_ident || (i > 0 && chars[i - 1] == 'b') => {
                let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
                if chars.get(i + 1 + hashes) != Some(&'"') {
                    i
                } else {
                    let close: Vec<char> =
                        std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
                    (i + 2 + hashes..chars.len())
                        .find(|&k| chars[k..].starts_with(&close))
                        .map_or(chars.len(), |k| k + close.len())
                }
            }
            ('\'', Some('\\')) => {
                (i + 2..chars.len()).find(|&k| chars[k] == '\'').map_or(chars.len(), |k| k + 1)
            }
            ('\'', Some(_)) if next(2) == Some('\'') => i + 3,
            _ => i,
        };
        if end == i {
            out.push(chars[i]);
            i += 1;
        } else {
            let end = end.min(chars.len());
            for &c in &chars[i..end] {
                blank(&mut out, c);
            }
            i = end;
        }
    }
    out
}

/// The first identifier of each item of a `{…}` group (its text after the
/// opening brace), nested groups skipped.
fn items(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut names) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                names.push(ident(&group[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(ident(&group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    names
}

/// The import graph between the top-level modules of the crate at `src`.
fn imports(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let owned: Vec<(String, PathBuf)> = files
        .into_iter()
        .filter_map(|file| {
            let relative = file.strip_prefix(src).ok()?.to_path_buf();
            Some((top_module(&relative)?, file))
        })
        .collect();
    let modules: BTreeSet<&str> = owned.iter().map(|(m, _)| m.as_str()).collect();
    let mut graph = Graph::new();
    for (module, file) in &owned {
        let code = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let shown = file.strip_prefix(src).unwrap_or(file).display().to_string();
        for (name, line) in crate_paths(&code) {
            if name != *module && modules.contains(name.as_str()) {
                let edges = graph.entry(module.clone()).or_default();
                edges.entry(name).or_insert_with(|| format!("{shown}:{line}"));
            }
        }
    }
    graph
}

/// Every import cycle a depth-first walk of `graph` closes, each as
/// `a → b (where) → a (where)`.
fn cycles(graph: &Graph) -> Vec<String> {
    fn walk<'g>(
        graph: &'g Graph,
        module: &'g str,
        path: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
        found: &mut Vec<String>,
    ) {
        path.push(module);
        for (next, at) in graph.get(module).into_iter().flatten() {
            if let Some(i) = path.iter().position(|m| m == next) {
                let mut shown = path[i].to_owned();
                for pair in path[i..].windows(2) {
                    shown.push_str(&format!(" → {} ({})", pair[1], graph[pair[0]][pair[1]]));
                }
                found.push(format!("{shown} → {next} ({at})"));
            } else if !done.contains(next.as_str()) {
                walk(graph, next, path, done, found);
            }
        }
        path.pop();
        done.insert(module);
    }
    let (mut done, mut found) = (BTreeSet::new(), Vec::new());
    for module in graph.keys() {
        if !done.contains(module.as_str()) {
            walk(graph, module, &mut Vec::new(), &mut done, &mut found);
        }
    }
    found
}

#[test]
fn no_crate_has_an_import_cycle_between_its_top_level_modules() {
    let crates = crates();
    assert!(crates.iter().any(|(name, _)| name == "xtask"), "found no crates: {crates:?}");
    let problems: Vec<String> = crates
        .iter()
        .flat_map(|(name, src)| {
            cycles(&imports(src)).into_iter().map(move |c| format!("{name}: {c}"))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "import cycles between top-level modules (layer them: move the shared part down, or \
         the part that runs the others up):\n{}",
        problems.join("\n")
    );
}

/// `crate_paths` of a snippet, names only.
fn check_paths(code: &str, expected: &[&str]) {
    let names: Vec<String> = crate_paths(code).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, expected, "{code}");
}

#[test]
fn crate_paths_are_read_from_code_not_comments_or_literals() {
    check_paths("use crate::effects::paths;\n", &["effects"]);
    check_paths("use crate::{api, effects::{http, paths}, stack};", &["api", "effects", "stack"]);
    check_paths("use crate::{\n    rollout,\n    stages::artifacts,\n};", &["rollout", "stages"]);
    check_paths("let b = crate::api::documented_request();", &["api"]);
    check_paths("//! See [`crate::stack::deploy`].\n    let a = 1; // crate::ci\n", &[]);
    check_paths("/* crate::a /* crate::b */ crate::c */ use crate::d;", &["d"]);
    check_paths(r#"bail!("use crate::a"); let s = r"crate::b"; let c = '"'; crate::c"#, &["c"]);
    check_paths(r##"let s = r#"a "crate::b" c"#; fn f<'a>(x: &'a str) { crate::e }"##, &["e"]);
    check_paths("use xtask::stack; use my_crate::x; use super::ci;", &[]);
    assert_eq!(crate_paths("\n/* x\n */ \"\n\" use crate::a;\n"), [("a".to_owned(), 4)]);
}

#[test]
fn a_cycle_of_any_length_is_found_and_a_layering_is_not() {
    let graph = |edges: &[(&str, &str)]| -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry((*a).to_owned()).or_default().insert((*b).to_owned(), format!("{a}.rs:1"));
        }
        g
    };
    let layered =
        graph(&[("ci", "stages"), ("ci", "stack"), ("stack", "stages"), ("stages", "effects")]);
    assert_eq!(cycles(&layered), Vec::<String>::new());
    assert_eq!(
        cycles(&graph(&[("stack", "stages"), ("stages", "stack")])),
        ["stack → stages (stack.rs:1) → stack (stages.rs:1)"]
    );
    let long = cycles(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]));
    assert_eq!(long, ["a → b (a.rs:1) → c (b.rs:1) → a (c.rs:1)"]);
}

#[test]
fn only_files_below_the_roots_are_modules() {
    let top = |p: &str| top_module(Path::new(p));
    assert_eq!(top("stack.rs").as_deref(), Some("stack"));
    assert_eq!(top("stages/deploy.rs").as_deref(), Some("stages"));
    assert_eq!(top("ci/mod.rs").as_deref(), Some("ci"));
    assert_eq!((top("lib.rs"), top("main.rs"), top("bin/bench-deploy.rs")), (None, None, None));
}

/// The crates a package depends on when built (not its tests), by name.
fn dependency_tree(package: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none", "-p", package])
        .current_dir(paths::root())
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// What a crate that does no IO and runs no async runtime must not pull.
const RUNTIME: [&str; 7] = ["tokio", "bollard", "axum", "reqwest", "notify", "hyper", "mio"];

#[test]
fn the_controller_core_pulls_no_runtime_and_xtask_no_controller_runtime() {
    let core = dependency_tree("controller-core");
    assert!(core.contains("serde-saphyr"), "the tree was not read: {core:?}");
    for name in RUNTIME {
        assert!(!core.contains(name), "controller-core depends on {name}");
    }
    let xtask = dependency_tree("xtask");
    assert!(xtask.contains("controller-core"), "{xtask:?}");
    for name in ["controller", "tokio", "bollard", "axum", "reqwest", "notify"] {
        assert!(!xtask.contains(name), "xtask depends on {name}");
    }
    // The runtime is where they are: the check can fail.
    let runtime = dependency_tree("controller");
    assert!(RUNTIME[..4].iter().all(|n| runtime.contains(*n)), "{runtime:?}");
}
