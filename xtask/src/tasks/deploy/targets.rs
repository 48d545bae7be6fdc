//! Which targets a deploy means: those with deploy settings, picked by name, tag or glob,
//! and the one nix evaluation of all of them.

use anyhow::{Context, Result, bail};

use super::{Kind, Paths, Target};
use crate::{
    UsageError, home,
    nix::{self, Nix},
    repo::{self, Repo},
    term,
};

/// Every target with deploy settings, in the order hosts, homes, droids.
pub(super) fn deployable(repo: &Repo) -> Vec<Target> {
    let target = |kind, name: &str, settings: &Option<repo::Deploy>| {
        Some(Target {
            kind,
            name: name.to_string(),
            settings: settings.clone()?,
        })
    };
    let hosts = repo
        .hosts
        .values()
        .filter_map(|h| target(Kind::Host, &h.name, &h.deploy));
    let homes = repo
        .standalone_users()
        .filter_map(|u| target(Kind::Home, &u.name, &u.deploy));
    let droids = repo
        .droids
        .values()
        .filter_map(|d| target(Kind::Droid, &d.name, &d.deploy));
    hosts.chain(homes).chain(droids).collect()
}

fn glob_matches(pattern: &str, text: &str) -> bool {
    // The only patterns home::glob cannot judge are bash's extglob forms: taken literally.
    match home::glob_matches(pattern, text) {
        Some(m) => m,
        None => pattern == text,
    }
}

/// Positional names and `--on` items, OR'd; nothing given selects every target.
pub(super) fn select(all: &[Target], names: &[String], on: &[String]) -> Result<Vec<Target>> {
    if names.is_empty() && on.is_empty() {
        return Ok(all.to_vec());
    }
    // `--on ""` (an empty CI variable) must not quietly select nothing, nor everything.
    if names.is_empty() && on.iter().all(|s| s.trim().is_empty()) {
        return Err(crate::UsageError(
            "--on names nothing; give a tag (@web), a name or a glob, or leave --on out to deploy every target".into(),
        )
        .into());
    }
    let mut picked = vec![false; all.len()];
    let mut unknown = Vec::new();
    for item in names {
        let (dir, name) = match item.split_once('/') {
            Some((d, n)) => (Some(d), n.trim_end_matches('/')),
            None => (None, item.as_str()),
        };
        let mut found = false;
        for (i, t) in all.iter().enumerate() {
            if t.name == name && dir.is_none_or(|d| d == t.kind.dir()) {
                picked[i] = true;
                found = true;
            }
        }
        if !found {
            unknown.push(item.clone());
        }
    }
    for item in on.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let mut found = false;
        for (i, t) in all.iter().enumerate() {
            let hit = match item.strip_prefix('@') {
                Some(tag) => t.settings.tags.iter().any(|x| glob_matches(tag, x)),
                None => glob_matches(item, &t.name),
            };
            if hit {
                picked[i] = true;
                found = true;
            }
        }
        if !found {
            unknown.push(format!("--on {item}"));
        }
    }
    if !unknown.is_empty() {
        let known: Vec<String> = all
            .iter()
            .map(|t| format!("{}/{}", t.kind.dir(), t.name))
            .collect();
        return Err(UsageError(format!(
            "{} selects no deployable target; known targets (those whose meta.nix has deploy.targetHost): {}",
            unknown.join(", "),
            term::list(&known)
        ))
        .into());
    }
    Ok(all
        .iter()
        .zip(picked)
        .filter(|(_, p)| *p)
        .map(|(t, _)| t.clone())
        .collect())
}

/// The flake attribute (of `flake`, the flake's outputs) of what a target of this kind
/// and name deploys.
fn attr_expr(kind: Kind, name: &str) -> String {
    let name = repo::nix_string(name);
    match kind {
        Kind::Host => {
            format!("flake.nixosConfigurations.${{{name}}}.config.system.build.toplevel")
        }
        Kind::Home => format!("flake.homeConfigurations.${{{name}}}.activationPackage"),
        Kind::Droid => format!("flake.nixOnDroidConfigurations.${{{name}}}.activationPackage"),
    }
}

/// The expression of the one evaluation: `[ { drv; out; } … ]`, one per target, in order
/// (also what `cargo xtask bench deploy` times).
pub(crate) fn eval_expr<'n>(
    root: &std::path::Path,
    targets: impl IntoIterator<Item = (Kind, &'n str)>,
) -> String {
    let items: String = targets
        .into_iter()
        .map(|(kind, name)| {
            format!(
                " (let p = {}; in {{ drv = p.drvPath; out = p.outPath; }})",
                attr_expr(kind, name)
            )
        })
        .collect();
    format!(
        "let flake = builtins.getFlake {}; in [{items} ]",
        repo::nix_string(&nix::flake_ref(root))
    )
}

/// The one nix process: drvPath and outPath of every target.
pub(super) fn evaluate(
    nix: &Nix,
    root: &std::path::Path,
    targets: &[Target],
) -> Result<Vec<Paths>> {
    let expr = eval_expr(root, targets.iter().map(|t| (t.kind, t.name.as_str())));
    term::info(&format!(
        "evaluating {} target(s) in one nix process",
        targets.len()
    ));
    let paths: Vec<Paths> = nix
        .eval_expr_json(&expr)
        .context("evaluating the targets; cargo xtask check names the broken one")?;
    if paths.len() != targets.len() {
        bail!(
            "nix returned {} results for {} targets",
            paths.len(),
            targets.len()
        );
    }
    Ok(paths)
}
