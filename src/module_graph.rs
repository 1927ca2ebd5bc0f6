//! The crate's module graph, checked (DESIGN.md §4): the pipeline's arrows run one way. The
//! declared model, the configuration and the pure planner import no backend; no backend imports
//! another; the site's plan is made only by the converger; and the top-level modules form no
//! cycle. Read from the sources, so a new `use` that breaks a rule fails `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code (comments excluded) names as `crate::…`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in sources(&src) {
        let deps = out.entry(module.clone()).or_default();
        for dep in crate_refs(&text) {
            if dep != module {
                deps.insert(dep);
            }
        }
    }
    out
}

/// Every `.rs` file below `src/`, with the top-level module it belongs to (comments removed).
fn sources(src: &Path) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("src is readable") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("below src");
            let first = rel.components().next().expect("a name");
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if matches!(module.as_str(), "lib" | "main" | "bin" | "module_graph") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable source");
            let code: String = text
                .lines()
                .map(|l| match l.find("//") {
                    Some(i) => &l[..i],
                    None => l,
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.push((module, code));
        }
    }
    out
}

/// The top-level modules named in `crate::a::…` and `crate::{a::…, b}` paths.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Names at the group's first level: after `{` and after each `,` at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        out.insert(ident(&group[j..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

const BACKENDS: &[&str] = &["ldap", "slurm", "gold"];

#[test]
fn the_model_the_configuration_and_the_planner_import_no_backend() {
    let g = graph();
    for module in ["api", "config", "plan", "site", "guest", "clock", "text"] {
        let deps = g.get(module).unwrap_or_else(|| panic!("module {module}"));
        let wrong: Vec<&String> = deps
            .iter()
            .filter(|d| {
                BACKENDS.contains(&d.as_str())
                    || matches!(d.as_str(), "converge" | "operator" | "cli" | "import")
            })
            .collect();
        assert!(wrong.is_empty(), "{module} imports {wrong:?}");
    }
    assert!(
        g["api"].is_empty(),
        "api imports nothing of the crate: {:?}",
        g["api"]
    );
}

#[test]
fn no_backend_imports_another_or_what_drives_it() {
    let g = graph();
    for b in BACKENDS {
        let wrong: Vec<&String> = g[*b]
            .iter()
            .filter(|d| {
                BACKENDS.contains(&d.as_str())
                    || matches!(d.as_str(), "converge" | "operator" | "cli")
            })
            .collect();
        assert!(wrong.is_empty(), "{b} imports {wrong:?}");
    }
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let g = graph();
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit<'a>(
        g: &'a BTreeMap<String, BTreeSet<String>>,
        m: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| *p == m) {
            panic!("import cycle: {} → {m}", path[i..].join(" → "));
        }
        path.push(m);
        for d in g.get(m).into_iter().flatten() {
            visit(g, d, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(&g, m, &mut vec![], &mut done);
    }
}

#[test]
fn the_parser_sees_grouped_and_plain_paths() {
    let refs = crate_refs("use crate::{api::{A, B}, plan::Plan};\nlet x = crate::ldap::Directory;");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["api", "ldap", "plan"]
    );
}

#[test]
fn the_site_is_planned_only_by_the_converger() {
    // The site planner runs as the LDAP backend's plan step; backends' plans are made only by
    // the converger, for both modes.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut converger_plans = false;
    for (module, code) in sources(&src) {
        let calls_planner = code.contains("plan::plan(");
        let calls_backend_plan = code.contains(".plan(");
        match module.as_str() {
            "converge" => converger_plans |= calls_backend_plan,
            "plan" => {}
            "ldap" => assert!(!calls_backend_plan, "ldap"),
            m => assert!(
                !calls_planner && !calls_backend_plan,
                "{m} plans the site itself; only the converger may"
            ),
        }
    }
    assert!(converger_plans, "the converger plans");
    let backend = std::fs::read_to_string(src.join("ldap/backend.rs")).expect("the LDAP seam");
    assert!(backend.contains("crate::plan::plan("));
}
