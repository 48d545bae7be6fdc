//! `cargo xtask new-user` and `new-host` through the real binary, in a real git repository,
//! evaluated by real nix through the fixture flake (the repo's lib/ with stub builders).

mod common;

use std::{fs, process::Command};

use common::{Fixture, NIX_CONFIG};
use serde_json::{Value, json};

/// The flake output `attr`, evaluated by nix (see `Fixture::nix_eval` for why not
/// `nix eval ROOT#attr`).
fn nix_eval(f: &Fixture, attr: &str) -> Value {
    f.nix_eval(&format!("o: o.{attr}"))
        .unwrap_or_else(|e| panic!("nix eval {attr}: {e}"))
}

/// Everything a failed command must leave alone: git's view first (it may refresh the
/// index once), then every byte under the root, .git included.
fn snapshot(f: &Fixture) -> (String, String) {
    let status = f.git(&["status", "--porcelain", "--untracked-files=all"]);
    (status, Fixture::tree_digest(&f.root))
}

fn with_host(host: &str) -> Fixture {
    let f = Fixture::new();
    f.host(host, Some("{ system = \"x86_64-linux\"; }\n"))
        .commit();
    f
}

fn read(f: &Fixture, rel: &str) -> String {
    fs::read_to_string(f.root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The system the xtask detects for `auto` (nix's name for this machine).
fn this_system() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

#[test]
fn creates_a_staged_home_that_evaluates() {
    let f = with_host("ws");
    // Quotes, an interpolation and backslashes: must arrive in git's config verbatim.
    let hostile = r#"Eve "${builtins.abort "x"}" \ O'Brien \${y}"#;
    let run = f.xtask(&[
        "new-user",
        "bob",
        "--global",
        "--host",
        "ws",
        "--system",
        "aarch64-linux",
        "--full-name",
        hostile,
        "--email",
        "bob@example.org",
    ]);
    run.success()
        .stderr_has("the new configuration evaluates")
        .stderr_has("cargo xtask switch bob")
        .stderr_has("cargo xtask switch --host ws");

    let status = f.git(&["status", "--porcelain", "--untracked-files=all"]);
    let mut lines: Vec<&str> = status.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            " A homes/bob/default.nix",
            " A homes/bob/meta.nix",
            " A homes/bob@global/default.nix",
            " A homes/bob@ws/default.nix",
        ],
        "every new file is intent-to-add, nothing else changed"
    );

    let git = nix_eval(&f, "homeConfigurations.bob.config.programs.git");
    assert_eq!(git["userName"], hostile);
    assert_eq!(git["userEmail"], "bob@example.org");
    assert_eq!(git["enable"], true);
    assert_eq!(
        nix_eval(&f, "homeConfigurations.bob.config.home.username"),
        "bob"
    );
    assert_eq!(
        nix_eval(
            &f,
            "homeConfigurations.bob.config.programs.home-manager.enable"
        ),
        true,
        "the @global part is merged into the standalone home"
    );
    assert_eq!(
        nix_eval(&f, "homeConfigurations.bob.activationPackage.system"),
        "aarch64-linux",
        "--system is recorded in homes/bob/meta.nix"
    );
    assert_eq!(
        nix_eval(&f, "nixosConfigurations.ws.homeParts"),
        json!({"bob": ["bob", "bob@ws"]})
    );

    // The files look like the repo's own: parse, no placeholders, no trailing blanks.
    for rel in [
        "homes/bob/default.nix",
        "homes/bob/meta.nix",
        "homes/bob@global/default.nix",
        "homes/bob@ws/default.nix",
    ] {
        let text = read(&f, rel);
        let parse = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(f.root.join(rel))
            .output()
            .unwrap();
        assert!(parse.status.success(), "{rel} does not parse:\n{text}");
        assert!(
            !text.contains("@user@") && !text.contains("@host@"),
            "{rel}:\n{text}"
        );
        assert!(text.lines().all(|l| !l.ends_with(' ')), "{rel}:\n{text}");
        assert!(text.ends_with("}\n"), "{rel}:\n{text}");
    }
    assert!(read(&f, "homes/bob@ws/default.nix").contains("cargo xtask switch --host ws"));
}

#[test]
fn without_identity_the_home_shows_where_it_goes() {
    let f = Fixture::new();
    f.xtask(&["new-user", "carol"]).success();
    let home = read(&f, "homes/carol/default.nix");
    assert!(home.contains("# userName = \"Your Name\";"), "{home}");
    assert!(
        home.contains("homes/carol@global") && home.contains("meta.nix"),
        "{home}"
    );
    assert!(!f.root.join("homes/carol/meta.nix").exists());
    assert_eq!(
        nix_eval(&f, "homeConfigurations.carol.config.home.username"),
        "carol"
    );
}

#[test]
fn rerunning_refuses_and_changes_nothing() {
    let f = Fixture::new();
    f.xtask(&["new-user", "bob"]).success();
    let before = snapshot(&f);
    f.xtask(&["new-user", "bob", "--global"])
        .failure(1)
        .stderr_has("homes/bob already exists")
        .stderr_has("nothing was written");
    assert_eq!(snapshot(&f), before);
}

#[test]
fn bad_names_are_refused_with_the_rule_and_the_tree_is_untouched() {
    let f = with_host("ws");
    let long = "a".repeat(300);
    let rule = "[a-z_][a-z0-9_-]*";
    let cases: [(&str, &str); 9] = [
        ("../x", rule),
        ("a b", rule),
        ("-rf", rule),
        ("@", rule),
        ("", "the name is empty"),
        ("Bob", rule),
        ("global", "'global' is reserved"),
        (&long, "names are at most 32"),
        ("root", "--allow-root"),
    ];
    let before = snapshot(&f);
    for (name, message) in cases {
        // A name no home can have is a usage error (exit 2).
        f.xtask(&["new-user", name, "--host", "ws"])
            .failure(2)
            .stderr_has(message)
            .stderr_has("nothing was written");
        assert_eq!(snapshot(&f), before, "new-user {name:?} changed the tree");
    }
    // A host name goes through the same rule.
    for (host, message) in [("../x", rule), ("global", "use --global")] {
        f.xtask(&["new-user", "bob", "--host", host])
            .failure(2)
            .stderr_has(message);
    }
    for (name, message) in [
        ("-rf", rule),
        ("global", "'global' is reserved"),
        ("a/b", rule),
    ] {
        f.xtask(&["new-host", name]).failure(2).stderr_has(message);
    }
    assert_eq!(snapshot(&f), before);
}

#[test]
fn flags_around_a_hyphen_name_still_parse() {
    // allow_hyphen_values takes `-rf` as the name but leaves known flags alone.
    let f = Fixture::new();
    f.xtask(&["new-user", "-v", "--dry-run", "bob"])
        .success()
        .stdout_has("--- homes/bob/default.nix");
    f.xtask(&["new-user", "bob", "--bogus"]).failure(2);
}

#[test]
fn root_needs_allow_root() {
    let f = Fixture::new();
    f.xtask(&["new-user", "root", "--allow-root"]).success();
    assert!(f.root.join("homes/root/default.nix").is_file());
}

#[test]
fn an_unknown_host_says_how_to_create_it() {
    let f = Fixture::new();
    let before = snapshot(&f);
    f.xtask(&["new-user", "bob", "--host", "nohost"])
        .failure(1)
        .stderr_has("cargo xtask new-host nohost");
    assert_eq!(snapshot(&f), before);
    // A host directory without a configuration is no host either.
    f.write("systems/bare/meta.nix", "{ }\n").commit();
    let before = snapshot(&f);
    f.xtask(&["new-user", "bob", "--host", "bare"])
        .failure(1)
        .stderr_has("systems/bare has no default.nix");
    assert_eq!(snapshot(&f), before);
}

#[test]
fn dry_run_prints_the_files_and_writes_nothing() {
    let f = with_host("ws");
    let before = snapshot(&f);
    f.xtask(&[
        "new-user",
        "bob",
        "--global",
        "--host",
        "ws",
        "--email",
        "b@x.org",
        "--dry-run",
    ])
    .success()
    .stdout_has("--- homes/bob/default.nix")
    .stdout_has("userEmail = \"b@x.org\";")
    .stdout_has("--- homes/bob@global/default.nix")
    .stdout_has("--- homes/bob@ws/default.nix")
    .stdout_has("git add --intent-to-add -- homes/bob/default.nix")
    .stdout_has("builtins.getFlake")
    .stderr_has("nothing was written");
    assert_eq!(snapshot(&f), before);
    // Validation still applies.
    f.xtask(&["new-user", "bob", "--host", "nohost", "--dry-run"])
        .failure(1);
}

#[test]
fn a_file_in_the_way_is_refused_before_anything_is_written() {
    let f = with_host("ws");
    f.write("homes/bob@ws", "not a directory\n").commit();
    let before = snapshot(&f);
    f.xtask(&["new-user", "bob", "--global", "--host", "ws"])
        .failure(1)
        .stderr_has("homes/bob@ws already exists (a file)");
    assert_eq!(snapshot(&f), before, "homes/bob must not be created either");
}

#[test]
fn new_host_writes_the_detected_system_and_evaluates() {
    let f = Fixture::new();
    f.xtask(&["new-host", "web", "--user", "bob", "--user", "carol"])
        .success()
        .stderr_has("the new configuration evaluates")
        .stderr_has("nixos-generate-config")
        .stderr_has("cargo xtask new-user bob")
        .stderr_has("cargo xtask switch --host web");
    let meta = read(&f, "systems/web/meta.nix");
    assert!(
        meta.contains(&format!("  system = \"{}\";\n", this_system())),
        "{meta}"
    );
    assert!(
        meta.contains("  users = [\n    \"bob\"\n    \"carol\"\n  ];\n"),
        "{meta}"
    );
    let status = f.git(&["status", "--porcelain", "--untracked-files=all"]);
    assert_eq!(
        status,
        " A systems/web/default.nix\n A systems/web/meta.nix\n"
    );
    assert_eq!(
        nix_eval(&f, "nixosConfigurations.web.config.networking.hostName"),
        "web"
    );
    assert_eq!(
        nix_eval(&f, "nixosConfigurations.web.homeParts"),
        json!({"bob": [], "carol": []})
    );

    // A given system, and the new host is usable by new-user right away.
    f.xtask(&["new-host", "pi", "--system", "aarch64-linux"])
        .success();
    assert!(read(&f, "systems/pi/meta.nix").contains("system = \"aarch64-linux\";"));
    assert_eq!(
        nix_eval(
            &f,
            "nixosConfigurations.pi.config.system.build.toplevel.system"
        ),
        "aarch64-linux"
    );
    f.xtask(&["new-user", "bob", "--host", "pi"]).success();
    assert_eq!(
        nix_eval(&f, "nixosConfigurations.pi.homeParts"),
        json!({"bob": ["bob", "bob@pi"]})
    );

    let before = snapshot(&f);
    f.xtask(&["new-host", "web"])
        .failure(1)
        .stderr_has("systems/web already exists");
    // An unsupported --system is a usage error, as a bad name is.
    f.xtask(&["new-host", "x", "--system", "riscv64-linux"])
        .failure(2)
        .stderr_has("not supported");
    f.xtask(&["new-host", "x", "--user", "root"])
        .failure(2)
        .stderr_has("reserved");
    f.xtask(&["new-host", "mac", "--system", "aarch64-darwin"])
        .failure(1)
        .stderr_has("a NixOS host runs Linux");
    f.xtask(&["new-host", "global"])
        .failure(2)
        .stderr_has("'global' is reserved");
    f.xtask(&["new-host", "x", "--dry-run"])
        .success()
        .stdout_has("--- systems/x/default.nix")
        .stdout_has("--- systems/x/meta.nix");
    assert_eq!(snapshot(&f), before);
}

#[test]
fn an_evaluation_error_names_the_file_and_line_and_the_files_stay() {
    let f = Fixture::new();
    f.write(
        "systems/ws/default.nix",
        "{ ... }:\n{\n  system.stateVersion = notDefined;\n}\n",
    )
    .commit();
    f.xtask(&["new-user", "bob", "--host", "ws"])
        .failure(1)
        .stderr_has("does not evaluate")
        .stderr_has("systems/ws/default.nix:3: undefined variable 'notDefined'")
        .stderr_has("cargo xtask check --only bob,ws");
    assert!(f.root.join("homes/bob@ws/default.nix").is_file());
    assert!(
        f.git(&["status", "--porcelain"])
            .contains(" A homes/bob@ws/default.nix")
    );
}

#[test]
fn without_nix_the_scaffold_succeeds_with_a_warning() {
    let f = Fixture::new();
    f.xtask_without_nix(&["new-user", "bob"])
        .success()
        .stderr_has("warning: nix is not on PATH")
        .stderr_has("cargo xtask check --only bob");
    assert!(
        f.git(&["status", "--porcelain"])
            .contains(" A homes/bob/default.nix")
    );
}

#[test]
fn unfetchable_inputs_are_a_warning() {
    let f = Fixture::new();
    // An input nix cannot download (nothing listens on port 9): like nixpkgs offline.
    f.write(
        "flake.nix",
        &std::fs::read_to_string(common::fixtures_dir().join("flake.nix"))
            .unwrap()
            .replace(
                "{\n  outputs",
                "{\n  inputs.unreachable.url = \"http://127.0.0.1:9/x.tar.gz\";\n  outputs",
            )
            .replace("{ self }", "{ self, ... }"),
    )
    .commit();
    let out = f
        .command(&["new-user", "bob"])
        .env("NIX_CONFIG", format!("{NIX_CONFIG}download-attempts = 1\n"))
        .output()
        .unwrap();
    common::run(out)
        .success()
        .stderr_has("warning: the new files were not evaluated")
        .stderr_has("unable to download")
        .stderr_has("cargo xtask check --only bob");
    assert!(f.root.join("homes/bob/default.nix").is_file());
}

/// What a scaffold changes, comparable across fixtures (whose .git differ): git's view
/// and every byte under homes/ and systems/, with the scaffold's temporary directories
/// (`.xtask-new-*`, which nothing reads) left out.
fn scaffold_view(f: &Fixture) -> (String, String, String) {
    let status = f.git(&["status", "--porcelain", "--untracked-files=all"]);
    let status: Vec<&str> = status
        .lines()
        .filter(|l| !l.contains(".xtask-new-"))
        .collect();
    (
        status.join("\n"),
        Fixture::tree_digest(&f.root.join("homes")),
        Fixture::tree_digest(&f.root.join("systems")),
    )
}

/// The kill hook (`XTASK_TEST_ABORT_AT=N`) stops new-user after each of its writes,
/// renames and removals in turn. After every kill, the new set is either wholly absent or
/// wholly present (a leftover temporary directory aside, which nothing reads), and a run
/// without the hook then removes the leftovers and writes the complete, staged scaffold.
#[test]
fn a_kill_at_any_write_leaves_nothing_half_and_the_rerun_completes() {
    let args = [
        "new-user",
        "zed",
        "--global",
        "--host",
        "ws",
        "--system",
        "x86_64-linux",
    ];
    let set = [
        "homes/zed/default.nix",
        "homes/zed/meta.nix",
        "homes/zed@global/default.nix",
        "homes/zed@ws/default.nix",
    ];
    // The complete result, from a run that is not interrupted.
    let done = with_host("ws");
    done.xtask(&args).success();
    let complete = scaffold_view(&done);
    let mut n = 1;
    loop {
        let f = with_host("ws");
        let before = scaffold_view(&f);
        let mut cmd = f.command(&args);
        cmd.env("XTASK_TEST_ABORT_AT", n.to_string());
        let run = common::run(cmd.output().unwrap());
        if run.code == 0 {
            // n is past the last step: the whole protocol has been interrupted at each one.
            assert!(n > 8, "only {n} steps for {} files", set.len());
            break;
        }
        let after = scaffold_view(&f);
        let present: Vec<&str> = set
            .iter()
            .copied()
            .filter(|rel| f.root.join(rel).exists())
            .collect();
        let leftovers = fs::read_dir(&f.root)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".xtask-new-")
            })
            .count();
        if leftovers == 0 {
            // Without a temporary directory, the kill came after the commit point.
            assert!(
                after == before || after == complete,
                "kill at step {n}: neither unchanged nor complete: {present:?}"
            );
        }
        // Whatever the kill left, `check` names it rather than failing on a half home.
        if !present.is_empty() && present.len() < set.len() {
            f.xtask(&["check", "--lint-only"])
                .stderr_has("interrupted new-user or new-host");
        }
        // A file in place is whole: never empty, never cut.
        for rel in &present {
            assert_eq!(read(&f, rel), read(&done, rel), "kill at step {n}: {rel}");
        }
        if present.len() == set.len() && leftovers == 0 {
            // Complete already: the re-run refuses and changes nothing.
            let snap = snapshot(&f);
            f.xtask(&args).failure(1).stderr_has("already exists");
            assert_eq!(snapshot(&f), snap);
        } else {
            f.xtask(&args).success();
            assert_eq!(
                scaffold_view(&f),
                complete,
                "re-run after a kill at step {n}"
            );
            assert!(
                !f.root.join(".xtask-new-").exists()
                    && fs::read_dir(&f.root).unwrap().all(|e| !e
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(".xtask-new-")),
                "the re-run removes the leftovers"
            );
        }
        n += 1;
        assert!(n < 40, "the hook never let the run finish");
    }
}

/// A broken meta.nix of the host (or anywhere) is refused before anything is written:
/// the message names the file and the fix, and the repository stays byte-identical.
#[test]
fn a_broken_meta_nix_is_refused_before_anything_is_written() {
    let cases = [
        (
            "{ system = \"x86_64-linux\"; ",
            "systems/box/meta.nix",
            "cannot read meta.nix",
        ),
        ("[ ]\n", "systems/box/meta.nix", "not an attribute set"),
        (
            "{ system = \"x86_64-windows\"; }\n",
            "systems/box/meta.nix",
            "use one of x86_64-linux, aarch64-linux",
        ),
        (
            "{ users = \"alice\"; }\n",
            "systems/box/meta.nix",
            "users = [ \\\"alice\\\" ]",
        ),
    ];
    for (meta, file, fix) in cases {
        let f = Fixture::new();
        f.host("box", Some(meta)).commit();
        let before = snapshot(&f);
        for args in [
            &["new-user", "zed", "--host", "box"][..],
            &["new-user", "zed"][..],
            &["new-host", "web"][..],
        ] {
            let run = f.xtask(args);
            run.failure(1)
                .stderr_has(file)
                .stderr_has("nothing was written")
                .stderr_has("fix them first");
            assert!(
                run.stderr.contains(fix) || run.stderr.contains(&fix.replace("\\\"", "\"")),
                "{meta:?}: {args:?}: stderr lacks {fix:?}:\n{}",
                run.stderr
            );
            assert_eq!(
                snapshot(&f),
                before,
                "{args:?} with {meta:?} changed the repository"
            );
        }
    }
    // The shape is shown for a home's meta.nix too.
    let f = Fixture::new();
    f.home_module("alice", "{ }\n")
        .write("homes/alice/meta.nix", "\"x86_64-linux\"\n")
        .commit();
    let before = snapshot(&f);
    f.xtask(&["new-user", "zed"])
        .failure(1)
        .stderr_has("homes/alice/meta.nix: meta.nix is a string, not an attribute set")
        .stderr_has("{ system = \"x86_64-linux\"; }");
    assert_eq!(snapshot(&f), before);
}

/// What a run killed between its renames left (its temporary directory with the marker,
/// part of the set in place and staged) is named by `check` and rolled back by the next
/// run, which then writes the whole set.
#[test]
fn leftover_temporary_directories_are_removed_by_the_next_run() {
    let f = with_host("ws");
    // What a run killed between its renames leaves: one directory in place, one not.
    let tmp = f.root.join(".xtask-new-AbC123");
    fs::create_dir_all(tmp.join("homes/zed@ws")).unwrap();
    fs::write(tmp.join("homes/zed@ws/default.nix"), "{ }\n").unwrap();
    fs::write(
        tmp.join("xtask-scaffold-set"),
        "homes/zed/default.nix\nhomes/zed@ws/default.nix\n",
    )
    .unwrap();
    f.write("homes/zed/default.nix", "{ }\n");
    f.git(&["add", "--intent-to-add", "homes/zed/default.nix"]);
    f.xtask(&["check", "--lint-only"])
        .stderr_has(".xtask-new-AbC123")
        .stderr_has("run the new-user or new-host command again");
    f.xtask(&["new-user", "zed", "--host", "ws"])
        .success()
        .stderr_has("left by an interrupted new-user or new-host");
    assert!(!tmp.exists());
    assert!(read(&f, "homes/zed/default.nix").contains("zed"));
    assert!(f.root.join("homes/zed@ws/default.nix").exists());
}

#[test]
fn dry_run_lines_are_shell_lines_that_run_as_printed() {
    // A repository path with a character xshell's Display escapes the Rust way (\u{e9}).
    let f = Fixture::named("répo");
    let run = f.xtask(&["new-user", "bob", "--dry-run"]);
    run.success();
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("nix "))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    // The line as a shell reads it: its words, one per line, through printf.
    let out = Command::new("sh")
        .args(["-c", &format!("printf '%s\\n' {}", &line["nix ".len()..])])
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    let want = format!("git+file://{}", f.root.display());
    assert!(words.contains(&want), "{line}\n->\n{words}");
}
