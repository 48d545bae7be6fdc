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
    // The package side: the one new package (a versionless name; the stub makes each
    // package its own store path, as Home Manager's buildEnv has them), a bigger closure.
    assert_eq!(
        v["packages"]["added"],
        serde_json::json!([{"name": "hello", "version": ""}])
    );
    assert_eq!(v["packages"]["removed"], serde_json::json!([]));
    assert_eq!(v["packages"]["changed"], serde_json::json!([]));
    let size = &v["packages"]["size"];
    assert!(size["after"].as_u64() > size["before"].as_u64(), "{size}");
    f.xtask(&["diff"])
        .success()
        .stdout_has("no file changes")
        .stdout_has("  + hello\n");
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

/// Sets the mtime of generation `id`'s link (its date) to `days` days ago.
fn age_generation(f: &Fixture, id: u64, days: u32) {
    let link = f.profiles().join(format!("home-manager-{id}-link"));
    let out = std::process::Command::new("touch")
        .args(["-h", "-d", &format!("{days} days ago")])
        .arg(&link)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gc_older_than_deletes_only_what_keep_and_age_both_let_go() {
    let f = Fixture::with_home_files(&[]);
    for i in 1..=5 {
        switch_to(&f, &[(".v", &format!("{i}\n"))]);
    }
    for (id, days) in [(1, 60), (2, 45), (3, 31), (4, 10)] {
        age_generation(&f, id, days);
    }
    // --keep 2 alone would delete 3, 2, 1; 30d alone 3, 2, 1; --keep 4: only 1.
    let v = f
        .xtask(&[
            "gc",
            "--keep",
            "4",
            "--older-than",
            "30d",
            "--no-store-gc",
            "--dry-run",
            "--json",
        ])
        .success()
        .json();
    let ids = |v: &serde_json::Value| -> Vec<u64> {
        v["delete"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&v), [1]);
    assert_eq!(v["older_than"], "30d");
    assert_eq!(v["kept"], serde_json::json!([5, 4, 3, 2]));
    // Each doomed generation with its date and closure size.
    let g = &v["delete"][0];
    assert!(g["closure_size"].as_u64().unwrap() > 0, "{g}");
    assert_eq!(g["date"].as_str().unwrap().len(), 16, "{g}");
    // Age 40d: 1 and 2 are older, 3 (31 days) is not.
    let v = f
        .xtask(&[
            "gc",
            "--keep",
            "1",
            "--older-than",
            "40d",
            "--no-store-gc",
            "--dry-run",
            "--json",
        ])
        .success()
        .json();
    assert_eq!(ids(&v), [2, 1]);
    // In weeks and hours.
    let v = f
        .xtask(&[
            "gc",
            "--keep",
            "1",
            "--older-than",
            "5w",
            "--no-store-gc",
            "--dry-run",
            "--json",
        ])
        .success()
        .json();
    assert_eq!(ids(&v), [2, 1]);
    let v = f
        .xtask(&[
            "gc",
            "--keep",
            "1",
            "--older-than",
            "12h",
            "--no-store-gc",
            "--dry-run",
            "--json",
        ])
        .success()
        .json();
    assert_eq!(ids(&v), [4, 3, 2, 1]);
    assert_eq!(
        generation_ids(&f),
        [5, 4, 3, 2, 1],
        "a dry run deleted something"
    );

    f.xtask(&["gc", "--keep", "1", "--older-than", "30d", "--no-store-gc"])
        .success()
        .stderr_has("deleting 3 of 5");
    assert_eq!(generation_ids(&f), [5, 4]);
}

#[test]
fn gc_refuses_bad_durations_naming_the_accepted_forms() {
    let f = Fixture::with_home_files(&[(".v", "1\n")]);
    f.xtask(&["switch"]).success();
    for bad in ["-1d", "abc", "30", "1m", "0d", "1.5d"] {
        f.xtask(&["gc", "--older-than", bad])
            .failure(2)
            .stderr_has("the accepted forms are Nh, Nd and Nw");
        f.xtask(&["gc", &format!("--older-than={bad}")])
            .failure(2)
            .stderr_has("12h, 30d, 2w");
    }
    assert_eq!(generation_ids(&f), vec![1]);
}

/// `nix-store --check-validity`: whether `path` is still in the store.
fn in_store(path: &str) -> bool {
    std::process::Command::new("nix-store")
        .args(["--check-validity", path])
        .output()
        .unwrap()
        .status
        .success()
}

/// A store path no root keeps: what a store gc would delete.
fn garbage(text: &str) -> String {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("xtask-gc-test");
    fs::write(&file, text).unwrap();
    let out = std::process::Command::new("nix-store")
        .arg("--add")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn gc_dry_run_lists_and_estimates_and_changes_nothing() {
    let f = Fixture::with_home_files(&[]);
    for i in 1..=3 {
        switch_to(&f, &[(".v", &format!("{i}\n"))]);
    }
    let gens: Vec<String> = f
        .xtask(&["generations", "--json"])
        .success()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["path"].as_str().unwrap().to_string())
        .collect();
    let dead = garbage(&format!("dead {}\n", f.home.display()));
    let profile = Fixture::tree_digest(&f.profiles());
    let home = Fixture::tree_digest(&f.home);

    let run = f.xtask(&["gc", "--keep", "1", "--dry-run"]);
    run.success()
        .stderr_has("would delete 2 of 3")
        .stderr_has("  id 2 : ")
        .stderr_has("  id 1 : ")
        .stderr_has("the store gc would free about")
        .stdout_has("--delete-generations 2 1")
        .stdout_has("nix-store --gc");
    let v = f
        .xtask(&["gc", "--keep", "1", "--dry-run", "--json"])
        .success()
        .json();
    assert_eq!(v["dry_run"], true);
    // At least the dead path and the two generations (their closures are their own).
    assert!(v["store"]["paths"].as_u64().unwrap() >= 3, "{v}");
    assert!(v["store"]["bytes"].as_u64().unwrap() > 0, "{v}");

    assert_eq!(
        profile,
        Fixture::tree_digest(&f.profiles()),
        "the profile changed"
    );
    assert_eq!(home, Fixture::tree_digest(&f.home), "HOME changed");
    assert!(in_store(&dead), "the dry run collected garbage");
    for g in &gens {
        assert!(in_store(g), "{g} was collected");
    }
}

#[test]
fn gc_removes_stale_roots_and_leaves_live_ones() {
    let mut f = Fixture::with_home_files(&[(".v", "1\n")]);
    f.xtask(&["switch"]).success();
    let tmp = f.root.parent().unwrap().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    f.extra_env
        .insert("TMPDIR".into(), tmp.display().to_string());
    let target = f.xtask(&["generations", "--json"]).success().json()[0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    // A build root of a user whose home is gone, and the fixture user's own.
    let ghost = f.root.join("result-home-ghost");
    let own = f.root.join(format!("result-home-{}", f.user));
    std::os::unix::fs::symlink(&target, &ghost).unwrap();
    std::os::unix::fs::symlink(&target, &own).unwrap();
    // Out-link directories: of a killed run (lock free), of a live run (lock held), and
    // one without the lock file (not known to be ours).
    let (dead, live, unknown) = (
        tmp.join("xtask-out-dead"),
        tmp.join("xtask-out-live"),
        tmp.join("xtask-out-unknown"),
    );
    for d in [&dead, &live, &unknown] {
        fs::create_dir(d).unwrap();
        std::os::unix::fs::symlink(&target, d.join("generation")).unwrap();
    }
    fs::write(dead.join("alive"), "").unwrap();
    let held = fs::File::create(live.join("alive")).unwrap();
    held.lock().unwrap();

    let v = f
        .xtask(&["gc", "--no-store-gc", "--dry-run", "--json"])
        .success()
        .json();
    assert_eq!(
        v["stale_roots"],
        serde_json::json!([ghost.display().to_string(), dead.display().to_string()])
    );
    assert!(ghost.is_symlink() && dead.exists());

    f.xtask(&["gc", "--no-store-gc"])
        .success()
        .stderr_has("removing stale GC root");
    assert!(!ghost.is_symlink(), "the stale result link stayed");
    assert!(!dead.exists(), "the killed run's out-link stayed");
    assert!(own.is_symlink(), "a live home's build root was removed");
    assert!(
        live.join("generation").is_symlink(),
        "a live run's out-link was removed"
    );
    assert!(unknown.join("generation").is_symlink());
    drop(held);
}

#[test]
fn gc_system_never_deletes_the_booted_or_the_current_system() {
    let mut f = Fixture::with_home_files(&[]);
    let dir = f.root.parent().unwrap().join("system");
    let run = dir.join("run");
    fs::create_dir_all(&run).unwrap();
    let profile = dir.join("profiles/system");
    fs::create_dir_all(profile.parent().unwrap()).unwrap();
    let tops: Vec<String> = (1..=5)
        .map(|i| garbage(&format!("system {i} {}\n", dir.display())))
        .collect();
    for t in &tops {
        let out = std::process::Command::new("nix-env")
            .arg("--profile")
            .arg(&profile)
            .args(["--set", t])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Booted 2, running 4, the profile's current 5.
    std::os::unix::fs::symlink(&tops[1], run.join("booted-system")).unwrap();
    std::os::unix::fs::symlink(&tops[3], run.join("current-system")).unwrap();
    f.extra_env
        .insert("XTASK_SYSTEM_PROFILE".into(), profile.display().to_string());
    f.extra_env
        .insert("XTASK_RUN_DIR".into(), run.display().to_string());
    let ids = |f: &Fixture| -> Vec<u64> {
        let mut ids: Vec<u64> = fs::read_dir(profile.parent().unwrap())
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().into_string().unwrap();
                n.strip_prefix("system-")?
                    .strip_suffix("-link")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort();
        let _ = f;
        ids
    };
    assert_eq!(ids(&f), [1, 2, 3, 4, 5]);

    let v = f
        .xtask(&[
            "gc",
            "--system",
            "--keep",
            "1",
            "--no-store-gc",
            "--dry-run",
            "--json",
        ])
        .success()
        .json();
    let doomed: Vec<u64> = v["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_u64().unwrap())
        .collect();
    assert_eq!(doomed, [3, 1]);
    assert_eq!(ids(&f), [1, 2, 3, 4, 5]);

    f.xtask(&["gc", "--system", "--keep", "1", "--no-store-gc"])
        .success()
        .stderr_has("deleting 2 of 5 generations of the system");
    assert_eq!(ids(&f), [2, 4, 5]);
    // A user name makes no sense with --system.
    f.xtask(&["gc", "--system", "alice"]).failure(2);
    // No system profile: not a NixOS host.
    f.extra_env.insert(
        "XTASK_SYSTEM_PROFILE".into(),
        dir.join("none/system").display().to_string(),
    );
    f.xtask(&["gc", "--system"])
        .failure(1)
        .stderr_has("--system is for NixOS hosts");
}

/// A home with managed files next to user files, a backup and a foreign link.
fn installed_home() -> Fixture {
    let f = Fixture::with_home_files(&[
        (".bashrc", "managed\n"),
        (".config/app/conf", "c\n"),
        (".config/app/other", "o\n"),
        (".local/bin/tool", "t\n"),
    ]);
    fs::write(f.home.join(".bashrc"), "mine\n").unwrap();
    f.xtask(&["switch"]).success();
    assert_eq!(
        fs::read_to_string(f.home.join(".bashrc.bak")).unwrap(),
        "mine\n"
    );
    fs::write(f.home.join(".config/app/mine"), "user\n").unwrap();
    fs::write(f.home.join(".notes"), "n\n").unwrap();
    fs::remove_file(f.home.join(".config/app/other")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", f.home.join(".config/app/other")).unwrap();
    f
}

fn uninstall(f: &Fixture, args: &[&str]) -> common::Run {
    let mut cmd = f.command(&[&["uninstall"][..], args].concat());
    cmd.stdin(std::process::Stdio::null());
    common::run(cmd.output().unwrap())
}

#[test]
fn uninstall_removes_exactly_the_managed_links() {
    let f = installed_home();
    let generation = f.xtask(&["generations", "--json"]).success().json()[0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    uninstall(&f, &["--yes"])
        .success()
        .stderr_has("remove   ~/.bashrc (the generation's link)")
        .stderr_has("stays    ~/.bashrc.bak (a backup)")
        .stderr_has("stays    ~/.config/app/other (a link this home did not make")
        .stderr_has("uninstalled alice's home: 3 links");
    for gone in [
        ".bashrc",
        ".config/app/conf",
        ".local/bin/tool",
        ".local/bin",
    ] {
        assert!(
            fs::symlink_metadata(f.home.join(gone)).is_err(),
            "{gone} is still there"
        );
    }
    assert_eq!(
        fs::read_to_string(f.home.join(".bashrc.bak")).unwrap(),
        "mine\n"
    );
    assert_eq!(fs::read_to_string(f.home.join(".notes")).unwrap(), "n\n");
    assert_eq!(
        fs::read_to_string(f.home.join(".config/app/mine")).unwrap(),
        "user\n"
    );
    assert_eq!(
        fs::read_link(f.home.join(".config/app/other")).unwrap(),
        std::path::Path::new("/etc/hostname")
    );
    // The profile and its generations, the GC roots and the state are gone.
    assert_eq!(fs::read_dir(f.profiles()).unwrap().count(), 0);
    assert!(fs::symlink_metadata(f.home.join(".local/state/home-manager")).is_err());
    assert!(fs::symlink_metadata(f.root.join(format!("result-home-{}", f.user))).is_err());
    // The generation itself is now garbage for the store gc, not deleted by uninstall.
    assert!(in_store(&generation));
    f.xtask(&["generations"])
        .success()
        .stderr_has("no home generations yet");
    // A second uninstall finds nothing; a switch installs the home again.
    uninstall(&f, &["--yes"])
        .success()
        .stderr_has("nothing to do");
    fs::remove_file(f.home.join(".config/app/other")).unwrap();
    f.xtask(&["switch"]).success();
    assert_eq!(
        fs::read_to_string(f.home.join(".config/app/conf")).unwrap(),
        "c\n"
    );
}

#[test]
fn uninstall_dry_run_and_a_refusal_change_nothing() {
    let f = installed_home();
    let before = Fixture::tree_digest(&f.home);
    uninstall(&f, &["--dry-run"])
        .success()
        .stderr_has("remove   ~/.config/app/conf (the generation's link)")
        .stderr_has("stays    ~/.bashrc.bak (a backup)")
        .stderr_has("(profile)")
        .stderr_has("current-home (GC root)")
        .stderr_has("dry run: nothing was changed");
    assert_eq!(
        before,
        Fixture::tree_digest(&f.home),
        "--dry-run changed HOME"
    );
    // No terminal on stdin and no --yes: refused before anything goes.
    uninstall(&f, &[])
        .failure(2)
        .stderr_has("stdin is not a terminal; pass --yes");
    assert_eq!(
        before,
        Fixture::tree_digest(&f.home),
        "a refused uninstall changed HOME"
    );
}
