//! `cargo xtask check` against fixture flakes (the repo's lib/ with stub builders) in real
//! git repositories, with real nix. Each problem class has its own fixture; assertions are
//! on the reported path, code, line and the exit status.

mod common;

use common::{Fixture, Run};
use serde_json::Value;

const HOST_META: &str = "{ system = \"x86_64-linux\"; }\n";

/// A valid repo: alice with @global and @ws parts, host ws with meta.nix.
fn clean_fixture() -> Fixture {
    let f = Fixture::new();
    f.home_module(
        "alice",
        "{ lib, ... }:\n{\n  home.packages = [ \"git\" ];\n}\n",
    )
    .home_module("alice@global", "{ home.packages = [ \"htop\" ]; }\n")
    .home_module("alice@ws", "{ home.file.\"ws.txt\".text = \"on ws\"; }\n")
    .host("ws", Some(HOST_META));
    f.commit();
    f
}

/// `check --json`: the findings, with the run.
fn check_json(f: &Fixture, extra: &[&str]) -> (Run, Vec<Value>) {
    let mut args = vec!["check", "--json"];
    args.extend_from_slice(extra);
    let run = f.xtask(&args);
    let findings = run
        .json()
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not a list: {}", run.stdout));
    (run, findings)
}

/// The one finding with this code (fails when there is none or more than one).
#[track_caller]
fn only_finding<'a>(findings: &'a [Value], code: &str) -> &'a Value {
    let hits: Vec<&Value> = findings.iter().filter(|f| f["code"] == code).collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one {code} finding in {findings:#?}"
    );
    hits[0]
}

fn codes(findings: &[Value]) -> Vec<(String, String)> {
    findings
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn clean_repo_passes() {
    let f = clean_fixture();
    let run = f.xtask(&["check"]);
    run.success()
        .stderr_has("check: 0 errors, 0 warnings in 1 home, 1 host (");
    assert!(!run.stderr.contains("error:"), "{}", run.stderr);
    let (run, findings) = check_json(&f, &[]);
    run.success();
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn bad_name_is_an_error() {
    let f = clean_fixture();
    f.home_module("Bob", "{ }\n").commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    let bad = only_finding(&findings, "bad-name");
    assert_eq!(bad["path"], "homes/Bob");
    assert_eq!(bad["severity"], "error");
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("[a-z_][a-z0-9_-]*"),
        "{bad}"
    );
    // The flake refuses the whole homes/ directory, so nothing more is reported for it.
    assert_eq!(findings.len(), 1, "{findings:#?}");
    run.stderr_has("nothing was evaluated");
}

#[test]
fn home_for_unknown_host_is_an_error() {
    let f = clean_fixture();
    f.home_module("alice@nohost", "{ }\n").commit();
    let run = f.xtask(&["check"]);
    run.failure(1).stderr_has(
        "error: homes/alice@nohost: host 'nohost' has no systems/nohost (create it with cargo xtask new-host nohost, or rename the directory)",
    );
    run.stderr_has("check: 1 error, 0 warnings in 1 home, 1 host");
    let (_, findings) = check_json(&f, &[]);
    assert_eq!(
        codes(&findings),
        vec![("homes/alice@nohost".into(), "unknown-host".into())]
    );
}

#[test]
fn global_without_base_is_an_error() {
    let f = clean_fixture();
    f.home_module("carol@global", "{ }\n").commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    let g = only_finding(&findings, "global-without-base");
    assert_eq!(g["path"], "homes/carol@global");
    assert!(
        g["fix"]
            .as_str()
            .unwrap()
            .contains("homes/carol/default.nix"),
        "{g}"
    );
}

#[test]
fn directory_without_default_nix_is_an_error() {
    let f = clean_fixture();
    f.write("homes/dave/notes.txt", "no module here\n").commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    assert_eq!(
        codes(&findings),
        vec![("homes/dave".into(), "missing-default-nix".into())]
    );
    // dave is reported once by the lint, not a second time by a failing evaluation.
    run.stderr_has("not evaluated because of the errors above: home 'dave'");
}

#[test]
fn host_without_meta_is_a_warning_unless_denied() {
    let f = clean_fixture();
    f.host("bare", None).commit();
    let run = f.xtask(&["check"]);
    run.success()
        .stderr_has("warning: systems/bare: systems/bare has no meta.nix, so the default system x86_64-linux is used")
        .stderr_has("check: 0 errors, 1 warning in 1 home, 2 hosts");
    let (run, findings) = check_json(&f, &["--deny-warnings"]);
    run.failure(1);
    let w = only_finding(&findings, "missing-meta-nix");
    assert_eq!(w["path"], "systems/bare");
    assert_eq!(w["severity"], "error");
}

#[test]
fn a_host_user_without_any_home_is_a_warning() {
    let f = clean_fixture();
    f.host(
        "web",
        Some("{\n  system = \"x86_64-linux\";\n  users = [ \"nobody\" ];\n}\n"),
    )
    .commit();
    let (run, findings) = check_json(&f, &[]);
    run.success();
    let w = only_finding(&findings, "user-without-home");
    assert_eq!(w["path"], "systems/web/meta.nix");
    assert_eq!(w["severity"], "warning");
    assert!(
        w["fix"]
            .as_str()
            .unwrap()
            .contains("new-user nobody --host web"),
        "{w}"
    );
}

#[test]
fn untracked_nix_file_is_found_in_a_real_git_repo() {
    let f = clean_fixture();
    // Imported by alice's home but never added: the flake cannot see it.
    f.home_module("alice", "{ imports = [ ./extra.nix ]; }\n")
        .commit();
    f.git(&["rm", "-q", "--cached", "homes/alice/default.nix"]);
    f.git(&["commit", "-q", "-m", "untrack"]);
    f.write("homes/alice/extra.nix", "{ home.packages = [ \"jq\" ]; }\n");
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    let paths: Vec<&str> = findings
        .iter()
        .filter(|x| x["code"] == "untracked-file")
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec!["homes/alice/default.nix", "homes/alice/extra.nix"]
    );
    let extra = findings
        .iter()
        .find(|x| x["path"] == "homes/alice/extra.nix")
        .unwrap();
    assert_eq!(extra["fix"], "git add -N homes/alice/extra.nix");
    // Ignored files are not reported (the git call honours .gitignore).
    f.write(".gitignore", "scratch.nix\n")
        .write("lib/scratch.nix", "{ }\n");
    let (_, findings) = check_json(&f, &[]);
    assert!(
        !codes(&findings).iter().any(|(p, _)| p.contains("scratch")),
        "{findings:#?}"
    );
    // The fix the finding names works: after `git add -N` the flake sees the files.
    f.git(&[
        "add",
        "-N",
        "homes/alice/default.nix",
        "homes/alice/extra.nix",
        ".gitignore",
    ]);
    let run = f.xtask(&["check"]);
    run.success();
}

#[test]
fn unsupported_system_in_meta_is_an_error() {
    let f = clean_fixture();
    f.host("pi", Some("{ system = \"riscv64-linux\"; }\n"))
        .commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    let u = only_finding(&findings, "unknown-system");
    assert_eq!(u["path"], "systems/pi/meta.nix");
    assert!(
        u["message"].as_str().unwrap().contains("riscv64-linux"),
        "{u}"
    );
    assert!(u["fix"].as_str().unwrap().contains("aarch64-linux"), "{u}");
    // The host is not evaluated a second time; the other host still is, and passes.
    assert_eq!(findings.len(), 1, "{findings:#?}");
}

#[test]
fn meta_nix_syntax_error_is_located() {
    let f = clean_fixture();
    f.host("pi", Some("{\n  system = ;\n}\n")).commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    let m = only_finding(&findings, "bad-meta");
    assert_eq!(m["path"], "systems/pi/meta.nix");
    assert_eq!(m["line"], 2);
    assert!(
        m["message"].as_str().unwrap().contains("syntax error"),
        "{m}"
    );
}

#[test]
fn evaluation_error_is_reported_against_the_home() {
    let f = clean_fixture();
    // `pkgs` is `{ }` in the stub builders: a missing attribute, which tryEval cannot catch.
    f.home_module(
        "bob",
        "{ pkgs, ... }:\n{\n  home.packages = [ pkgs.hello ];\n}\n",
    )
    .commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    let e = only_finding(&findings, "eval-error");
    assert_eq!(e["path"], "homes/bob/default.nix");
    assert_eq!(e["line"], 3);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.starts_with("home 'bob' ("), "{msg}");
    assert!(msg.contains("attribute 'hello' missing"), "{msg}");
    // Trimmed: no source excerpt, no store path of the flake's copy.
    assert!(
        !msg.contains("/nix/store/") && !msg.contains('|') && !msg.contains("show-trace"),
        "{msg}"
    );
    assert!(
        e["fix"]
            .as_str()
            .unwrap()
            .contains("homeConfigurations.bob.activationPackage.drvPath"),
        "{e}"
    );
    let run = f.xtask(&["check"]);
    run.failure(1)
        .stderr_has("error: homes/bob/default.nix:3: home 'bob' (");

    // The repro command in the fix runs as printed, in a shell, on a stock nix.conf (no
    // NIX_CONFIG, flakes not enabled): it reproduces nix's error, not a complaint about
    // the command.
    let fix = e["fix"].as_str().unwrap();
    let repro = fix
        .strip_prefix("fix the error nix names; ")
        .and_then(|r| r.strip_suffix(" reproduces it"))
        .unwrap_or_else(|| panic!("{fix}"));
    assert!(
        repro.starts_with("nix --extra-experimental-features "),
        "{repro}"
    );
    let out = std::process::Command::new("sh")
        .args(["-c", repro])
        .current_dir(&f.root)
        .env("HOME", &f.home)
        .env_remove("NIX_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("attribute 'hello' missing"), "{stderr}");
}

#[test]
fn evaluation_error_of_a_host_is_reported_against_the_host() {
    let f = clean_fixture();
    f.write(
        "systems/ws/default.nix",
        "{ ... }:\n{\n  networking.firewall = throw \"firewall is broken\";\n}\n",
    )
    .commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    let e = only_finding(&findings, "eval-error");
    // A bare `throw` carries no position on Nix 2.8: the host's own file is the place.
    assert_eq!(e["path"], "systems/ws/default.nix");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.starts_with("host 'ws' does not evaluate:") && msg.contains("firewall is broken"),
        "{msg}"
    );
}

#[test]
fn three_broken_homes_of_ten_are_all_reported_in_one_run() {
    let f = Fixture::new();
    for i in 0..10 {
        f.home_module(
            &format!("u{i}"),
            &format!("{{ home.packages = [ \"p{i}\" ]; }}\n"),
        );
    }
    // One error of each kind: uncaught by tryEval (undefined variables, one in an imported
    // file) and caught (throw), so both paths of the evaluation are exercised.
    f.home_module(
        "u2",
        "{ lib, ... }:\n{\n  home.packages = [ undefinedThing ];\n}\n",
    )
    .home_module("u5", "{ imports = [ ./broken.nix ]; }\n")
    .write(
        "homes/u5/broken.nix",
        "{\n  home.packages = [ alsoUndefined ];\n}\n",
    )
    .home_module("u7", "{ home.packages = throw \"u7 is broken\"; }\n")
    .commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    let mut found: Vec<(String, Option<u64>)> = findings
        .iter()
        .map(|x| {
            assert_eq!(x["code"], "eval-error", "{x}");
            (x["path"].as_str().unwrap().to_string(), x["line"].as_u64())
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("homes/u2/default.nix".to_string(), Some(3)),
            ("homes/u5/broken.nix".to_string(), Some(2)),
            ("homes/u7/default.nix".to_string(), None),
        ]
    );
    let u2 = findings
        .iter()
        .find(|x| x["path"] == "homes/u2/default.nix")
        .unwrap();
    assert!(
        u2["message"]
            .as_str()
            .unwrap()
            .contains("undefined variable 'undefinedThing'"),
        "{u2}"
    );
    let u7 = findings
        .iter()
        .find(|x| x["path"] == "homes/u7/default.nix")
        .unwrap();
    assert!(
        u7["message"].as_str().unwrap().contains("u7 is broken"),
        "{u7}"
    );
    run.stderr_has("check: 3 errors, 0 warnings in 10 homes, 0 hosts");
}

#[test]
fn all_systems_reports_one_finding_per_home() {
    let f = clean_fixture();
    f.home_module("bob", "{ home.packages = throw \"bob is broken\"; }\n")
        .commit();
    let (run, findings) = check_json(&f, &["--all-systems"]);
    run.failure(1);
    let e = only_finding(&findings, "eval-error");
    assert!(
        e["message"].as_str().unwrap().starts_with(
            "home 'bob' (x86_64-linux, aarch64-linux, x86_64-darwin, aarch64-darwin) does not evaluate: bob is broken"
        ),
        "{e}"
    );
}

#[test]
fn broken_flake_is_one_finding() {
    let f = clean_fixture();
    f.write(
        "flake.nix",
        "{\n  outputs = { self }: throw \"the outputs are broken\";\n}\n",
    )
    .commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    let e = only_finding(&findings, "flake-error");
    assert_eq!(e["path"], "flake.nix");
    assert_eq!(findings.len(), 1, "{findings:#?}");
    // A flake.nix that does not parse is the lint's finding, with its place; evaluating
    // would only fail again on it.
    f.write("flake.nix", "{\n  outputs = { self }: import ./lib {\n}\n")
        .commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    let e = only_finding(&findings, "syntax-error");
    assert_eq!((&e["path"], &e["line"]), (&"flake.nix".into(), &3.into()));
    assert_eq!(findings.len(), 1, "{findings:#?}");
    run.stderr_has("nothing was evaluated: flake.nix or lib/ has the errors above");
}

#[test]
fn json_output_has_the_documented_shape() {
    let f = clean_fixture();
    f.host("bare", None)
        .home_module("bob", "{ lib, ... }:\n{\n  home.packages = [ nope ];\n}\n")
        .commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    assert_eq!(findings.len(), 2, "{findings:#?}");
    for x in &findings {
        let keys: Vec<&str> = x.as_object().unwrap().keys().map(String::as_str).collect();
        for k in ["severity", "path", "code", "message", "fix"] {
            assert!(keys.contains(&k), "{k} missing in {x}");
        }
    }
    let w = only_finding(&findings, "missing-meta-nix");
    assert_eq!(w["severity"], "warning");
    assert!(w.get("line").is_none(), "line is omitted when unknown: {w}");
    assert_eq!(only_finding(&findings, "eval-error")["line"], 3);
    // --format json is the same as --json.
    let run2 = f.xtask(&["check", "--format", "json"]);
    assert_eq!(run2.json(), run.json());
    // The summary stays on stderr, so stdout is only JSON.
    run.stderr_has("check: 1 error, 1 warning");
}

#[test]
fn github_format_prints_annotations() {
    let f = clean_fixture();
    f.host("bare", None)
        .home_module("bob", "{ lib, ... }:\n{\n  home.packages = [ nope ];\n}\n")
        .commit();
    let run = f.xtask(&["check", "--format", "github"]);
    run.failure(1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines.iter().any(|l| l.starts_with(
            "::warning file=systems/bare,title=missing-meta-nix::systems/bare has no meta.nix"
        )),
        "{}",
        run.stdout
    );
    let err = lines.iter().find(|l| l.starts_with("::error ")).unwrap();
    assert!(
        err.starts_with("::error file=homes/bob/default.nix,line=3,title=eval-error::home 'bob' ("),
        "{err}"
    );
    assert!(err.contains("undefined variable 'nope'"), "{err}");
}

#[test]
fn only_limits_evaluation_and_rejects_unknown_names() {
    let f = clean_fixture();
    f.home_module("bob", "{ home.packages = throw \"bob is broken\"; }\n")
        .home_module("carl", "{ home.packages = throw \"carl is broken\"; }\n")
        .commit();
    let (run, findings) = check_json(&f, &["--only", "bob,ws"]);
    run.failure(1);
    assert_eq!(
        codes(&findings),
        vec![("homes/bob/default.nix".into(), "eval-error".into())]
    );
    run.stderr_has("in 1 home, 1 host");
    let run = f.xtask(&["check", "--only", "alice,ws"]);
    run.success();
    // A flag value that names nothing is a usage error: exit 2.
    let run = f.xtask(&["check", "--only", "alice,nosuch"]);
    run.failure(2)
        .stderr_has("--only: nosuch is neither a home (homes/<name>) nor a host (systems/<name>)")
        .stderr_has("known names: homes/alice, homes/bob, homes/carl, systems/ws");
    // A home and a host with one name: homes/NAME and systems/NAME pick one (CI matrix).
    f.home_module("ws", "{ home.packages = throw \"ws home is broken\"; }\n")
        .commit();
    let (run, findings) = check_json(&f, &["--only", "systems/ws"]);
    run.success();
    assert!(findings.is_empty(), "{findings:?}");
    let (run, findings) = check_json(&f, &["--only", "homes/ws"]);
    run.failure(1);
    assert_eq!(
        codes(&findings),
        vec![("homes/ws/default.nix".into(), "eval-error".into())]
    );
    f.xtask(&["check", "--only", "homes/nosuch"]).failure(2);
    // And so are clap's own.
    f.xtask(&["check", "--format", "xml"]).failure(2);
}

#[test]
fn lint_only_does_not_evaluate() {
    let f = clean_fixture();
    f.home_module("bob", "{ home.packages = throw \"bob is broken\"; }\n")
        .commit();
    let run = f.xtask(&["check", "--lint-only"]);
    run.success()
        .stderr_has("check: 0 errors, 0 warnings in 2 homes, 1 host");
}

/// The lint cache: files unchanged since an earlier run are not parsed again, and an
/// edit is always seen, even one that keeps the file's size and modification time.
#[test]
fn lint_cache_skips_unchanged_files_and_sees_every_edit() {
    let f = clean_fixture();
    let module = f.root.join("homes/alice/default.nix");
    let text = std::fs::read_to_string(&module).unwrap();
    // Files changed in the last two seconds are not trusted to the cache.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let files = |run: &Run| -> (usize, usize) {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("came from the lint cache"))
            .unwrap_or_else(|| panic!("no parse note in {}", run.stderr));
        let n = |after: &str| -> usize {
            line.split(after)
                .next()
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        (n(" .nix files"), n(" unchanged"))
    };
    let first = f.xtask(&["check", "--lint-only", "-v"]);
    let (parsed, cached) = files(first.success());
    assert!(parsed > 0 && cached == 0, "{}", first.stderr);
    let second = f.xtask(&["check", "--lint-only", "-v"]);
    assert_eq!(files(second.success()), (0, parsed), "{}", second.stderr);
    // A syntax error of the same length, the modification time put back.
    let mtime = std::fs::metadata(&module).unwrap().modified().unwrap();
    let broken = text.replacen('=', ";", 1);
    assert_eq!(broken.len(), text.len());
    std::fs::write(&module, &broken).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&module)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let third = f.xtask(&["check", "--lint-only", "-v"]);
    third
        .failure(1)
        .stderr_has("homes/alice/default.nix:")
        .stderr_has("syntax error");
    assert_eq!(files(&third), (1, parsed - 1), "{}", third.stderr);
}

#[test]
fn lint_only_runs_without_nix_and_says_what_it_skipped() {
    let f = clean_fixture();
    f.home_module("bob@nohost", "{ }\n").commit();
    let run = lint_without_nix(&f, &[]);
    run.failure(1)
        .stderr_has("homes/bob@nohost: host 'nohost' has no systems/nohost");
    // ws's meta.nix is a literal, read without nix: nothing was skipped.
    assert!(!run.stderr.contains("note:"), "{}", run.stderr);
    // One that computes its values needs nix: it is named as not read.
    f.host(
        "pi",
        Some("let arch = \"aarch64\"; in { system = \"${arch}-linux\"; }\n"),
    )
    .commit();
    lint_without_nix(&f, &[]).failure(1).stderr_has(
        "note: not read, since they compute their values and nix is not on PATH: systems/pi/meta.nix",
    );
    // With nix, it is evaluated (and is fine).
    f.home_module("bob@nohost", "{ }\n");
    std::fs::remove_dir_all(f.root.join("homes/bob@nohost")).unwrap();
    f.commit();
    let (run, findings) = check_json(&f, &["--lint-only"]);
    run.success();
    assert!(findings.is_empty(), "{findings:#?}");
}

/// `check --lint-only` with only git on PATH: a pre-commit hook on a machine without nix,
/// which proves the lint needs neither nix nor the network.
fn lint_without_nix(f: &Fixture, extra: &[&str]) -> Run {
    let mut args = vec!["check", "--lint-only"];
    args.extend_from_slice(extra);
    f.xtask_without_nix(&args)
}

/// The findings of [`lint_without_nix`] with `--json`.
fn lint_json_without_nix(f: &Fixture) -> (Run, Vec<Value>) {
    let run = lint_without_nix(f, &["--json"]);
    let findings = run.json().as_array().cloned().unwrap();
    (run, findings)
}

#[test]
fn syntax_error_in_a_home_is_located_without_nix() {
    let f = clean_fixture();
    f.home_module(
        "bob",
        "{ pkgs, ... }:\n{\n  home.packages = [ pkgs.git ;\n  home.username = \"bob\";\n}\n",
    )
    .commit();
    let run = lint_without_nix(&f, &[]);
    run.failure(1)
        .stderr_has("error: homes/bob/default.nix:3:30: syntax error: unexpected ';'")
        .stderr_has("nix-instantiate --parse homes/bob/default.nix")
        .stderr_has("check: 1 error, 0 warnings in 2 homes, 1 host");
    let (_, findings) = lint_json_without_nix(&f);
    let e = only_finding(&findings, "syntax-error");
    assert_eq!((&e["line"], &e["column"]), (&3.into(), &30.into()), "{e}");
    // The whole check reports it once, from the lint, and does not evaluate bob.
    let (run, findings) = check_json(&f, &[]);
    run.failure(1)
        .stderr_has("not evaluated because of the errors above: home 'bob'");
    assert_eq!(
        codes(&findings),
        vec![("homes/bob/default.nix".into(), "syntax-error".into())]
    );
    // Every file, imported or not, in one run.
    f.write("lib/extra.nix", "{ a = 1 }\n")
        .write("systems/ws/hardware.nix", "{ ... }: {\n")
        .commit();
    let (_, findings) = lint_json_without_nix(&f);
    let mut paths: Vec<&str> = findings
        .iter()
        .filter(|x| x["code"] == "syntax-error")
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "homes/bob/default.nix",
            "lib/extra.nix",
            "systems/ws/hardware.nix"
        ]
    );
    let run = lint_without_nix(&f, &["--format", "github"]);
    assert!(
        run.stdout.contains(
            "::error file=homes/bob/default.nix,line=3,col=30,title=syntax-error::syntax error: unexpected ';'"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn missing_import_is_located_without_nix() {
    let f = clean_fixture();
    f.home_module(
        "bob",
        "{ ... }:\n{\n  imports = [\n    ./hypr.nix\n  ];\n  home.file.\".vimrc\".source = ../common/vimrc;\n}\n",
    )
    .commit();
    let run = lint_without_nix(&f, &[]);
    run.failure(1)
        .stderr_has("error: homes/bob/default.nix:4:5: imports ./hypr.nix, but homes/bob/hypr.nix does not exist (create homes/bob/hypr.nix and git add it, or correct the path)")
        .stderr_has("error: homes/bob/default.nix:6:31: uses ../common/vimrc as a source, but homes/common/vimrc does not exist");
    let (_, findings) = lint_json_without_nix(&f);
    assert_eq!(
        findings
            .iter()
            .filter(|x| x["code"] == "missing-path")
            .count(),
        2,
        "{findings:#?}"
    );
    // An imported directory is its default.nix.
    f.home_module("bob", "{ imports = [ ../modules ]; }\n")
        .write("homes/modules/README", "modules go here\n")
        .commit();
    lint_without_nix(&f, &[]).failure(1).stderr_has(
        "homes/bob/default.nix:1:15: imports ../modules, but homes/modules/default.nix does not exist",
    );
}

#[test]
fn untracked_import_is_located_and_names_git_add() {
    let f = clean_fixture();
    f.home_module("bob", "{ ... }:\n{\n  imports = [ ./hypr.nix ];\n}\n")
        .commit();
    // Written after the commit and never added: the flake will not see it.
    f.write("homes/bob/hypr.nix", "{ }\n");
    let run = lint_without_nix(&f, &[]);
    run.failure(1).stderr_has(
        "error: homes/bob/default.nix:3:15: imports ./hypr.nix, but git does not track homes/bob/hypr.nix, so the flake cannot see it",
    );
    let (_, findings) = lint_json_without_nix(&f);
    let u = only_finding(&findings, "untracked-path");
    assert_eq!(u["fix"], "git add -N homes/bob/hypr.nix");
    // A dotfile (not a .nix file, so only this check sees it), and a directory of them.
    f.home_module(
        "bob",
        "{\n  home.file.\".vimrc\".source = ./vimrc;\n  xdg.configFile.nvim.source = ./nvim;\n}\n",
    )
    .write("homes/bob/vimrc", "set nu\n")
    .write("homes/bob/nvim/init.lua", "-- lua\n");
    f.git(&["add", "homes/bob/default.nix"]);
    let (_, findings) = lint_json_without_nix(&f);
    let fixes: Vec<&str> = findings
        .iter()
        .filter(|x| x["code"] == "untracked-path")
        .map(|x| x["fix"].as_str().unwrap())
        .collect();
    assert_eq!(
        fixes,
        vec!["git add -N homes/bob/vimrc", "git add -N homes/bob/nvim"]
    );
    // The fix it names is enough.
    f.git(&["add", "-N", "homes/bob"]);
    let (run, findings) = lint_json_without_nix(&f);
    run.success();
    assert!(findings.is_empty(), "{findings:#?}");
}

/// What is not an import or source of the repo is not flagged: strings, absolute paths,
/// interpolated and `pathExists`-guarded paths, paths in other roles; a path out of the
/// repository is a warning.
#[test]
fn a_valid_repo_has_no_static_findings() {
    let f = clean_fixture();
    f.home_module(
        "bob",
        r#"{ pkgs, lib, ... }:
let
  name = "x";
in
{
  imports = [ ./programs.nix ../common ] ++ lib.optional false ./absent.nix;
  home.file.".vimrc".source = ./vimrc;
  home.file."s".text = "./not-a-path.nix ${./vimrc}";
  home.file."a".source = /etc/hostname;
  home.file."b".source = ./${name};
  home.sessionVariables.X = toString ./maybe-later;
  home.file."c".text = if builtins.pathExists ./local.nix then import ./local.nix else "";
}
"#,
    )
    .write(
        "homes/bob/programs.nix",
        "{ home.packages = [ \"git\" ]; }\n",
    )
    .write("homes/bob/vimrc", "set nu\n")
    .write("homes/common/default.nix", "{ }\n")
    .commit();
    let (run, findings) = lint_json_without_nix(&f);
    run.success();
    assert!(findings.is_empty(), "{findings:#?}");
    // The repository's own files parse and import what exists (whether a developer's
    // work in progress is tracked is not this test's business).
    let git_only = common::path_with_git_only();
    let run = common::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["check", "--lint-only", "--json"])
            .current_dir(common::repo_root())
            .env("PATH", git_only.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap(),
    );
    let own: Vec<Value> = run
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["code"] != "untracked-file" && x["code"] != "untracked-path")
        .cloned()
        .collect();
    assert!(own.is_empty(), "{own:#?}");
    // Out of the repository: the flake cannot read it, but it may be meant (a warning).
    f.home_module("bob", "{ imports = [ ../../../shared.nix ]; }\n")
        .commit();
    let (run, findings) = lint_json_without_nix(&f);
    run.success();
    let w = only_finding(&findings, "path-outside-repo");
    assert_eq!(w["severity"], "warning");
    assert_eq!(w["line"], 1);
}

#[test]
fn build_builds_what_evaluated() {
    let f = clean_fixture();
    let run = f.xtask(&["check", "--build", "--only", "alice"]);
    run.success()
        .stderr_has("nix --extra-experimental-features");
    assert!(
        run.stderr
            .contains("homeConfigurations.alice.activationPackage"),
        "{}",
        run.stderr
    );
}

#[test]
fn build_failure_is_reported_against_the_home_that_broke() {
    let f = clean_fixture();
    // Evaluates, but the stub's home-files builder cannot create a/b under the file a.
    f.home_module(
        "bob",
        "{\n  home.file.\"a\".text = \"x\";\n  home.file.\"a/b\".text = \"y\";\n}\n",
    )
    .commit();
    let (run, findings) = check_json(&f, &[]);
    run.success();
    assert!(
        findings.is_empty(),
        "evaluation alone passes: {findings:#?}"
    );
    let (run, findings) = check_json(&f, &["--build"]);
    run.failure(1);
    assert_eq!(
        codes(&findings),
        vec![("homes/bob/default.nix".into(), "build-failed".into())]
    );
    let msg = findings[0]["message"].as_str().unwrap();
    assert!(msg.starts_with("home 'bob' ("), "{msg}");
}

#[test]
fn full_runs_flake_check_and_builds() {
    let f = clean_fixture();
    let run = f.xtask(&["check", "--full"]);
    run.success()
        .stderr_has("flake check")
        .stderr_has("homeConfigurations.alice.activationPackage")
        .stderr_has("nixosConfigurations.ws.config.system.build.toplevel");
}

#[test]
fn error_in_a_shared_file_is_reported_once_and_the_rest_not_evaluated() {
    let f = Fixture::new();
    // Five homes import one broken file: an uncaught error that would stop each of them.
    f.write(
        "homes/common.nix",
        "{ lib, ... }:\n{\n  home.packages = [ missingName ];\n}\n",
    );
    for i in 0..5 {
        f.home_module(&format!("s{i}"), "{ imports = [ ../common.nix ]; }\n");
    }
    f.home_module("fine", "{ home.packages = [ \"ok\" ]; }\n")
        .commit();
    let (run, findings) = check_json(&f, &[]);
    run.failure(1);
    // The first three are reported as broken; then the error is taken as shared and the
    // rest is reported as not evaluated (not as broken: they might not import the file).
    let e = only_finding(&findings, "eval-error");
    assert_eq!(e["path"], "homes/common.nix");
    assert_eq!(e["line"], 3);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("undefined variable 'missingName'"), "{msg}");
    for i in 0..3 {
        assert!(
            msg.contains(&format!("home 's{i}' (")),
            "s{i} missing: {msg}"
        );
    }
    let n = only_finding(&findings, "not-evaluated");
    assert_eq!(n["severity"], "warning");
    assert_eq!(n["path"], "homes/common.nix");
    let nmsg = n["message"].as_str().unwrap();
    assert!(
        nmsg.contains("home 's3' (") && nmsg.contains("home 's4' ("),
        "{nmsg}"
    );
    assert!(!msg.contains("'fine'") && !nmsg.contains("'fine'"), "{msg}");
}

#[test]
fn one_home_broken_on_every_system_does_not_stop_the_others() {
    let f = clean_fixture();
    f.home_module(
        "bob",
        "{ lib, ... }:
{
  home.packages = [ nope ];
}
",
    )
    .home_module("carl", "{ home.packages = throw \"carl is broken\"; }\n")
    .commit();
    let (run, findings) = check_json(&f, &["--all-systems"]);
    run.failure(1);
    let mut paths: Vec<&str> = findings
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec!["homes/bob/default.nix", "homes/carl/default.nix"],
        "{findings:#?}"
    );
    assert!(
        findings.iter().all(|x| x["code"] == "eval-error"),
        "{findings:#?}"
    );
}

/// Nix (2.8 at least) cannot put a path with a space into a flake reference: the finding
/// says so and what to do, instead of only nix's "not a valid URL".
#[test]
fn a_repository_path_with_a_space_is_explained() {
    let f = Fixture::named("my repo");
    f.home_module("alice", "{ }\n").commit();
    let run = f.xtask(&["check"]);
    if run.code == 0 {
        return; // a nix that handles such paths: nothing to explain
    }
    run.failure(1)
        .stderr_has("flake.nix: the flake does not evaluate")
        .stderr_has("move or clone the repository to a path without one");
}

/// meta.nix of the wrong shape is an error naming the file and the expected shape, in
/// `check --lint-only` as in a full check; read from the text without nix when the values
/// are literals, and by nix when they are computed (the last two cases).
#[test]
fn meta_nix_of_the_wrong_shape_is_an_error() {
    let cases = [
        (
            "systems/box/meta.nix",
            "[ ]\n",
            "meta.nix is a list, not an attribute set",
            "{ system = \"x86_64-linux\"; users = [ \"alice\" ]; }",
        ),
        (
            "systems/box/meta.nix",
            "{ system = \"x86_64-windows\"; }\n",
            "x86_64-windows",
            "use one of x86_64-linux, aarch64-linux",
        ),
        (
            "systems/box/meta.nix",
            "{ users = [ \"Bad\" ]; }\n",
            "[a-z_][a-z0-9_-]*",
            "users = [ \"alice\" ]",
        ),
        (
            "systems/box/meta.nix",
            "{ users = \"alice\"; }\n",
            "not a list of user names",
            "users = [ \"alice\" ]",
        ),
        (
            "homes/alice/meta.nix",
            "x: x\n",
            "meta.nix is a lambda, not an attribute set",
            "{ system = \"x86_64-linux\"; }",
        ),
        (
            "homes/alice/meta.nix",
            "{ system = \"x86_64-windows\"; }\n",
            "x86_64-windows",
            "aarch64-darwin",
        ),
        (
            "systems/box/meta.nix",
            "let arch = \"x86_64\"; in { system = \"${arch}-windows\"; }\n",
            "x86_64-windows",
            "use one of x86_64-linux, aarch64-linux",
        ),
        (
            "systems/box/meta.nix",
            "builtins.map (x: x) [ ]\n",
            "meta.nix is a list, not an attribute set",
            "users = [ \"alice\" ]",
        ),
    ];
    for (i, (file, meta, message, fix)) in cases.into_iter().enumerate() {
        let computed = i >= 6;
        let f = clean_fixture();
        f.host("box", Some("{ }\n")).write(file, meta).commit();
        let (run, findings) = lint_json_without_nix(&f);
        let found = findings.iter().find(|x| x["path"] == file);
        if computed {
            // Only nix can tell: statically nothing is said but that it was not read.
            assert!(found.is_none(), "{meta:?}: {findings:#?}");
            run.stderr_has(&format!(
                "not read, since they compute their values and nix is not on PATH: {file}"
            ));
        } else {
            let found = found.unwrap_or_else(|| panic!("{meta:?} without nix: {findings:#?}"));
            assert!(
                found["message"].as_str().unwrap().contains(message),
                "{found}"
            );
            run.failure(1);
        }
        for extra in [&["--lint-only"][..], &[][..]] {
            let (run, findings) = check_json(&f, extra);
            run.failure(1);
            let found = findings
                .iter()
                .find(|x| x["path"] == file)
                .unwrap_or_else(|| {
                    panic!("{file} = {meta:?} {extra:?}: no finding: {findings:#?}")
                });
            assert_eq!(found["severity"], "error", "{found}");
            assert!(
                found["message"].as_str().unwrap().contains(message),
                "{found}"
            );
            assert!(found["fix"].as_str().unwrap().contains(fix), "{found}");
        }
    }
}

#[test]
fn the_lint_says_when_git_could_not_list_the_tracked_files() {
    let f = clean_fixture();
    // Untracked, so a lint with git reports it; without git it cannot know, and says so.
    f.write("homes/alice/extra.nix", "{ }\n");
    f.xtask(&["check", "--lint-only"])
        .failure(1)
        .stderr_has("git does not track this file");
    let no_git = tempfile::tempdir().unwrap();
    let out = f
        .command(&["check", "--lint-only"])
        .env("PATH", no_git.path())
        .output()
        .unwrap();
    common::run(out)
        .success()
        .stderr_has("git could not list the files it tracks (is git on PATH?)");
}

#[test]
fn only_naming_nothing_is_a_usage_error() {
    let f = clean_fixture();
    for only in ["", " ", ","] {
        f.xtask(&["check", "--only", only])
            .failure(2)
            .stderr_has("--only names nothing")
            .stderr_has("leave --only out");
    }
}
