//! The user's side: the profile directory Home Manager will use (and a pending legacy
//! migration), and a stale switch lock or an orphaned activation.

use crate::home::{self, Lock, UserEnv};

use super::Report;

/// The profile directory Home Manager will use, and a pending legacy migration.
pub(super) fn check_profile(r: &mut Report, env: &UserEnv) {
    let profile = env.profile();
    let shown = env.tilde(&profile.dir);
    if !profile.exists {
        r.ok("profile", format!("{shown} (created by the first switch)"));
    } else if rustix::fs::access(&profile.dir, rustix::fs::Access::WRITE_OK).is_err() {
        r.fail(
            "profile",
            format!("{shown} is not writable for {}", env.user),
            format!(
                "fix its ownership (sudo chown {} {})",
                env.user,
                profile.dir.display()
            ),
        );
        return;
    } else {
        let gens = profile.generations().map(|g| g.len()).unwrap_or(0);
        let current = profile
            .current_id()
            .map_or("none".to_string(), |i| i.to_string());
        r.ok(
            "profile",
            format!("{shown} ({gens} generations, current: {current})"),
        );
    }
    if let Some(m) = env.pending_migration() {
        r.warn(
            "profile migration",
            format!(
                "a legacy Home Manager profile in {} ({} generation links) is pending migration to {}",
                m.from.display(),
                m.links.len(),
                m.to.display()
            ),
            "run `cargo xtask switch`: it moves the generations first (as Home Manager's activation does), so the history is kept",
        );
    }
}

/// A running switch or activation, and an activation a killed switch left half done.
pub(super) fn check_lock(r: &mut Report, env: &UserEnv) {
    let dir = env.hm_state_dir();
    let path = dir.join("switch.lock");
    match Lock::holder(&dir) {
        Ok(Some(holder)) => r.fail(
            "lock",
            format!("an activation or switch is running ({holder})"),
            format!(
                "wait for it to finish (`fuser -v {}` shows the holder); the lock is free once every holder has exited",
                path.display()
            ),
        ),
        Ok(None) => r.ok("lock", format!("free ({})", env.tilde(&path))),
        Err(e) => r.warn("lock", format!("{e:#}"), "check the permissions of that file"),
    }
    if let Some((profiled, active)) = home::activation_mismatch(env, &env.profile()) {
        r.warn(
            "activation",
            format!(
                "the profile's generation {} is not the one $HOME has ({}): a switch or rollback was stopped mid-way",
                profiled.display(),
                active.map_or("none".into(), |a| a.display().to_string())
            ),
            "run `cargo xtask switch` again (it repairs this first), or `cargo xtask rollback`",
        );
    }
}
