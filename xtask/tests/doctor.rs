//! `cargo xtask doctor` with the real binary and real nix: passes on a good fixture, and on
//! each broken setup names the problem and its fix; never waits on a nix that hangs.

mod common;

use std::{
    fs,
    io::Write,
    time::{Duration, Instant},
};

use common::{Fixture, Run};

/// A good machine: the fixture's home for its user, the XDG profile directory, no NixOS
/// unit managing the user.
fn good() -> Fixture {
    let mut f = Fixture::with_home_files(&[(".config/x", "x\n")]);
    let units = f.root.parent().unwrap().join("units");
    fs::create_dir_all(&units).unwrap();
    f.extra_env
        .insert("XTASK_SYSTEMD_UNIT_DIR".into(), units.display().to_string());
    f
}

/// The line of check `name` and the fix under it.
fn line_of(run: &Run, name: &str) -> String {
    let lines: Vec<&str> = run.stderr.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.split_once(' ')
            .is_some_and(|(_, rest)| rest.starts_with(&format!("{name}:")))
        {
            // The fix follows, indented (its continuation lines more so).
            let rest = lines[i + 1..].iter().take_while(|n| n.starts_with("    "));
            return std::iter::once(*l)
                .chain(rest.copied())
                .collect::<Vec<_>>()
                .join("\n");
        }
    }
    panic!("no line for check {name}:\n{}", run.stderr);
}

#[test]
fn doctor_passes_on_a_good_machine() {
    let f = good();
    let started = Instant::now();
    let run = f.xtask(&["doctor"]);
    run.success().stderr_has("ready to switch");
    for check in [
        "nix",
        "flakes",
        "store",
        "nix settings",
        "$HOME",
        "profile",
        "lock",
        "home",
        "system",
        "git",
        "flake.lock",
        "store space",
        "platform",
    ] {
        let l = line_of(&run, check);
        assert!(l.starts_with('✓'), "{l}");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    let json = f.xtask(&["doctor", "--json"]);
    json.success();
    let checks = json.json();
    let checks = checks.as_array().unwrap();
    assert!(checks.len() >= 13, "{checks:?}");
    for c in checks {
        for key in ["check", "ok", "severity", "detail", "fix"] {
            assert!(c.get(key).is_some(), "{key} missing in {c}");
        }
        assert_ne!(c["severity"], "error", "{c}");
    }
}

#[test]
fn doctor_without_nix_says_how_to_install_it() {
    let f = good();
    let run = f.xtask_without_nix(&["doctor"]);
    run.failure(1);
    let l = line_of(&run, "nix");
    assert!(
        l.starts_with('✗') && l.contains("nix is not on PATH"),
        "{l}"
    );
    assert!(l.contains("apt-get install nix-bin"), "{l}");
    // What needs nix is skipped, not failed a second time.
    assert!(line_of(&run, "flakes").contains("skipped"));
}

#[test]
fn doctor_names_an_untracked_nix_file() {
    let f = good();
    f.write("homes/alice/extra.nix", "{ }\n");
    let run = f.xtask(&["doctor"]);
    run.failure(1);
    let l = line_of(&run, "git");
    assert!(l.contains("homes/alice/extra.nix"), "{l}");
    assert!(l.contains("fix: git add -N homes/alice/extra.nix"), "{l}");
}

#[test]
fn doctor_names_a_held_lock() {
    let f = good();
    let dir = f.home.join(".local/state/home-manager");
    fs::create_dir_all(&dir).unwrap();
    let mut lock = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join("switch.lock"))
        .unwrap();
    lock.lock().unwrap();
    write!(lock, "pid 4242: cargo xtask switch alice").unwrap();
    let run = f.xtask(&["doctor"]);
    run.failure(1);
    let l = line_of(&run, "lock");
    assert!(
        l.contains("an activation or switch is running (pid 4242: cargo xtask switch alice)"),
        "{l}"
    );
    assert!(l.contains("fuser -v"), "{l}");
    drop(lock);
    f.xtask(&["doctor"]).success();
}

#[test]
fn doctor_names_a_user_without_a_home() {
    let mut f = good();
    f.user = "carol".into();
    let run = f.xtask(&["doctor"]);
    run.failure(1);
    let l = line_of(&run, "home");
    assert!(l.contains("no homes/carol (homes: alice)"), "{l}");
    assert!(l.contains("cargo xtask new-user carol"), "{l}");
}

#[test]
fn doctor_never_suggests_a_home_that_cannot_exist() {
    let mut f = good();
    f.user = "global".into();
    let run = f.xtask(&["doctor"]);
    run.failure(1);
    let l = line_of(&run, "home");
    assert!(l.contains("no homes/global"), "{l}");
    assert!(!l.contains("new-user global"), "{l}");
    assert!(l.contains("log in as a user who has a home (alice)"), "{l}");
}

#[test]
fn doctor_without_nix_reads_the_system_of_meta_nix_from_its_text() {
    let f = good();
    let other = common::other_system();
    f.write(
        "homes/alice/meta.nix",
        &format!("{{ system = \"{other}\"; }}\n"),
    )
    .commit();
    let run = f.xtask_without_nix(&["doctor"]);
    let l = line_of(&run, "system");
    assert!(!l.contains('{'), "a placeholder: {l}");
    assert!(
        l.contains(&format!("homes/alice/meta.nix says {other}")),
        "{l}"
    );
    // One that computes its system needs nix: skipped, and said why.
    f.write(
        "homes/alice/meta.nix",
        "let s = \"x86_64-linux\"; in { system = s; }\n",
    )
    .commit();
    let l = line_of(&f.xtask_without_nix(&["doctor"]), "system");
    assert!(
        l.contains("skipped") && l.contains("computes its system"),
        "{l}"
    );
}

#[test]
fn doctor_looks_at_the_store_when_nix_cannot_evaluate() {
    // A daemon store with no daemon: evaluation fails because the store cannot be opened,
    // and the store line (not a generic "fix the error") says what to do.
    let f = good();
    let out = f
        .command(&["doctor"])
        .env("NIX_REMOTE", "daemon")
        .env("NIX_DAEMON_SOCKET_PATH", f.root.join("no-daemon.sock"))
        .output()
        .unwrap();
    let run = common::run(out);
    run.failure(1);
    let store = line_of(&run, "store");
    assert!(store.starts_with('✗'), "{store}");
    assert!(store.contains("start the nix daemon"), "{store}");
    let flakes = line_of(&run, "flakes");
    assert!(
        flakes.starts_with('✓') || flakes.contains("see the store line"),
        "{flakes}"
    );
}

#[test]
fn doctor_names_an_activation_stopped_mid_way() {
    let f = good();
    f.xtask(&["switch"]).success();
    f.home_with_files("alice", &[(".config/x", "y\n")]).commit();
    f.xtask(&["switch"]).success();
    // The profile back at generation 1 while $HOME has generation 2: what a switch killed
    // between setting the profile and activating leaves.
    let profiles = f.profiles();
    let link = profiles.join("home-manager");
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("home-manager-1-link", &link).unwrap();
    let run = f.xtask(&["doctor"]);
    let l = line_of(&run, "activation");
    assert!(l.contains("stopped mid-way"), "{l}");
    assert!(l.contains("cargo xtask switch` again"), "{l}");
}

#[test]
fn doctor_names_a_meta_nix_for_another_system() {
    let f = good();
    let other = common::other_system();
    f.write(
        "homes/alice/meta.nix",
        &format!("{{ system = \"{other}\"; }}\n"),
    )
    .commit();
    let run = f.xtask(&["doctor"]);
    let l = line_of(&run, "system");
    assert!(
        l.contains(&format!("homes/alice/meta.nix says {other}")),
        "{l}"
    );
    assert!(l.contains("set system = "), "{l}");
}

#[test]
fn doctor_names_an_invalid_meta_nix() {
    let f = good();
    f.write("homes/alice/meta.nix", "[ ]\n").commit();
    let run = f.xtask(&["doctor"]);
    run.failure(1);
    let l = line_of(&run, "system");
    assert!(
        l.contains("homes/alice/meta.nix is a list, not an attribute set"),
        "{l}"
    );
    assert!(l.contains("fix: write it like { system ="), "{l}");

    f.write("homes/alice/meta.nix", "{ system = \"riscv64-linux\"; }\n")
        .commit();
    let run = f.xtask(&["doctor"]);
    run.failure(1);
    let l = line_of(&run, "system");
    assert!(
        l.contains("\"riscv64-linux\" is not a supported system"),
        "{l}"
    );
    assert!(l.contains("fix: use one of x86_64-linux"), "{l}");

    f.write("homes/alice/meta.nix", "{ system = ; }\n").commit();
    let run = f.xtask(&["doctor"]);
    run.failure(1);
    let l = line_of(&run, "system");
    assert!(
        l.contains("cannot be read") && l.contains("syntax error"),
        "{l}"
    );
}

#[test]
fn doctor_names_the_input_that_cannot_be_fetched() {
    let mut f = good();
    f.write(
        "flake.nix",
        "{\n  inputs.nixpkgs.url = \"github:NixOS/nixpkgs/nixos-unstable\";\n  outputs = { self, nixpkgs }: { };\n}\n",
    );
    let lock = r#"{
  "nodes": {
    "nixpkgs": {
      "locked": {
        "lastModified": 1700000000,
        "narHash": "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "owner": "NixOS",
        "repo": "nixpkgs",
        "rev": "0123456789abcdef0123456789abcdef01234567",
        "type": "github"
      },
      "original": { "owner": "NixOS", "ref": "nixos-unstable", "repo": "nixpkgs", "type": "github" }
    },
    "root": { "inputs": { "nixpkgs": "nixpkgs" } }
  },
  "root": "root",
  "version": 7
}
"#;
    f.write("flake.lock", lock).commit();
    f.extra_env
        .insert("XTASK_DOCTOR_TIMEOUT".into(), "5".into());
    let started = Instant::now();
    let run = f.xtask(&["doctor"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(line_of(&run, "flake.lock").starts_with('✓'));
    let l = line_of(&run, "input nixpkgs");
    assert!(l.contains("github:NixOS/nixpkgs/nixos-unstable"), "{l}");
    // Offline it either fails at once (no host) or runs out of its time: never passes.
    assert!(l.starts_with('✗') || l.starts_with('!'), "{l}");

    // No flake.lock at all, while flake.nix declares an input.
    fs::remove_file(f.root.join("flake.lock")).unwrap();
    f.commit();
    let run = f.xtask(&["doctor"]);
    run.failure(1);
    let l = line_of(&run, "flake.lock");
    assert!(
        l.contains("flake.lock is missing; flake.nix declares nixpkgs"),
        "{l}"
    );
    assert!(l.contains("cargo xtask update"), "{l}");
}

#[test]
fn doctor_does_not_wait_for_a_nix_that_hangs() {
    let mut f = good();
    let bin = common::path_with_git_only();
    let nix = bin.path().join("nix");
    fs::write(&nix, "#!/bin/sh\nexec /bin/sleep 60\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&nix, fs::Permissions::from_mode(0o755)).unwrap();
    f.extra_env
        .insert("XTASK_DOCTOR_TIMEOUT".into(), "1".into());
    let started = Instant::now();
    let out = f
        .command(&["doctor"])
        .env("PATH", bin.path())
        .output()
        .unwrap();
    let run = common::run(out);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    run.failure(1);
    let l = line_of(&run, "nix");
    assert!(l.contains("no answer within 1 s"), "{l}");
}

#[test]
fn doctor_without_nix_on_a_literal_meta_nix_that_sets_no_system() {
    // Read from its text, `{ }` sets no system: with nix doctor says "sets none"; without
    // nix it is not one that "computes its system".
    let f = good();
    f.write("homes/alice/meta.nix", "{ }\n").commit();
    let with_nix = line_of(&f.xtask(&["doctor"]), "system");
    assert!(with_nix.contains("sets none"), "{with_nix}");
    let l = line_of(&f.xtask_without_nix(&["doctor"]), "system");
    assert!(!l.contains("computes its system"), "{l}");
    assert!(l.contains("sets none"), "{l}");
}
