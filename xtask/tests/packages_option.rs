//! `packages` (a generation's home-path) and `option` (one option of a home or host)
//! against real nix, real profiles and the fixture flake.

mod common;

use common::{Fixture, nix_str};

/// The fixture user's home with these packages (and `$HOME` as its home directory).
fn home_with_packages(f: &Fixture, packages: &[&str]) {
    let list: Vec<String> = packages.iter().map(|p| nix_str(p)).collect();
    f.home_module(
        &f.user,
        &format!(
            "{{ ... }}:\n{{\n  home.homeDirectory = {};\n  home.packages = [ {} ];\n}}\n",
            nix_str(&f.home.display().to_string()),
            list.join(" ")
        ),
    )
    .commit();
}

fn names_and_versions(v: &serde_json::Value) -> Vec<(String, Option<String>)> {
    v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn pkg(name: &str, version: Option<&str>) -> (String, Option<String>) {
    (name.to_string(), version.map(str::to_string))
}

#[test]
fn packages_of_the_active_and_of_an_older_generation() {
    let f = Fixture::with_home_files(&[]);
    home_with_packages(&f, &["hello-2.12", "jq-1.7.1", "tool"]);
    f.xtask(&["switch"]).success();
    home_with_packages(&f, &["hello-2.13", "ripgrep-14.1.0", "tool"]);
    f.xtask(&["switch"]).success();

    let active = f.xtask(&["packages", "--json"]).success().json();
    assert_eq!(active["user"], "alice");
    assert_eq!(active["generation"], 2);
    assert!(
        active["path"]
            .as_str()
            .unwrap()
            .ends_with("-home-manager-generation"),
        "{active}"
    );
    assert!(
        active["home_path"]
            .as_str()
            .unwrap()
            .ends_with("-home-manager-path"),
        "{active}"
    );
    assert_eq!(
        names_and_versions(&active),
        vec![
            pkg("hello", Some("2.13")),
            pkg("ripgrep", Some("14.1.0")),
            pkg("tool", None)
        ]
    );
    // Every package is a store path of its own, named name-version.
    for p in active["packages"].as_array().unwrap() {
        let path = p["path"].as_str().unwrap();
        assert!(path.starts_with("/nix/store/"), "{path}");
        assert!(std::path::Path::new(path).exists(), "{path}");
    }

    let old = f
        .xtask(&["packages", "--generation", "1", "--json"])
        .success()
        .json();
    assert_eq!(old["generation"], 1);
    assert_ne!(old["path"], active["path"]);
    assert_eq!(
        names_and_versions(&old),
        vec![
            pkg("hello", Some("2.12")),
            pkg("jq", Some("1.7.1")),
            pkg("tool", None)
        ]
    );

    // Human output: one line per package, name and version; the header on stderr.
    let run = f.xtask(&["packages"]);
    run.success()
        .stderr_has("alice's generation 2")
        .stderr_has("3 packages");
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        vec![
            vec!["hello", "2.13"],
            vec!["ripgrep", "14.1.0"],
            vec!["tool"]
        ]
    );
}

#[test]
fn packages_says_what_to_do_without_a_generation() {
    let f = Fixture::with_home_files(&[]);
    f.xtask(&["packages"])
        .failure(1)
        .stderr_has("no active home generation")
        .stderr_has("cargo xtask switch");
    home_with_packages(&f, &["hello-2.12"]);
    f.xtask(&["switch"]).success();
    f.xtask(&["packages", "--generation", "7"])
        .failure(1)
        .stderr_has("no generation 7")
        .stderr_has("generations: 1");
    f.xtask(&["packages", "--generation", "x"]).failure(2);
}

/// A home whose modules define a nested option, and a host.
fn option_fixture() -> Fixture {
    let f = Fixture::new();
    f.home_module(
        "alice",
        "{ ... }:\n{\n  programs.x.enable = true;\n  programs.x.settings = { theme = \"dark\"; size = 12; };\n  programs.git.enable = false;\n  programs.gh.enable = true;\n  home.packages = [ \"hello-2.12\" \"jq-1.7.1\" ];\n}\n",
    )
    .home_module("bob", "{ lib, ... }:\n{\n  home.packages = [ nope ];\n}\n")
    .host("ws", Some("{ system = \"x86_64-linux\"; users = [ \"alice\" ]; }\n"))
    .commit();
    f
}

#[test]
fn option_of_a_home_prints_its_value_as_json() {
    let f = option_fixture();
    let run = f.xtask(&["option", "home.username"]);
    run.success();
    assert_eq!(run.json(), serde_json::json!("alice"));
    // The user defaults to $USER; naming it gives the same.
    let named = f.xtask(&["option", "programs.x.enable", "alice"]);
    assert_eq!(named.success().json(), serde_json::json!(true));
    assert_eq!(
        f.xtask(&["option", "programs.x"]).success().json(),
        serde_json::json!({"enable": true, "settings": {"theme": "dark", "size": 12}})
    );
    assert_eq!(
        f.xtask(&["option", "home.packages"]).success().json(),
        serde_json::json!(["hello-2.12", "jq-1.7.1"])
    );
    // A list element by index, and a quoted segment.
    assert_eq!(
        f.xtask(&["option", "home.packages.1"]).success().json(),
        serde_json::json!("jq-1.7.1")
    );
    assert_eq!(
        f.xtask(&["option", "programs.x.\"settings\".theme"])
            .success()
            .json(),
        serde_json::json!("dark")
    );
}

#[test]
fn option_of_a_host() {
    let f = option_fixture();
    let run = f.xtask(&["option", "--host", "ws", "system.stateVersion"]);
    assert_eq!(run.success().json(), serde_json::json!("26.05"));
    // A derivation is shown as its output path, with a note.
    let top = f.xtask(&["option", "--host", "ws", "system.build.toplevel"]);
    top.success().stderr_has("derivation");
    let path = top.json();
    assert!(
        path.as_str().unwrap().ends_with("-nixos-system-ws"),
        "{path}"
    );
    f.xtask(&["option", "--host", "nohost", "system.stateVersion"])
        .failure(1)
        .stderr_has("there is no host nohost")
        .stderr_has("ws");
    // A user and --host at once is a usage error.
    f.xtask(&["option", "--host", "ws", "system.stateVersion", "alice"])
        .failure(2);
}

#[test]
fn a_missing_option_names_the_nearest_existing_ones() {
    let f = option_fixture();
    let run = f.xtask(&["option", "programs.gti.enable"]);
    run.failure(1)
        .stderr_has("alice's home has no option programs.gti.enable")
        .stderr_has("programs has no gti");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("nearest"))
        .unwrap_or_else(|| panic!("no nearest names:\n{}", run.stderr));
    let git = line.find("programs.git").expect(line);
    let gh = line.find("programs.gh").expect(line);
    assert!(git < gh, "git is nearer to gti than gh: {line}");

    // Below a value that is not an attribute set.
    f.xtask(&["option", "home.username.first"])
        .failure(1)
        .stderr_has("home.username is a string");
    // At the top: config's own names.
    f.xtask(&["option", "hom.username"])
        .failure(1)
        .stderr_has("config has no hom")
        .stderr_has("home");
    // The command it suggests selects the same home or host again, and works.
    f.xtask(&["option", "programs.gti.enable", "alice"])
        .failure(1)
        .stderr_has("`cargo xtask option programs alice` prints all");
    f.xtask(&["option", "programs.x", "alice"]).success();
    let run = f.xtask(&["option", "--host", "ws", "networking.hostname"]);
    run.failure(1)
        .stderr_has("`cargo xtask option networking --host ws` prints all");
    f.xtask(&["option", "networking", "--host", "ws"]).success();
}

#[test]
fn a_bad_option_name_is_a_usage_error() {
    let f = option_fixture();
    for bad in [
        "",
        "programs..git",
        "programs.git.",
        ".home",
        "a b",
        "home.\"x",
    ] {
        f.xtask(&["option", bad])
            .failure(2)
            .stderr_has("is not an option name");
    }
    f.xtask(&["option", "home.username", "Not-A-User"])
        .failure(2);
}

#[test]
fn an_evaluation_error_names_the_file_and_line() {
    let f = option_fixture();
    f.xtask(&["option", "home.packages", "bob"])
        .failure(1)
        .stderr_has("homes/bob/default.nix:3")
        .stderr_has("nope");
}
