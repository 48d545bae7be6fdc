//! `deploy` and the deploy data: targets as data in meta.nix, the droids/ kind, and real
//! deployments over a real sshd (Debian's openssh-server) on loopback.

mod common;
#[path = "common/sshd.rs"]
mod sshd;

use common::Fixture;
use sshd::{Keys, SSHD, free_port};

/// A droid, a host and a home with `deploy` settings: `list --json` shows them, `check`
/// evaluates the droid with the others in its one batched nix process.
#[test]
fn droids_and_deploy_settings_in_list_and_check() {
    let f = Fixture::new();
    f.home_module("alice", "{ ... }: { home.file.a.text = \"x\"; }\n")
        .home_module("alice@phone", "{ ... }: { }\n")
        .write(
            "homes/alice/meta.nix",
            "{ deploy = { targetHost = \"alice@laptop\"; tags = [ \"mobile\" ]; }; }\n",
        )
        .host(
            "web",
            Some("{ deploy = { targetHost = \"root@web\"; buildOn = \"remote\"; sshOpts = [ \"-p\" \"2222\" ]; }; }\n"),
        )
        .write("droids/phone/default.nix", "{ ... }: { }\n")
        .write(
            "droids/phone/meta.nix",
            "{ system = \"aarch64-linux\"; deploy.targetHost = \"nix-on-droid@phone\"; }\n",
        )
        .commit();
    let run = f.xtask(&["list", "--json"]);
    run.success();
    let v = run.json();
    assert_eq!(v["droids"][0]["name"], "phone");
    assert_eq!(v["droids"][0]["system"], "aarch64-linux");
    assert_eq!(v["droids"][0]["users"][0], "alice");
    assert_eq!(v["droids"][0]["deploy"]["targetHost"], "nix-on-droid@phone");
    assert_eq!(v["hosts"][0]["deploy"]["buildOn"], "remote");
    assert_eq!(v["hosts"][0]["deploy"]["sshOpts"][1], "2222");
    assert_eq!(v["homes"][0]["deploy"]["tags"][0], "mobile");
    assert_eq!(v["homes"][0]["deploy"]["buildOn"], "local");

    let run = f.xtask(&["check"]);
    run.success()
        .stderr_has("evaluating 3 target(s) in one nix process");
    let parts = f
        .nix_eval("o: o.nixOnDroidConfigurations.phone.homeParts")
        .unwrap();
    assert_eq!(parts, serde_json::json!(["alice", "alice@phone"]));

    // A broken droid is a finding of check, like a broken host.
    f.write(
        "droids/phone/default.nix",
        "{ ... }: { x = undefinedThing; }\n",
    )
    .commit();
    f.xtask(&["check"])
        .failure(1)
        .stderr_has("droid 'phone' does not evaluate");
    // A bad deploy setting is a finding against the meta.nix.
    f.write(
        "droids/phone/meta.nix",
        "{ deploy = { targetHost = \"x\"; buildOn = \"cloud\"; }; }\n",
    )
    .write("droids/phone/default.nix", "{ ... }: { }\n")
    .commit();
    f.xtask(&["check", "--lint-only"])
        .failure(1)
        .stderr_has("droids/phone/meta.nix:1:42: deploy.buildOn = \"cloud\" is neither");
}

/// `check --lint-only` with only git on PATH (no nix): the findings, with the run.
fn lint_without_nix(f: &Fixture) -> (common::Run, Vec<serde_json::Value>) {
    let run = f.xtask_without_nix(&["check", "--lint-only", "--json"]);
    let findings = run.json().as_array().cloned().unwrap();
    (run, findings)
}

/// The (path, code, line, column) of each finding.
fn located(findings: &[serde_json::Value]) -> Vec<(String, String, u64, u64)> {
    findings
        .iter()
        .map(|x| {
            (
                x["path"].as_str().unwrap().to_string(),
                x["code"].as_str().unwrap().to_string(),
                x["line"].as_u64().unwrap_or(0),
                x["column"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// A droid's files go through the lint like a host's, without nix: its meta.nix (syntax,
/// `system`, `deploy` as a set or by keys, with line and column), its other `.nix` files
/// (syntax, missing and untracked imports), and a computed meta.nix is named as not read.
#[test]
fn droid_meta_and_files_are_linted_without_nix() {
    let f = Fixture::new();
    f.home_module("alice", "{ ... }: { }\n")
        .write("droids/phone/default.nix", "{ ... }: { }\n")
        .write(
            "droids/phone/meta.nix",
            "{\n  system = \"aarch64-linux\";\n  deploy = { targetHost = ;\n}\n",
        )
        .commit();
    let (run, findings) = lint_without_nix(&f);
    run.failure(1);
    assert_eq!(
        located(&findings),
        vec![("droids/phone/meta.nix".into(), "bad-meta".into(), 3, 27)],
        "{findings:#?}"
    );
    assert!(
        findings[0]["message"]
            .as_str()
            .unwrap()
            .contains("syntax error"),
        "{findings:#?}"
    );

    // Literal values are checked where they are written.
    f.write(
        "droids/phone/meta.nix",
        "{\n  system = \"x86_64-darwin\";\n  deploy.targetHost = \"nix-on-droid@phone\";\n  deploy.buildOn = \"cloud\";\n}\n",
    )
    .commit();
    let (run, findings) = lint_without_nix(&f);
    run.failure(1);
    assert_eq!(
        located(&findings),
        vec![
            (
                "droids/phone/meta.nix".into(),
                "unknown-system".into(),
                2,
                12
            ),
            ("droids/phone/meta.nix".into(), "bad-deploy".into(), 4, 20),
        ],
        "{findings:#?}"
    );
    f.write(
        "droids/phone/meta.nix",
        "{\n  deploy = {\n    targetHost = \"-oProxyCommand=x\";\n    tags = [ \"Bad Tag\" ];\n  };\n}\n",
    )
    .commit();
    let (_, findings) = lint_without_nix(&f);
    assert_eq!(
        located(&findings),
        vec![
            ("droids/phone/meta.nix".into(), "bad-deploy".into(), 3, 18),
            ("droids/phone/meta.nix".into(), "bad-deploy".into(), 4, 12),
        ],
        "{findings:#?}"
    );
    f.write("droids/phone/meta.nix", "{\n  deploy = \"phone\";\n}\n")
        .commit();
    let (_, findings) = lint_without_nix(&f);
    assert_eq!(
        located(&findings),
        vec![("droids/phone/meta.nix".into(), "bad-deploy".into(), 2, 12)],
        "{findings:#?}"
    );
    assert!(
        findings[0]["message"]
            .as_str()
            .unwrap()
            .contains("is not an attribute set"),
        "{findings:#?}"
    );

    // The droid's other files: a syntax error, a missing import, an untracked one.
    f.write(
        "droids/phone/meta.nix",
        "{ system = \"aarch64-linux\"; deploy.targetHost = \"phone\"; }\n",
    )
    .write(
        "droids/phone/default.nix",
        "{ ... }:\n{\n  imports = [ ./termux.nix ./fonts.nix ];\n  x = [ 1 ;\n}\n",
    )
    .write("droids/phone/termux.nix", "{ }\n")
    .commit();
    f.write("droids/phone/fonts.nix", "{ }\n");
    let (run, findings) = lint_without_nix(&f);
    run.failure(1);
    let mut got = located(&findings);
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "droids/phone/default.nix".into(),
                "syntax-error".into(),
                4,
                11
            ),
            (
                "droids/phone/default.nix".into(),
                "untracked-path".into(),
                3,
                28
            ),
            (
                "droids/phone/fonts.nix".into(),
                "untracked-file".into(),
                0,
                0
            ),
        ],
        "{findings:#?}"
    );
    fs::remove_file(f.root.join("droids/phone/fonts.nix")).unwrap();
    let (_, findings) = lint_without_nix(&f);
    let missing: Vec<_> = located(&findings)
        .into_iter()
        .filter(|x| x.1 == "missing-path")
        .collect();
    assert_eq!(
        missing,
        vec![(
            "droids/phone/default.nix".into(),
            "missing-path".into(),
            3,
            28
        )],
        "{findings:#?}"
    );

    // A computed meta.nix needs nix: without it, the droid's is named as not read.
    f.write("droids/phone/default.nix", "{ ... }: { }\n")
        .write(
            "droids/phone/meta.nix",
            "let h = \"phone\"; in { deploy.targetHost = \"nix-on-droid@${h}\"; }\n",
        )
        .commit();
    let (run, findings) = lint_without_nix(&f);
    run.success().stderr_has(
        "note: not read, since they compute their values and nix is not on PATH: droids/phone/meta.nix",
    );
    assert!(findings.is_empty(), "{findings:#?}");
    // With nix, the same file is evaluated and its value checked.
    f.write(
        "droids/phone/meta.nix",
        "let h = \"phone\"; in { deploy.targetHost = \"nix-on-droid@${h}\"; deploy.buildOn = \"c${h}\"; }\n",
    )
    .commit();
    f.xtask(&["check", "--lint-only"])
        .failure(1)
        .stderr_has("droids/phone/meta.nix: deploy.buildOn = \"cphone\" is neither");
}

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A "machine": its own sshd on a loopback port, with its own `$HOME`, `$USER`, profile
/// directory and activation record (sshd's SetEnv), sharing this machine's /nix/store
/// (a chroot store could not run the activation scripts it receives).
struct Machine {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Machine {
    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
    fn activations(&self) -> String {
        fs::read_to_string(self.dir.join("activations")).unwrap_or_default()
    }
    /// The sessions its sshd still serves (its child processes), waited for up to `limit`
    /// to end.
    fn sessions_after(&self, limit: Duration) -> usize {
        let Some(pid) = self.child.as_ref().map(|c| c.id().to_string()) else {
            return 0;
        };
        let count = || {
            fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
                // `pid (comm) state ppid …`: the ppid is the second field after the comm.
                .filter(|stat| {
                    stat.rsplit(')')
                        .next()
                        .and_then(|rest| rest.split_whitespace().nth(1))
                        == Some(pid.as_str())
                })
                .count()
        };
        let end = Instant::now() + limit;
        while count() > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        count()
    }
    /// The ssh connections its sshd accepted so far (a multiplexed session is none).
    fn connections(&self) -> usize {
        fs::read_to_string(self.dir.join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }
    fn profile(&self, kind: &str) -> PathBuf {
        match kind {
            "system" => self.dir.join("profiles/system"),
            "droid" => self.dir.join("profiles/nix-on-droid"),
            _ => self.home().join(".local/state/nix/profiles/home-manager"),
        }
    }
    /// The store path the profile points at, if any.
    fn current(&self, kind: &str) -> Option<String> {
        fs::canonicalize(self.profile(kind))
            .ok()
            .map(|p| p.display().to_string())
    }
    /// What the xtask passes to ssh for this machine (deploy.sshOpts).
    fn ssh_opts(&self, lab: &Lab) -> String {
        let mut words = lab.keys.ssh_words(self.port);
        // As many users' ssh config has it: the xtask's shared connection must not persist
        // in the background after a deployment anyway.
        words.extend(["-o".into(), "ControlPersist=yes".into()]);
        let quoted: Vec<String> = words.iter().map(|w| common::nix_str(w)).collect();
        format!("[ {} ]", quoted.join(" "))
    }
    /// `deploy = { … };` for a meta.nix.
    fn deploy(&self, lab: &Lab, extra: &str) -> String {
        self.deploy_as(lab, "root", extra)
    }
    fn deploy_as(&self, lab: &Lab, user: &str, extra: &str) -> String {
        format!(
            "deploy = {{ targetHost = \"{user}@127.0.0.1\"; sshOpts = {}; {extra} }};",
            self.ssh_opts(lab)
        )
    }
    fn sudo_log(&self) -> String {
        fs::read_to_string(self.dir.join("sudo.log")).unwrap_or_default()
    }
    /// The probe first, then the target-side script (activate, confirm, …) every time
    /// through sudo as `how` (`sudo -n sh `, `sudo -S -p  sh `).
    fn assert_sudo_calls(&self, how: &str) {
        let log = self.sudo_log();
        let calls: Vec<&str> = log.lines().collect();
        assert_eq!(calls[0], "sudo -n true", "{log}");
        assert!(calls.len() >= 3, "{log}");
        assert!(calls[1..].iter().all(|c| c.starts_with(how)), "{log}");
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The stand-in sudo of [`Lab::sudo_machine`] (its session already runs as root).
const SUDO_STUB: &str = r#"#!/bin/sh
echo "sudo $*" >> "$STUB_STATE_DIR/sudo.log"
case "$1" in
  -n)
    shift
    if [ -e "$STUB_STATE_DIR/sudo-needs-password" ]; then
      echo "sudo: a password is required" >&2
      exit 1
    fi
    exec "$@" ;;
  -S)
    shift
    [ "$1" = -p ] && shift 2
    IFS= read -r password
    if [ "$password" != secret ]; then
      echo "sudo: wrong password" >&2
      exit 1
    fi
    exec "$@" ;;
esac
echo "sudo: unexpected arguments: $*" >&2
exit 1
"#;

struct Lab {
    tmp: tempfile::TempDir,
    keys: Keys,
}

impl Lab {
    /// None (with the reason printed) only when sshd cannot run here at all.
    fn new() -> Option<Lab> {
        if !Path::new(SSHD).is_file() {
            eprintln!(
                "SKIPPED: /usr/sbin/sshd is missing (apt-get install openssh-server openssh-client; .ci/run does)"
            );
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let keys = Keys::new(tmp.path()).unwrap();
        Some(Lab { tmp, keys })
    }

    /// A machine whose sshd runs, with `user` as `$USER`.
    fn machine(&self, name: &str, user: &str) -> Machine {
        self.start(name, user, false)
    }

    /// A machine whose ssh user is `deployer`, not root, with a stand-in `sudo` on its
    /// PATH: `deployer` is an alias of root in a copy of /etc/passwd that only its sshd
    /// sees (a private mount namespace), so no user is added to this machine, and the
    /// stand-in sudo records how it was called (`sudo.log`), refuses `-n` while
    /// `sudo-needs-password` exists, and wants `secret` on stdin for `-S`. None (with the
    /// reason printed) where mount namespaces are not allowed.
    fn sudo_machine(&self, name: &str) -> Option<Machine> {
        let probe = Command::new("unshare").args(["--mount", "true"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "SKIPPED: unshare --mount is not allowed here (a private /etc/passwd for the sudo user)"
            );
            return None;
        }
        Some(self.start(name, "root", true))
    }

    fn start(&self, name: &str, user: &str, sudo_user: bool) -> Machine {
        let dir = self.tmp.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        let (env, launcher) = if sudo_user {
            let passwd = dir.join("passwd");
            let mut text = fs::read_to_string("/etc/passwd").unwrap();
            text.push_str(&format!(
                "deployer:x:0:0:deployer:{}:/bin/sh\n",
                dir.join("home").display()
            ));
            fs::write(&passwd, text).unwrap();
            fs::create_dir_all(dir.join("bin")).unwrap();
            let sudo = dir.join("bin/sudo");
            fs::write(&sudo, SUDO_STUB).unwrap();
            fs::set_permissions(&sudo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            // unshare execs sh, which execs sshd: one process, the child killed on drop.
            let mut unshare = Command::new("unshare");
            unshare
                .args([
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    "mount --bind \"$1\" /etc/passwd && shift && exec /usr/sbin/sshd \"$@\"",
                    "sh",
                ])
                .arg(&passwd);
            let path = format!(" PATH={}/bin:/usr/local/bin:/usr/bin:/bin", dir.display());
            (path, Some(unshare))
        } else {
            (String::new(), None)
        };
        let (child, port) = self.keys.start(&dir, user, &env, launcher).unwrap();
        fs::write(dir.join("sshd.pid"), child.id().to_string()).unwrap();
        Machine {
            dir,
            port,
            child: Some(child),
        }
    }

    /// A machine nobody answers on (a free port with no sshd).
    fn unreachable(&self, name: &str) -> Machine {
        let dir = self.tmp.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        Machine {
            dir,
            port: free_port().unwrap(),
            child: None,
        }
    }
}

fn host_module(extra: &str) -> String {
    format!("{{ ... }}:\n{{\n  system.stateVersion = \"26.05\";\n{extra}}}\n")
}

fn home_module(m: &Machine, files: &[(&str, &str)]) -> String {
    let mut body = format!(
        "  home.homeDirectory = {};\n",
        common::nix_str(&m.home().display().to_string())
    );
    for (p, t) in files {
        body.push_str(&format!(
            "  home.file.{}.text = {};\n",
            common::nix_str(p),
            common::nix_str(t)
        ));
    }
    format!("{{ ... }}:\n{{\n{body}}}\n")
}

fn outcomes(run: &common::Run) -> Vec<(String, String)> {
    run.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Six targets of all three kinds on six machines: `--dry-run` changes nothing anywhere,
/// `--on @rack` deploys the tagged hosts only, then all of them in parallel (one host built
/// on the target); hosts become the boot default after the confirmation.
#[test]
fn parallel_deploy_of_hosts_homes_and_droids() {
    let Some(lab) = Lab::new() else { return };
    let f = Fixture::new();
    let web1 = lab.machine("web1", "root");
    let web2 = lab.machine("web2", "root");
    let alice = lab.machine("alice", "alice");
    let bob = lab.machine("bob", "bob");
    let phone1 = lab.machine("phone1", "nix-on-droid");
    let phone2 = lab.machine("phone2", "nix-on-droid");
    f.host(
        "web1",
        Some(&format!(
            "{{ {} }}\n",
            web1.deploy(&lab, "tags = [ \"rack\" ];")
        )),
    )
    .host(
        "web2",
        Some(&format!(
            "{{ {} }}\n",
            web2.deploy(&lab, "tags = [ \"rack\" ]; buildOn = \"remote\";")
        )),
    )
    .home_module("alice", &home_module(&alice, &[(".a", "alice")]))
    .write(
        "homes/alice/meta.nix",
        &format!("{{ {} }}\n", alice.deploy(&lab, "")),
    )
    .home_module("bob", &home_module(&bob, &[(".b", "bob")]))
    .write(
        "homes/bob/meta.nix",
        &format!("{{ {} }}\n", bob.deploy(&lab, "")),
    )
    .write("droids/phone1/default.nix", "{ ... }: { }\n")
    .write(
        "droids/phone1/meta.nix",
        &format!("{{ {} }}\n", phone1.deploy(&lab, "tags = [ \"phones\" ];")),
    )
    .write("droids/phone2/default.nix", "{ ... }: { }\n")
    .write(
        "droids/phone2/meta.nix",
        &format!("{{ {} }}\n", phone2.deploy(&lab, "tags = [ \"phones\" ];")),
    )
    .commit();
    let machines = [&web1, &web2, &alice, &bob, &phone1, &phone2];
    let digest = || {
        machines
            .iter()
            .map(|m| {
                Fixture::tree_digest(&m.dir).replace(
                    &fs::read_to_string(m.dir.join("sshd.log")).unwrap_or_default(),
                    "",
                )
            })
            .collect::<Vec<_>>()
    };
    let before = digest();
    // An empty --on (an unset CI variable) selects neither nothing nor everything.
    for on in ["", ","] {
        f.xtask(&["deploy", "--on", on, "--dry-run"])
            .failure(2)
            .stderr_has("--on names nothing");
    }
    let run = f.xtask(&["deploy", "--dry-run", "--parallel", "6"]);
    run.success()
        .stdout_has("[web1] build: nix-store --realise /nix/store/")
        .stdout_has("[web2] build on the target: ssh ")
        .stdout_has("[alice] activate: ssh ");
    assert_eq!(digest(), before, "--dry-run changed a machine");

    let run = f.xtask(&[
        "deploy",
        "--on",
        "@rack",
        "--json",
        "--confirm-timeout",
        "10",
    ]);
    run.success();
    assert_eq!(
        outcomes(&run),
        pairs(&[("systems/web1", "deployed"), ("systems/web2", "deployed")])
    );
    assert!(alice.current("home").is_none() && phone1.activations().is_empty());

    let connected: Vec<usize> = machines.iter().map(|m| m.connections()).collect();
    let start = Instant::now();
    let run = f.xtask(&[
        "deploy",
        "--parallel",
        "6",
        "--json",
        "--confirm-timeout",
        "10",
    ]);
    let took = start.elapsed();
    run.success();
    assert_eq!(
        outcomes(&run),
        pairs(&[
            ("systems/web1", "deployed"),
            ("systems/web2", "deployed"),
            ("homes/alice", "deployed"),
            ("homes/bob", "deployed"),
            ("droids/phone1", "deployed"),
            ("droids/phone2", "deployed"),
        ])
    );
    let gens: Vec<String> = run
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["generation"].as_str().unwrap().to_string())
        .collect();
    for (m, g) in [(&web1, &gens[0]), (&web2, &gens[1])] {
        assert_eq!(m.current("system").as_ref(), Some(g));
        let log = m.activations();
        // Activated without touching the boot default, which followed the confirmation.
        assert!(
            log.contains(&format!(
                "switch-to-configuration test {g}\nswitch-to-configuration boot {g}"
            )),
            "{log}"
        );
    }
    assert_eq!(alice.current("home").as_ref(), Some(&gens[2]));
    assert_eq!(
        fs::read_to_string(alice.home().join(".a")).unwrap(),
        "alice"
    );
    assert_eq!(fs::read_to_string(bob.home().join(".b")).unwrap(), "bob");
    for (m, g) in [(&phone1, &gens[4]), (&phone2, &gens[5])] {
        assert_eq!(m.current("droid").as_ref(), Some(g));
        assert!(m.activations().contains(&format!("activate activate {g}")));
    }
    run.stderr_has("[alice] ")
        .stderr_has("deploy: 6 target(s), 0 not deployed");
    // Two connections per target: the activation's, which the copy (and web2's build
    // there) ran through, and the confirmation's own.
    let now: Vec<usize> = machines.iter().map(|m| m.connections()).collect();
    let per_target: Vec<usize> = now.iter().zip(&connected).map(|(n, b)| n - b).collect();
    assert_eq!(per_target, [2; 6], "connections per target");
    // Nothing stays connected: no master went to the background (ControlPersist=yes above).
    for m in machines {
        assert_eq!(
            m.sessions_after(Duration::from_secs(5)),
            0,
            "{}",
            m.dir.display()
        );
    }
    eprintln!(
        "6 targets deployed in parallel in {:.1} s",
        took.as_secs_f64()
    );
}

/// One run with an unreachable target, an activation that fails and a home whose
/// pre-flight refuses: each fails alone (exit 1), the failed one is restored, the refused
/// home is untouched, and the good target deploys.
#[test]
fn failures_stay_with_their_target() {
    let Some(lab) = Lab::new() else { return };
    let f = Fixture::new();
    let good = lab.machine("good", "root");
    let bad = lab.machine("bad", "root");
    let gone = lab.unreachable("gone");
    let blocked = lab.machine("blocked", "alice");
    f.host("good", Some(&format!("{{ {} }}\n", good.deploy(&lab, ""))))
        .host("bad", Some(&format!("{{ {} }}\n", bad.deploy(&lab, ""))))
        .host("gone", Some(&format!("{{ {} }}\n", gone.deploy(&lab, ""))))
        .home_module("alice", &home_module(&blocked, &[(".a", "new")]))
        .write(
            "homes/alice/meta.nix",
            &format!("{{ {} }}\n", blocked.deploy(&lab, "")),
        )
        .commit();
    f.xtask(&["deploy", "bad", "--confirm-timeout", "10"])
        .success();
    let first = bad.current("system").unwrap();
    // --diff: what runs there against what would; nothing changes.
    let run = f.xtask(&["deploy", "bad", "good", "--diff", "--json"]);
    run.success();
    assert_eq!(
        outcomes(&run),
        pairs(&[
            ("systems/bad", "unchanged"),
            ("systems/good", "would-change")
        ])
    );
    assert!(good.current("system").is_none() && good.activations().is_empty());

    // The home's .a and .a.bak both exist: Home Manager's check refuses to clobber the backup.
    fs::write(blocked.home().join(".a"), "mine").unwrap();
    fs::write(blocked.home().join(".a.bak"), "older").unwrap();
    let home_before = Fixture::tree_digest(&blocked.home());
    fs::write(
        f.root.join("systems/bad/default.nix"),
        host_module("  stub.failActivation = true;\n"),
    )
    .unwrap();
    f.commit();
    let run = f.xtask(&[
        "deploy",
        "--json",
        "--parallel",
        "4",
        "--confirm-timeout",
        "10",
    ]);
    run.failure(1);
    let got = outcomes(&run);
    assert_eq!(
        got,
        pairs(&[
            ("systems/bad", "failed"),
            ("systems/gone", "failed"),
            ("systems/good", "deployed"),
            ("homes/alice", "failed"),
        ])
    );
    let v = run.json();
    let msg = |i: usize| v[i]["message"].as_str().unwrap().to_string();
    assert!(
        msg(0).contains("activation failed, the previous generation is restored"),
        "{}",
        msg(0)
    );
    assert!(
        msg(3).contains("pre-flight refused, nothing changed"),
        "{}",
        msg(3)
    );
    // bad: back on its first generation, which was activated again.
    assert_eq!(bad.current("system").as_deref(), Some(first.as_str()));
    let log = bad.activations();
    assert!(
        log.trim_end()
            .ends_with(&format!("switch-to-configuration test {first}")),
        "{log}"
    );
    // blocked: nothing changed, no profile.
    assert_eq!(Fixture::tree_digest(&blocked.home()), home_before);
    assert!(blocked.current("home").is_none());
    assert!(good.current("system").is_some());
}

/// The connection drops right after activation (a network restart): the deployer cannot
/// confirm, the target rolls back by itself within the confirm timeout, and the run says
/// so (exit 1).
#[test]
fn a_cut_connection_rolls_back_by_itself() {
    let Some(lab) = Lab::new() else { return };
    let f = Fixture::new();
    let flaky = lab.machine("flaky", "root");
    f.host(
        "flaky",
        Some(&format!("{{ {} }}\n", flaky.deploy(&lab, ""))),
    )
    .commit();
    f.xtask(&["deploy", "--confirm-timeout", "10"]).success();
    let first = flaky.current("system").unwrap();
    fs::write(
        f.root.join("systems/flaky/default.nix"),
        host_module("  stub.dropConnection = true;\n"),
    )
    .unwrap();
    f.commit();
    let run = f.xtask(&["deploy", "--json", "--confirm-timeout", "2"]);
    run.failure(1);
    let v = run.json();
    assert_eq!(v[0]["outcome"], "rolled-back", "{}", run.stderr);
    let second = v[0]["generation"].as_str().unwrap().to_string();
    // Bounded wait for the target's own timer (2 s) and its rollback.
    let deadline = Instant::now() + Duration::from_secs(15);
    while flaky.current("system").as_deref() != Some(first.as_str()) {
        assert!(
            Instant::now() < deadline,
            "no rollback: {}",
            flaky.activations()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = flaky.activations();
    assert!(
        log.contains(&format!("switch-to-configuration test {second}")),
        "{log}"
    );
    assert!(
        !log.contains(&format!("boot {second}")),
        "never the boot default: {log}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !flaky
        .activations()
        .trim_end()
        .ends_with(&format!("test {first}"))
    {
        assert!(Instant::now() < deadline, "{}", flaky.activations());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A home's deployment takes the lock `cargo xtask switch` takes on that machine
/// (`~/.local/state/home-manager/switch.lock`): a deploy waits for a local switch (busy,
/// nothing changed, the holder named), and a local switch waits for a deployment that has
/// activated and is not yet confirmed.
#[test]
fn a_home_deployment_and_a_local_switch_share_the_lock() {
    let Some(lab) = Lab::new() else { return };
    let f = Fixture::new();
    let m = lab.machine("laptop", "alice");
    f.home_module("alice", &home_module(&m, &[(".a", "one")]))
        .write(
            "homes/alice/meta.nix",
            &format!("{{ {} }}\n", m.deploy(&lab, "")),
        )
        .commit();
    // A local switch holds it, as home::Lock does: an flock, and its holder in the file.
    let lock_path = m.home().join(".local/state/home-manager/switch.lock");
    fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    fs::write(&lock_path, "pid 4242: cargo xtask switch alice").unwrap();
    let held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock_path)
        .unwrap();
    held.try_lock().unwrap();
    let before = Fixture::tree_digest(&m.home());
    let run = f.xtask(&["deploy", "--json", "--confirm-timeout", "10"]);
    run.failure(1);
    assert_eq!(outcomes(&run), pairs(&[("homes/alice", "failed")]));
    let msg = run.json()[0]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("busy, nothing changed")
            && msg.contains("(pid 4242: cargo xtask switch alice)"),
        "{msg}"
    );
    // Nothing changed there, the lock file included.
    assert_eq!(Fixture::tree_digest(&m.home()), before);
    assert!(m.current("home").is_none());
    drop(held);

    // Free: the deployment takes it and records itself as its holder.
    f.xtask(&["deploy", "--confirm-timeout", "10"]).success();
    let generation = m.current("home").unwrap();
    assert!(fs::read_to_string(m.home().join(".a")).unwrap() == "one");
    let holder = fs::read_to_string(&lock_path).unwrap();
    assert!(
        holder.contains(&format!("cargo xtask deploy of {generation}")),
        "{holder}"
    );

    // The other way: the target side activates as a deployment does (the script the
    // deployer sends, run here without ssh) and waits for its confirmation, holding the
    // lock; a local switch of that home is refused meanwhile, and runs after the confirm.
    let state = m.dir.join("state");
    let script = common::repo_root().join("xtask/remote/deploy.sh");
    let target_side = |args: &[&str]| {
        let out = Command::new("sh")
            .arg(&script)
            .arg(&state)
            .args(args)
            .env("HOME", m.home())
            .env("USER", "alice")
            .env("LOGNAME", "alice")
            .env("STUB_STATE_DIR", &m.dir)
            .env("TMPDIR", &m.dir)
            .env("NIX_CONFIG", "substituters =")
            .env_remove("XDG_STATE_HOME")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    target_side(&["activate", "home", &generation, "tok", "60", "bak"]);
    let switch = |f: &Fixture| {
        let mut cmd = f.command(&["switch", "alice"]);
        cmd.env("HOME", m.home());
        common::run(cmd.output().unwrap())
    };
    switch(&f)
        .failure(1)
        .stderr_has("another switch, rollback or gc of alice's home is running")
        .stderr_has(&format!("cargo xtask deploy of {generation}"));
    target_side(&["confirm", "home", &generation, "tok"]);
    switch(&f).success();
}

/// `cmd` run by `wrapper` (its program and arguments first), with the same environment
/// and directory: `setsid -w` (no controlling terminal) or `script` (a terminal of its
/// own, whose keyboard is our stdin).
fn wrapped(cmd: &Command, wrapper: &[&str], one_string: bool) -> Command {
    let words: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut w = Command::new(wrapper[0]);
    w.args(&wrapper[1..]);
    if one_string {
        let quoted: Vec<String> = words
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        w.arg(quoted.join(" ")).arg("/dev/null");
    } else {
        w.args(&words);
    }
    if let Some(dir) = cmd.get_current_dir() {
        w.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    w
}

/// A host whose ssh user is not root: sudo is probed before anything runs
/// (`sudo -n true`) and then used without a prompt; when it wants a password, nothing
/// runs unless `--ask-sudo-password` is given, and then the password is read once, from
/// the terminal, before any target starts, and given to every sudo on stdin.
#[test]
fn sudo_is_probed_first_and_a_password_is_asked_once_up_front() {
    let Some(lab) = Lab::new() else { return };
    let Some(web) = lab.sudo_machine("web") else {
        return;
    };
    let f = Fixture::new();
    f.host(
        "web",
        Some(&format!("{{ {} }}\n", web.deploy_as(&lab, "deployer", ""))),
    )
    .commit();
    let deploy = ["deploy", "--json", "--confirm-timeout", "10"];

    // Passwordless sudo: probed, then every step as root goes through `sudo -n`.
    let run = f.xtask(&deploy);
    run.success();
    assert_eq!(outcomes(&run), pairs(&[("systems/web", "deployed")]));
    let first = web.current("system").expect("deployed");
    web.assert_sudo_calls("sudo -n sh ");

    // A password is needed: without --ask-sudo-password nothing runs past the probe.
    fs::write(web.dir.join("sudo-needs-password"), "").unwrap();
    // A new generation: the host gains an integrated home.
    f.write(
        "homes/ops@web/default.nix",
        "{ home.file.x.text = \"2\"; }\n",
    )
    .commit();
    fs::remove_file(web.dir.join("sudo.log")).unwrap();
    f.xtask(&deploy)
        .failure(1)
        .stderr_has("sudo asks for a password on web")
        .stderr_has("--ask-sudo-password");
    assert_eq!(web.sudo_log(), "sudo -n true\n");
    assert_eq!(
        web.current("system").as_ref(),
        Some(&first),
        "changed without sudo"
    );

    // Asked to ask, but there is no terminal to ask on: said so, nothing ran.
    let mut args = deploy.to_vec();
    args.push("--ask-sudo-password");
    fs::remove_file(web.dir.join("sudo.log")).unwrap();
    let mut no_tty = wrapped(&f.command(&args), &["setsid", "-w"], false);
    common::run(no_tty.stdin(Stdio::null()).output().unwrap())
        .failure(1)
        .stderr_has("needs a terminal");
    assert_eq!(web.sudo_log(), "sudo -n true\n");

    // From a terminal: typed once, before anything runs; every sudo gets it.
    fs::remove_file(web.dir.join("sudo.log")).unwrap();
    let mut typed = wrapped(&f.command(&args), &["script", "-qec"], true);
    typed
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = typed.spawn().unwrap();
    {
        use std::io::Write;
        let mut keyboard = child.stdin.take().unwrap();
        keyboard.write_all(b"secret\n").unwrap();
        drop(keyboard);
        let out = child.wait_with_output().unwrap();
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{shown}");
        assert_eq!(shown.matches("sudo password for web").count(), 1, "{shown}");
        assert!(shown.contains("\"deployed\""), "{shown}");
    }
    web.assert_sudo_calls("sudo -S -p  sh ");
    assert_ne!(web.current("system").as_ref(), Some(&first), "not deployed");
}
