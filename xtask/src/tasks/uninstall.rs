//! `cargo xtask uninstall [USER]`: removes the home from this machine as
//! `home-manager uninstall` does — the active generation's links in `$HOME` (and the
//! directories that leaves empty), the profile with every generation, the GC roots and
//! Home Manager's state — after a pre-flight listing what goes and what stays, and a
//! confirmation unless `--yes`. The repository (homes/<user>) is not touched.

use std::io::IsTerminal;

use anyhow::{Context, Result};

use crate::{
    Ctx, UsageError,
    cli::Uninstall,
    home::{self, Lock, UserEnv},
    repo::Defaults,
    term,
};

impl Uninstall {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let (env, user) = UserEnv::own(self.user.clone(), !self.dry_run)?;
        let what = format!("{user}'s home");
        // Asking needs a terminal; without one, refuse before anything (the lock too).
        if !self.yes && !self.dry_run && !std::io::stdin().is_terminal() {
            return Err(UsageError(
                "uninstall asks before it removes anything, but stdin is not a terminal; pass --yes to uninstall without asking (`--dry-run` lists what goes), or run it in a terminal".into(),
            )
            .into());
        }
        // No switch, rollback or gc of this profile while the list is made and carried out.
        let lock = if self.dry_run {
            None
        } else {
            Some(Lock::acquire(&env.hm_state_dir(), &what)?)
        };
        let defaults = Defaults::load(&ctx.root)?;
        let ext = Some(defaults.backup_extension.as_str()).filter(|e| !e.is_empty());
        let profile = env.profile();
        let plan = home::Uninstall::plan(&env, &profile, &[home::gc_root(ctx, &user)], ext);
        if plan.is_empty() {
            term::info(&format!(
                "{what} is not installed here (no profile in {}, no links, no GC roots): nothing to do",
                profile.dir.display()
            ));
            return Ok(());
        }
        plan.print(&env);
        if self.dry_run {
            term::info("dry run: nothing was changed");
            return Ok(());
        }
        if !self.yes {
            term::raw(&format!("Really uninstall {what}? [y/N] "));
            let mut answer = String::new();
            std::io::stdin()
                .read_line(&mut answer)
                .context("reading the answer")?;
            if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
                term::info("nothing was changed");
                return Ok(());
            }
        }
        if let Some(lock) = &lock {
            lock.announce()?;
        }
        plan.run(&env)?;
        // The lock file goes last, while it is held, then the state directory if that
        // leaves it empty; `homes/` and your files stay.
        let state = env.hm_state_dir();
        let _ = std::fs::remove_file(home::lock_path(&state));
        drop(lock);
        let _ = std::fs::remove_dir(&state);
        term::info(&format!(
            "uninstalled {what}: {} links, {} profile links and {} GC roots removed; homes/{user} in the repository is untouched, and `cargo xtask gc` collects the store paths",
            plan.links.len(),
            plan.profile_links.len(),
            plan.roots.len()
        ));
        Ok(())
    }
}
