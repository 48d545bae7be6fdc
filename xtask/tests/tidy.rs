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
