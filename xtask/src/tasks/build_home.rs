//! `cargo xtask build-home [USER]`: builds a home's generation for this machine's system
//! and keeps a GC root of it beside the repo (`result-home-<user>`).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{
    Ctx,
    cli::BuildHome,
    home::{HomeTarget, gc_root},
    nix, term,
};

#[derive(Debug, Serialize)]
struct Built<'a> {
    path: &'a Path,
    system: &'a str,
    user: &'a str,
}

impl BuildHome {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let target = HomeTarget::resolve(ctx, self.user, self.system.as_deref(), false, false)?;
        let (user, system) = (&target.user, &target.system);
        let foreign = *system != nix::current_system();
        if foreign {
            term::warning(&format!(
                "building for {system} on this {} machine needs a remote builder or emulation (extra-platforms in nix.conf)",
                nix::current_system()
            ));
        }
        let link = gc_root(ctx, user);
        let path = target.build(ctx, &link).with_context(|| {
            if foreign {
                format!("building {user}'s home for {system}: drop --system to build for this machine, or configure a {system} builder")
            } else {
                format!("building {user}'s home")
            }
        })?;
        if self.json {
            term::out(&serde_json::to_string_pretty(&Built {
                path: &path,
                system,
                user,
            })?);
        } else {
            term::info(&format!(
                "generation: {} (GC root: {})",
                path.display(),
                link.display()
            ));
            term::out(&path.display().to_string());
        }
        Ok(())
    }
}
