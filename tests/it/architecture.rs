//! The house rules that code review alone would let slip (issue 15): no import cycle between
//! the library's files, and no background task started outside the composition root.
//!
//! Imports are read from the source the way a reader follows them: `use` trees and inline
//! `crate::`/`super::`/`self::` paths (and paths through a child module the file declares),
//! each resolved to the file that defines the deepest module it names. Doc comments and
//! `#[cfg(test)]` modules are not imports. A parent's `pub use` of its own children is its
//! face, and a child's use of its parent's items is the module's inside: neither draws an arrow
//! (as in `farm-studio look`, which the before-stop hook runs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One library file: its module path and its source without comments and test modules.
struct SourceFile {
    module: Vec<String>,
    text: String,
}

fn library_files() -> BTreeMap<PathBuf, SourceFile> {
    let src = crate::common::root().join("src");
    let mut files = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(&src).expect("under src").to_path_buf();
                if rel == Path::new("main.rs") {
                    continue; // the binary: it reaches the library as `groundwork::`
                }
                let raw = std::fs::read_to_string(&path).expect("source is readable");
                files.insert(
                    rel.clone(),
                    SourceFile {
                        module: module_of(&rel),
                        text: code_only(&raw),
                    },
                );
            }
        }
    }
    files
}

/// `agent/tasks.rs` → `[agent, tasks]`; `agent/mod.rs` → `[agent]`; `lib.rs` → `[]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The source without comment lines and without the `#[cfg(test)]` items that follow.
fn code_only(raw: &str) -> String {
    let mut out = String::new();
    for line in raw.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands a `use` tree (`a::{b, c::{d, e as f}}`) into its paths.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn go(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
        let s = s.trim();
        if let Some(open) = s.find('{') {
            let head: Vec<String> = s[..open]
                .split("::")
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect();
            let inner = &s[open + 1..s.rfind('}').unwrap_or(s.len())];
            let mut base = prefix.to_vec();
            base.extend(head);
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        go(&base, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            go(&base, &inner[start..], out);
        } else if !s.is_empty() {
            let s = s.split(" as ").next().unwrap_or(s);
            let mut path = prefix.to_vec();
            path.extend(s.split("::").map(|x| x.trim().to_owned()));
            out.push(path);
        }
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

/// Every path the file names: `(is a pub re-export, segments)`.
fn references(text: &str, children: &BTreeSet<String>) -> Vec<(bool, Vec<String>)> {
    let mut refs = Vec::new();
    let mut rest = String::new();
    // `use` statements (rustfmt starts each on its own line), taken out of the text.
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let found = [
            ("pub use ", true),
            ("pub(crate) use ", true),
            ("pub(super) use ", true),
            ("use ", false),
        ]
        .into_iter()
        .find(|(p, _)| t.starts_with(p));
        let Some((prefix, public)) = found else {
            rest.push_str(line);
            rest.push('\n');
            continue;
        };
        let mut statement = t[prefix.len()..].to_owned();
        while !statement.contains(';') {
            match lines.next() {
                Some(more) => statement.push_str(more),
                None => break,
            }
        }
        let tree = statement.split(';').next().unwrap_or_default();
        refs.extend(expand_use(tree).into_iter().map(|p| (public, p)));
    }
    // Inline paths.
    let chars: Vec<char> = rest.chars().collect();
    let mut j = 0;
    while j < chars.len() {
        if is_ident(chars[j]) && (j == 0 || !(is_ident(chars[j - 1]) || chars[j - 1] == ':')) {
            let mut k = j;
            let mut path = Vec::new();
            loop {
                let start = k;
                while k < chars.len() && is_ident(chars[k]) {
                    k += 1;
                }
                path.push(chars[start..k].iter().collect::<String>());
                if k + 2 < chars.len()
                    && chars[k] == ':'
                    && chars[k + 1] == ':'
                    && is_ident(chars[k + 2])
                {
                    k += 2;
                } else {
                    break;
                }
            }
            let first = path[0].as_str();
            if path.len() > 1
                && (matches!(first, "crate" | "super" | "self") || children.contains(first))
            {
                refs.push((false, path));
            }
            j = k;
        } else {
            j += 1;
        }
    }
    refs
}

/// Child modules a file declares (`mod x;`, `pub mod x;`).
fn declared_children(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(|m| m.trim().to_owned())
        })
        .collect()
}

/// The file → files it imports.
fn import_graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let files = library_files();
    let by_module: BTreeMap<&[String], &PathBuf> = files
        .iter()
        .map(|(path, f)| (f.module.as_slice(), path))
        .collect();
    let mut graph = BTreeMap::new();
    for (path, file) in &files {
        let children = declared_children(&file.text);
        let mut edges = BTreeSet::new();
        for (public, segments) in references(&file.text, &children) {
            // Where the path starts, and how many of its segments that start consumed.
            let (mut base, skip) = match segments[0].as_str() {
                "crate" => (Vec::new(), 1),
                "self" => (file.module.clone(), 1),
                "super" => {
                    let k = segments.iter().take_while(|s| *s == "super").count();
                    let mut m = file.module.clone();
                    m.truncate(m.len().saturating_sub(k));
                    (m, k)
                }
                _ => (file.module.clone(), 0),
            };
            // The deepest module the path names.
            for s in &segments[skip..] {
                base.push(s.clone());
                if !by_module.contains_key(base.as_slice()) {
                    base.pop();
                    break;
                }
            }
            // A parent's re-export of its children is its face; a child reaching up into the
            // module it belongs to (its `super::` items) is that module's inside.
            let facade = public && base.starts_with(&file.module) && base != file.module;
            let inside = file.module.starts_with(&base);
            if let Some(target) = by_module.get(base.as_slice()) {
                if *target != path && !facade && !inside {
                    edges.insert((*target).clone());
                }
            }
        }
        graph.insert(path.clone(), edges);
    }
    graph
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a PathBuf) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.found
}

/// The checker itself must see a loop: two files that import each other are one.
#[test]
fn the_cycle_finder_finds_a_cycle() {
    let graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = [
        ("a.rs", vec!["b.rs"]),
        ("b.rs", vec!["c.rs"]),
        ("c.rs", vec!["a.rs"]),
        ("d.rs", vec!["a.rs"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into_iter().map(PathBuf::from).collect()))
    .collect();
    assert_eq!(
        cycles(&graph),
        vec![vec![
            PathBuf::from("a.rs"),
            PathBuf::from("b.rs"),
            PathBuf::from("c.rs")
        ]]
    );
    let children = BTreeSet::from(["tasks".to_owned()]);
    let refs = references(
        "use crate::{a::{B, c as d}, e};\npub use tasks::Runner;\nlet x = super::f::g(tasks::h());",
        &children,
    );
    let paths: Vec<String> = refs.iter().map(|(_, p)| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "crate::a::B",
            "crate::a::c",
            "crate::e",
            "tasks::Runner",
            "super::f::g",
            "tasks::h"
        ]
    );
}

/// "An import loop: agent → service → config → agent" (and the smaller ones): none may
/// come back. A failure names every loop's files.
#[test]
fn an_import_loop() {
    let graph = import_graph();
    assert!(graph.len() > 50, "the library's files were read");
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|c| {
            c.iter()
                .map(|f| {
                    let to: Vec<String> = graph[f]
                        .iter()
                        .filter(|t| c.contains(t))
                        .map(|t| t.display().to_string())
                        .collect();
                    format!("  {} -> {}", f.display(), to.join(", "))
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles:\n{}",
        described.join("\n\n")
    );
}

/// "8 bare `tokio::spawn`s and an unbounded channel": every task and thread is started by
/// the supervisor (which shutdown awaits and joins), and no queue is unbounded.
#[test]
fn bare_spawns_and_an_unbounded_channel() {
    const STARTS: [&str; 6] = [
        "tokio::spawn(",
        "task::spawn(",
        "thread::spawn(",
        "thread::Builder::new(",
        "spawn_local(",
        "unbounded_channel",
    ];
    let mut found = Vec::new();
    for (path, file) in library_files() {
        if path == Path::new("supervisor.rs") || path.ends_with("tests.rs") {
            continue;
        }
        for line in file.text.lines() {
            if let Some(s) = STARTS.iter().find(|s| line.contains(**s)) {
                found.push(format!("  {}: `{s}` in: {}", path.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "started outside the supervisor:\n{}",
        found.join("\n")
    );
}
