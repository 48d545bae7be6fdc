//! The layout scan: each directory of homes/, systems/ and droids/ checked against the
//! naming rules and the files it needs, and the rules that need the whole layout (parts
//! without a base, hosts that do not exist). [`super::Repo::scan`] runs it.

use std::{fs, path::Path};

use anyhow::{Context, Result};

use super::{
    Droid, Finding, Host, Part, Repo, User, home_dir_name, parse_home_dir, validate_host_name,
};

impl Repo {
    /// The directories of `homes`, `systems` or `droids`, sorted, with the files the
    /// layout looks for in them.
    pub(super) fn model_dirs(&self, rel: &str) -> Result<Vec<ModelDir>> {
        match &self.tree {
            Some(tree) => tree
                .model_dirs(rel)
                .with_context(|| format!("reading {}", self.root.join(rel).display())),
            None => Ok(list_dirs(&self.root.join(rel))?
                .into_iter()
                .map(|name| {
                    let dir = self.root.join(rel).join(&name);
                    ModelDir {
                        default: dir.join("default.nix").is_file(),
                        meta: dir.join("meta.nix").is_file(),
                        name,
                    }
                })
                .collect()),
        }
    }

    /// A machine's directory (`systems/<host>`, `droids/<phone>`): its name must be a host
    /// name and it needs a default.nix (`what` it configures, `create` how to make one).
    /// Returns whether default.nix and meta.nix exist, or None for a bad name.
    pub(super) fn machine_dir(
        &mut self,
        rel: &str,
        dir: &ModelDir,
        what: &str,
        create: &str,
    ) -> bool {
        if let Err(e) = validate_host_name(&dir.name) {
            self.findings.push(Finding::error(
                rel,
                "bad-name",
                e,
                "rename the directory to a valid host name".into(),
            ));
            return false;
        }
        if !dir.default {
            self.findings.push(Finding::error(
                rel,
                "missing-default-nix",
                format!("{rel} has no default.nix, so the {what} has no configuration"),
                format!("create {rel}/default.nix ({create}) or remove the directory"),
            ));
        }
        true
    }

    pub(super) fn add_host_dir(&mut self, dir: &ModelDir) {
        let name = &dir.name;
        let rel = format!("systems/{name}");
        if !self.machine_dir(&rel, dir, "host", "cargo xtask new-host scaffolds one") {
            return;
        }
        if !dir.meta {
            self.findings.push(Finding::warning(
                &rel,
                "missing-meta-nix",
                format!(
                    "{rel} has no meta.nix, so the default system {} is used",
                    self.defaults.default_system
                ),
                format!(
                    "create {rel}/meta.nix with {{ system = \"{}\"; }}",
                    self.defaults.default_system
                ),
            ));
        }
        let host = Host {
            name: name.to_string(),
            has_default: dir.default,
            has_meta: dir.meta,
            ..Host::default()
        };
        self.hosts.insert(name.to_string(), host);
    }

    pub(super) fn add_droid_dir(&mut self, dir: &ModelDir) {
        let name = &dir.name;
        let rel = format!("droids/{name}");
        if self.hosts.contains_key(name) {
            // homes/<user>@<name> would mean both: one name, one machine.
            self.findings.push(Finding::error(
                &rel,
                "droid-host-clash",
                format!("systems/{name} and droids/{name} share a name, so homes/<user>@{name} would merge into both"),
                format!("rename droids/{name} (or the host)"),
            ));
            return;
        }
        if !self.machine_dir(&rel, dir, "phone", "a Nix-on-Droid module") {
            return;
        }
        let droid = Droid {
            name: name.to_string(),
            has_default: dir.default,
            has_meta: dir.meta,
            ..Droid::default()
        };
        self.droids.insert(name.to_string(), droid);
    }

    pub(super) fn add_home_dir(&mut self, dir: &ModelDir) {
        let rel = format!("homes/{}", dir.name);
        let (user, part) = match parse_home_dir(&dir.name) {
            Ok(p) => p,
            Err(e) => {
                self.findings.push(Finding::error(
                    rel,
                    "bad-name",
                    e,
                    "rename the directory to <user>, <user>@global or <user>@<host>".into(),
                ));
                return;
            }
        };
        if !dir.default {
            self.findings.push(Finding::error(
                &rel,
                "missing-default-nix",
                format!("{rel} has no default.nix, so there is nothing to import"),
                format!("create {rel}/default.nix (a Home Manager module) or remove the directory"),
            ));
        }
        let has_meta = part == Part::Base && dir.meta;
        let entry = self.users.entry(user).or_insert_with_key(|user| User {
            name: user.clone(),
            ..User::default()
        });
        match part {
            Part::Base => {
                entry.base = true;
                entry.has_meta = has_meta;
            }
            Part::Global => entry.global = true,
            Part::Host(h) => entry.host_parts.push(h),
        }
    }

    /// Rules that need the whole layout: parts without a base, hosts that do not exist.
    pub(super) fn cross_check(&mut self) {
        for user in self.users.values() {
            if !user.base {
                let mut parts: Vec<String> = Vec::new();
                if user.global {
                    parts.push(home_dir_name(&user.name, &Part::Global));
                }
                // A host part alone is a valid integrated-only user: only @global needs the base,
                // since a standalone home is base + global.
                if !parts.is_empty() {
                    self.findings.push(Finding::error(
                        format!("homes/{}", parts[0]),
                        "global-without-base",
                        format!(
                            "homes/{} is merged into the standalone home, but homes/{} does not exist",
                            parts[0], user.name
                        ),
                        format!("create homes/{}/default.nix (cargo xtask new-user {}) or remove homes/{}", user.name, user.name, parts[0]),
                    ));
                }
            }
            for host in &user.host_parts {
                if !self.hosts.contains_key(host) && !self.droids.contains_key(host) {
                    self.findings.push(Finding::error(
                        format!("homes/{}@{host}", user.name),
                        "unknown-host",
                        format!("host '{host}' has no systems/{host}"),
                        format!(
                            "create it with cargo xtask new-host {host}, or rename the directory"
                        ),
                    ));
                }
            }
        }
    }

    /// A phone has one user (`nix-on-droid`): two `homes/<user>@<droid>` parts would be
    /// two Home Manager configurations for it.
    pub(super) fn check_droid_users(&mut self) {
        let droids: Vec<String> = self.droids.keys().cloned().collect();
        for d in droids {
            let users = self.droid_users(&d);
            if users.len() > 1 {
                self.findings.push(Finding::error(
                    format!("droids/{d}"),
                    "droid-users",
                    format!(
                        "{} all have a part for the phone {d}, but Nix-on-Droid has one user",
                        users
                            .iter()
                            .map(|u| format!("homes/{u}@{d}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    format!("keep one homes/<user>@{d} and merge the others into it"),
                ));
            }
        }
    }
}

fn list_dirs(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            // Not UTF-8: cannot be a valid name; report it through the naming rule.
            Err(raw) => names.push(raw.to_string_lossy().into_owned()),
        }
    }
    names.sort();
    Ok(names)
}

/// A directory of homes/, systems/ or droids/: its name, and whether default.nix and
/// meta.nix are files (or links to files) in it, which is all the layout asks of it.
#[derive(Debug, PartialEq, Eq)]
pub struct ModelDir {
    pub name: String,
    pub default: bool,
    pub meta: bool,
}
