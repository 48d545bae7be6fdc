//! `cargo xtask packages [USER] [--generation ID]`: the packages of the active (or a given)
//! generation's `home-path`, name and version, as `home-manager packages` lists them; one
//! nix call (`nix-store -q --references` of the `home-path`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::{
    Ctx,
    cli::Packages,
    home::{self, Package, UserEnv},
    term,
};

#[derive(Debug, Serialize)]
struct Report<'a> {
    user: &'a str,
    /// The generation's id in the profile; None for an active generation the profile no
    /// longer lists.
    generation: Option<u64>,
    path: &'a Path,
    home_path: &'a Path,
    packages: &'a [Package],
}

impl Packages {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let (env, user) = UserEnv::own(self.user, false)?;
        let profile = env.profile();
        let gens = profile.generations()?;
        let ids = || {
            let ids: Vec<String> = gens.iter().map(|g| g.id.to_string()).collect();
            term::list(&ids)
        };
        let (id, path): (Option<u64>, PathBuf) = match self.generation {
            Some(id) => {
                let g = gens.iter().find(|g| g.id == id).with_context(|| {
                    format!(
                        "{user}'s home has no generation {id} (generations: {}); see `cargo xtask generations`",
                        ids()
                    )
                })?;
                (Some(id), g.path.clone())
            }
            None => {
                let Some(active) = env.active_generation() else {
                    bail!(
                        "{user} has no active home generation (looked in {}); create one with `cargo xtask switch`, or name one with --generation ID",
                        profile.dir.display()
                    );
                };
                // The profile's current generation first: several may share a store path.
                let id = gens
                    .iter()
                    .filter(|g| g.path == active)
                    .max_by_key(|g| (g.current, g.id))
                    .map(|g| g.id);
                (id, active)
            }
        };
        let (home_path, packages) = home::packages(&ctx.nix(), &path)?;
        if self.json {
            term::out(&serde_json::to_string_pretty(&Report {
                user: &user,
                generation: id,
                path: &path,
                home_path: &home_path,
                packages: &packages,
            })?);
            return Ok(());
        }
        let which = id.map_or_else(
            || "the active generation".to_string(),
            |i| format!("generation {i}"),
        );
        term::info(&format!(
            "{user}'s {which} ({}): {} package{}",
            path.display(),
            packages.len(),
            if packages.len() == 1 { "" } else { "s" }
        ));
        let width = packages.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in &packages {
            match &p.version {
                Some(v) => term::out(&format!("{:width$}  {v}", p.name)),
                None => term::out(&p.name),
            }
        }
        Ok(())
    }
}
