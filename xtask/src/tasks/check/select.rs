//! What `check` looks at: the `--only` selection, and the targets to evaluate once the
//! lint's findings rule some out (a broken file is not evaluated: nix would only repeat it).

use std::collections::BTreeSet;

use anyhow::Result;

use super::Target;
use crate::{
    repo::{self, Finding, Repo, Severity},
    term,
};

/// What `--only` selects: home users and hosts (everything without --only).
pub(super) struct Selection {
    homes: BTreeSet<String>,
    hosts: BTreeSet<String>,
    droids: BTreeSet<String>,
}

impl Selection {
    pub(super) fn new(repo: &Repo, only: &[String]) -> Result<Selection> {
        if only.is_empty() {
            return Ok(Selection {
                homes: repo.standalone_users().map(|u| u.name.clone()).collect(),
                hosts: repo.hosts.keys().cloned().collect(),
                droids: repo.droids.keys().cloned().collect(),
            });
        }
        let mut sel = Selection {
            homes: BTreeSet::new(),
            hosts: BTreeSet::new(),
            droids: BTreeSet::new(),
        };
        let items: Vec<&str> = only
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .collect();
        if items.is_empty() {
            // `--only ""` (an empty CI matrix variable) would otherwise check nothing and pass.
            return Err(crate::UsageError(
                "--only names nothing; pass home or host names (--only alice,workstation), or leave --only out to check everything".into(),
            )
            .into());
        }
        let mut unknown = Vec::new();
        for item in items {
            // `homes/pi` or `systems/pi` picks one of a home and a host with the same name
            // (a CI matrix job per target); a bare name means both.
            let (name, homes, hosts) =
                match (item.strip_prefix("homes/"), item.strip_prefix("systems/")) {
                    (Some(n), _) => (n.trim_end_matches('/'), true, false),
                    (_, Some(n)) => (n.trim_end_matches('/'), false, true),
                    _ => (item.strip_prefix("droids/").unwrap_or(item), true, true),
                };
            if hosts && repo.droids.contains_key(name) {
                sel.droids.insert(name.to_string());
                continue;
            }
            let mut found = false;
            if let Some(u) = repo.users.get(name).filter(|_| homes) {
                found = true;
                if u.base {
                    sel.homes.insert(name.to_string());
                } else {
                    // An integrated-only user has no standalone home: check the hosts it is on.
                    sel.hosts.extend(repo.user_hosts(name));
                }
            }
            if hosts && repo.hosts.contains_key(name) {
                found = true;
                sel.hosts.insert(name.to_string());
            }
            if !found {
                unknown.push(item.to_string());
            }
        }
        if !unknown.is_empty() {
            let known: Vec<String> = repo
                .users
                .keys()
                .map(|u| format!("homes/{u}"))
                .chain(repo.hosts.keys().map(|h| format!("systems/{h}")))
                .chain(repo.droids.keys().map(|d| format!("droids/{d}")))
                .collect();
            // A flag value naming nothing is a usage error (exit 2), like a bad flag.
            return Err(crate::UsageError(format!(
                "--only: {} {} neither a home (homes/<name>) nor a host (systems/<name>); known names: {} (cargo xtask list shows them)",
                unknown.join(", "),
                if unknown.len() == 1 { "is" } else { "are" },
                term::list(&known)
            ))
            .into());
        }
        Ok(sel)
    }

    pub(super) fn counts(&self) -> (usize, usize) {
        (self.homes.len(), self.hosts.len() + self.droids.len())
    }
}

/// True when an error finding is about `dir` (the directory or a file in it).
fn has_error_in(findings: &[Finding], dir: &str) -> bool {
    findings.iter().any(|f| {
        f.severity == Severity::Error
            && (f.path == dir || f.path.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))
    })
}

/// The targets to evaluate, and notes about what is skipped and why. A target whose own
/// directories already have a lint error is not evaluated: its evaluation would only fail
/// again with nix's less helpful words for the same problem (a missing default.nix, an
/// untracked file). An invalid directory name makes the flake's discovery refuse the whole
/// homes/ (or systems/) directory, so then nothing under it is evaluated.
pub(super) fn targets(
    repo: &Repo,
    sel: &Selection,
    findings: &[Finding],
    systems: &[String],
) -> (Vec<Target>, Vec<String>) {
    let bad_dir_name = |top: &str| {
        findings.iter().any(|f| {
            f.code == "bad-name"
                && f.path
                    .strip_prefix(top)
                    .is_some_and(|r| r.starts_with('/') && !r[1..].contains('/'))
        })
    };
    // flake.nix or lib/ that does not parse, or imports what the flake cannot see, fails
    // every evaluation with one error the lint has already reported, with its place.
    let flake_broken = findings.iter().any(|f| {
        f.severity == Severity::Error
            && matches!(f.code, "syntax-error" | "missing-path" | "untracked-path")
            && (f.path == "flake.nix" || f.path.starts_with("lib/"))
    });
    let mut notes = Vec::new();
    let mut targets = Vec::new();
    let homes_blocked = flake_broken || bad_dir_name("homes");
    let hosts_blocked = homes_blocked || bad_dir_name("systems");
    let anything = !(sel.homes.is_empty() && sel.hosts.is_empty());
    if flake_broken && anything {
        notes.push("nothing was evaluated: flake.nix or lib/ has the errors above, and every home and host goes through them; fix those first".into());
    } else if homes_blocked && anything {
        notes.push("nothing was evaluated: an invalid name under homes/ stops the flake's discovery of every home and host; fix the names first".into());
    } else if hosts_blocked && !sel.hosts.is_empty() {
        notes.push("hosts were not evaluated: an invalid name under systems/ stops the flake's discovery of every host; fix the names first".into());
    }
    let mut skipped = Vec::new();
    if !homes_blocked {
        // Home by home, its systems together, so one home's failures are reported together.
        for name in &sel.homes {
            let Some(user) = repo.users.get(name) else {
                continue;
            };
            let dirs: Vec<String> = user
                .standalone_parts()
                .iter()
                .map(|p| format!("homes/{}", repo::home_dir_name(name, p)))
                .collect();
            if dirs.iter().any(|d| has_error_in(findings, d)) {
                skipped.push(format!("home '{name}'"));
                continue;
            }
            targets.extend(systems.iter().map(|system| Target::home(name, system)));
        }
    }
    if !hosts_blocked {
        // A machine (host or phone) with the parts of the homes merged into it.
        let machine_dirs = |kind_dir: &str, name: &str, users: Vec<String>| {
            let mut dirs = vec![format!("{kind_dir}/{name}")];
            for user in users {
                if let Some(u) = repo.users.get(&user) {
                    dirs.extend(
                        u.host_parts_for(name)
                            .iter()
                            .map(|p| format!("homes/{}", repo::home_dir_name(&user, p))),
                    );
                }
            }
            dirs
        };
        let hosts = sel.hosts.iter().map(|h| {
            let dirs = machine_dirs("systems", h, repo.host_users(h));
            ("host", h, dirs, Target::host(h))
        });
        let droids = sel.droids.iter().map(|d| {
            let dirs = machine_dirs("droids", d, repo.droid_users(d));
            ("droid", d, dirs, Target::droid(d))
        });
        for (what, name, dirs, target) in hosts.chain(droids) {
            if dirs.iter().any(|d| has_error_in(findings, d)) {
                skipped.push(format!("{what} '{name}'"));
                continue;
            }
            targets.push(target);
        }
    }
    if !skipped.is_empty() {
        notes.push(format!(
            "not evaluated because of the errors above: {}",
            skipped.join(", ")
        ));
    }
    (targets, notes)
}
