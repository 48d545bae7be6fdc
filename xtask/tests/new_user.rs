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
        f.xtask(&["new-user", name, "--host", "ws"])
            .failure(1)
            .stderr_has(message)
            .stderr_has("nothing was written");
        assert_eq!(snapshot(&f), before, "new-user {name:?} changed the tree");
    }
    // A host name goes through the same rule.
    for (host, message) in [("../x", rule), ("global", "use --global")] {
        f.xtask(&["new-user", "bob", "--host", host])
            .failure(1)
            .stderr_has(message);
    }
    for (name, message) in [
        ("-rf", rule),
        ("global", "'global' is reserved"),
        ("a/b", rule),
    ] {
        f.xtask(&["new-host", name]).failure(1).stderr_has(message);
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
    f.xtask(&["new-host", "x", "--system", "riscv64-linux"])
        .failure(1)
        .stderr_has("not supported");
    f.xtask(&["new-host", "x", "--user", "root"])
        .failure(1)
        .stderr_has("reserved");
    f.xtask(&["new-host", "mac", "--system", "aarch64-darwin"])
        .failure(1)
        .stderr_has("a NixOS host runs Linux");
    f.xtask(&["new-host", "global"])
        .failure(1)
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
    let bin = common::path_with_git_only();
    let out = f
        .command(&["new-user", "bob"])
        .env("PATH", bin.path())
        .output()
        .unwrap();
    common::run(out)
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
