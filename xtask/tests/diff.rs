//! `diff` between any two generations, and `switch --diff` / `--ask`, against real nix and
//! real profiles in a temporary `$HOME`. Packages are the stub's: each `home.packages`
//! string is a store path of that `name-version`, in the generation's closure.

mod common;

use std::{
    fs,
    io::Write,
    process::{Command, Stdio},
};

use common::{Fixture, Run, nix_str};
use serde_json::json;

/// `homes/<user>/default.nix` with text files, packages and extra module lines.
fn home(f: &Fixture, files: &[(&str, &str)], packages: &[&str], extra: &str) {
    let mut body = String::new();
    for (path, text) in files {
        body.push_str(&format!(
            "  home.file.{}.text = {};\n",
            nix_str(path),
            nix_str(text)
        ));
    }
    let packages: Vec<String> = packages.iter().map(|p| nix_str(p)).collect();
    f.home_module(
        &f.user,
        &format!(
            "{{ ... }}:\n{{\n  home.homeDirectory = {};\n{body}  home.packages = [ {} ];\n{extra}}}\n",
            nix_str(&f.home.display().to_string()),
            packages.join(" ")
        ),
    )
    .commit();
}

fn fixture() -> Fixture {
    let f = Fixture::new();
    fs::create_dir_all(f.profiles()).unwrap();
    f
}

/// The ids of the profile's generations, newest first.
fn generation_paths(f: &Fixture) -> Vec<(u64, String)> {
    f.xtask(&["generations", "--json"])
        .success()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["id"].as_u64().unwrap(),
                g["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `$HOME`'s digest without the lock file, whose text names the last switch that held it.
fn home_digest(f: &Fixture) -> String {
    Fixture::tree_digest(&f.home)
        .lines()
        .filter(|l| !l.contains("switch.lock"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How often `needle` occurs in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The old generation of the main scenario: a text file changed, removed and kept, a
/// binary file (a store copy, named the same in both), and three packages.
fn old_generation(f: &Fixture) {
    fs::create_dir_all(f.root.join("homes/alice")).unwrap();
    fs::write(f.root.join("homes/alice/blob"), [0xff, 0x00, 0x01]).unwrap();
    home(
        f,
        &[
            (".changed", "a\nkeep\n"),
            (".removed", "r\n"),
            (".same", "s\n"),
        ],
        &["tool-1.0", "gone-2.0", "same-3.0"],
        "  home.file.\".bin\".source = builtins.path { path = ./blob; name = \"dotbin\"; };\n",
    );
}

fn new_generation(f: &Fixture) {
    fs::write(f.root.join("homes/alice/blob"), [0xfe, 0x00]).unwrap();
    home(
        f,
        &[
            (".changed", "b\nkeep\n"),
            (".added", "n\n"),
            (".same", "s\n"),
        ],
        &["tool-1.1", "fresh-0.5", "same-3.0"],
        "  home.file.\".bin\".source = builtins.path { path = ./blob; name = \"dotbin\"; };\n",
    );
}

/// A profile with the old generation (1) and the new one (2, active).
fn two_switched_generations() -> Fixture {
    let f = fixture();
    old_generation(&f);
    f.xtask(&["switch"]).success();
    new_generation(&f);
    f.xtask(&["switch"]).success();
    f
}

#[test]
fn every_package_and_dotfile_change_appears_once_with_old_and_new() {
    let f = fixture();
    old_generation(&f);
    f.xtask(&["switch"]).success();
    new_generation(&f);
    let before = Fixture::tree_digest(&f.home);

    let v = f.xtask(&["diff", "--json"]).success().json();
    assert_eq!(v["added"], json!([".added"]));
    assert_eq!(v["removed"], json!([".removed"]));
    let changed = v["changed"].as_array().unwrap();
    let paths: Vec<&str> = changed
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec![".bin", ".changed"], "{changed:?}");
    assert_eq!(changed[0]["diff"], "  binary file: 3 → 2 bytes\n");
    let text = changed[1]["diff"].as_str().unwrap();
    assert!(text.contains("-a\n+b\n keep\n"), "{text}");
    assert_eq!(v["dangling"], json!([]));

    let p = &v["packages"];
    assert_eq!(
        p["changed"],
        json!([{"name": "tool", "old": "1.0", "new": "1.1"}])
    );
    assert_eq!(p["added"], json!([{"name": "fresh", "version": "0.5"}]));
    assert_eq!(p["removed"], json!([{"name": "gone", "version": "2.0"}]));
    let size = &p["size"];
    let (before_size, after_size) = (
        size["before"].as_i64().unwrap(),
        size["after"].as_i64().unwrap(),
    );
    assert!(before_size > 0 && after_size > 0, "{size}");
    assert_eq!(size["delta"].as_i64().unwrap(), after_size - before_size);
    // The pre-flight of the new generation against $HOME, which has the old one.
    assert!(v["preflight"]["summary"].get("block").is_none(), "{v}");

    let human = f.xtask(&["diff"]);
    human.success();
    let out = &human.stdout;
    for line in [
        "+ .added\n",
        "- .removed\n",
        "~ .bin\n",
        "~ .changed\n",
        "  ~ tool 1.0 → 1.1\n",
        "  + fresh 0.5\n",
        "  - gone 2.0\n",
        "packages: 1 changed, 1 added, 1 removed\n",
    ] {
        assert_eq!(count(out, line), 1, "{line:?} once in:\n{out}");
    }
    assert!(
        !out.contains("same"),
        "unchanged things are not listed:\n{out}"
    );
    assert!(out.contains("closure size: "), "{out}");
    assert_eq!(before, Fixture::tree_digest(&f.home), "diff changed HOME");
}

#[test]
fn from_to_compares_two_generations_of_the_profile_without_building() {
    let f = two_switched_generations();
    home(&f, &[(".changed", "c\nkeep\n")], &["tool-1.2"], "");
    f.xtask(&["switch"]).success();
    let gens = generation_paths(&f);
    assert_eq!(gens.iter().map(|g| g.0).collect::<Vec<_>>(), vec![3, 2, 1]);
    let path = |id: u64| gens.iter().find(|g| g.0 == id).unwrap().1.clone();

    let run = f.xtask(&["diff", "--from", "1", "--to", "2", "--json"]);
    run.success();
    assert!(
        !run.stderr.contains(" build "),
        "nothing is built:\n{}",
        run.stderr
    );
    let v = run.json();
    assert_eq!(v["current"], path(1));
    assert_eq!(v["generation"], path(2));
    assert_eq!(v["added"], json!([".added"]));
    assert_eq!(
        v["packages"]["changed"],
        json!([{"name": "tool", "old": "1.0", "new": "1.1"}])
    );
    // Generation 1 is not what $HOME has: no pre-flight.
    assert_eq!(v["preflight"], json!(null));

    // A side not given is the current generation (3); backwards is fine too.
    let v = f.xtask(&["diff", "--from", "2", "--json"]).success().json();
    assert_eq!(v["current"], path(2));
    assert_eq!(v["generation"], path(3));
    assert_eq!(
        v["packages"]["changed"],
        json!([{"name": "tool", "old": "1.1", "new": "1.2"}])
    );
    assert_eq!(
        v["packages"]["removed"],
        json!([
            {"name": "dotbin", "version": ""},
            {"name": "fresh", "version": "0.5"},
            {"name": "same", "version": "3.0"}
        ])
    );
    let v = f.xtask(&["diff", "--to", "1", "--json"]).success().json();
    assert_eq!(v["current"], path(3));
    assert_eq!(
        v["packages"]["changed"],
        json!([{"name": "tool", "old": "1.2", "new": "1.0"}])
    );
    // From the active generation: the pre-flight says what a rollback to 1 would do.
    assert!(v["preflight"]["plan"].is_array(), "{v}");

    f.xtask(&["diff", "--from", "9"])
        .failure(1)
        .stderr_has("--from 9: alice has no generation 9 (generations: 3, 2, 1)");
    f.xtask(&["diff", "--from", "1", "--system", "x86_64-linux"])
        .failure(2);
}

#[test]
fn diff_of_two_store_paths() {
    let f = two_switched_generations();
    // Links to generations are followed, as ./result would be.
    let link = |id: u64| {
        f.profiles()
            .join(format!("home-manager-{id}-link"))
            .display()
            .to_string()
    };
    let v = f
        .xtask(&["diff", &link(1), &link(2), "--json"])
        .success()
        .json();
    assert_eq!(v["user"], json!(null));
    assert_eq!(v["current"], generation_paths(&f)[1].1);
    assert_eq!(v["removed"], json!([".removed"]));
    assert_eq!(
        v["packages"]["changed"],
        json!([{"name": "tool", "old": "1.0", "new": "1.1"}])
    );
    // The closure sizes are nix's own: `nix path-info -S` of each generation.
    for (id, key) in [(1, "before"), (2, "after")] {
        let out = Command::new("nix")
            .args([
                "--extra-experimental-features",
                "nix-command",
                "path-info",
                "-S",
            ])
            .arg(link(id))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let nix_size: i64 = text.split_whitespace().last().unwrap().parse().unwrap();
        assert_eq!(
            v["packages"]["size"][key].as_i64(),
            Some(nix_size),
            "{text}"
        );
    }
    f.xtask(&["diff", &link(2), &link(1)])
        .success()
        .stdout_has("  ~ tool 1.1 → 1.0\n")
        .stdout_has("- .added\n");

    let outside = f.root.join("flake.nix").display().to_string();
    f.xtask(&["diff", &outside, &link(1)])
        .failure(1)
        .stderr_has("not a store path");
    f.xtask(&["diff", &link(1), "/nonexistent/x"])
        .failure(1)
        .stderr_has("/nonexistent/x does not exist");
    f.xtask(&["diff", &link(1), &link(2), "--from", "1"])
        .failure(2)
        .stderr_has("compares two store paths");
}

/// The package part is cached per store path (a closure never changes while its path
/// exists): a second diff reads both sides from the cache, and a damaged entry is asked
/// of nix again, never trusted.
#[test]
fn closure_summaries_are_cached_per_store_path_and_damage_is_recomputed() {
    let f = two_switched_generations();
    let paths: Vec<String> = generation_paths(&f).into_iter().map(|(_, p)| p).collect();
    let cache = f
        .root
        .parent()
        .unwrap()
        .join("cache/homelab-xtask/closures");
    let entry = |p: &str| cache.join(std::path::Path::new(p).file_name().unwrap());
    let first = f
        .xtask(&["diff", &paths[0], &paths[1], "--json"])
        .success()
        .json();
    for p in &paths {
        let text = fs::read_to_string(entry(p)).unwrap();
        assert!(text.starts_with("homelab-xtask closure summary"), "{text}");
        assert!(text.contains("\ntool\t1."), "{text}");
    }
    // From the cache: the same answer.
    let again = f
        .xtask(&["diff", &paths[0], &paths[1], "--json"])
        .success()
        .json();
    assert_eq!(again["packages"], first["packages"]);
    // Damaged: recomputed and rewritten.
    fs::write(entry(&paths[1]), "garbage").unwrap();
    let repaired = f
        .xtask(&["diff", &paths[0], &paths[1], "--json"])
        .success()
        .json();
    assert_eq!(repaired["packages"], first["packages"]);
    let text = fs::read_to_string(entry(&paths[1])).unwrap();
    assert!(
        text.starts_with("homelab-xtask closure summary") && text.contains("\ntool\t1."),
        "{text}"
    );
    // A cache that cannot be written costs nothing but the shortcut.
    fs::remove_dir_all(&cache).unwrap();
    fs::create_dir_all(cache.parent().unwrap()).unwrap();
    fs::write(&cache, "a file where the directory would be").unwrap();
    let unwritable = f
        .xtask(&["diff", &paths[0], &paths[1], "--json"])
        .success()
        .json();
    assert_eq!(unwritable["packages"], first["packages"]);
}

#[test]
fn a_dangling_out_of_store_link_is_shown_not_an_abort() {
    let f = fixture();
    let missing = |n: &str| f.root.parent().unwrap().join(n).display().to_string();
    home(
        &f,
        &[(".a", "a\n")],
        &[],
        &format!(
            "  home.file.\".link\".source = {};\n",
            nix_str(&missing("gone-1"))
        ),
    );
    f.xtask(&["switch"]).success();
    home(
        &f,
        &[(".a", "a\n")],
        &[],
        &format!(
            "  home.file.\".link\".source = {};\n  home.file.\".new-link\".source = {};\n",
            nix_str(&missing("gone-2")),
            nix_str(&missing("gone-3"))
        ),
    );
    let v = f.xtask(&["diff", "--json"]).success().json();
    assert_eq!(v["added"], json!([".new-link"]));
    assert_eq!(v["changed"][0]["path"], ".link");
    assert_eq!(
        v["changed"][0]["diff"],
        format!(
            "  a dangling link to {} → a dangling link to {}\n",
            missing("gone-1"),
            missing("gone-2")
        )
    );
    assert_eq!(
        v["dangling"],
        json!([
            {"path": ".link", "target": missing("gone-1"), "generation": "old"},
            {"path": ".link", "target": missing("gone-2"), "generation": "new"},
            {"path": ".new-link", "target": missing("gone-3"), "generation": "new"},
        ])
    );
    f.xtask(&["diff"]).success().stdout_has(&format!(
        "! .new-link → {} is a dangling link in the new generation",
        missing("gone-3")
    ));
}

#[test]
fn before_the_first_switch_every_file_and_package_is_added() {
    let f = fixture();
    home(&f, &[(".bashrc", "x\n")], &["tool-1.0", "hello"], "");
    let v = f.xtask(&["diff", "--json"]).success().json();
    assert_eq!(v["current"], json!(null));
    assert_eq!(v["added"], json!([".bashrc"]));
    let added = v["packages"]["added"].as_array().unwrap();
    assert!(
        added.contains(&json!({"name": "tool", "version": "1.0"})),
        "{added:?}"
    );
    assert!(
        added.contains(&json!({"name": "hello", "version": ""})),
        "{added:?}"
    );
    assert_eq!(v["packages"]["removed"], json!([]));
    assert_eq!(v["packages"]["changed"], json!([]));
    assert_eq!(v["packages"]["size"]["before"], 0);
    assert_eq!(v["preflight"]["summary"]["link"], 1);
    f.xtask(&["diff"])
        .success()
        .stderr_has("no active generation yet")
        .stdout_has("  + tool 1.0\n")
        .stdout_has("+ .bashrc\n");
}

/// `switch` with `input` on stdin (none: stdin is /dev/null).
fn switch_with_stdin(f: &Fixture, args: &[&str], input: Option<&str>) -> Run {
    let mut cmd: Command = f.command(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    match input {
        None => {
            cmd.stdin(Stdio::null());
        }
        Some(_) => {
            cmd.stdin(Stdio::piped());
        }
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    common::run(child.wait_with_output().unwrap())
}

#[test]
fn switch_diff_shows_the_changes_and_switches() {
    let f = fixture();
    old_generation(&f);
    f.xtask(&["switch"]).success();
    new_generation(&f);
    let run = f.xtask(&["switch", "--diff"]);
    run.success()
        .stderr_has("~ .changed\n")
        .stderr_has("+ .added\n")
        .stderr_has("  ~ tool 1.0 → 1.1\n")
        .stderr_has("closure size: ")
        .stderr_has("pre-flight:");
    // The diff comes before the pre-flight, on stderr: stdout stays for --json.
    assert!(run.stderr.find("~ .changed").unwrap() < run.stderr.find("pre-flight:").unwrap());
    assert_eq!(run.stdout, "");
    assert_eq!(generation_paths(&f).len(), 2);
    assert_eq!(fs::read_to_string(f.home.join(".added")).unwrap(), "n\n");
}

#[test]
fn switch_ask_activates_only_on_yes() {
    let f = fixture();
    old_generation(&f);
    f.xtask(&["switch"]).success();
    new_generation(&f);
    let before = home_digest(&f);
    let profiles = Fixture::tree_digest(&f.profiles());

    let no = switch_with_stdin(&f, &["switch", "--ask"], Some("n\n"));
    no.failure(1)
        .stderr_has("  ~ tool 1.0 → 1.1\n")
        .stderr_has("activate this generation? [y/N]")
        .stderr_has("not switched: nothing was changed");
    assert_eq!(home_digest(&f), before, "HOME changed after n");
    assert_eq!(Fixture::tree_digest(&f.profiles()), profiles);

    // No answer at all (stdin closed): refused, nothing changed.
    switch_with_stdin(&f, &["switch", "--ask"], None)
        .failure(1)
        .stderr_has("--ask: no answer on stdin");
    assert_eq!(home_digest(&f), before, "HOME changed without an answer");

    // A dry run asks nothing.
    switch_with_stdin(&f, &["switch", "--ask", "--dry-run"], None)
        .success()
        .stderr_has("  ~ tool 1.0 → 1.1\n")
        .stderr_has("dry run: nothing was changed");

    let yes = switch_with_stdin(&f, &["switch", "--ask"], Some("y\n"));
    yes.success().stderr_has("switched");
    assert_eq!(generation_paths(&f).len(), 2);
    assert_eq!(
        fs::read_to_string(f.home.join(".changed")).unwrap(),
        "b\nkeep\n"
    );
}
