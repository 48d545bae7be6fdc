//! `cargo xtask rollback [--to ID]`: the profile back to the previous (or given)
//! generation, then that generation's `activate`, as `home-manager` does it — but to an
//! explicit generation id read under the lock, never "whatever is previous by the time
//! nix-env runs".

use anyhow::{Context, Result, bail};

use crate::{
    Ctx, Reported,
    cli::Rollback,
    home::{self, Backup, GenerationInfo, SetProfile, Transition, UserEnv},
    repo::Defaults,
    term,
};

impl Rollback {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let (env, user) = UserEnv::own(self.user.clone(), !self.dry_run)?;
        // Only the repo defaults (Cargo.toml), not the whole layout: rollback builds nothing.
        let backup = Backup::new(&Defaults::load(&ctx.root)?, None, None, false);
        let profile = env.profile();
        let what = format!("{user}'s home");
        // The lock first: what is current, and so what "previous" means, must not change
        // between reading it and moving the profile.
        let lock = if self.dry_run {
            None
        } else {
            Some(home::Lock::acquire(&env.hm_state_dir(), &what)?)
        };
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
        let info = GenerationInfo::read(&target.path)?;
        // Activation would refuse the same files; checking first keeps the profile unchanged.
        let pf = home::preflight(&info, &env, &backup)?;
        pf.print(&env);
        if pf.is_blocked() {
            term::error("nothing was changed; resolve the files above and roll back again");
            return Err(Reported.into());
        }
        let activation = home::Activation {
            script: target.path.join("activate"),
            backup: &backup,
            verbose: ctx.verbose,
        };
        let Some(lock) = lock else {
            term::out(&format!(
                "nix-env --profile {} --switch-generation {}",
                home::shell_quote(&profile.link().display().to_string()),
                target.id
            ));
            term::out(&activation.shown());
            term::info("dry run: nothing was changed");
            return Ok(());
        };
        Transition {
            nix: ctx.nix(),
            env: &env,
            profile: &profile,
            lock: &lock,
            backup: &backup,
            verbose: ctx.verbose,
        }
        .run(
            &SetProfile::SwitchTo(target.id),
            &target.path,
            &pf,
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
