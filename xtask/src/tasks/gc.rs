//! `cargo xtask gc [USER]`: deletes home generations beyond the newest `keep-generations`
//! (never the current one), then collects garbage, like `home-manager expire-generations`
//! followed by `nix-collect-garbage`.

use anyhow::{Result, bail};

use crate::{
    Ctx,
    cli::Gc,
    nix,
    profile::{Lock, UserEnv},
    term,
};

use super::switch::check_runner;

impl Gc {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let env = UserEnv::from_process()?;
        let user = self.user.clone().unwrap_or_else(|| env.user.clone());
        check_runner(&user, &env)?;
        let keep = match self.keep {
            Some(k) => k,
            None => ctx.repo()?.defaults.keep_generations,
        };
        if keep == 0 {
            bail!("--keep 0 would leave no generation to roll back to; keep at least 1");
        }
        let profile = env.profile();
        // Not while a switch of this profile runs: it may be about to activate one of them.
        let _lock = if self.dry_run {
            None
        } else {
            Some(Lock::acquire(
                &env.hm_state_dir(),
                &format!("{user}'s home"),
            )?)
        };
        let gens = profile.generations()?;
        let current = profile.current_id();
        // Newest first: the first `keep` stay, and the current one stays wherever it is
        // (after a rollback it may be older than the ones kept).
        let doomed: Vec<String> = gens
            .iter()
            .skip(keep as usize)
            .filter(|g| Some(g.id) != current)
            .map(|g| g.id.to_string())
            .collect();
        if doomed.is_empty() {
            term::info(&format!(
                "{user} has {} home generation(s); keeping {keep}, nothing to delete",
                gens.len()
            ));
        } else {
            term::info(&format!(
                "deleting {} of {} home generations of {user} (keeping the newest {keep} and the current one): {}",
                doomed.len(),
                gens.len(),
                doomed.join(", ")
            ));
            // Explicit ids work on every nix (the `+N` form is newer than 2.8's docs promise).
            let delete = ctx
                .nix()
                .tool("nix-env")?
                .arg("--profile")
                .arg(profile.link())
                .arg("--delete-generations")
                .args(&doomed);
            nix::run_step(delete, self.dry_run)?;
        }
        if !self.no_store_gc {
            nix::run_step(ctx.nix().tool("nix-store")?.arg("--gc"), self.dry_run)?;
        }
        if self.dry_run {
            term::info("dry run: nothing was changed");
        }
        Ok(())
    }
}
