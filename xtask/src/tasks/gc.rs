//! `cargo xtask gc [USER]`: deletes old home generations (or, with `--system`, old NixOS
//! system generations), removes GC roots this repository's tasks left behind, then
//! collects garbage — like `home-manager expire-generations` followed by
//! `nix-collect-garbage`, with `nh clean`'s `--keep` and age combined.
//!
//! Never deleted, whatever the flags and whatever state a killed switch left: the
//! profile's current generation, the one `$HOME` has (`gcroots/current-home`, or the
//! generation it is a specialisation of), and one an activation is using (the lock is
//! shared with every running activation). For the system: the profile's current
//! generation, the booted one (`/run/booted-system`) and the running one
//! (`/run/current-system`), or the generations they are specialisations of.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::{
    Ctx,
    cli::Gc,
    home::{self, Generation, Lock, Profile, UserEnv},
    nix::{self, GcSummary, Nix},
    term::{self, human_size},
};

/// Whose generations: a home's or the system's, and what must stay.
struct Target {
    /// "alice's home", "the system".
    what: String,
    profile: Profile,
    /// Paths in use: a generation that is one of these, or has one as a specialisation,
    /// stays.
    in_use: Vec<PathBuf>,
    /// Held for the whole run (home profiles).
    _lock: Option<Lock>,
}

#[derive(Debug, Serialize)]
struct Doomed<'a> {
    id: u64,
    date: &'a str,
    path: &'a Path,
    closure_size: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    profile: PathBuf,
    keep: u32,
    older_than: Option<&'a str>,
    delete: Vec<Doomed<'a>>,
    kept: Vec<u64>,
    stale_roots: Vec<PathBuf>,
    /// Dry run: what the store gc would free (an estimate: the NAR sizes of the paths no
    /// root would keep); a real run: what nix says it freed. `null` with --no-store-gc.
    store: Option<GcSummary>,
    dry_run: bool,
}

impl Gc {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let repo = ctx.repo()?;
        let keep = self.keep.unwrap_or(repo.defaults.keep_generations);
        if keep == 0 {
            return Err(crate::UsageError(
                "--keep 0 would leave no generation to roll back to; keep at least 1".into(),
            )
            .into());
        }
        let target = if self.system {
            self.system_target()?
        } else {
            self.home_target()?
        };
        let profile = &target.profile;
        let gens = profile.generations()?;
        let current = profile.current_id();
        let protected = |g: &Generation| {
            Some(g.id) == current
                || target
                    .in_use
                    .iter()
                    .any(|a| home::is_or_specialises(&g.path, a))
        };
        for a in &target.in_use {
            if !gens.is_empty() && !gens.iter().any(|g| home::is_or_specialises(&g.path, a)) {
                term::warning(&format!(
                    "{} is in use but is no generation of {} (a switch was killed?); it is not touched",
                    a.display(),
                    profile.link().display()
                ));
            }
        }
        let doomed = home::expired(
            &gens,
            keep as usize,
            self.older_than.as_ref().map(|a| a.seconds),
            SystemTime::now(),
            protected,
        );
        let stale = home::stale_roots(&repo);
        let nix = ctx.nix();
        // Sizes only where they are shown: one `nix path-info -S` for all of them.
        let sizes = if self.dry_run || self.json {
            let paths: Vec<PathBuf> = doomed.iter().map(|g| g.path.clone()).collect();
            nix.closure_sizes(&paths)?
        } else {
            Default::default()
        };
        let mut report = Report {
            profile: profile.link(),
            keep,
            older_than: self.older_than.as_ref().map(|a| a.text.as_str()),
            delete: doomed
                .iter()
                .map(|g| Doomed {
                    id: g.id,
                    date: &g.date,
                    path: &g.path,
                    closure_size: sizes.get(&g.path).copied(),
                })
                .collect(),
            kept: gens
                .iter()
                .filter(|g| !doomed.iter().any(|d| d.id == g.id))
                .map(|g| g.id)
                .collect(),
            stale_roots: stale.clone(),
            store: None,
            dry_run: self.dry_run,
        };

        let rule = match &self.older_than {
            Some(age) => format!("the newest {keep}, those younger than {}", age.text),
            None => format!("the newest {keep}"),
        };
        let what = &target.what;
        if doomed.is_empty() {
            term::info(&format!(
                "{what} has {} generation(s); keeping {rule}, the current one and those in use: nothing to delete",
                gens.len()
            ));
        } else {
            term::info(&format!(
                "{} {} of {} generations of {what} (keeping {rule}, the current one and those in use): {}",
                if self.dry_run {
                    "would delete"
                } else {
                    "deleting"
                },
                doomed.len(),
                gens.len(),
                doomed
                    .iter()
                    .map(|g| g.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if self.dry_run {
                for d in &report.delete {
                    term::info(&format!(
                        "  id {} : {} : {} -> {}",
                        d.id,
                        d.date,
                        d.closure_size.map_or("size unknown".into(), human_size),
                        d.path.display()
                    ));
                }
            }
            // Explicit ids work on every nix (the `+N` form is newer than 2.8's docs promise).
            let delete = nix
                .tool("nix-env")?
                .arg("--profile")
                .arg(profile.link())
                .arg("--delete-generations")
                .args(doomed.iter().map(|g| g.id.to_string()));
            self.step(delete)?;
            if self.system && !self.dry_run {
                term::info(
                    "the boot menu lists deleted generations until the next `nixos-rebuild boot` or `switch` rewrites it",
                );
            }
        }
        for root in &stale {
            term::info(&format!(
                "{} stale GC root {} (made by this repository's tasks, used by nothing live)",
                if self.dry_run {
                    "would remove"
                } else {
                    "removing"
                },
                root.display()
            ));
            if !self.dry_run {
                let removed = if root.is_dir() && !root.is_symlink() {
                    std::fs::remove_dir_all(root)
                } else {
                    std::fs::remove_file(root)
                };
                if let Err(e) = removed {
                    term::warning(&format!("could not remove {}: {e}", root.display()));
                }
            }
        }
        if !self.no_store_gc {
            let gc = nix.tool("nix-store")?.arg("--gc");
            if self.dry_run {
                let links: Vec<PathBuf> = doomed
                    .iter()
                    .map(|g| profile.generation_link(g.id))
                    .chain(stale.iter().cloned())
                    .collect();
                let estimate = would_free(&nix, &doomed, &links)?;
                term::info(&format!(
                    "the store gc would free about {} ({} store paths no root would keep)",
                    human_size(estimate.bytes),
                    estimate.paths
                ));
                report.store = Some(estimate);
                self.step(gc)?;
            } else {
                report.store = store_gc(gc, ctx.verbose)?;
            }
        }
        if self.dry_run {
            term::info("dry run: nothing was changed");
        }
        if self.json {
            term::out(&serde_json::to_string_pretty(&report)?);
        }
        Ok(())
    }

    /// Runs a command that changes something; in a dry run prints it instead (on stdout,
    /// or with the human text when stdout is for --json).
    fn step(&self, cmd: xshell::Cmd<'_>) -> Result<()> {
        if self.dry_run && self.json {
            term::command(&crate::nix::prepare(cmd).1);
            return Ok(());
        }
        nix::run_step(cmd, self.dry_run)
    }

    fn home_target(&self) -> Result<Target> {
        let (env, user) = UserEnv::own(self.user.clone(), !self.dry_run)?;
        let what = format!("{user}'s home");
        // Not while a switch, rollback or activation of this profile runs: it may be about
        // to activate one of them.
        let lock = if self.dry_run {
            None
        } else {
            let lock = Lock::acquire(&env.hm_state_dir(), &what)?;
            lock.announce()?;
            Some(lock)
        };
        Ok(Target {
            what,
            profile: env.profile(),
            in_use: std::fs::read_link(env.current_home_root())
                .into_iter()
                .collect(),
            _lock: lock,
        })
    }

    /// The NixOS system profile. `XTASK_SYSTEM_PROFILE` (the profile link) and
    /// `XTASK_RUN_DIR` (where `booted-system` and `current-system` are) replace
    /// `/nix/var/nix/profiles/system` and `/run`, for tests only.
    fn system_target(&self) -> Result<Target> {
        let link = std::env::var_os("XTASK_SYSTEM_PROFILE")
            .filter(|v| !v.is_empty())
            .map_or_else(
                || PathBuf::from("/nix/var/nix/profiles/system"),
                PathBuf::from,
            );
        let run = std::env::var_os("XTASK_RUN_DIR")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/run"), PathBuf::from);
        if std::fs::symlink_metadata(&link).is_err() {
            bail!(
                "there is no system profile at {}: --system is for NixOS hosts; on this machine run `cargo xtask gc` for your home",
                link.display()
            );
        }
        if !self.dry_run && !rustix::process::geteuid().is_root() {
            bail!(
                "the system profile belongs to root; run it as root: `sudo cargo xtask gc --system` (or look first with --dry-run)"
            );
        }
        let in_use = ["booted-system", "current-system"]
            .iter()
            .filter_map(|n| std::fs::canonicalize(run.join(n)).ok())
            .collect();
        Ok(Target {
            what: "the system".into(),
            profile: Profile::at(&link),
            in_use,
            _lock: None,
        })
    }
}

/// What `nix-store --gc` would free once `doomed` are deleted and the roots `links` are
/// gone: the paths dead now, plus those of the doomed closures that no other root keeps.
/// Read-only queries: `--print-dead`, `--print-roots`, `--query --requisites`, and the
/// NAR sizes of those paths (`nix path-info --json`), so an estimate of the bytes (nix
/// frees whole files, hard-linked ones only when the last link goes).
fn would_free(nix: &Nix<'_>, doomed: &[&Generation], links: &[PathBuf]) -> Result<GcSummary> {
    let mut free: BTreeSet<PathBuf> = nix.dead_paths()?.into_iter().collect();
    if !doomed.is_empty() {
        let going: BTreeSet<String> = links
            .iter()
            .flat_map(|l| {
                [
                    l.display().to_string(),
                    std::fs::canonicalize(l.parent().unwrap_or(l))
                        .map(|p| p.join(l.file_name().unwrap_or_default()))
                        .unwrap_or_else(|_| l.clone())
                        .display()
                        .to_string(),
                ]
            })
            .collect();
        // A root may name a path that is gone (collected, or its link outlived it); only
        // the existing ones are asked about.
        let kept: Vec<PathBuf> = nix
            .roots()?
            .into_iter()
            .filter(|(root, path)| !going.contains(root) && path.exists())
            .map(|(_, path)| path)
            .collect();
        let doomed_paths: Vec<PathBuf> = doomed.iter().map(|g| g.path.clone()).collect();
        // Another nix process may collect a path between the two queries: then the
        // estimate counts only what is dead now, and says so.
        match nix
            .requisites(&kept)
            .and_then(|live| Ok((live, nix.requisites(&doomed_paths)?)))
        {
            Ok((live, closure)) => free.extend(closure.into_iter().filter(|p| !live.contains(p))),
            Err(e) => term::warning(&format!(
                "{e:#}; the estimate counts only the store paths that are dead now"
            )),
        }
    }
    // Other nix processes (a store gc of another user or tool) may delete dead paths at
    // any time: only those still there are sized, with one retry.
    let present = |free: &BTreeSet<PathBuf>| -> Vec<PathBuf> {
        free.iter().filter(|p| p.exists()).cloned().collect()
    };
    let sizes = nix
        .nar_sizes(&present(&free))
        .or_else(|_| nix.nar_sizes(&present(&free)));
    let paths = present(&free);
    let bytes = match sizes {
        Ok(sizes) => paths.iter().filter_map(|p| sizes.get(p)).sum(),
        Err(_) => {
            term::warning(
                "the store changed while it was measured (another garbage collection?); the estimate has no size, run the dry run again",
            );
            0
        }
    };
    Ok(GcSummary {
        paths: paths.len() as u64,
        bytes,
    })
}

/// Runs `nix-store --gc` and prints one summary line instead of a line per deleted path
/// (all of them with -v): nix's own last line, `N store paths deleted, X MiB freed`.
fn store_gc(gc: xshell::Cmd<'_>, verbose: bool) -> Result<Option<GcSummary>> {
    let (mut gc, shown) = crate::nix::prepare(gc);
    term::command(&shown);
    let out = gc
        .stdin(std::process::Stdio::null())
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
        bail!(
            "the store garbage collection failed: {}\n  tried: {shown}",
            nix::trim_error(&text)
        );
    }
    let summary = GcSummary::parse(&text);
    match summary {
        Some(s) => term::info(&format!(
            "store gc: {} store paths deleted, {} freed",
            s.paths,
            human_size(s.bytes)
        )),
        None => term::info("store gc: done (nix printed no summary)"),
    }
    Ok(summary)
}
