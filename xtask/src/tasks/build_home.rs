//! `cargo xtask build-home [USER]`: builds a home's generation for this machine's system,
//! and the pieces `switch` shares with it: which home a name means, and the one build.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::{
    Ctx,
    cli::BuildHome,
    nix,
    profile::UserEnv,
    repo::{self, Part, Repo},
    term,
};

#[derive(Debug, Serialize)]
struct Built<'a> {
    path: &'a Path,
    system: &'a str,
    user: &'a str,
}

impl BuildHome {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let HomeTarget { user, system, .. } =
            HomeTarget::resolve(ctx, self.user, self.system.as_deref(), false)?;
        let foreign = system != nix::current_system();
        if foreign {
            term::warning(&format!(
                "building for {system} on this {} machine needs a remote builder or emulation (extra-platforms in nix.conf)",
                nix::current_system()
            ));
        }
        let link = gc_root(ctx, &user);
        let path = build_generation(ctx, &user, &system, &link).with_context(|| {
            if foreign {
                format!("building {user}'s home for {system}: drop --system to build for this machine, or configure a {system} builder")
            } else {
                format!("building {user}'s home")
            }
        })?;
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&Built {
                    path: &path,
                    system: &system,
                    user: &user
                })?
            );
        } else {
            term::info(&format!(
                "generation: {} (GC root: {})",
                path.display(),
                link.display()
            ));
            println!("{}", path.display());
        }
        Ok(())
    }
}

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
    /// so only that user may run it.
    pub fn resolve(
        ctx: &Ctx,
        user: Option<String>,
        system: Option<&str>,
        own: bool,
    ) -> Result<HomeTarget> {
        let env = UserEnv::from_process()?;
        let user = user.unwrap_or_else(|| env.user.clone());
        let mut repo = ctx.repo()?;
        standalone_user(&repo, &user)?;
        if own {
            super::switch::check_runner(&user, &env)?;
        }
        let detected = system.is_none_or(|s| s == "auto");
        let system = nix::pick_system(system)?;
        // homes/<user>/meta.nix names the system of `homeConfigurations.<user>`; the task
        // builds this machine's variant (`legacyPackages.<system>`), so a different one is
        // said, not silently ignored. Read only when the file exists (one small nix call).
        if detected && repo.users.get(&user).is_some_and(|u| u.has_meta) {
            repo.load_meta(&ctx.nix())?;
            if let Some(meta) = repo.users.get(&user).and_then(|u| u.system.clone())
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
}

/// Checks that `name` is a user with a standalone home, or says what to run instead:
/// `<user>@<host>` and integrated-only users deploy with `switch --host`.
pub fn standalone_user(repo: &Repo, name: &str) -> Result<()> {
    let (user, part) = repo::parse_home_dir(name).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
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

/// The flake attribute of a user's home for `system`.
pub fn home_attr(user: &str, system: &str) -> String {
    format!("legacyPackages.{system}.homeConfigurations.{user}.activationPackage")
}

/// Builds the generation with `out_link` as its GC root: one nix call that evaluates and
/// builds, so a switch costs no more nix than the raw `nix build`.
pub fn build_generation(ctx: &Ctx, user: &str, system: &str, out_link: &Path) -> Result<PathBuf> {
    let installable = nix::installable(&ctx.root, &home_attr(user, system));
    let mut paths = ctx.nix().build(&[installable], Some(out_link))?;
    paths.pop().context("nix build returned no generation")
}

/// A private temporary directory for a build's out-link, removed when the task ends: the
/// GC root of a switch (as `home-manager switch` keeps one while it runs) or of a
/// read-only task such as `diff`, which must not leave `result-home-*` in the repo.
pub struct OutLinkDir(PathBuf);

impl OutLinkDir {
    pub fn new(task: &str) -> Result<OutLinkDir> {
        let prefix = format!("xtask-{task}-");
        let tmp = std::env::temp_dir();
        // Runs killed outright (SIGKILL) leave their directory, whose out-link would keep a
        // generation from being collected forever: remove those whose process is gone.
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let pid = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(&prefix)?.parse::<i32>().ok());
                if pid.is_some_and(|p| !crate::profile::process_alive(p)) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("{prefix}{}", std::process::id()));
        // A leftover of a killed run with the same pid holds only a dangling link.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(OutLinkDir(dir))
    }

    /// The out-link to pass to the build.
    pub fn link(&self) -> PathBuf {
        self.0.join("generation")
    }
}

impl Drop for OutLinkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
