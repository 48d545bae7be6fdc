//! `cargo xtask update` with the real binary and real nix, offline: a fixture flake whose
//! inputs are a `path:` directory and a `git+file:` repository beside it, changed
//! between runs.

mod common;

use std::{fs, path::PathBuf, process::Command};

use common::Fixture;

struct Inputs {
    f: Fixture,
    dep: PathBuf,
    gdep: PathBuf,
}

fn git(dir: &PathBuf, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.email=t@example.org", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The fixture with two inputs, locked (flake.lock committed).
fn locked() -> Inputs {
    let f = Fixture::new();
    let tmp = f.root.parent().unwrap().to_path_buf();
    let (dep, gdep) = (tmp.join("dep"), tmp.join("gdep"));
    fs::create_dir_all(&dep).unwrap();
    fs::write(dep.join("a"), "one\n").unwrap();
    fs::create_dir_all(&gdep).unwrap();
    git(&gdep, &["init", "-q", "-b", "main"]);
    fs::write(gdep.join("f"), "1\n").unwrap();
    git(&gdep, &["add", "f"]);
    git(&gdep, &["commit", "-q", "-m", "1"]);
    f.write(
        "flake.nix",
        &format!(
            "{{\n  inputs.dep = {{\n    url = \"path:{}\";\n    flake = false;\n  }};\n  inputs.gdep = {{\n    url = \"git+file://{}\";\n    flake = false;\n  }};\n  outputs = {{ self, dep, gdep }}: {{ }};\n}}\n",
            dep.display(),
            gdep.display()
        ),
    )
    .commit();
    let run = f.xtask(&["update"]);
    run.success()
        .stdout_has("dep: (new) → sha256-")
        .stdout_has("gdep: (new) → ");
    f.commit();
    Inputs { f, dep, gdep }
}

fn lock_json(f: &Fixture) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(f.root.join("flake.lock")).unwrap()).unwrap()
}

#[test]
fn update_changes_a_path_input_and_prints_old_to_new() {
    let Inputs { f, dep, .. } = locked();
    let before = lock_json(&f);
    fs::write(dep.join("a"), "two\n").unwrap();
    let run = f.xtask(&["update", "dep"]);
    run.success();
    let after = lock_json(&f);
    let hash = |v: &serde_json::Value| {
        v["nodes"]["dep"]["locked"]["narHash"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_ne!(hash(&before), hash(&after));
    // `dep: sha256-AAAA… (date) → sha256-BBBB… (date)`, and nothing about gdep.
    let old = &hash(&before)[..16];
    let new = &hash(&after)[..16];
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("dep: "))
        .expect(&run.stdout);
    assert!(
        line.contains(old) && line.contains(" → ") && line.contains(new),
        "{line}"
    );
    assert!(!run.stdout.contains("gdep"), "{}", run.stdout);
    assert_eq!(before["nodes"]["gdep"], after["nodes"]["gdep"]);
    // Nothing left to update: said, and flake.lock stays as it is.
    let again = f.xtask(&["update", "dep"]);
    again.success().stderr_has("no input changed");
    assert_eq!(lock_json(&f), after);
}

#[test]
fn update_prints_a_git_input_s_revisions_and_dates() {
    let Inputs { f, gdep, .. } = locked();
    let old = git(&gdep, &["rev-parse", "--short=7", "HEAD"]);
    fs::write(gdep.join("f"), "2\n").unwrap();
    git(&gdep, &["commit", "-q", "-am", "2"]);
    let new = git(&gdep, &["rev-parse", "--short=7", "HEAD"]);
    let run = f.xtask(&["update"]);
    run.success();
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("gdep: "))
        .expect(&run.stdout);
    // gdep: abc1234 (YYYY-MM-DD) → def5678 (YYYY-MM-DD)
    let re = format!("gdep: {old} (");
    assert!(
        line.starts_with(&re) && line.contains(&format!(") → {new} (")),
        "{line}"
    );
    assert!(
        !run.stdout.contains("dep: sha"),
        "the path input did not change: {}",
        run.stdout
    );
}

#[test]
fn update_commit_commits_flake_lock_with_the_summary() {
    let Inputs { f, dep, .. } = locked();
    let head = f.git(&["rev-parse", "HEAD"]);
    fs::write(dep.join("a"), "three\n").unwrap();
    let run = f.xtask(&["update", "--commit", "dep"]);
    run.success();
    assert_ne!(f.git(&["rev-parse", "HEAD"]), head);
    let message = f.git(&["log", "-1", "--format=%B"]);
    assert!(message.starts_with("flake.lock: update dep\n"), "{message}");
    let summary = run.stdout.lines().next().unwrap();
    assert!(message.contains(summary), "{message}\n---\n{summary}");
    assert_eq!(
        f.git(&["show", "--format=", "--name-only", "HEAD"]).trim(),
        "flake.lock"
    );
    assert_eq!(f.git(&["status", "--porcelain"]).trim(), "");
}

#[test]
fn update_of_an_unknown_input_is_a_usage_error() {
    let Inputs { f, .. } = locked();
    let before = fs::read(f.root.join("flake.lock")).unwrap();
    let run = f.xtask(&["update", "dep", "nosuch"]);
    run.failure(2)
        .stderr_has("unknown input 'nosuch'")
        .stderr_has("dep, gdep");
    assert_eq!(fs::read(f.root.join("flake.lock")).unwrap(), before);
}

#[test]
fn update_dry_run_prints_the_commands_and_changes_nothing() {
    let Inputs { f, dep, .. } = locked();
    fs::write(dep.join("a"), "four\n").unwrap();
    let before = fs::read(f.root.join("flake.lock")).unwrap();
    let run = f.xtask(&["update", "dep", "--dry-run", "--commit"]);
    run.success();
    // Nix 2.8–2.18: flake lock --update-input; 2.19+: flake update NAME.
    assert!(
        run.stdout.contains("flake lock --update-input dep")
            || run.stdout.contains("flake update dep"),
        "{}",
        run.stdout
    );
    run.stdout_has("git commit");
    assert_eq!(fs::read(f.root.join("flake.lock")).unwrap(), before);
}
