//! `cargo xtask gc [USER]`: deletes home generations beyond the newest `keep-generations`,
//! then collects garbage, like `home-manager expire-generations` followed by
//! `nix-collect-garbage`. Never deleted, whatever the flags and whatever state a killed
//! switch left: the profile's current generation, the one `$HOME` has
//! (`gcroots/current-home`, or the generation it is a specialisation of), and one an
//! activation is using (the lock is shared with every running activation).

use anyhow::Result;

use crate::{
    Ctx,
    cli::Gc,
    home::{self, Lock, UserEnv},
    nix, term,
};

impl Gc {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let env = UserEnv::from_process()?;
        let user = self.user.clone().unwrap_or_else(|| env.user.clone());
        home::check_runner(&user, &env, !self.dry_run)?;
        let keep = match self.keep {
            Some(k) => k,
            None => ctx.repo()?.defaults.keep_generations,
        };
        if keep == 0 {
            return Err(crate::UsageError(
                "--keep 0 would leave no generation to roll back to; keep at least 1".into(),
            )
            .into());
        }
        let profile = env.profile();
        // Not while a switch, rollback or activation of this profile runs: it may be about
        // to activate one of them.
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
        let in_home = std::fs::read_link(env.current_home_root()).ok();
        let protected = |g: &home::Generation| {
            Some(g.id) == current
                || in_home
                    .as_ref()
                    .is_some_and(|a| home::is_or_specialises(&g.path, a))
        };
        if let Some(a) = &in_home
            && !gens.iter().any(|g| home::is_or_specialises(&g.path, a))
            && !gens.is_empty()
        {
            term::warning(&format!(
                "$HOME has the files of {}, which is no generation of the profile (a switch was killed?); `cargo xtask switch` repairs that",
                a.display()
            ));
        }
        // Newest first: the first `keep` stay, and the protected ones stay wherever they
        // are (after a rollback the current one may be older than the ones kept).
        let doomed: Vec<String> = gens
            .iter()
            .skip(keep as usize)
            .filter(|g| !protected(g))
            .map(|g| g.id.to_string())
            .collect();
        if doomed.is_empty() {
            term::info(&format!(
                "{user} has {} home generation(s); keeping {keep}, nothing to delete",
                gens.len()
            ));
        } else {
            term::info(&format!(
                "deleting {} of {} home generations of {user} (keeping the newest {keep}, the current one and the one $HOME has): {}",
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
            let gc = ctx.nix().tool("nix-store")?.arg("--gc");
            if self.dry_run {
                nix::run_step(gc, true)?;
            } else {
                store_gc(gc, ctx.verbose)?;
            }
        }
        if self.dry_run {
            term::info("dry run: nothing was changed");
        }
        Ok(())
    }
}

/// Runs `nix-store --gc` and prints one summary line instead of a line per deleted path
/// (all of them with -v). nix ends with `N store paths deleted, X MiB freed` (2.8 to 2.3x).
fn store_gc(gc: xshell::Cmd<'_>, verbose: bool) -> Result<()> {
    let shown = gc.to_string();
    term::command(&shown);
    let out = gc
        .quiet()
        .ignore_status()
        .output()
        .map_err(|e| anyhow::anyhow!("{e}; tried: {shown}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if verbose {
        term::raw(&text);
    }
    if !out.status.success() {
        anyhow::bail!(
            "the store garbage collection failed: {}\n  tried: {shown}",
            nix::trim_error(&text)
        );
    }
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains("freed"))
        .unwrap_or("nothing to free");
    term::info(&format!("store gc: {}", summary.trim()));
    Ok(())
}
