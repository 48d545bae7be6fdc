//! Repo lints as tests (rust-analyzer's `tidy` pattern): this repository's own layout,
//! its Nix files and its README stay valid, so CI catches drift without a separate tool.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use common::repo_root;

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                nix_files(&path, out);
            }
        } else if name.ends_with(".nix") {
            out.push(path);
        }
    }
}

fn all_nix_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    nix_files(&repo_root(), &mut files);
    files.sort();
    assert!(
        files.len() >= 8,
        "expected the repo's Nix files, found {files:?}"
    );
    files
}

/// Every Nix file parses (nix-instantiate --parse, one process for all of them).
#[test]
fn nix_files_parse() {
    let files = all_nix_files();
    for file in &files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not parse: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The Nix files follow one format (nixfmt's RFC style, which cannot be fetched here):
/// two-space indentation, no tabs, no trailing blanks, one final newline.
#[test]
fn nix_files_are_formatted() {
    let mut problems = Vec::new();
    for file in all_nix_files() {
        let text = fs::read_to_string(&file).unwrap();
        let rel = file
            .strip_prefix(repo_root())
            .unwrap()
            .display()
            .to_string();
        if !text.ends_with('\n') || text.ends_with("\n\n") {
            problems.push(format!("{rel}: must end with exactly one newline"));
        }
        let mut in_string = false;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.contains('\t') {
                problems.push(format!("{rel}:{n}: tab"));
            }
            if line.ends_with(' ') {
                problems.push(format!("{rel}:{n}: trailing whitespace"));
            }
            let indent = line.len() - line.trim_start().len();
            // Indented strings ('' … '') keep their content's own indentation.
            if !in_string && indent % 2 != 0 {
                problems.push(format!("{rel}:{n}: indentation is not a multiple of two"));
            }
            if line.matches("''").count() % 2 == 1 {
                in_string = !in_string;
            }
        }
    }
    assert!(
        problems.is_empty(),
        "Nix formatting:\n{}",
        problems.join("\n")
    );
}

/// This repository's own homes/ and systems/ are a valid layout (names, parts, meta.nix),
/// checked by the real binary the way users run it.
#[test]
fn own_layout_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["list", "--json"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["homes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"alice") && names.contains(&"bob"),
        "{names:?}"
    );
    assert_eq!(v["hosts"][0]["name"], "workstation");
}

/// README documents every task, the two commands and troubleshooting.
#[test]
fn readme_covers_every_task() {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let help = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let tasks: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|t| *t != "help")
        .collect();
    assert!(tasks.len() >= 10, "{tasks:?}");
    for task in tasks {
        assert!(
            readme.contains(&format!("cargo xtask {task}")),
            "README.md has no example of `cargo xtask {task}`"
        );
    }
    for section in ["## Install", "## Troubleshooting", "cargo xtask test"] {
        assert!(readme.contains(section), "README.md lacks {section}");
    }
    let ci = fs::read_to_string(repo_root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("cargo xtask test"),
        ".ci/run must run README's test command"
    );
}

/// Every task and flag has help text.
#[test]
fn every_task_has_help() {
    let help = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for line in help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
    {
        let task = line.split_whitespace().next().unwrap();
        if task == "help" {
            continue;
        }
        assert!(
            line.split_whitespace().count() > 1,
            "task {task} has no help line"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([task, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{task} --help failed");
    }
}

/// Every `.rs` file of the crate's `src/`, and that directory.
fn crate_sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_sources(&src, &mut files);
    (src, files)
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `println!` and friends panic when the reader of a pipe is gone; a panic inside a
/// switch's critical section would leave the profile and `$HOME` apart. Output goes
/// through `term`, whose writes cannot panic.
#[test]
fn no_panicking_output_outside_term() {
    let (_, files) = crate_sources();
    let mut bad = Vec::new();
    for f in files.iter().filter(|f| !f.ends_with("term.rs")) {
        let text = fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if ["println!(", "eprintln!(", "print!(", "eprint!(", "dbg!("]
                .iter()
                .any(|m| code.contains(m))
            {
                bad.push(format!("{}:{}", f.display(), n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "use term::out / term::info instead: {bad:?}"
    );
}

/// The layers point down (tasks → home → repo → nix → term): a task never imports
/// another task, and the shared modules never import a task.
#[test]
fn layers_point_down() {
    let (src, files) = crate_sources();
    let mut bad = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let in_tasks = rel.starts_with("tasks/");
        // The benchmarks measure other tasks' internals on purpose.
        if rel.starts_with("tasks/bench/") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let l = line.trim();
            // `use super::*;` is a unit-test module importing its own file.
            let sibling = in_tasks && l.starts_with("use super::") && l != "use super::*;" && {
                // A task's own submodules (check/eval.rs) may use their parent.
                rel.matches('/').count() == 1
            };
            if l.contains("crate::tasks::") || sibling {
                bad.push(format!("{rel}:{}: {l}", n + 1));
            }
        }
    }
    assert!(bad.is_empty(), "tasks must not import each other: {bad:?}");
}

/// The only unsafe code is the lock's pre-exec hook (sharing the lock with `activate`).
#[test]
fn unsafe_only_where_documented() {
    let (src, files) = crate_sources();
    let with_unsafe: Vec<_> = files
        .iter()
        .filter(|f| {
            fs::read_to_string(f)
                .unwrap()
                .lines()
                .any(|l| l.split("//").next().unwrap_or("").contains("unsafe "))
        })
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert_eq!(with_unsafe, vec!["home/lock.rs".to_string()]);
}
