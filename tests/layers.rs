//! The crate's import structure: no two source files import each other, directly or round a
//! loop, and every top-level module imports only modules of lower layers (`LAYERS`). Read from
//! the source (every `crate::`, `super::` and `self::` path outside comments), so a new loop
//! fails `cargo test` with the files and the names that tie them. Tests are not read (a file's
//! code from its `#[cfg(test)]` on, and the files only tests compile): a test may use any
//! module's helpers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate's top-level modules from the bottom up. A module may import its own layer's
/// modules and those of the layers below; the crate root and `main.rs` are above them all.
const LAYERS: &[&[&str]] = &[
    // Leaf utilities: no import of the rest of the crate.
    &[
        "addr",
        "atomic_file",
        "clock",
        "conns",
        "hit",
        "logging",
        "small_file",
        "state_lock",
        "sys",
        "vhost",
    ],
    &["cli", "state_file"],
    // The stages, from a line's bytes to an event.
    &["parse"],
    &["engine"],
    &["decide"],
    &["config"],
    &["proxy", "source", "sink"],
    &["fleet"],
    // The pipeline every front-end drives, and the error type they share.
    &["error"],
    &["pipeline"],
    // The front-ends.
    &["replay"],
    &["control"],
    &["watch", "lab", "check", "docgen"],
];

/// One source file: its module path (`["source", "ingest"]`) and its text.
struct Unit {
    module: Vec<String>,
    text: String,
}

fn units(src: &Path) -> BTreeMap<PathBuf, Unit> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("src/ is readable").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src/");
            let mut module: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            out.insert(rel.to_path_buf(), Unit { module, text });
        }
    }
    out
}

/// The paths a file names, each as segments from the crate root, with the line they are on.
fn paths_named(unit: &Unit, is_mod_rs: bool) -> Vec<(Vec<String>, usize)> {
    let mut found = Vec::new();
    for (n, line) in unit.text.lines().enumerate() {
        if line.trim() == "#[cfg(test)]" && !declares_a_module(unit.text.lines().nth(n + 1)) {
            break;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let bytes = code.as_bytes();
        let mut i = 0;
        while i < code.len() {
            let starts_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
            let rest = &bytes[i..];
            let base: Option<(Vec<String>, usize)> = if !starts_word {
                None
            } else if rest.starts_with(b"crate::") {
                Some((Vec::new(), "crate::".len()))
            } else if rest.starts_with(b"super::") {
                let mut m = unit.module.clone();
                // In `a/b.rs` (module a::b) super is a; in `a/mod.rs` (module a) it is the root.
                m.pop();
                let mut len = "super::".len();
                while bytes[i + len..].starts_with(b"super::") {
                    m.pop();
                    len += "super::".len();
                }
                Some((m, len))
            } else if rest.starts_with(b"self::") && is_mod_rs {
                Some((unit.module.clone(), "self::".len()))
            } else {
                None
            };
            match base {
                Some((prefix, len)) => {
                    let mut paths = Vec::new();
                    let used = expand(&bytes[i + len..], prefix, &mut paths);
                    found.extend(paths.into_iter().map(|p| (p, n + 1)));
                    i += len + used.max(1);
                }
                None => i += 1,
            }
        }
    }
    found
}

/// Whether a line declares a module kept in a file of its own (`mod testing;`).
fn declares_a_module(line: Option<&str>) -> bool {
    line.is_some_and(|l| {
        let l = l.trim();
        (l.starts_with("mod ") || l.starts_with("pub mod ") || l.starts_with("pub(crate) mod "))
            && l.ends_with(';')
    })
}

/// The files that only tests compile (`#[cfg(test)] mod x;`), by module path.
fn test_modules(units: &BTreeMap<PathBuf, Unit>) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for unit in units.values() {
        let lines: Vec<&str> = unit.text.lines().collect();
        for pair in lines.windows(2) {
            if pair[0].trim() == "#[cfg(test)]" && declares_a_module(Some(pair[1])) {
                let name = pair[1].trim().trim_end_matches(';');
                let name = name.rsplit(' ').next().unwrap_or_default();
                let mut module = unit.module.clone();
                module.push(name.to_string());
                out.insert(module);
            }
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Reads `a::b::{c, d::e}` from the start of `s` after `prefix`, pushing each whole path;
/// returns the bytes read.
fn expand(b: &[u8], prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut i = 0;
    let mut path = prefix;
    loop {
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        if i > start {
            path.push(String::from_utf8_lossy(&b[start..i]).into_owned());
        }
        if b[i..].starts_with(b"::") {
            i += 2;
            continue;
        }
        if i < b.len() && b[i] == b'{' {
            i += 1;
            loop {
                while i < b.len() && (b[i] == b' ' || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    i += 1;
                    break;
                }
                let used = expand(&b[i..], path.clone(), out);
                i += used.max(1);
                // `x as y`
                while i < b.len() && b[i] != b',' && b[i] != b'}' {
                    i += 1;
                }
            }
            return i;
        }
        out.push(path);
        return i;
    }
}

/// The source file that defines the longest prefix of `path`.
fn file_of(path: &[String], files: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    (1..=path.len())
        .rev()
        .find_map(|k| files.get(&path[..k]).cloned())
}

type Graph = BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>>;

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut units = units(&src);
    let tests = test_modules(&units);
    units.retain(|_, u| !tests.contains(&u.module));
    let files: BTreeMap<Vec<String>, PathBuf> = units
        .iter()
        .filter(|(p, _)| !p.ends_with("main.rs"))
        .map(|(p, u)| (u.module.clone(), p.clone()))
        .collect();
    let mut graph = Graph::new();
    for (path, unit) in &units {
        let is_mod_rs = path.ends_with("mod.rs") || path.ends_with("lib.rs");
        let edges = graph.entry(path.clone()).or_default();
        for (named, line) in paths_named(unit, is_mod_rs) {
            let Some(to) = file_of(&named, &files) else {
                continue;
            };
            if &to == path {
                continue;
            }
            edges
                .entry(to)
                .or_default()
                .insert(format!("{} (line {line})", named.join("::")));
        }
    }
    graph
}

/// Files that import each other round a loop, each loop as its strongly connected component.
fn loops(graph: &Graph) -> Vec<Vec<PathBuf>> {
    // Kosaraju: finish order on the graph, then components on the reversed graph.
    fn visit(n: &PathBuf, g: &Graph, seen: &mut BTreeSet<PathBuf>, order: &mut Vec<PathBuf>) {
        if !seen.insert(n.clone()) {
            return;
        }
        for m in g.get(n).into_iter().flat_map(|e| e.keys()) {
            visit(m, g, seen, order);
        }
        order.push(n.clone());
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for n in graph.keys() {
        visit(n, graph, &mut seen, &mut order);
    }
    let mut reversed = Graph::new();
    for (from, edges) in graph {
        for to in edges.keys() {
            reversed
                .entry(to.clone())
                .or_default()
                .insert(from.clone(), BTreeSet::new());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for n in order.iter().rev() {
        let mut component = Vec::new();
        visit(n, &reversed, &mut assigned, &mut component);
        if component.len() > 1 {
            component.sort();
            out.push(component);
        }
    }
    out
}

#[test]
fn no_two_source_files_import_each_other() {
    let graph = graph();
    let mut report = String::new();
    for component in loops(&graph) {
        report += "loop:\n";
        for from in &component {
            for (to, names) in &graph[from] {
                if component.contains(to) {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    report += &format!(
                        "  {} -> {}: {}\n",
                        from.display(),
                        to.display(),
                        names.join(", ")
                    );
                }
            }
        }
    }
    assert!(report.is_empty(), "import loops in src/:\n{report}");
}

#[test]
fn every_module_imports_only_lower_layers() {
    let layer_of = |top: &str| LAYERS.iter().position(|l| l.contains(&top));
    let graph = graph();
    let mut report = String::new();
    for (from, edges) in &graph {
        let top = |p: &Path| {
            let first = p.components().next().expect("a file under src/");
            let first = first.as_os_str().to_string_lossy().into_owned();
            first.trim_end_matches(".rs").to_string()
        };
        let from_top = top(from);
        if from_top == "lib" || from_top == "main" {
            continue;
        }
        let Some(from_layer) = layer_of(&from_top) else {
            report += &format!("src/{}: a module of no layer in LAYERS\n", from.display());
            continue;
        };
        for (to, names) in edges {
            let to_top = top(to);
            if to_top == from_top || to_top == "lib" {
                continue;
            }
            match layer_of(&to_top) {
                Some(l) if l <= from_layer => {}
                _ => {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    report += &format!(
                        "src/{} imports a higher layer, src/{}: {}\n",
                        from.display(),
                        to.display(),
                        names.join(", ")
                    )
                }
            }
        }
    }
    assert!(report.is_empty(), "{report}");
}

#[test]
fn the_reader_sees_a_known_loop() {
    let a = Unit {
        module: vec!["a".into()],
        text: "use crate::b::{X, c::{Y as Z}};\nfn f() { super::d::g() } // crate::e".into(),
    };
    let named: Vec<String> = paths_named(&a, false)
        .into_iter()
        .map(|(p, _)| p.join("::"))
        .collect();
    assert_eq!(named, ["b::X", "b::c::Y", "d::g"]);
    let mut g = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(from.into())
            .or_default()
            .insert(to.into(), BTreeSet::new());
    }
    assert_eq!(
        loops(&g),
        [vec![PathBuf::from("a"), "b".into(), "c".into()]]
    );
}
