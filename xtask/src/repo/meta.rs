//! The meta.nix files of homes, hosts and droids: their shape, `system`, `users` and
//! `deploy`, read from the text where they are literals and by one `nix eval` where they
//! are computed, checked and put into the repo model.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{Finding, Repo, locate_nix_error, meta_text, nix_string, rules, validate_name};
use crate::nix::Nix;

/// Where a target is built before it is copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildOn {
    /// On this machine, then the closure is copied (nixos-rebuild's default).
    #[default]
    Local,
    /// On the target: the derivations are copied and built there.
    Remote,
}

/// `deploy = { targetHost; buildOn; tags; sshOpts; }` of a host's, home's or droid's meta.nix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deploy {
    /// The ssh destination, `[user@]host` (`root@pi.lan`).
    pub target_host: String,
    pub build_on: BuildOn,
    /// Names for `deploy --on @tag`.
    pub tags: Vec<String>,
    /// Extra ssh options, one word each (`[ "-p" "2222" ]`); also NIX_SSHOPTS of `nix copy`.
    pub ssh_opts: Vec<String>,
}

/// What a `deploy` attribute looks like, for messages about one that does not.
pub const DEPLOY_SHAPE: &str = "deploy = { targetHost = \"root@pi.lan\"; buildOn = \"local\"; tags = [ \"rack\" ]; sshOpts = [ \"-p\" \"22\" ]; }";

impl Deploy {
    /// The ssh user: the part of targetHost before `@`, else None (ssh's default: $USER).
    pub fn ssh_user(&self) -> Option<&str> {
        self.target_host.split_once('@').map(|(u, _)| u)
    }

    /// Reads a meta.nix `deploy` value (JSON from nix); every problem is a message.
    pub fn parse(value: &serde_json::Value) -> Result<Deploy, Vec<String>> {
        use serde_json::Value;
        let Value::Object(map) = value else {
            return Err(vec![format!("deploy = {value} is not an attribute set")]);
        };
        let mut errors = Vec::new();
        let mut d = Deploy::default();
        for key in map.keys() {
            if !["targetHost", "buildOn", "tags", "sshOpts"].contains(&key.as_str()) {
                errors.push(format!(
                    "deploy.{key} is not a deploy setting (the settings are targetHost, buildOn, tags, sshOpts)"
                ));
            }
        }
        match map.get("targetHost") {
            Some(Value::String(t))
                if !t.is_empty()
                    && !t.starts_with('-')
                    && !t.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') =>
            {
                d.target_host = t.clone()
            }
            Some(other) => errors.push(format!(
                "deploy.targetHost = {other} is not an ssh destination like \"root@pi.lan\" (no spaces, no leading '-')"
            )),
            None => errors.push("deploy has no targetHost: where should it be deployed?".into()),
        }
        match map.get("buildOn") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "local" => d.build_on = BuildOn::Local,
            Some(Value::String(s)) if s == "remote" => d.build_on = BuildOn::Remote,
            Some(other) => errors.push(format!(
                "deploy.buildOn = {other} is neither \"local\" nor \"remote\""
            )),
        }
        let strings = |key: &str, errors: &mut Vec<String>| -> Vec<String> {
            match map.get(key) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect(),
                Some(other) => {
                    errors.push(format!("deploy.{key} = {other} is not a list of strings"));
                    Vec::new()
                }
            }
        };
        d.tags = strings("tags", &mut errors);
        for tag in &d.tags {
            if let Err(e) = rules().validate_pattern(tag) {
                errors.push(format!("deploy.tags: {e}"));
            }
        }
        d.ssh_opts = strings("sshOpts", &mut errors);
        if errors.is_empty() {
            Ok(d)
        } else {
            Err(errors)
        }
    }
}

/// What a host's meta.nix looks like, for messages about one that does not.
pub const HOST_META_SHAPE: &str = "{ system = \"x86_64-linux\"; users = [ \"alice\" ]; }";

/// The same for a home's meta.nix.
pub const HOME_META_SHAPE: &str = "{ system = \"x86_64-linux\"; }";

/// Borrowed names, as [`meta_expr`] takes them.
fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The same for a droid's meta.nix.
pub const DROID_META_SHAPE: &str = "{ system = \"aarch64-linux\"; }";

/// Which directory a meta.nix is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaKind {
    Home,
    Host,
    Droid,
}

impl MetaKind {
    /// The repo-relative meta.nix of `name`.
    fn meta_file(self, name: &str) -> String {
        let dir = match self {
            MetaKind::Home => "homes",
            MetaKind::Host => "systems",
            MetaKind::Droid => "droids",
        };
        format!("{dir}/{name}/meta.nix")
    }

    fn shape(self) -> &'static str {
        match self {
            MetaKind::Home => HOME_META_SHAPE,
            MetaKind::Host => HOST_META_SHAPE,
            MetaKind::Droid => DROID_META_SHAPE,
        }
    }
}

/// The homes, hosts and droids whose meta.nix computes its values: only nix can read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingMeta {
    pub homes: Vec<String>,
    pub hosts: Vec<String>,
    pub droids: Vec<String>,
}

impl PendingMeta {
    pub fn is_empty(&self) -> bool {
        self.homes.is_empty() && self.hosts.is_empty() && self.droids.is_empty()
    }

    /// The files, repo-relative.
    pub fn files(&self) -> Vec<String> {
        let of = |kind: MetaKind, names: &[String]| {
            names
                .iter()
                .map(|n| kind.meta_file(n))
                .collect::<Vec<String>>()
        };
        [
            of(MetaKind::Home, &self.homes),
            of(MetaKind::Host, &self.hosts),
            of(MetaKind::Droid, &self.droids),
        ]
        .concat()
    }

    fn of_kind(&mut self, kind: MetaKind) -> &mut Vec<String> {
        match kind {
            MetaKind::Home => &mut self.homes,
            MetaKind::Host => &mut self.hosts,
            MetaKind::Droid => &mut self.droids,
        }
    }
}

/// What meta.nix files say, read from their text or in one nix evaluation.
#[derive(Debug, Default, Deserialize)]
struct MetaEval {
    homes: BTreeMap<String, MetaFile>,
    hosts: BTreeMap<String, MetaFile>,
    #[serde(default)]
    droids: BTreeMap<String, MetaFile>,
}

impl MetaEval {
    fn of_kind(&mut self, kind: MetaKind) -> &mut BTreeMap<String, MetaFile> {
        match kind {
            MetaKind::Home => &mut self.homes,
            MetaKind::Host => &mut self.hosts,
            MetaKind::Droid => &mut self.droids,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct MetaFile {
    /// Set (to nix's `builtins.typeOf`) when the file is not an attribute set.
    #[serde(default)]
    pub(super) not_attrs: Option<String>,
    pub(super) system: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) users: serde_json::Value,
    #[serde(default)]
    pub(super) deploy: serde_json::Value,
    /// Where the values are (line, column), when read from the text.
    #[serde(skip)]
    pub(super) system_at: Option<(u32, u32)>,
    #[serde(skip)]
    pub(super) users_at: Option<(u32, u32)>,
    /// Where `deploy` is: its value, or the first `deploy.<key> = …` of the file.
    #[serde(skip)]
    pub(super) deploy_at: Option<(u32, u32)>,
    /// Where each `deploy.<key>`'s value is.
    #[serde(skip)]
    pub(super) deploy_keys_at: BTreeMap<String, (u32, u32)>,
}

impl Repo {
    /// Reads every meta.nix (homes, hosts and droids): those whose `system`, `users` and
    /// `deploy` are literals from their text ([`Repo::load_meta_static`]), the rest in ONE
    /// `nix eval`: only nix can compute them, and one process per file would cost tens of
    /// milliseconds each. Problems become findings against the file.
    pub fn load_meta(&mut self, nix: &Nix) -> Result<()> {
        if self.meta_loaded {
            return Ok(());
        }
        let pending = self.load_meta_static();
        self.meta_loaded = true;
        if pending.is_empty() {
            return Ok(());
        }
        let (homes, hosts, droids) = (
            as_strs(&pending.homes),
            as_strs(&pending.hosts),
            as_strs(&pending.droids),
        );
        let eval: MetaEval =
            match nix.eval_expr_json(&meta_expr(&self.root, &homes, &hosts, &droids)) {
                Ok(v) => v,
                // Only a failure of the evaluation itself is a finding; nix missing or
                // without flakes is the caller's error.
                Err(e) => {
                    if e.downcast_ref::<crate::nix::NixError>().is_none() {
                        return Err(e);
                    }
                    // One broken file stops the whole evaluation and nix names only the
                    // first problem: on this failure path only, read each file alone, so
                    // every broken one is reported and the good ones still count.
                    let mut merged = MetaEval::default();
                    let files = homes
                        .iter()
                        .map(|h| (h, MetaKind::Home))
                        .chain(hosts.iter().map(|h| (h, MetaKind::Host)))
                        .chain(droids.iter().map(|h| (h, MetaKind::Droid)));
                    for (name, kind) in files {
                        let one: &[&str] = &[name];
                        let (h, s, d): (&[&str], &[&str], &[&str]) = match kind {
                            MetaKind::Home => (one, &[], &[]),
                            MetaKind::Host => (&[], one, &[]),
                            MetaKind::Droid => (&[], &[], one),
                        };
                        match nix.eval_expr_json::<MetaEval>(&meta_expr(&self.root, h, s, d)) {
                            Ok(one) => {
                                merged.homes.extend(one.homes);
                                merged.hosts.extend(one.hosts);
                                merged.droids.extend(one.droids);
                            }
                            Err(e) => match e.downcast_ref::<crate::nix::NixError>() {
                                Some(ne) => {
                                    let finding = self.meta_finding(ne);
                                    self.findings.push(finding);
                                }
                                None => return Err(e),
                            },
                        }
                    }
                    merged
                }
            };
        self.apply_meta(eval);
        Ok(())
    }

    /// The meta.nix files of the model, with their kind and name.
    fn meta_targets(&self) -> Vec<(MetaKind, String)> {
        let homes = self
            .users
            .values()
            .filter(|u| u.has_meta)
            .map(|u| (MetaKind::Home, u.name.clone()));
        let hosts = self
            .hosts
            .values()
            .filter(|h| h.has_meta)
            .map(|h| (MetaKind::Host, h.name.clone()));
        let droids = self
            .droids
            .values()
            .filter(|d| d.has_meta)
            .map(|d| (MetaKind::Droid, d.name.clone()));
        homes.chain(hosts).chain(droids).collect()
    }

    /// Reads the meta.nix files whose `system`, `users` and `deploy` are literals (nearly
    /// all: they are data) from their syntax, without nix and offline, and reports one that
    /// does not parse, with line and column. Returns the homes, hosts and droids whose
    /// meta.nix computes those values: only an evaluation can read them
    /// ([`Repo::load_meta`]).
    pub fn load_meta_static(&mut self) -> PendingMeta {
        if let Some(pending) = &self.meta_pending {
            return pending.clone();
        }
        let mut read = MetaEval::default();
        let mut pending = PendingMeta::default();
        for (kind, name) in self.meta_targets() {
            let rel = kind.meta_file(&name);
            // Unreadable: nix says why. The walk read it already (on its threads).
            let read_one = match &self.tree {
                Some(tree) => tree.meta(&rel),
                None => fs::read_to_string(self.root.join(&rel))
                    .ok()
                    .map(|t| meta_text::read_meta(&t)),
            };
            let read_one = read_one.unwrap_or(meta_text::MetaRead::Computed);
            match read_one {
                meta_text::MetaRead::Literal(meta) => {
                    read.of_kind(kind).insert(name, meta);
                }
                meta_text::MetaRead::Computed => pending.of_kind(kind).push(name),
                meta_text::MetaRead::Syntax {
                    line,
                    column,
                    message,
                } => self.findings.push(Finding {
                    line: Some(line),
                    column: Some(column),
                    ..Finding::error(
                        rel,
                        "bad-meta",
                        format!("cannot read meta.nix: syntax error, {message}"),
                        format!(
                            "fix the file so that it is an attribute set like {}",
                            kind.shape()
                        ),
                    )
                }),
            }
        }
        self.apply_meta(read);
        self.meta_pending = Some(pending.clone());
        pending
    }

    /// The meta.nix files the model reads (repo-relative), whose problems
    /// [`Repo::load_meta_static`] and [`Repo::load_meta`] report.
    pub fn meta_files(&self) -> BTreeSet<String> {
        self.meta_targets()
            .into_iter()
            .map(|(kind, name)| kind.meta_file(&name))
            .collect()
    }

    /// Checks what meta.nix files say and puts it into the model: the shape, `system`
    /// (any supported system for a home; a host or phone runs Linux: the host systems),
    /// `deploy`, and a host's `users`.
    fn apply_meta(&mut self, read: MetaEval) {
        let files = read
            .homes
            .into_iter()
            .map(|(n, m)| (MetaKind::Home, n, m))
            .chain(
                read.droids
                    .into_iter()
                    .map(|(n, m)| (MetaKind::Droid, n, m)),
            )
            .chain(read.hosts.into_iter().map(|(n, m)| (MetaKind::Host, n, m)));
        for (kind, name, meta) in files {
            let rel = kind.meta_file(&name);
            if self.check_shape(&rel, &meta, kind.shape()) {
                continue;
            }
            let systems = match kind {
                MetaKind::Home => &rules().supported_systems,
                MetaKind::Host | MetaKind::Droid => &rules().host_systems,
            };
            let before = self.findings.len();
            let system = self.check_system(&rel, meta.system.clone(), systems);
            self.locate_since(before, meta.system_at);
            let users = (kind == MetaKind::Host).then(|| {
                let before = self.findings.len();
                let users = self.check_users(&rel, meta.users.clone());
                self.locate_since(before, meta.users_at);
                for user in users.iter().filter(|u| !self.users.contains_key(*u)) {
                    // lib/ still gives the user a home on the host, made of nothing.
                    self.findings.push(Finding::warning(
                        &rel,
                        "user-without-home",
                        format!(
                            "users lists '{user}', who has no homes/{user} or homes/{user}@{name}, so their Home Manager configuration on {name} is empty"
                        ),
                        format!("create it with cargo xtask new-user {user} --host {name}, or remove the name"),
                    ));
                }
                users
            });
            let deploy = self.check_deploy(&rel, &meta);
            match kind {
                MetaKind::Home => {
                    if let Some(u) = self.users.get_mut(&name) {
                        u.system = system;
                        u.deploy = deploy;
                    }
                }
                MetaKind::Droid => {
                    if let Some(d) = self.droids.get_mut(&name) {
                        d.system = system;
                        d.deploy = deploy;
                    }
                }
                MetaKind::Host => {
                    if let Some(h) = self.hosts.get_mut(&name) {
                        h.system = system;
                        h.meta_users = users.unwrap_or_default();
                        h.deploy = deploy;
                    }
                }
            }
        }
    }

    /// A meta.nix that nix cannot read, as a finding against the file nix names.
    fn meta_finding(&self, nix_error: &crate::nix::NixError) -> Finding {
        let message = nix_error.message();
        let (path, line) = locate_nix_error(&self.root, &message);
        // The location is shown as the finding's path and line; drop it from the text.
        let message = match message.find(" at /") {
            Some(i) if path.is_some() => message[..i].to_string(),
            _ => message,
        };
        Finding {
            line,
            ..Finding::error(
                path.unwrap_or_else(|| "meta.nix".to_string()),
                "bad-meta",
                format!("cannot read meta.nix: {message}"),
                format!("fix the file so that it is an attribute set like {HOST_META_SHAPE}"),
            )
        }
    }

    /// A meta.nix that is not an attribute set (`[ ]`, a function, a string) is an error:
    /// nix's `m.system or default` would read it as "no system" and so would lib/ before it
    /// checked. True when it was one (then nothing else of it is read).
    fn check_shape(&mut self, rel: &str, meta: &MetaFile, shape: &str) -> bool {
        let Some(kind) = &meta.not_attrs else {
            return false;
        };
        self.findings.push(Finding::error(
            rel,
            "bad-meta",
            format!("meta.nix is a {kind}, not an attribute set"),
            format!("write it like {shape}"),
        ));
        true
    }

    /// Places the findings pushed since `before` at `at` (a value read from the text; nix's
    /// answer carries no position).
    fn locate_since(&mut self, before: usize, at: Option<(u32, u32)>) {
        if let Some((line, column)) = at {
            for f in &mut self.findings[before..] {
                f.line = Some(line);
                f.column = Some(column);
            }
        }
    }

    fn check_system(
        &mut self,
        rel: &str,
        system: Option<serde_json::Value>,
        allowed: &[String],
    ) -> Option<String> {
        match system {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if allowed.contains(&s) => Some(s),
            Some(other) => {
                let known = other.as_str().is_some_and(|o| rules().is_supported(o));
                let what = if known {
                    "a NixOS host's system (NixOS runs on Linux; a Mac's home goes in homes/)"
                } else {
                    "a supported system"
                };
                self.findings.push(Finding::error(
                    rel,
                    "unknown-system",
                    format!("system = {other} is not {what}"),
                    format!("use one of {}", allowed.join(", ")),
                ));
                None
            }
        }
    }

    /// Checks meta.nix's `deploy`; a finding read from the text is placed at the value it
    /// is about (`deploy.buildOn = …`), else at `deploy` itself.
    fn check_deploy(&mut self, rel: &str, meta: &MetaFile) -> Option<Deploy> {
        if meta.deploy.is_null() {
            return None;
        }
        match Deploy::parse(&meta.deploy) {
            Ok(d) => Some(d),
            Err(errors) => {
                for e in errors {
                    let at = meta
                        .deploy_keys_at
                        .iter()
                        .find(|(key, _)| {
                            e.strip_prefix("deploy.")
                                .and_then(|rest| rest.strip_prefix(key.as_str()))
                                .is_some_and(|rest| rest.starts_with([' ', ':']))
                        })
                        .map(|(_, at)| *at)
                        .or(meta.deploy_at);
                    self.findings.push(Finding {
                        line: at.map(|(l, _)| l),
                        column: at.map(|(_, c)| c),
                        ..Finding::error(
                            rel,
                            "bad-deploy",
                            e,
                            format!("write it like {DEPLOY_SHAPE}"),
                        )
                    });
                }
                None
            }
        }
    }

    fn check_users(&mut self, rel: &str, users: serde_json::Value) -> Vec<String> {
        let list = match users {
            serde_json::Value::Null => return Vec::new(),
            serde_json::Value::Array(items) => items,
            other => {
                self.findings.push(Finding::error(
                    rel,
                    "bad-meta",
                    format!("users = {other} is not a list of user names"),
                    format!("write it like {HOST_META_SHAPE}"),
                ));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in list {
            match item.as_str().map(|s| (s, validate_name(s))) {
                Some((s, Ok(()))) => out.push(s.to_string()),
                Some((_, Err(e))) => self.findings.push(Finding::error(
                    rel,
                    "bad-name",
                    format!("users: {e}"),
                    format!("rename it in meta.nix to a valid user name; the file looks like {HOST_META_SHAPE}"),
                )),
                None => self.findings.push(Finding::error(
                    rel,
                    "bad-meta",
                    format!("users: {item} is not a string"),
                    format!("write it like {HOST_META_SHAPE}"),
                )),
            }
        }
        out
    }

    /// The one expression that reads every meta.nix of the repo (also the benchmark's baseline).
    pub fn meta_expr(&self) -> String {
        let targets = self.meta_targets();
        let of = |kind: MetaKind| -> Vec<&str> {
            targets
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, name)| name.as_str())
                .collect()
        };
        meta_expr(
            &self.root,
            &of(MetaKind::Home),
            &of(MetaKind::Host),
            &of(MetaKind::Droid),
        )
    }
}

/// The expression that reads the meta files; each is imported by absolute path so untracked
/// files are visible too (the lint reports those separately).
fn meta_expr(root: &Path, homes: &[&str], hosts: &[&str], droids: &[&str]) -> String {
    let root = root.display().to_string();
    let entry = |kind: &str, name: &str| {
        format!(
            "{} = pick (import (/. + {}));",
            nix_string(name),
            nix_string(&format!("{root}/{kind}/{name}/meta.nix"))
        )
    };
    let homes: String = homes.iter().map(|n| entry("homes", n)).collect();
    let hosts: String = hosts.iter().map(|n| entry("systems", n)).collect();
    let droids: String = droids.iter().map(|n| entry("droids", n)).collect();
    // Only the fields the xtask uses leave nix, so a meta.nix may hold anything else
    // (functions included) without breaking --json.
    format!(
        "let pick = m: if builtins.isAttrs m then {{ system = m.system or null; users = m.users or null; deploy = m.deploy or null; }} else {{ not_attrs = builtins.typeOf m; }}; in {{ homes = {{ {homes} }}; hosts = {{ {hosts} }}; droids = {{ {droids} }}; }}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_settings_are_read_and_checked() {
        let d = Deploy::parse(&serde_json::json!({
            "targetHost": "root@pi.lan", "buildOn": "remote", "tags": ["rack"], "sshOpts": ["-p", "22"]
        }))
        .unwrap();
        assert_eq!(d.target_host, "root@pi.lan");
        assert_eq!(d.ssh_user(), Some("root"));
        assert_eq!(d.build_on, BuildOn::Remote);
        assert_eq!(d.tags, vec!["rack".to_string()]);
        assert_eq!(d.ssh_opts, vec!["-p".to_string(), "22".to_string()]);
        let plain = Deploy::parse(&serde_json::json!({ "targetHost": "pi" })).unwrap();
        assert_eq!((plain.build_on, plain.ssh_user()), (BuildOn::Local, None));
        let errors = Deploy::parse(&serde_json::json!({
            "targetHost": "-oProxyCommand=x", "buildOn": "cloud", "tags": ["Rack"], "sshopts": []
        }))
        .unwrap_err()
        .join("\n");
        for needle in [
            "targetHost",
            "buildOn",
            "tags",
            "sshopts is not a deploy setting",
        ] {
            assert!(errors.contains(needle), "{needle}: {errors}");
        }
        assert!(Deploy::parse(&serde_json::json!({})).unwrap_err()[0].contains("no targetHost"));
        assert!(Deploy::parse(&serde_json::json!([])).is_err());
    }
}
