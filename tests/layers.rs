//! The framework's modules form layers: `src/lib.rs` declares them bottom to top, and a
//! module may use only modules declared before it. This test reads every `crate::` path
//! in `src/` (comments aside) and fails on one that goes up, so a back-edge (and with it
//! an import cycle) is caught before it lands.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The top-level modules in the order `src/lib.rs` declares them.
fn layers(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let rest = line.strip_prefix("pub ").unwrap_or(line);
            let name = rest.strip_prefix("mod ")?.split(';').next()?;
            Some(name.trim().to_owned())
        })
        .collect()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The code of a line, without its comment (a `//` outside a string literal).
fn code(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Every `crate::NAME` on a line of code.
fn crate_paths(line: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = code(line);
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if !preceded_by_ident && end > 0 {
            names.push(&rest[..end]);
        }
    }
    names
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = layers(&fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(
        order.len() > 10,
        "read the layers from src/lib.rs: {order:?}"
    );
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();

    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" {
            continue;
        }
        let own = *rank
            .get(top.as_str())
            .unwrap_or_else(|| panic!("{} is not declared in src/lib.rs", relative.display()));
        let text = fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            for name in crate_paths(line) {
                let at = format!("{}:{}", relative.display(), number + 1);
                match rank.get(name) {
                    Some(&used) if used > own => {
                        violations.push(format!("{at}: `{top}` uses `{name}`, a layer above it"))
                    }
                    Some(_) => {}
                    None => violations.push(format!(
                        "{at}: `crate::{name}` is not a module path; name the module it comes from"
                    )),
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that go up the layers of src/lib.rs:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_reader_sees_code_not_comments_and_strings() {
    assert_eq!(
        crate_paths("use crate::outlet::{Outlet, Sender};"),
        ["outlet"]
    );
    assert_eq!(
        crate_paths("x(); // see crate::endpoint"),
        Vec::<&str>::new()
    );
    assert_eq!(crate_paths(r#"log!("// {}", crate::heap::f())"#), ["heap"]);
    assert_eq!(crate_paths("my_crate::thing"), Vec::<&str>::new());
    assert_eq!(
        layers("mod a; // first\npub mod b;\n// mod c;\nmod d;"),
        ["a", "b", "d"]
    );
}
