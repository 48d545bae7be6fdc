//! `cargo xtask list` and the repo model's bad-input rules, through the real binary.

mod common;

use std::{fs, os::unix::fs::PermissionsExt};

use common::Fixture;
use serde_json::json;

fn example() -> Fixture {
    let f = Fixture::new();
    f.home_module("alice", "{ }\n")
        .home_module("alice@global", "{ }\n")
        .home_module("alice@ws", "{ }\n")
        .home_module("bob", "{ }\n")
        .home_module("carol@ws", "{ }\n")
        .home_module("dave", "{ }\n")
        .write("homes/dave/meta.nix", "{ system = \"aarch64-darwin\"; }\n")
        .host(
            "ws",
            Some("{\n  system = \"x86_64-linux\";\n  users = [ \"bob\" ];\n}\n"),
        )
        .host("pi", Some("{ system = \"aarch64-linux\"; }\n"))
        .commit();
    f
}

#[test]
fn json_is_a_stable_matrix() {
    let f = example();
    let run = f.xtask(&["list", "--json"]);
    run.success();
    assert_eq!(
        run.json(),
        json!({
            "homes": [
                {"name": "alice", "parts": ["alice", "alice@global", "alice@ws"], "standalone": true, "system": "x86_64-linux", "hosts": ["ws"], "deploy": null},
                {"name": "bob", "parts": ["bob"], "standalone": true, "system": "x86_64-linux", "hosts": ["ws"], "deploy": null},
                {"name": "carol", "parts": ["carol@ws"], "standalone": false, "system": null, "hosts": ["ws"], "deploy": null},
                {"name": "dave", "parts": ["dave"], "standalone": true, "system": "aarch64-darwin", "hosts": [], "deploy": null},
            ],
            "hosts": [
                {"name": "pi", "system": "aarch64-linux", "users": [], "deploy": null},
                {"name": "ws", "system": "x86_64-linux", "users": ["alice", "bob", "carol"], "deploy": null},
            ],
            "droids": []
        })
    );
}

#[test]
fn human_output_names_parts_and_hosts() {
    let f = example();
    let run = f.xtask(&["list"]);
    run.success();
    assert!(
        run.stdout.contains("alice") && run.stdout.contains("alice@global"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("integrated only"), "{}", run.stdout);
    assert!(run.stdout.contains("aarch64-linux"), "{}", run.stdout);
}

#[test]
fn works_from_a_subdirectory_and_with_flake_flag() {
    let f = example();
    let mut cmd = f.command(&["list", "--json"]);
    cmd.current_dir(f.root.join("homes/alice"));
    let run = common::run(cmd.output().unwrap());
    run.success();
    let mut cmd = f.command(&["--flake", f.root.to_str().unwrap(), "list", "--json"]);
    cmd.current_dir(&f.home);
    common::run(cmd.output().unwrap()).success();
    let mut cmd = f.command(&["list"]);
    cmd.current_dir(&f.home);
    let run = common::run(cmd.output().unwrap());
    run.failure(1)
        .stderr_has("no flake.nix")
        .stderr_has("--flake DIR");
}

/// Each broken layout: exit 1, the message names the path and the rule, nothing written.
#[test]
fn bad_layouts_name_the_path_and_rule() {
    // (what, how the fixture is broken, the path the message must name, the rule it must state)
    type Case<'a> = (&'a str, &'a dyn Fn(&Fixture), &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "uppercase",
            &|f| {
                f.home_module("Alice", "{ }\n");
            },
            "homes/Alice",
            "[a-z_][a-z0-9_-]*",
        ),
        (
            "space",
            &|f| {
                f.home_module("a b", "{ }\n");
            },
            "homes/a b",
            "'a b' does not follow the rule",
        ),
        (
            "no user",
            &|f| {
                f.home_module("@x", "{ }\n");
            },
            "homes/@x",
            "the name is empty",
        ),
        (
            "no host",
            &|f| {
                f.home_module("bob", "{ }\n").home_module("bob@", "{ }\n");
            },
            "homes/bob@",
            "host part",
        ),
        (
            "two @",
            &|f| {
                f.home_module("x@global@y", "{ }\n");
            },
            "homes/x@global@y",
            "more than one '@'",
        ),
        (
            "global host",
            &|f| {
                f.host("global", Some("{ }\n"));
            },
            "systems/global",
            "reserved",
        ),
        (
            "unknown system",
            &|f| {
                f.host("ws", Some("{ system = \"riscv64-linux\"; }\n"));
            },
            "systems/ws/meta.nix",
            "not a supported system",
        ),
        (
            "darwin host",
            &|f| {
                f.host("ws", Some("{ system = \"aarch64-darwin\"; }\n"));
            },
            "systems/ws/meta.nix",
            "NixOS runs on Linux",
        ),
        (
            "meta syntax",
            &|f| {
                f.host("ws", Some("{ system = \"x86_64-linux\" }\n"));
            },
            "systems/ws/meta.nix",
            "syntax error",
        ),
        (
            "no default.nix",
            &|f| {
                fs::create_dir_all(f.root.join("homes/erin")).unwrap();
                fs::write(f.root.join("homes/erin/notes.txt"), "x").unwrap();
            },
            "homes/erin",
            "no default.nix",
        ),
        (
            "unknown host",
            &|f| {
                f.home_module("bob", "{ }\n")
                    .home_module("bob@nohost", "{ }\n");
            },
            "homes/bob@nohost",
            "new-host nohost",
        ),
    ];
    for (what, setup, path, rule) in cases {
        let f = Fixture::new();
        setup(&f);
        let before = Fixture::tree_digest(&f.root);
        let run = f.xtask(&["list", "--json"]);
        assert_eq!(run.code, 1, "{what}: {}", run.stderr);
        assert!(
            run.stderr.contains(path),
            "{what}: stderr lacks {path}:\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(rule),
            "{what}: stderr lacks {rule}:\n{}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{what}: printed a listing anyway");
        assert_eq!(
            before,
            Fixture::tree_digest(&f.root),
            "{what}: the tree changed"
        );
    }
}

/// The example with a meta.nix that computes its system: only nix can read it (literal
/// ones are read from their text, so `list` needs no nix for them).
fn example_needing_nix() -> Fixture {
    let f = example();
    f.write(
        "systems/pi/meta.nix",
        "let arch = \"aarch64\"; in { system = \"${arch}-linux\"; }\n",
    )
    .commit();
    f
}

#[test]
fn missing_nix_says_how_to_install_it() {
    let empty = tempfile::tempdir().unwrap();
    // Literal meta.nix files only: the listing needs no nix at all.
    let literal = example();
    let mut cmd = literal.command(&["list"]);
    cmd.env("PATH", empty.path());
    common::run(cmd.output().unwrap())
        .success()
        .stdout_has("dave");
    let f = example_needing_nix();
    let mut cmd = f.command(&["list"]);
    cmd.env("PATH", empty.path());
    let run = common::run(cmd.output().unwrap());
    run.failure(1)
        .stderr_has("nix is required")
        .stderr_has("apt-get install nix-bin")
        .stderr_has("macOS")
        .stderr_has("WSL");
}

/// Nix before 2.4 cannot run here, so this one stand-in answers as such a nix does.
#[test]
fn nix_without_flakes_is_named() {
    let f = example_needing_nix();
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("nix");
    fs::write(&fake, "#!/bin/sh\necho \"error: unrecognised flag '--extra-experimental-features'\" >&2\nexit 1\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = f.command(&["list"]);
    cmd.env("PATH", bin.path());
    let run = common::run(cmd.output().unwrap());
    run.failure(1)
        .stderr_has("no flakes support")
        .stderr_has("Nix >= 2.4");
}

#[test]
fn usage_errors_exit_2() {
    let f = example();
    f.xtask(&["list", "--no-such-flag"]).failure(2);
    f.xtask(&["no-such-task"]).failure(2);
    f.xtask(&["list", "--help"]).success().stdout_has("--json");
}

/// One broken meta.nix stops nix's evaluation of all of them; every broken one is still
/// reported, each against its own file.
#[test]
fn every_broken_meta_file_is_reported() {
    let f = Fixture::new();
    f.home_module("alice", "{ }\n")
        .host("a", Some("{ system = \"x86_64-linux\" }\n"))
        .host("b", Some("{ system = nope; }\n"))
        .host("c", Some("{ system = \"riscv64-linux\"; }\n"))
        .host("d", Some("{ system = \"aarch64-linux\"; }\n"))
        .commit();
    let run = f.xtask(&["list"]);
    run.failure(1)
        .stderr_has("systems/a/meta.nix:1:27: cannot read meta.nix: syntax error")
        .stderr_has("systems/b/meta.nix:1: cannot read meta.nix: undefined variable 'nope'")
        .stderr_has(
            "systems/c/meta.nix:1:12: system = \"riscv64-linux\" is not a supported system",
        );
    assert!(!run.stderr.contains("systems/d"), "{}", run.stderr);
}
