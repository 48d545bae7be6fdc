//! This checkout: the layout, the user's home in homes/ and its system, git and untracked
//! `.nix` files, and flake.lock's inputs (each fetchable or not).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::Result;

use super::{Report, timeout};
use crate::{
    home::UserEnv,
    nix::{self, Nix},
    repo::{self, Repo, Severity as FindingSeverity},
    term,
};

pub(super) fn check_layout(r: &mut Report, repo: &Repo) {
    let errors: Vec<String> = repo
        .findings
        .iter()
        .filter(|f| f.severity == FindingSeverity::Error)
        .map(|f| f.to_string())
        .collect();
    if errors.is_empty() {
        r.ok(
            "layout",
            format!("{} users, {} hosts", repo.users.len(), repo.hosts.len()),
        );
    } else {
        r.fail(
            "layout",
            format!("{} problems: {}", errors.len(), errors.join("; ")),
            "fix them as said (`cargo xtask check --lint-only` lists them)",
        );
    }
}

/// `$USER` has a home in homes/, and its meta.nix against this machine's system.
/// How the home's meta.nix is read: by nix, or (without it) from its text, with the files
/// that compute their values (which only nix can read).
pub(super) enum MetaBy<'n, 'a> {
    Nix(&'n Nix<'a>),
    Text(repo::PendingMeta),
}

pub(super) fn check_repo(r: &mut Report, repo: &Repo, env: &UserEnv, how: MetaBy<'_, '_>) {
    check_layout(r, repo);
    let user = &env.user;
    let homes: Vec<&str> = repo.standalone_users().map(|u| u.name.as_str()).collect();
    let Some(u) = repo.users.get(user).filter(|u| u.base) else {
        let other = homes.first().copied().unwrap_or("<user>");
        // No suggestion the xtask would refuse: `new-user root` needs --allow-root, and a
        // home is switched by its own user only.
        let fix = if user == repo::RESERVED_USER {
            format!(
                "run doctor and switch as the user whose home you deploy (e.g. `sudo -u {other} -i`), not as root"
            )
        } else if repo::validate_new_user_name(user, false).is_err() {
            // A name no home can have (`global`): only the other way out.
            format!(
                "log in as a user who has a home ({}) and run doctor there",
                term::list(&homes)
            )
        } else {
            format!(
                "create it with `cargo xtask new-user {user}`, or log in as a user who has one ({}) and run doctor there",
                term::list(&homes)
            )
        };
        r.fail(
            "home",
            format!(
                "$USER is {user}, but there is no homes/{user} (homes: {})",
                term::list(&homes)
            ),
            fix,
        );
        r.skip("system", "no home for $USER");
        return;
    };
    let mut parts = vec![format!("homes/{user}")];
    if u.global {
        parts.push(format!("homes/{user}@{}", repo::rules().reserved_host));
    }
    r.ok("home", parts.join(" + "));
    unit_check(r, user);
    let here = nix::current_system();
    if !repo::rules().is_supported(&here) {
        r.fail(
            "system",
            format!("this machine is {here}, which the repository does not support"),
            format!(
                "add it to supported-systems in Cargo.toml (now: {})",
                repo::rules().supported_systems.join(", ")
            ),
        );
        return;
    }
    if !u.has_meta {
        r.ok(
            "system",
            format!(
                "{here} (homes/{user} has no meta.nix; the repo's default is {})",
                repo.defaults.default_system
            ),
        );
        return;
    }
    let rel = format!("homes/{user}/meta.nix");
    let nix = match how {
        MetaBy::Nix(nix) => nix,
        // Read from its text, as the lint reads it (the caller loaded the literal ones).
        MetaBy::Text(pending) => {
            let problem = repo.findings.iter().find(|f| f.path == rel);
            if pending.homes.contains(user) {
                r.skip(
                    "system",
                    &format!(
                        "nix cannot run, and {rel} computes its system, which only nix can read"
                    ),
                );
            } else if let Some(s) = &u.system {
                let s = serde_json::Value::String(s.clone());
                system_verdict(r, &rel, &here, Some(&s), repo);
            } else if let Some(f) = problem {
                r.fail("system", format!("{rel}: {}", f.message), f.fix.clone());
            } else {
                system_verdict(r, &rel, &here, None, repo);
            }
            return;
        }
    };
    let file = repo.root.join(&rel);
    let expr = format!(
        "let m = import (/. + {}); in if builtins.isAttrs m then {{ system = m.system or null; }} else {{ not_attrs = builtins.typeOf m; }}",
        repo::nix_string(&file.display().to_string())
    );
    let shape = format!("write it like {{ system = \"{here}\"; }}");
    let out = match nix.bounded(["eval", "--json", "--impure", "--expr", &expr], timeout()) {
        Ok(out) => out,
        Err(e) => {
            r.fail("system", format!("{rel}: {e:#}"), shape);
            return;
        }
    };
    if !out.success() {
        let msg = out.problem();
        r.fail(
            "system",
            format!("{rel} cannot be read: {msg}"),
            format!("fix the file: {shape}"),
        );
        return;
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    if let Some(kind) = v.get("not_attrs").and_then(|k| k.as_str()) {
        r.fail(
            "system",
            format!("{rel} is a {kind}, not an attribute set"),
            shape,
        );
        return;
    }
    system_verdict(r, &rel, &here, v.get("system"), repo);
}

/// What `system` in the home's meta.nix `rel` means on this machine (`here`).
fn system_verdict(
    r: &mut Report,
    rel: &str,
    here: &str,
    system: Option<&serde_json::Value>,
    repo: &Repo,
) {
    match system {
        Some(serde_json::Value::String(s)) if repo::rules().is_supported(s) => {
            if *s == here {
                r.ok("system", format!("{here}, as {rel} says"));
            } else {
                r.warn(
                    "system",
                    format!("{rel} says {s}, but this machine is {here}: switch builds this machine's variant"),
                    format!("set system = \"{here}\" in {rel} if the home is meant for this machine (or pass --system {s})"),
                );
            }
        }
        None | Some(serde_json::Value::Null) => r.ok(
            "system",
            format!(
                "{here} ({rel} sets none; the repo's default is {})",
                repo.defaults.default_system
            ),
        ),
        Some(other) => r.fail(
            "system",
            format!("{rel}: system = {other} is not a supported system"),
            format!("use one of {}", repo::rules().supported_systems.join(", ")),
        ),
    }
}

/// NixOS' Home Manager module managing the same user: a standalone switch refuses it.
fn unit_check(r: &mut Report, user: &str) {
    let dir = std::env::var_os("XTASK_SYSTEMD_UNIT_DIR")
        .map_or_else(|| PathBuf::from("/etc/systemd/system"), PathBuf::from);
    let unit = dir.join(format!("home-manager-{user}.service"));
    if unit.exists() {
        r.warn(
            "nixos module",
            format!(
                "NixOS' Home Manager module manages {user}'s home here ({})",
                unit.display()
            ),
            "deploy with `cargo xtask switch --host <host>`, or pass --force-standalone",
        );
    }
}

/// git present, and no `.nix` file the flake cannot see.
pub(super) fn check_git(r: &mut Report, root: &Path) {
    let Some(git) = nix::find_on_path("git") else {
        r.fail(
            "git",
            "git is not on PATH (flakes in a git repository need it)",
            "install git (Debian/Ubuntu: apt-get install git; macOS: xcode-select --install)",
        );
        return;
    };
    let sh = match xshell::Shell::new() {
        Ok(sh) => sh,
        Err(e) => {
            r.warn("git", e.to_string(), "");
            return;
        }
    };
    sh.change_dir(root);
    let version = nix::run_bounded(sh.cmd(&git).arg("--version"), timeout())
        .ok()
        .filter(|o| o.success())
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_else(|| git.display().to_string());
    let untracked: Vec<String> = repo::untracked_nix_findings(root)
        .into_iter()
        .map(|f| f.path)
        .collect();
    if untracked.is_empty() {
        r.ok(
            "git",
            format!("{version}; every .nix file of homes/, systems/, droids/, lib/ is tracked"),
        );
    } else {
        r.fail(
            "git",
            format!(
                "{} untracked .nix file(s) the flake cannot see: {}",
                untracked.len(),
                untracked.join(", ")
            ),
            format!("git add -N {}", untracked.join(" ")),
        );
    }
}

/// flake.lock present and each locked input fetchable (or already in the store).
pub(super) fn check_inputs(r: &mut Report, nix: &Nix<'_>, root: &Path) {
    let declared = match nix.declared_inputs(root, timeout()) {
        Ok(d) => d,
        Err(e) => {
            r.fail("flake.lock", format!("{e:#}"), "fix flake.nix");
            return;
        }
    };
    let lock_path = root.join("flake.lock");
    let lock: serde_json::Value = match fs::read_to_string(&lock_path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                r.fail(
                    "flake.lock",
                    format!("flake.lock is not valid JSON: {e}"),
                    "restore it from git (`git checkout flake.lock`), or recreate it with `cargo xtask update` where the network is reachable",
                );
                return;
            }
        },
        Err(_) if declared.is_empty() => {
            r.ok(
                "flake.lock",
                "the flake has no inputs, so it needs no flake.lock",
            );
            return;
        }
        Err(_) => {
            r.fail(
                "flake.lock",
                format!("flake.lock is missing; flake.nix declares {}", declared.join(", ")),
                "run `cargo xtask update` (or `nix --extra-experimental-features 'nix-command flakes' flake lock`) where the network is reachable, and commit flake.lock",
            );
            return;
        }
    };
    let nodes = lock.get("nodes").and_then(|n| n.as_object());
    let root_inputs = nodes
        .and_then(|n| n.get(lock.get("root").and_then(|r| r.as_str()).unwrap_or("root")))
        .and_then(|n| n.get("inputs"))
        .and_then(|i| i.as_object())
        .cloned()
        .unwrap_or_default();
    let missing: Vec<&String> = declared
        .iter()
        .filter(|d| !root_inputs.contains_key(*d))
        .collect();
    if !missing.is_empty() {
        r.fail(
            "flake.lock",
            format!("flake.lock does not lock {}", term::list(&missing)),
            format!(
                "run `cargo xtask update {}` where the network is reachable, and commit flake.lock",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
    } else {
        r.ok("flake.lock", format!("locks {}", term::list(&declared)));
    }
    // Every locked node, fetched in parallel, each within its own time limit: a locked
    // input with its narHash is taken from the store when it is there already.
    let locked: BTreeMap<String, serde_json::Value> = nodes
        .map(|n| {
            n.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.get("locked")?.clone())))
                .collect()
        })
        .unwrap_or_default();
    let limit = timeout() * 2;
    let results: Vec<(String, String, Result<nix::Bounded>)> = std::thread::scope(|s| {
        let handles: Vec<_> = locked
            .iter()
            .map(|(name, attrs)| {
                let original = nodes
                    .and_then(|n| n.get(name))
                    .and_then(|n| n.get("original"))
                    .map(describe)
                    .unwrap_or_else(|| describe(attrs));
                let expr = format!(
                    "(builtins.fetchTree (builtins.fromJSON {})).narHash",
                    repo::nix_string(&attrs.to_string())
                );
                let prepared = nix.prepare([
                    "eval",
                    "--json",
                    "--option",
                    "connect-timeout",
                    "5",
                    "--expr",
                    &expr,
                ]);
                let handle = s.spawn(move || prepared?.run(limit));
                (name.clone(), original, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(n, o, h)| {
                let res = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the check panicked")));
                (n, o, res)
            })
            .collect()
    });
    for (name, original, res) in results {
        let check = format!("input {name}");
        match res {
            Ok(out) if out.success() => r.ok(&check, format!("{original}: fetchable (or in the store)")),
            Ok(out) if out.timed_out() => r.warn(
                &check,
                format!("{original}: not fetched within {} s", limit.as_secs()),
                "a slow or unreachable network: try again where it is reachable (a switch would wait for it too)",
            ),
            Ok(out) => {
                let problem = out.problem();
                let fix = if problem.contains("hash mismatch") || problem.contains("NAR hash") {
                    format!("its content changed since flake.lock was written: `cargo xtask update {name}`")
                } else {
                    "connect to the network (or a substituter that has it) and switch again; flake.lock needs no change".to_string()
                };
                r.fail(&check, format!("{original} cannot be fetched: {problem}"), fix);
            }
            Err(e) => r.fail(&check, format!("{original}: {e:#}"), "see README's Install"),
        }
    }
}

/// A flake reference from lock attributes, for messages: `github:NixOS/nixpkgs/nixos-unstable`.
fn describe(attrs: &serde_json::Value) -> String {
    let get = |k: &str| attrs.get(k).and_then(|v| v.as_str()).unwrap_or("");
    match get("type") {
        t @ ("github" | "gitlab" | "sourcehut") => {
            let r = if get("ref").is_empty() {
                get("rev")
            } else {
                get("ref")
            };
            let mut s = format!("{t}:{}/{}", get("owner"), get("repo"));
            if !r.is_empty() {
                s.push('/');
                s.push_str(r);
            }
            s
        }
        "path" => format!("path:{}", get("path")),
        "git" | "tarball" | "file" | "hg" => format!("{}+{}", get("type"), get("url")),
        "indirect" => format!("flake:{}", get("id")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_attributes_read_as_flake_references() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"type":"github","owner":"NixOS","repo":"nixpkgs","ref":"nixos-unstable"}"#,
        )
        .unwrap();
        assert_eq!(describe(&v), "github:NixOS/nixpkgs/nixos-unstable");
        let v: serde_json::Value =
            serde_json::from_str(r#"{"type":"path","path":"/tmp/x"}"#).unwrap();
        assert_eq!(describe(&v), "path:/tmp/x");
    }
}
