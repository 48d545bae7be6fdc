//! `nix eval` tests of lib/ on fixture directories with the stub builders: the exact
//! output names and merge lists the xtask relies on (design.md, "The flake's outputs").

mod common;

use std::process::Command;

use common::{Fixture, NIX_CONFIG};
use serde_json::{Value, json};

/// One nix process returns everything the assertions need.
const SUMMARY: &str = r#"o: let
  names = builtins.attrNames;
  ms = builtins.mapAttrs;
in {
  homes = names o.homeConfigurations;
  legacy = ms (_: v: names v.homeConfigurations) o.legacyPackages;
  hosts = names o.nixosConfigurations;
  checks = ms (_: names) o.checks;
  standaloneParts = ms (_: h: h.parts) o.homeConfigurations;
  hostParts = ms (_: h: h.homeParts) o.nixosConfigurations;
  homeDirs = ms (_: h: h.config.home.homeDirectory) o.homeConfigurations;
  usernames = ms (_: h: h.config.home.username) o.homeConfigurations;
  darwinDir = o.legacyPackages.aarch64-darwin.homeConfigurations.alice.config.home.homeDirectory;
  stateVersion = o.homeConfigurations.alice.config.home.stateVersion;
  hostNames = ms (_: h: h.config.networking.hostName) o.nixosConfigurations;
  backup = o.nixosConfigurations.ws.config.home-manager.backupFileExtension;
  wsUsers = names o.nixosConfigurations.ws.config.home-manager.users;
}"#;

/// `apply` applied to the flake's outputs (or to one attribute path of them).
fn nix_eval(f: &Fixture, attr: &str, apply: &str) -> Result<Value, String> {
    let path = if attr.is_empty() {
        String::new()
    } else {
        format!(".{attr}")
    };
    f.nix_eval(&format!("o: ({apply}) o{path}"))
}

fn layout() -> Fixture {
    let f = Fixture::new();
    f.home_module(
        "alice",
        "{ lib, ... }:\n{\n  home.file.\".a\".text = \"a\";\n}\n",
    )
    .home_module("alice@global", "{ home.file.\".g\".text = \"g\"; }\n")
    .home_module("alice@ws", "{ home.file.\".w\".text = \"w\"; }\n")
    .home_module("bob", "{ }\n")
    // carol exists only integrated on ws: never a standalone home.
    .home_module("carol@ws", "{ }\n")
    .home_module("dave", "{ home.homeDirectory = \"/srv/dave\"; }\n")
    .write("homes/dave/meta.nix", "{ system = \"aarch64-darwin\"; }\n")
    .host(
        "ws",
        Some("{\n  system = \"x86_64-linux\";\n  users = [ \"bob\" ];\n}\n"),
    )
    .host("pi", Some("{ system = \"aarch64-linux\"; }\n"))
    .host("nometa", None)
    .commit();
    f
}

#[test]
fn outputs_and_merge_lists() {
    let f = layout();
    let v = nix_eval(&f, "", SUMMARY).unwrap_or_else(|e| panic!("{e}"));
    // user@host and @global directories never become standalone homes.
    assert_eq!(v["homes"], json!(["alice", "bob", "dave"]));
    for system in [
        "x86_64-linux",
        "aarch64-linux",
        "x86_64-darwin",
        "aarch64-darwin",
    ] {
        assert_eq!(
            v["legacy"][system],
            json!(["alice", "bob", "dave"]),
            "{system}"
        );
    }
    assert_eq!(v["hosts"], json!(["nometa", "pi", "ws"]));
    // @global merges into the standalone home only; @ws into ws only.
    assert_eq!(
        v["standaloneParts"]["alice"],
        json!(["alice", "alice@global"])
    );
    assert_eq!(v["standaloneParts"]["bob"], json!(["bob"]));
    assert_eq!(
        v["hostParts"]["ws"],
        json!({"alice": ["alice", "alice@ws"], "bob": ["bob"], "carol": ["carol@ws"]})
    );
    assert_eq!(v["hostParts"]["pi"], json!({}));
    assert_eq!(v["wsUsers"], json!(["alice", "bob", "carol"]));
    // Checks per system follow meta.nix (homes and hosts), else the default system.
    assert_eq!(
        v["checks"]["x86_64-linux"],
        json!(["home-alice", "home-bob", "system-nometa", "system-ws"])
    );
    assert_eq!(v["checks"]["aarch64-linux"], json!(["system-pi"]));
    assert_eq!(v["checks"]["aarch64-darwin"], json!(["home-dave"]));
    assert_eq!(v["checks"]["x86_64-darwin"], json!([]));
    // Builder defaults: username, home directory (Linux / Darwin / overridden), stateVersion.
    assert_eq!(
        v["usernames"],
        json!({"alice": "alice", "bob": "bob", "dave": "dave"})
    );
    assert_eq!(v["homeDirs"]["alice"], "/home/alice");
    assert_eq!(v["homeDirs"]["dave"], "/srv/dave");
    assert_eq!(v["darwinDir"], "/Users/alice");
    assert_eq!(v["stateVersion"], "26.05");
    assert_eq!(
        v["hostNames"],
        json!({"nometa": "nometa", "pi": "pi", "ws": "ws"})
    );
    assert_eq!(v["backup"], "bak");
}

#[test]
fn reserved_and_invalid_names_fail_evaluation_with_the_path() {
    let f = Fixture::new();
    f.home_module("alice", "{ }\n")
        .host("global", None)
        .commit();
    let stderr = nix_eval(&f, "nixosConfigurations", "builtins.attrNames").unwrap_err();
    assert!(
        stderr.contains("systems/global") && stderr.contains("reserved"),
        "{stderr}"
    );

    let f = Fixture::new();
    f.home_module("Alice", "{ }\n").commit();
    let stderr = nix_eval(&f, "homeConfigurations", "builtins.attrNames").unwrap_err();
    assert!(
        stderr.contains("homes/Alice") && stderr.contains("[a-z_][a-z0-9_-]*"),
        "{stderr}"
    );

    // The same rules as the repo model: lengths (users 32, hosts 63) and the parts.
    let long = "a".repeat(33);
    for dir in [long.as_str(), "bob@", "@x", "x@global@y"] {
        let f = Fixture::new();
        f.home_module("alice", "{ }\n")
            .home_module(dir, "{ }\n")
            .commit();
        let stderr = nix_eval(&f, "homeConfigurations", "builtins.attrNames").unwrap_err();
        assert!(
            stderr.contains(&format!("homes/{dir}")) && stderr.contains("at most 32"),
            "{dir}: {stderr}"
        );
    }
    let f = Fixture::new();
    f.host(&"h".repeat(64), None).commit();
    let stderr = nix_eval(&f, "nixosConfigurations", "builtins.attrNames").unwrap_err();
    assert!(stderr.contains("at most 63"), "{stderr}");
}

#[test]
fn unknown_system_in_meta_names_the_file() {
    let f = Fixture::new();
    f.home_module("alice", "{ }\n")
        .host("ws", Some("{ system = \"riscv64-linux\"; }\n"))
        .commit();
    let stderr = nix_eval(
        &f,
        "nixosConfigurations.ws",
        "h: h.config.system.build.toplevel.drvPath",
    )
    .unwrap_err();
    assert!(
        stderr.contains("systems/ws/meta.nix")
            && stderr.contains("riscv64-linux")
            && stderr.contains("aarch64-linux"),
        "{stderr}"
    );
}

#[test]
fn hosts_are_linux_only() {
    let f = Fixture::new();
    f.host("mac", Some("{ system = \"aarch64-darwin\"; }\n"))
        .commit();
    let stderr = nix_eval(
        &f,
        "nixosConfigurations.mac",
        "h: h.config.system.build.toplevel.drvPath",
    )
    .unwrap_err();
    assert!(
        stderr.contains("systems/mac/meta.nix") && stderr.contains("aarch64-darwin"),
        "{stderr}"
    );
}

#[test]
fn generation_has_the_contract_layout() {
    let f = layout();
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "build",
            "--json",
            "--no-link",
        ])
        .arg(format!(
            "{}#homeConfigurations.alice.activationPackage",
            f.root.display()
        ))
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let gen_path = std::path::PathBuf::from(v[0]["outputs"]["out"].as_str().unwrap());
    assert!(gen_path.join("activate").is_file());
    assert!(gen_path.join("gen-version").is_file());
    let files = std::fs::canonicalize(gen_path.join("home-files")).unwrap();
    assert!(files.display().to_string().ends_with("-home-manager-files"));
    // @global's file is in the standalone generation, @ws's is not.
    assert_eq!(std::fs::read_to_string(files.join(".g")).unwrap(), "g");
    assert!(!files.join(".w").exists());
}

/// The real flake.nix, with its inputs replaced by stand-ins that record what they are
/// given: its wiring (defaults read from Cargo.toml, builders, the Home Manager module)
/// is checked without fetching nixpkgs or Home Manager.
#[test]
fn real_flake_wires_inputs_into_lib() {
    let root = common::repo_root();
    let expr = format!(
        r#"let
  flake = import {root}/flake.nix;
  nixpkgs = {{
    legacyPackages = builtins.mapAttrs (system: _: {{ pkgsFor = system; }}) {{
      x86_64-linux = 1; aarch64-linux = 1; x86_64-darwin = 1; aarch64-darwin = 1;
    }};
    lib.nixosSystem = args: {{ nixosArgs = args; }};
  }};
  home-manager = {{
    lib.homeManagerConfiguration = args: {{ hmArgs = args; }};
    nixosModules.home-manager = "the-hm-module";
  }};
  nix-on-droid = {{
    lib.nixOnDroidConfiguration = args: {{ droidArgs = args; }};
    overlays.default = "the-droid-overlay";
  }};
  out = flake.outputs {{ self = out; inherit nixpkgs home-manager nix-on-droid; }};
  alice = out.homeConfigurations.alice.hmArgs;
  ws = out.nixosConfigurations.workstation.nixosArgs;
in {{
  homes = builtins.attrNames out.homeConfigurations;
  hosts = builtins.attrNames out.nixosConfigurations;
  alicePkgs = alice.pkgs.pkgsFor;
  aliceModules = map (m: if builtins.isPath m then baseNameOf m else "fn") alice.modules;
  darwinPkgs = out.legacyPackages.aarch64-darwin.homeConfigurations.alice.hmArgs.pkgs.pkgsFor;
  wsSystem = ws.system;
  wsHasHm = builtins.elem "the-hm-module" ws.modules;
  inputs = builtins.attrNames flake.inputs;
  droids = builtins.attrNames out.nixOnDroidConfigurations;
}}"#,
        root = root.display()
    );
    let v = common::nix_eval_expr(&expr).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["homes"], json!(["alice", "bob"]));
    assert_eq!(v["hosts"], json!(["workstation"]));
    assert_eq!(v["alicePkgs"], "x86_64-linux");
    assert_eq!(v["aliceModules"], json!(["alice", "alice@global", "fn"]));
    assert_eq!(v["darwinPkgs"], "aarch64-darwin");
    assert_eq!(v["wsSystem"], "x86_64-linux");
    assert_eq!(v["wsHasHm"], true);
    assert_eq!(
        v["inputs"],
        json!(["home-manager", "nix-on-droid", "nixpkgs"])
    );
    // This repository has no droids/ yet; the fixture tests evaluate the droid builder.
    assert_eq!(v["droids"], json!([]));
}

/// lib/ takes the naming rules and systems from Cargo.toml's [workspace.metadata.xtask]
/// (which the fixture flake passes, as flake.nix does), and so does the xtask: one change
/// there changes both.
#[test]
fn rules_come_from_cargo_toml_for_nix_and_the_xtask() {
    let f = Fixture::new();
    let cargo = std::fs::read_to_string(f.root.join("Cargo.toml")).unwrap();
    f.write(
        "Cargo.toml",
        &cargo.replace("max-user-length = 32", "max-user-length = 4"),
    )
    .home_module("alice", "{ }\n")
    .commit();
    let stderr = nix_eval(&f, "homeConfigurations", "builtins.attrNames").unwrap_err();
    assert!(
        stderr.contains("homes/alice") && stderr.contains("at most 4"),
        "{stderr}"
    );
    f.xtask(&["list"])
        .failure(1)
        .stderr_has("homes/alice")
        .stderr_has("user names are at most 4");

    // A key missing from the table is named by lib/ (the xtask falls back to its built-in
    // values, which a unit test keeps equal to the repository's Cargo.toml).
    let f = Fixture::new();
    let cargo = std::fs::read_to_string(f.root.join("Cargo.toml")).unwrap();
    let without: String = cargo
        .lines()
        .filter(|l| !l.starts_with("reserved-host"))
        .map(|l| format!("{l}\n"))
        .collect();
    f.write("Cargo.toml", &without)
        .home_module("alice", "{ }\n")
        .commit();
    let stderr = nix_eval(&f, "homeConfigurations.alice", "h: h.parts").unwrap_err();
    assert!(stderr.contains("has no reserved-host; add it"), "{stderr}");

    // A broken rule is one clear error from the xtask, naming the key and the fix.
    let f = Fixture::new();
    let cargo = std::fs::read_to_string(f.root.join("Cargo.toml")).unwrap();
    f.write(
        "Cargo.toml",
        &cargo.replace(
            "name-pattern = \"[a-z_][a-z0-9_-]*\"",
            "name-pattern = \"[a-z\"",
        ),
    )
    .commit();
    f.xtask(&["list"])
        .failure(1)
        .stderr_has("Cargo.toml")
        .stderr_has("name-pattern = \"[a-z\" is not a valid regular expression");
}

#[test]
fn meta_nix_of_the_wrong_shape_fails_evaluation_with_the_path() {
    let f = Fixture::new();
    f.host("box", Some("[ ]\n")).commit();
    let stderr = nix_eval(
        &f,
        "nixosConfigurations.box",
        "h: h.config.system.build.toplevel.drvPath",
    )
    .unwrap_err();
    assert!(
        stderr.contains("systems/box/meta.nix") && stderr.contains("not an attribute set"),
        "{stderr}"
    );
    let f = Fixture::new();
    f.host("box", Some("{ users = \"alice\"; }\n")).commit();
    let stderr = nix_eval(
        &f,
        "nixosConfigurations.box",
        "h: builtins.attrNames h.config.home-manager.users",
    )
    .unwrap_err();
    assert!(stderr.contains("users must be a list"), "{stderr}");
}
