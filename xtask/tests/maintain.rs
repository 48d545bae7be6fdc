//! `diff` and `gc` against real nix and real profiles in a temporary `$HOME`.

mod common;

use std::fs;

use common::Fixture;

/// Switches the fixture's home to a generation that manages `files`.
fn switch_to(f: &Fixture, files: &[(&str, &str)]) {
    f.home_with_files(&f.user, files).commit();
    f.xtask(&["switch"]).success();
}

fn generation_ids(f: &Fixture) -> Vec<u64> {
    let run = f.xtask(&["generations", "--json"]);
    run.success();
    run.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn diff_shows_what_a_switch_would_change_and_changes_nothing() {
    let f = Fixture::with_home_files(&[]);
    switch_to(
        &f,
        &[(".bashrc", "a\nkeep\n"), (".old", "o\n"), (".same", "s\n")],
    );
    f.home_with_files(
        &f.user,
        &[(".bashrc", "b\nkeep\n"), (".new", "n\n"), (".same", "s\n")],
    )
    .commit();
    let before = Fixture::tree_digest(&f.home);

    let run = f.xtask(&["diff", "--json"]);
    run.success();
    let v = run.json();
    assert_eq!(v["added"], serde_json::json!([".new"]));
    assert_eq!(v["removed"], serde_json::json!([".old"]));
    let changed = v["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["path"], ".bashrc");
    let diff = changed[0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-a\n") && diff.contains("+b\n") && diff.contains(" keep\n"),
        "{diff}"
    );
    assert!(
        v["current"]
            .as_str()
            .unwrap()
            .ends_with("-home-manager-generation")
    );
    assert_ne!(v["current"], v["generation"]);
    // The pre-flight of the new generation: .new does not exist yet, nothing blocks.
    assert_eq!(v["preflight"]["summary"]["link"], 1);
    assert!(v["preflight"]["summary"].get("block").is_none());
    let new = v["preflight"]["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == f.home.join(".new").display().to_string())
        .unwrap();
    assert_eq!(new["action"], "link");

    let human = f.xtask(&["diff"]);
    human
        .success()
        .stdout_has("+ .new")
        .stdout_has("- .old")
        .stdout_has("~ .bashrc");
    assert_eq!(before, Fixture::tree_digest(&f.home), "diff changed HOME");
    // Read-only: no `result-home-<user>` GC root left in the repo either.
    assert!(fs::symlink_metadata(f.root.join(format!("result-home-{}", f.user))).is_err());
    assert_eq!(f.git(&["status", "--porcelain", "--ignored"]), "");
}

#[test]
fn diff_of_a_package_change_has_no_file_changes() {
    let f = Fixture::with_home_files(&[]);
    switch_to(&f, &[(".bashrc", "a\n")]);
    // The same files, one more package: a new generation with the same home-files.
    let home = common::nix_str(&f.home.display().to_string());
    f.home_module(
        &f.user,
        &format!(
            "{{ ... }}: {{\n  home.homeDirectory = {home};\n  home.file.\".bashrc\".text = \"a\\n\";\n  home.packages = [ \"hello\" ];\n}}\n"
        ),
    )
    .commit();
    let v = f.xtask(&["diff", "--json"]).success().json();
    assert_ne!(v["current"], v["generation"]);
    assert_eq!(v["added"], serde_json::json!([]));
    assert_eq!(v["removed"], serde_json::json!([]));
    assert_eq!(v["changed"], serde_json::json!([]));
    // The package side comes from `nix store diff-closures`, one line per change (none
    // here: the stub's packages live inside the generation, below its size threshold).
    assert_eq!(v["packages"], serde_json::json!([]));
    f.xtask(&["diff"]).success().stdout_has("no file changes");
}

#[test]
fn diff_before_the_first_switch_lists_every_file_as_new() {
    let f = Fixture::with_home_files(&[(".bashrc", "x\n"), (".profile", "y\n")]);
    fs::write(f.home.join(".bashrc"), "mine\n").unwrap();
    let run = f.xtask(&["diff"]);
    run.success()
        .stderr_has("no active generation")
        .stdout_has("+ .bashrc")
        .stdout_has("+ .profile")
        // The pre-flight says what would happen to the existing file.
        .stderr_has("backup   ~/.bashrc → ~/.bashrc.bak");
    assert_eq!(
        fs::read_to_string(f.home.join(".bashrc")).unwrap(),
        "mine\n"
    );
}

#[test]
fn gc_keeps_the_newest_generations_and_the_current_one() {
    let f = Fixture::with_home_files(&[]);
    for i in 1..=4 {
        switch_to(&f, &[(".v", &format!("{i}\n"))]);
    }
    assert_eq!(generation_ids(&f), vec![4, 3, 2, 1]);
    // Roll back to 2: it is the current one now and must survive a gc that keeps 1.
    f.xtask(&["rollback", "--to", "2"]).success();

    let dry = f.xtask(&["gc", "--keep", "1", "--dry-run"]);
    dry.success()
        .stdout_has("--delete-generations 3 1")
        .stdout_has("nix-store --gc");
    assert_eq!(
        generation_ids(&f),
        vec![4, 3, 2, 1],
        "dry run deleted something"
    );

    f.xtask(&["gc", "--keep", "1", "--no-store-gc"])
        .success()
        .stderr_has("deleting 2 of 4");
    assert_eq!(generation_ids(&f), vec![4, 2]);
    assert_eq!(fs::read_to_string(f.home.join(".v")).unwrap(), "2\n");

    f.xtask(&["gc", "--no-store-gc"])
        .success()
        .stderr_has("nothing to delete");
    assert_eq!(generation_ids(&f), vec![4, 2]);
}

#[test]
fn gc_refuses_to_keep_nothing() {
    let f = Fixture::with_home_files(&[(".v", "1\n")]);
    f.xtask(&["switch"]).success();
    f.xtask(&["gc", "--keep", "0"])
        .failure(2)
        .stderr_has("keep at least 1");
    assert_eq!(generation_ids(&f), vec![1]);
}

#[test]
fn user_names_are_checked_before_any_path_is_built() {
    let f = Fixture::with_home_files(&[(".v", "1\n")]);
    f.xtask(&["switch"]).success();
    let before = Fixture::tree_digest(&f.home);
    for task in [
        "generations",
        "rollback",
        "gc",
        "diff",
        "switch",
        "build-home",
    ] {
        // A bad argument is a usage error (exit 2), as README says.
        f.xtask(&[task, "../x"])
            .failure(2)
            .stderr_has("a name must match [a-z_][a-z0-9_-]*");
        assert_eq!(Fixture::tree_digest(&f.home), before, "{task} ../x");
    }
    for task in ["generations", "rollback", "gc", "switch"] {
        let mut cmd = f.command(&[task]);
        cmd.env("USER", "../x");
        common::run(cmd.output().unwrap())
            .failure(1)
            .stderr_has("$USER (or $LOGNAME) is not a user name")
            .stderr_has("a name must match [a-z_][a-z0-9_-]*");
        assert_eq!(Fixture::tree_digest(&f.home), before, "USER=../x {task}");
    }
}
