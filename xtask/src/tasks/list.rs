//! `cargo xtask list`: the layout as the flake sees it, for people and for CI matrices.

use anyhow::Result;
use serde::Serialize;

use crate::{
    Ctx,
    cli::List,
    repo::{Deploy, Part, Repo, home_dir_name},
    term,
};

/// The JSON schema documented in README.md ("list --json"); keep it stable.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub homes: Vec<HomeEntry>,
    pub hosts: Vec<MachineEntry>,
    pub droids: Vec<MachineEntry>,
}

/// A host or a phone: the same fields.
#[derive(Debug, Serialize)]
pub struct MachineEntry {
    pub name: String,
    pub system: String,
    /// The users with a home there (a phone has one: its Home Manager configuration).
    pub users: Vec<String>,
    pub deploy: Option<Deploy>,
}

#[derive(Debug, Serialize)]
pub struct HomeEntry {
    pub name: String,
    /// The homes/ directories of this user: `alice`, `alice@global`, `alice@workstation`.
    pub parts: Vec<String>,
    /// Whether `homeConfigurations.<name>` exists (it needs homes/<name>).
    pub standalone: bool,
    /// The system of the standalone home (meta.nix or the repo default); null for a user
    /// with integrated homes only.
    pub system: Option<String>,
    /// Hosts whose integrated home includes this user.
    pub hosts: Vec<String>,
    /// `deploy` of homes/<name>/meta.nix: where `cargo xtask deploy` sends the standalone home.
    pub deploy: Option<Deploy>,
}

impl List {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let mut repo = ctx.repo()?;
        repo.load_meta(&ctx.nix())?;
        // Warnings are check's business; list only says that there are some, so a
        // thousand-host listing is not buried under them.
        let warnings = repo
            .findings
            .iter()
            .filter(|f| f.severity == crate::repo::Severity::Warning)
            .count();
        if let Some(first) = repo
            .findings
            .iter()
            .find(|f| f.severity == crate::repo::Severity::Warning)
        {
            term::warning(&format!(
                "{warnings} layout warning(s), the first: {}; run cargo xtask check to see them all",
                first.message
            ));
        }
        repo.ensure_valid()?;
        let listing = listing(&repo);
        if self.json {
            term::out(&serde_json::to_string_pretty(&listing)?);
            return Ok(());
        }
        term::out("homes:");
        for h in &listing.homes {
            let integrated = if h.hosts.is_empty() {
                String::new()
            } else {
                format!("  integrated on: {}", h.hosts.join(", "))
            };
            let standalone = h.system.as_deref().unwrap_or("integrated only");
            term::out(&format!(
                "  {:<16} {:<16} parts: {}{integrated}",
                h.name,
                standalone,
                h.parts.join(" ")
            ));
        }
        term::out("hosts:");
        for h in &listing.hosts {
            term::out(&format!(
                "  {:<16} {:<16} users: {}",
                h.name,
                h.system,
                h.users.join(" ")
            ));
        }
        if !listing.droids.is_empty() {
            term::out("droids:");
            for d in &listing.droids {
                term::out(&format!(
                    "  {:<16} {:<16} user: {}",
                    d.name,
                    d.system,
                    d.users.join(" ")
                ));
            }
        }
        Ok(())
    }
}

pub fn listing(repo: &Repo) -> Listing {
    let homes = repo
        .users
        .values()
        .map(|u| {
            let mut parts = Vec::new();
            if u.base {
                parts.push(home_dir_name(&u.name, &Part::Base));
            }
            if u.global {
                parts.push(home_dir_name(&u.name, &Part::Global));
            }
            parts.extend(
                u.host_parts
                    .iter()
                    .map(|h| home_dir_name(&u.name, &Part::Host(h.clone()))),
            );
            let hosts = repo.user_hosts(&u.name);
            HomeEntry {
                name: u.name.clone(),
                parts,
                standalone: u.base,
                system: u.base.then(|| repo.home_system(u)),
                hosts,
                deploy: u.deploy.clone(),
            }
        })
        .collect();
    let hosts = repo
        .hosts
        .values()
        .map(|h| MachineEntry {
            name: h.name.clone(),
            system: repo.host_system(h),
            users: repo.host_users(&h.name),
            deploy: h.deploy.clone(),
        })
        .collect();
    let droids = repo
        .droids
        .values()
        .map(|d| MachineEntry {
            name: d.name.clone(),
            system: repo.droid_system(d),
            users: repo.droid_users(&d.name),
            deploy: d.deploy.clone(),
        })
        .collect();
    Listing {
        homes,
        hosts,
        droids,
    }
}
