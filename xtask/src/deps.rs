//! `cargo xtask deps`: the import graph of leaktrace's top-level modules, checked for cycles.
//!
//! Each file under `leaktrace/src` belongs to the top-level module of its first path
//! component; every `crate::name` it mentions (in paths and in `use crate::{…}` groups) is
//! an edge to `name`. The check fails on any cycle, and when the report model (`model`)
//! depends on any other module of ours: it must stay at the bottom of the house.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{bail, Context as _, Result};

/// Longest function allowed in shipped code, in lines.
const MAX_FUNCTION_LINES: usize = 80;

/// The modules every other one may use and which use none of ours.
const LEAVES: &[&str] = &["model"];

/// Module → the modules it uses.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Builds the graph of `src` (the crate's source folder).
pub fn graph(src: &Path) -> Result<Graph> {
    let mut graph = Graph::new();
    for entry in walk(src)? {
        let relative = entry.strip_prefix(src)?;
        let first = relative.components().next().context("empty path")?.as_os_str().to_string_lossy().into_owned();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&entry).with_context(|| format!("reading {}", entry.display()))?;
        let uses = graph.entry(module.clone()).or_default();
        for name in crate_references(&text) {
            if name != module {
                uses.insert(name);
            }
        }
    }
    Ok(graph)
}

fn walk(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The first component of every `crate::…` path in `text`, including each path of a
/// `crate::{a::…, b, c::{…}}` group. Comments are skipped.
pub fn crate_references(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `leaktrace_crate::` or similar
        }
        if let Some(group) = rest.strip_prefix('{') {
            names.extend(group_heads(group));
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// The first identifier of each path at the top level of a `{…}` group (text after `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expecting = true;
    let mut word = String::new();
    for c in group.chars() {
        if depth == 0 && expecting && (c.is_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            heads.push(std::mem::take(&mut word));
            expecting = false;
        }
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting = true,
            _ => {}
        }
    }
    if !word.is_empty() {
        heads.push(word);
    }
    heads.retain(|h| h != "self");
    heads
}

/// A cycle of `graph`, if it has one.
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(node: &str, graph: &Graph, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// Functions longer than `limit` lines in `text` (test modules left out), as (name, first
/// line, length). A function ends at the first line that closes it at its own indent.
pub fn long_functions(text: &str, limit: usize) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let Some(signature) = [
            "pub(crate) fn ",
            "pub(super) fn ",
            "pub fn ",
            "async fn ",
            "pub async fn ",
            "const fn ",
            "pub const fn ",
            "fn ",
        ]
        .iter()
        .find_map(|prefix| trimmed.strip_prefix(prefix)) else {
            continue;
        };
        if trimmed.ends_with(';') {
            continue; // a declaration in a trait
        }
        let name: String = signature.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let closing = format!("{indent}}}");
        let end = lines[i..].iter().position(|l| *l == closing).map_or(lines.len(), |n| i + n);
        let length = end - i + 1;
        if length > limit {
            long.push((name, i + 1, length));
        }
    }
    long
}

/// Fails on a function over [`MAX_FUNCTION_LINES`] in the shipped crates under `root`.
pub fn check_function_lengths(root: &Path) -> Result<()> {
    let mut long = Vec::new();
    for crate_dir in ["leaktrace/src", "leaktrace-common/src", "leaktrace-ebpf/src"] {
        for path in walk(&root.join(crate_dir))? {
            let text = std::fs::read_to_string(&path)?;
            for (name, line, length) in long_functions(&text, MAX_FUNCTION_LINES) {
                long.push(format!("{}:{line} {name} ({length} lines)", path.strip_prefix(root)?.display()));
            }
        }
    }
    if !long.is_empty() {
        bail!("functions over {MAX_FUNCTION_LINES} lines (split them):\n{}", long.join("\n"));
    }
    Ok(())
}

/// Prints the graph of the crate source folder `src` and fails on a cycle or a leaf that
/// uses another module.
pub fn check(src: &Path) -> Result<()> {
    let graph = graph(src)?;
    for (module, uses) in &graph {
        println!("{module} -> {}", uses.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    for leaf in LEAVES {
        if let Some(uses) = graph.get(*leaf).filter(|u| !u.is_empty()) {
            bail!("{leaf} must use no other module of leaktrace, but uses {uses:?}");
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        bail!("import cycle among leaktrace's modules: {}", cycle.join(" -> "));
    }
    println!("no import cycle among {} modules", graph.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_paths_and_group_heads() {
        let text = "use crate::{\n    aggregate::{self, X},\n    bpf::Tracer,\n    error::{Error, Result}, model,\n    render,\n};\nlet x = crate::trend::classify(s); // crate::ignored\n";
        let names: Vec<String> = crate_references(text).into_iter().collect();
        assert_eq!(names, ["aggregate", "bpf", "error", "model", "render", "trend"]);
    }

    #[test]
    fn measures_functions() {
        let text = "fn short() {\n    1\n}\n\nimpl X {\n    pub fn long() {\n        a();\n        b();\n    }\n}\n";
        assert_eq!(long_functions(text, 3), [("long".to_string(), 6, 4)]);
        assert!(long_functions(text, 4).is_empty());
    }

    #[test]
    fn finds_a_cycle() {
        let mut graph = Graph::new();
        graph.entry("a".into()).or_default().insert("b".into());
        graph.entry("b".into()).or_default().insert("c".into());
        assert!(find_cycle(&graph).is_none());
        graph.entry("c".into()).or_default().insert("a".into());
        assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    }
}
