//! `cargo xtask rollback [--to ID]`: the profile back to the previous (or given)
//! generation, then that generation's `activate`, as `home-manager` does it.

use anyhow::{Context, Result, bail};

use crate::{
    Ctx, Reported,
    cli::Rollback,
    profile::{self, Activation, Backup, UserEnv},
    repo::Defaults,
    term,
};

use super::switch::check_runner;

impl Rollback {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let env = UserEnv::from_process()?;
        let user = self.user.clone().unwrap_or_else(|| env.user.clone());
        check_runner(&user, &env)?;
        let profile = env.profile();
        let gens = profile.generations()?;
        let Some(current) = profile.current_id() else {
            bail!(
                "nothing to roll back to: {user} has no active home generation (looked in {}); switch first with `cargo xtask switch`",
                profile.dir.display()
            );
        };
        let ids = || {
            gens.iter()
                .map(|g| g.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let target = match self.to {
            Some(id) if id == current => bail!("generation {id} is already the current one; nothing to do"),
            Some(id) => gens
                .iter()
                .find(|g| g.id == id)
                .with_context(|| format!("there is no generation {id} (generations: {}); see `cargo xtask generations`", ids()))?,
            None => gens.iter().find(|g| g.id < current).with_context(|| {
                format!("nothing to roll back to: generation {current} is the oldest one left (generations: {})", ids())
            })?,
        };
        // Only the repo defaults (Cargo.toml), not the whole layout: rollback builds nothing.
        let backup = Backup::new(&Defaults::load(&ctx.root)?, None, None, false);
        // Activation would refuse the same files; checking first keeps the profile unchanged.
        let (pf, _lock) = profile::preflight_and_lock(
            &env,
            &profile,
            &target.path,
            &backup,
            &format!("{user}'s home"),
            self.dry_run,
        )?;
        pf.print(&env);
        if !pf.blockers.is_empty() {
            term::error("nothing was changed; resolve the files above and roll back again");
            return Err(Reported.into());
        }

        let nix_env = |args: &[String]| -> Result<xshell::Cmd<'_>> {
            Ok(ctx
                .nix()
                .tool("nix-env")?
                .arg("--profile")
                .arg(profile.link())
                .args(args))
        };
        let step = match self.to {
            None => nix_env(&["--rollback".into()])?,
            Some(id) => nix_env(&["--switch-generation".into(), id.to_string()])?,
        };
        let activation = Activation {
            script: target.path.join("activate"),
            backup: &backup,
            verbose: ctx.verbose,
        };
        if self.dry_run {
            println!("{step}");
            println!("{}", activation.shown());
            term::info("dry run: nothing was changed");
            return Ok(());
        }
        profile::set_and_activate(
            ctx,
            &profile,
            Some(step),
            &activation,
            Some(current),
            &format!(
                "interrupted: the rollback was stopped before generation {} was active",
                target.id
            ),
            &format!("generation {} failed to activate", target.id),
        )?;
        term::info(&format!(
            "rolled {user}'s home back to generation {} ({})",
            target.id,
            target.path.display()
        ));
        Ok(())
    }
}
