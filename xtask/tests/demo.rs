//! `cargo xtask demo`: README's first command runs green offline, shows every step as the
//! command a user types, and changes nothing outside its throwaway directory.

mod common;

use std::{
    fs,
    path::Path,
    process::{Command, Output},
};

use common::{Fixture, NIX_CONFIG, path_with_git_only, repo_root, run};

/// Every step header the demo prints, in order.
const STEPS: &[&str] = &[
    "$ cargo xtask new-user demo --global",
    "$ cargo xtask check",
    "$ cargo xtask build-home demo",
    "$ cargo xtask switch demo",
    "$ $EDITOR homes/demo@global/default.nix",
    "$ cargo xtask diff demo",
    "$ cargo xtask switch demo",
    "$ cargo xtask generations demo",
    "$ cargo xtask rollback demo",
    "$ cargo xtask gc demo --keep 1 --no-store-gc",
];

/// The demo as a user runs it: from the repository, with their own `$HOME` (here a
/// temporary one with a dotfile of its own) and `$USER`.
fn demo(home: &Path, args: &[&str], path: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("demo")
        .args(args)
        .current_dir(repo_root())
        .env("HOME", home)
        .env("USER", "someone")
        .env("LOGNAME", "someone")
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("NO_COLOR", "1")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_CACHE_HOME");
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.output().unwrap()
}

/// The user's home before the demo: a dotfile the demo's own `.bashrc` must not touch.
fn real_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    fs::write(home.path().join(".bashrc"), "# the real one\n").unwrap();
    fs::create_dir_all(home.path().join(".local/state/nix/profiles")).unwrap();
    home
}

/// The repository as the demo could change it: every file but the build output.
fn repo_digest() -> String {
    let root = repo_root();
    let mut out = String::new();
    for entry in fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "target" {
            continue;
        }
        if path.is_dir() {
            out.push_str(&format!("D {name}\n{}", Fixture::tree_digest(&path)));
        } else {
            out.push_str(&format!("F {name} {:?}\n", fs::read(&path).unwrap()));
        }
    }
    out
}

#[test]
fn demo_runs_every_step_and_touches_nothing_outside() {
    let home = real_home();
    let home_before = Fixture::tree_digest(home.path());
    let repo_before = repo_digest();

    let started = std::time::Instant::now();
    let r = run(demo(home.path(), &[], None));
    let took = started.elapsed();
    r.success()
        .stderr_has("demo passed: every step did what it should");
    let mut rest = r.stderr.as_str();
    for step in STEPS {
        let at = rest
            .find(step)
            .unwrap_or_else(|| panic!("no step `{step}` (in order) in:\n{}", r.stderr));
        rest = &rest[at + step.len()..];
    }
    // The dotfile hunk of `diff`, and the backup of the pre-existing ~/.bashrc.
    r.stderr_has("+alias ll='ls -l'")
        .stderr_has("backup   ~/.bashrc → ~/.bashrc.bak");
    assert_eq!(
        r.stderr.matches("\n  ok: ").count(),
        STEPS.len() - 1,
        "every command step verified:\n{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "no --json, no stdout: {}", r.stdout);

    assert_eq!(
        Fixture::tree_digest(home.path()),
        home_before,
        "the real HOME is untouched"
    );
    assert_eq!(repo_digest(), repo_before, "the repository is untouched");
    // The throwaway directory is gone.
    let dir = r
        .stderr
        .split_whitespace()
        .find(|w| w.contains("xtask-demo-"))
        .unwrap();
    assert!(!Path::new(dir).exists(), "{dir} was removed");
    assert!(took.as_secs() < 60, "the demo took {took:?}");
}

#[test]
fn demo_keep_and_json_summary() {
    let home = real_home();
    let r = run(demo(home.path(), &["--keep", "--json"], None));
    r.success().stderr_has("kept the throwaway directory: ");
    let v = r.json();
    assert_eq!(v["ok"], true);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 9, "{v:#}");
    assert!(steps.iter().all(|s| s["ok"] == true), "{v:#}");
    assert_eq!(steps[3]["command"], "cargo xtask switch demo");
    let kept = Path::new(v["kept"].as_str().unwrap()).to_path_buf();
    // What the last steps left: generation 1 current after the rollback, the backup.
    let thrown = kept.join("home");
    assert_eq!(
        fs::read_to_string(thrown.join(".bashrc.bak")).unwrap(),
        "# my own ~/.bashrc, from before Home Manager\nexport PS1='\\u@\\h \\w $ '\n"
    );
    assert_eq!(
        fs::read_link(thrown.join(".local/state/nix/profiles/home-manager")).unwrap(),
        Path::new("home-manager-1-link")
    );
    fs::remove_dir_all(&kept).unwrap();
}

#[test]
fn demo_names_the_failing_step() {
    let home = real_home();
    let before = Fixture::tree_digest(home.path());
    // A machine without nix: new-user still writes the home (and warns), check cannot run.
    let bin = path_with_git_only();
    let r = run(demo(home.path(), &["--json"], Some(bin.path())));
    r.failure(1)
        .stderr_has("step 2 `cargo xtask check`: expected exit status 0, got 1")
        .stderr_has("`nix` was not found on PATH");
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["steps"][0]["ok"], true);
    assert_eq!(v["steps"][1]["ok"], false);
    assert!(v["kept"].is_null());
    assert_eq!(Fixture::tree_digest(home.path()), before);
}
