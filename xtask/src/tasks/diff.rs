//! `cargo xtask diff`: what changes from one generation to another, without changing
//! anything: the files (a unified diff for text), the packages and closure sizes (computed
//! from the two closures, `closure`), and, when the old side is what `$HOME` has, what the
//! pre-flight would do there. Three ways to name the two sides:
//! - `diff [USER]`: the home built now against the active generation;
//! - `diff --from ID --to ID`: two generations of the profile (either defaults to the
//!   current one);
//! - `diff OLD NEW`: two store paths (or links to them).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::{
    Ctx, UsageError,
    cli::Diff,
    closure::PackageDiff,
    home::{
        self, Backup, Comparison, FileDiff, GenerationInfo, HomeTarget, OutLinkDir, Preflight,
        UserEnv, active_generation,
    },
    repo::Defaults,
    term,
};

#[derive(Debug, Serialize)]
struct Report<'a> {
    /// The user whose home or profile was compared; none for two paths.
    user: Option<&'a str>,
    /// The system of the home built; none when nothing was built.
    system: Option<&'a str>,
    /// The old side (the active generation for `diff [USER]`), none on a first install.
    current: Option<&'a Path>,
    /// The new side.
    generation: &'a Path,
    /// `added`, `removed`, `changed`, `dangling`.
    #[serde(flatten)]
    files: &'a FileDiff,
    /// What switching to the new side would do in `$HOME`; only when the old side is what
    /// `$HOME` has (otherwise the pre-flight would answer a question nobody asked).
    preflight: Option<&'a Preflight>,
    packages: &'a PackageDiff,
}

/// The two sides and whose they are.
struct Sides {
    user: Option<String>,
    system: Option<String>,
    old: Option<PathBuf>,
    new: PathBuf,
    /// Keeps the new build's GC root for as long as the diff runs.
    _work: Option<OutLinkDir>,
}

impl Diff {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let sides = self.sides(ctx)?;
        let (old, new) = (sides.old.as_deref(), sides.new.as_path());
        // The pre-flight needs the user's $HOME and backup settings; two paths may be
        // compared without either.
        let env = UserEnv::from_process().ok();
        let active = env
            .as_ref()
            .and_then(|e| active_generation(e, &e.profile()));
        let preflight = match &env {
            Some(env) if old == active.as_deref() && old != Some(new) => {
                let backup = Backup::new(&Defaults::load(&ctx.root)?, None, None, false);
                Some(home::preflight(&GenerationInfo::read(new)?, env, &backup)?)
            }
            _ => None,
        };
        let cmp = Comparison::between(&ctx.nix(), old, new)?;

        if self.json {
            let report = Report {
                user: sides.user.as_deref(),
                system: sides.system.as_deref(),
                current: old,
                generation: new,
                files: &cmp.files,
                preflight: preflight.as_ref(),
                packages: &cmp.packages,
            };
            term::out(&serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        let whose = sides
            .user
            .as_deref()
            .map_or_else(String::new, |u| format!("{u}: "));
        match old {
            Some(o) => term::info(&format!("{whose}{} → {}", o.display(), new.display())),
            None => term::info(&format!(
                "{whose}no active generation yet: every file and package is new ({})",
                new.display()
            )),
        }
        if old == Some(new) {
            term::info("the two generations are the same: a switch would change nothing");
            return Ok(());
        }
        cmp.print(term::out);
        if let (Some(pf), Some(env)) = (&preflight, &env) {
            pf.print(env);
        }
        Ok(())
    }

    fn sides(&self, ctx: &Ctx) -> Result<Sides> {
        let from_to = self.from.is_some() || self.to.is_some();
        if let [old, new] = self.args.as_slice() {
            if from_to || self.system.is_some() {
                return Err(UsageError(format!(
                    "diff {old} {new} compares two store paths; --from, --to and --system mean a profile or a build: drop them, or name one user instead of two paths"
                ))
                .into());
            }
            return Ok(Sides {
                user: None,
                system: None,
                old: Some(store_path(old)?),
                new: store_path(new)?,
                _work: None,
            });
        }
        let user = self.args.first().cloned();
        if from_to {
            return profile_sides(user, self.from, self.to);
        }
        let target = HomeTarget::resolve(ctx, user, self.system.as_deref(), true, false)?;
        // A read-only task leaves nothing in the repo: the GC root lives as long as the diff.
        let work = OutLinkDir::new()?;
        let new = target.build(ctx, &work.link())?;
        Ok(Sides {
            old: active_generation(&target.env, &target.env.profile()),
            new,
            user: Some(target.user),
            system: Some(target.system),
            _work: Some(work),
        })
    }
}

/// `--from ID --to ID` of `user`'s profile; a side not given is the current generation.
fn profile_sides(user: Option<String>, from: Option<u64>, to: Option<u64>) -> Result<Sides> {
    let (env, user) = UserEnv::own(user, false)?;
    let profile = env.profile();
    let gens = profile.generations()?;
    let ids = gens
        .iter()
        .map(|g| g.id.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let pick = |id: Option<u64>, flag: &str| -> Result<PathBuf> {
        let generation = match id {
            Some(id) => gens.iter().find(|g| g.id == id).with_context(|| {
                format!(
                    "{flag} {id}: {user} has no generation {id} (generations: {}); see `cargo xtask generations`",
                    if ids.is_empty() { "none" } else { &ids }
                )
            })?,
            None => gens.iter().find(|g| g.current).with_context(|| {
                format!(
                    "{user}'s profile has no current generation (looked in {}); give both --from and --to",
                    profile.dir.display()
                )
            })?,
        };
        fs::canonicalize(&generation.path).with_context(|| {
            format!(
                "generation {} points to {}, which is not in the store any more",
                generation.id,
                generation.path.display()
            )
        })
    };
    Ok(Sides {
        old: Some(pick(from, "--from")?),
        new: pick(to, "--to")?,
        user: Some(user),
        system: None,
        _work: None,
    })
}

/// A generation named on the command line: the store path it is or links to.
fn store_path(arg: &str) -> Result<PathBuf> {
    let path = fs::canonicalize(arg).with_context(|| {
        format!(
            "{arg} does not exist; give two generations as store paths or links to them (./result, ~/.local/state/nix/profiles/home-manager-3-link)"
        )
    })?;
    let store = crate::nix::store_dir();
    let store = fs::canonicalize(&store).unwrap_or(store);
    if path.parent() != Some(store.as_path()) {
        bail!(
            "{arg} is {}, not a store path in {}; give two generations as store paths or links to them (./result, a profile's home-manager-3-link)",
            path.display(),
            store.display()
        );
    }
    Ok(path)
}
