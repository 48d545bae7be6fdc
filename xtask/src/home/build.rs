//! Which home a name means and its one build: shared by build-home, switch and diff.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use super::env::{UserEnv, check_runner};
use crate::{
    Ctx, nix,
    repo::{self, Part, Repo},
    term,
};

/// The home a deploying task works on: the user's environment, the user (the argument,
/// else `$USER`, checked to have a standalone home), the repo model and the system.
pub struct HomeTarget {
    pub env: UserEnv,
    pub user: String,
    pub repo: Repo,
    pub system: String,
}

impl HomeTarget {
    /// `own`: the task uses the user's own profile or `$HOME` (everything but build-home),
    /// so only that user may run it; `writes`: it changes them (switch).
    pub fn resolve(
        ctx: &Ctx,
        user: Option<String>,
        system: Option<&str>,
        own: bool,
        writes: bool,
    ) -> Result<HomeTarget> {
        let env = UserEnv::from_process()?;
        let user = user.unwrap_or_else(|| env.user.clone());
        let mut repo = ctx.repo()?;
        standalone_user(&repo, &user)?;
        if own {
            check_runner(&user, &env, writes)?;
        }
        let detected = system.is_none_or(|s| s == "auto");
        let system = nix::pick_system(system)?;
        // homes/<user>/meta.nix names the system of `homeConfigurations.<user>`; the task
        // builds this machine's variant (`legacyPackages.<system>`), so a different one is
        // said, not silently ignored. Read (and validated: a broken meta.nix fails here as
        // it does in list and check) only when the file exists: one small nix call.
        if repo.users.get(&user).is_some_and(|u| u.has_meta) {
            repo.load_meta(&ctx.nix())?;
            repo.ensure_valid()?;
            if detected
                && let Some(meta) = repo.users.get(&user).and_then(|u| u.system.clone())
                && meta != system
            {
                term::warning(&format!(
                    "homes/{user}/meta.nix says {meta}, but this machine is {system}: using this machine's variant of the home (pass --system {meta} for the other)"
                ));
            }
        }
        Ok(HomeTarget {
            env,
            user,
            repo,
            system,
        })
    }

    /// Builds the generation with `out_link` as its GC root: one nix call that evaluates
    /// and builds, so a switch costs no more nix than the raw `nix build`.
    pub fn build(&self, ctx: &Ctx, out_link: &Path) -> Result<PathBuf> {
        let installable = nix::installable(&ctx.root, &home_attr(&self.user, &self.system));
        let mut paths = ctx.nix().build(&[installable], Some(out_link))?;
        paths.pop().context("nix build returned no generation")
    }
}

/// Checks that `name` is a user with a standalone home, or says what to run instead:
/// `<user>@<host>` and integrated-only users deploy with `switch --host`.
pub fn standalone_user(repo: &Repo, name: &str) -> Result<()> {
    // A name no home can have is a usage error (exit 2), like any bad argument.
    let (user, part) = repo::parse_home_dir(name)
        .map_err(|e| crate::UsageError(format!("{name:?} is not a home name: {e}")))?;
    match part {
        Part::Base => {}
        Part::Global => bail!(
            "{name} is the standalone-only part of {user}'s home, not a home of its own; run `cargo xtask switch {user}`"
        ),
        Part::Host(host) => bail!(
            "{name} is {user}'s integrated home on the NixOS host {host}; integrated homes deploy with `cargo xtask switch --host {host}`"
        ),
    }
    match repo.users.get(&user) {
        Some(u) if u.base => Ok(()),
        Some(_) => {
            let hosts = repo.user_hosts(&user);
            let host = hosts.first().map(String::as_str).unwrap_or("<host>");
            bail!(
                "{user} has no standalone home (no homes/{user}), only integrated ones on {}; integrated homes deploy with `cargo xtask switch --host {host}` (or create homes/{user} for a standalone home)",
                if hosts.is_empty() {
                    "no host".to_string()
                } else {
                    hosts.join(", ")
                }
            )
        }
        None => {
            let homes: Vec<&str> = repo.standalone_users().map(|u| u.name.as_str()).collect();
            // Never suggest what new-user would refuse: root needs its --allow-root, and a
            // name no home can have is a usage error.
            if user == repo::RESERVED_USER {
                bail!(
                    "there is no home for {user} in {} (homes: {}); the superuser is usually configured by the NixOS host, but `cargo xtask new-user {user} --allow-root` creates one",
                    repo.root.join("homes").display(),
                    term::list(&homes)
                );
            }
            if let Err(e) = repo::validate_new_user_name(&user, false) {
                return Err(crate::UsageError(format!(
                    "there is no home for {user} in {} (homes: {}), and there cannot be one: {e}; name one of those homes",
                    repo.root.join("homes").display(),
                    term::list(&homes)
                ))
                .into());
            }
            bail!(
                "there is no home for {user} in {} (homes: {}); create one with `cargo xtask new-user {user}`, or name another user",
                repo.root.join("homes").display(),
                term::list(&homes)
            )
        }
    }
}

/// A GC root beside the repo (ignored by git, like home-manager's `result`), so a built
/// generation survives a collection until the next build replaces it.
pub fn gc_root(ctx: &Ctx, user: &str) -> PathBuf {
    ctx.root.join(format!("result-home-{user}"))
}

/// GC roots this repository's tasks made that nothing live uses any more, for `gc`:
/// - `result-home-<user>` links in the repository for a user who has no standalone home
///   in homes/ any more (a home that exists keeps its last build's root; it is replaced
///   by the next build);
/// - out-link directories of runs that are over ([`OutLinkDir::stale`]).
///
/// Their indirect roots in `/nix/var/nix/gcroots/auto` then point nowhere, and nix drops
/// those itself at the next collection.
pub fn stale_roots(repo: &Repo) -> Vec<PathBuf> {
    let mut stale: Vec<PathBuf> = fs::read_dir(&repo.root)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let Some(user) = name.to_str().and_then(|n| n.strip_prefix("result-home-"))
                    else {
                        return false;
                    };
                    e.file_type().is_ok_and(|t| t.is_symlink())
                        && !repo.standalone_users().any(|u| u.name == user)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    stale.sort();
    stale.extend(OutLinkDir::stale());
    stale
}

/// The flake attribute of a user's home for `system`.
pub fn home_attr(user: &str, system: &str) -> String {
    format!("legacyPackages.{system}.homeConfigurations.{user}.activationPackage")
}

/// A private temporary directory for a build's out-link, removed when the task ends: the
/// GC root of a switch (as `home-manager switch` keeps one while it runs) or of a
/// read-only task such as `diff`, which must not leave `result-home-*` in the repo.
///
/// A run killed outright leaves its directory, whose out-link would keep a generation
/// alive forever. Each directory holds a locked file while its run lives; the next run
/// removes those whose lock it can take (a lock, unlike a PID, means the same thing in
/// every PID namespace).
pub struct OutLinkDir {
    dir: tempfile::TempDir,
    _alive: File,
}

const OUT_LINK_PREFIX: &str = "xtask-out-";

impl OutLinkDir {
    /// The directories of runs that are over (killed outright): an `xtask-out-*` in the
    /// temporary directory whose `alive` lock is free. A directory without that file is
    /// not ours to judge (a run between creating it and locking, or someone else's) and
    /// is left alone; so is one whose lock is held.
    pub fn stale() -> Vec<PathBuf> {
        let mut stale: Vec<PathBuf> = fs::read_dir(std::env::temp_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|entry| {
                        entry
                            .file_name()
                            .to_str()
                            .is_some_and(|n| n.starts_with(OUT_LINK_PREFIX))
                            && File::open(entry.path().join("alive"))
                                .is_ok_and(|f| f.try_lock().is_ok())
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        stale.sort();
        stale
    }

    pub fn new() -> Result<OutLinkDir> {
        let tmp = std::env::temp_dir();
        for dir in OutLinkDir::stale() {
            let _ = fs::remove_dir_all(dir);
        }
        let dir = tempfile::Builder::new()
            .prefix(OUT_LINK_PREFIX)
            .tempdir()
            .with_context(|| format!("creating a temporary directory in {}", tmp.display()))?;
        // Locked before it is named `alive`: a gc never sees this run's file unlocked.
        let alive = File::create(dir.path().join("alive.new"))
            .and_then(|f| f.lock().map(|()| f))
            .and_then(|f| {
                fs::rename(dir.path().join("alive.new"), dir.path().join("alive")).map(|()| f)
            })
            .with_context(|| format!("creating {}", dir.path().display()))?;
        Ok(OutLinkDir { dir, _alive: alive })
    }

    /// The out-link to pass to the build.
    pub fn link(&self) -> PathBuf {
        self.dir.path().join("generation")
    }
}
