//! All-or-nothing writing of a scaffold, even when the process is killed
//! ([`Scaffold::write`]):
//!
//! 1. every file is written into a temporary directory inside the repo
//!    (`.xtask-new-XXXXXX`, on the same file system, so the moves below are renames);
//! 2. a marker in it lists the set of files, before anything is moved;
//! 3. each new directory (`homes/bob`, `homes/bob@global`, …) is renamed into place; if a
//!    rename fails, the ones before it are moved back;
//! 4. the files are staged; then the temporary directory is removed: the commit point.
//!
//! A run killed before the commit point leaves its temporary directory, and the next
//! `new-user` / `new-host` rolls it back (see [`recover`]): the files the marker lists that
//! were moved into place (their copy is no longer in the temporary directory) are removed
//! and unstaged, then the directory is deleted, so the same command can simply be run
//! again. Only one scaffold writes in a repository at a time (a lock on the repo
//! directory, released by the kernel however the process ends), so a live run's
//! temporary directory is never taken for a leftover.
//!
//! Tests kill the process at each step with `XTASK_TEST_ABORT_AT=N`: the run aborts
//! (SIGABRT, no clean-up, like `kill -9`) right after its N-th write, rename or removal.
//! It is read from the environment only, so it is inert unless set.

use std::{
    fs,
    io::{ErrorKind, Write},
    path::Path,
};

use anyhow::{Context, Result, anyhow, bail};
use xshell::cmd;

use crate::{Ctx, repo, term};

use super::{Scaffold, in_git};

impl Scaffold {
    /// Writes every file or none, by the protocol in the module documentation, and stages
    /// them (`stage` is told the repo-relative paths; it runs before the commit point so
    /// that a kill during it is rolled back too). Returns the result of staging: when git
    /// fails the files are still complete and the error says what to run.
    pub fn write(
        &self,
        root: &Path,
        stage: impl FnOnce(&[&str]) -> Result<()>,
    ) -> Result<Result<()>> {
        let mut steps = Steps::from_env();
        let tmp = tempfile::Builder::new()
            .prefix(repo::SCAFFOLD_TEMP_PREFIX)
            .tempdir_in(root)
            .with_context(|| {
                format!(
                    "creating a temporary directory in {}; nothing was written (is the repository writable?)",
                    root.display()
                )
            })?;
        steps.done();
        // Until the renames, a failure only has the temporary directory to remove, which
        // dropping `tmp` does.
        for (rel, content) in &self.files {
            write_new(&tmp.path().join(rel), content)
                .with_context(|| format!("writing {rel} failed; nothing was written"))?;
            steps.done();
        }
        let listed: String = self
            .files
            .iter()
            .map(|(rel, _)| format!("{rel}\n"))
            .collect();
        write_new(&tmp.path().join(MARKER), &listed)
            .context("writing the scaffold's marker failed; nothing was written")?;
        steps.done();

        let dirs = self.new_dirs();
        for (i, dir) in dirs.iter().enumerate() {
            let to = root.join(dir);
            let moved = to
                .parent()
                .map_or(Ok(()), fs::create_dir_all)
                .and_then(|()| fs::rename(tmp.path().join(dir), &to));
            if let Err(e) = moved {
                // Take back the directories already in place: no half set stays.
                let stuck: Vec<&str> = dirs[..i]
                    .iter()
                    .filter(|d| fs::rename(root.join(d), tmp.path().join(d)).is_err())
                    .copied()
                    .collect();
                let cleanup = if stuck.is_empty() {
                    "nothing was left behind".to_string()
                } else {
                    format!(
                        "could not take back {}; run this command again to remove them",
                        stuck.join(", ")
                    )
                };
                if !stuck.is_empty() {
                    // The marker stays, so the next run finds and removes them.
                    let _ = tmp.keep();
                }
                return Err(anyhow!("moving {dir} into place failed ({e}); {cleanup}"));
            }
            steps.done();
        }
        let staged = stage(&self.paths());
        steps.done();
        tmp.close().with_context(|| {
            format!(
                "the files are in place, but removing the temporary directory in {} failed; delete the {}* directory there",
                root.display(),
                repo::SCAFFOLD_TEMP_PREFIX
            )
        })?;
        steps.done();
        Ok(staged)
    }
}

/// The marker file in a scaffold's temporary directory: the repo-relative files of the set.
const MARKER: &str = "xtask-scaffold-set";

/// The test-only kill hook (`XTASK_TEST_ABORT_AT=N`, module documentation).
struct Steps {
    abort_at: Option<u32>,
    done: u32,
}

impl Steps {
    fn from_env() -> Steps {
        Steps {
            abort_at: std::env::var("XTASK_TEST_ABORT_AT")
                .ok()
                .and_then(|v| v.parse().ok()),
            done: 0,
        }
    }

    fn done(&mut self) {
        self.done += 1;
        if self.abort_at == Some(self.done) {
            std::process::abort();
        }
    }
}

/// Creates `path` (and its missing parents) with `content`; never overwrites, and syncs,
/// so a file that is renamed into place is whole.
fn write_new(path: &Path, content: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// What a task calls first, before it reads the repository: takes the lock (one scaffold
/// at a time) and rolls back what killed runs left, so validation sees the repository as
/// it was before them. Hold the returned lock until the task ends. A dry run changes
/// nothing, so it neither locks nor rolls back.
pub fn prepare(ctx: &Ctx, dry_run: bool) -> Result<Option<fs::File>> {
    if dry_run {
        return Ok(None);
    }
    let lock = lock_repo(&ctx.root)?;
    recover(ctx)?;
    Ok(Some(lock))
}

/// One scaffold at a time per repository: an exclusive lock on the repo directory itself
/// (no lock file to leave behind), held until the returned handle is dropped and released
/// by the kernel if the process dies.
fn lock_repo(root: &Path) -> Result<fs::File> {
    let dir = fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
    match dir.try_lock() {
        Ok(()) => Ok(dir),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "another new-user or new-host is writing in {}; wait for it to finish, then run this again; nothing was written",
            root.display()
        ),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", root.display()))
        }
    }
}

/// Rolls back what killed scaffolds left (module documentation): for each temporary
/// directory, the listed files that were moved into place are removed (and unstaged), their
/// directories removed when empty, then the temporary directory. Called under the lock, so
/// no live run owns these directories.
fn recover(ctx: &Ctx) -> Result<()> {
    let root = &ctx.root;
    for tmp in repo::leftover_scaffolds(root) {
        let tmp_path = root.join(&tmp);
        let listed = fs::read_to_string(tmp_path.join(MARKER)).unwrap_or_default();
        // A file whose copy left the temporary directory was moved into place by that run.
        let moved: Vec<&str> = listed
            .lines()
            .filter(|rel| !rel.is_empty() && !tmp_path.join(rel).exists())
            .collect();
        let mut removed = Vec::new();
        for rel in &moved {
            match fs::remove_file(root.join(rel)) {
                Ok(()) => removed.push(*rel),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => bail!(
                    "removing {rel}, left by an interrupted new-user/new-host, failed ({e}); delete it and {tmp} by hand, then run this again; nothing was written"
                ),
            }
        }
        // Deepest first; remove_dir only removes empty ones, so anything added since stays.
        let mut dirs: Vec<&str> = moved
            .iter()
            .filter_map(|r| r.rsplit_once('/'))
            .map(|(d, _)| d)
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        dirs.dedup();
        for dir in dirs {
            let _ = fs::remove_dir(root.join(dir));
        }
        if !removed.is_empty() && in_git(ctx) {
            let unstage = &removed;
            // Intent-to-add entries of files that no longer exist would break the flake.
            let _ = cmd!(
                ctx.sh,
                "git rm --cached --quiet --ignore-unmatch -- {unstage...}"
            )
            .quiet()
            .ignore_stderr()
            .run();
        }
        fs::remove_dir_all(&tmp_path).with_context(|| {
            format!("removing {tmp}, left by an interrupted new-user/new-host; delete it by hand")
        })?;
        let what = if removed.is_empty() {
            String::new()
        } else {
            format!(" and its half-moved files ({})", removed.join(", "))
        };
        term::info(&format!(
            "removed {tmp}{what}, left by an interrupted new-user or new-host"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaffold(files: &[&str]) -> Scaffold {
        let mut s = Scaffold::default();
        for f in files {
            s.file(f.to_string(), format!("# {f}\n"));
        }
        s
    }

    #[test]
    fn existing_directories_are_refused() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("homes/bob")).unwrap();
        fs::write(t.path().join("homes/bob@ws"), "mine").unwrap();
        let err = scaffold(&[
            "homes/bob/default.nix",
            "homes/bob@ws/default.nix",
            "homes/bob@global/default.nix",
        ])
        .check_free(t.path())
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("homes/bob already exists (a directory)"),
            "{err}"
        );
        assert!(
            err.contains("homes/bob@ws already exists (a file)"),
            "{err}"
        );
        assert!(!err.contains("bob@global"), "{err}");
        assert!(
            scaffold(&["homes/carol/default.nix"])
                .check_free(t.path())
                .is_ok()
        );
    }

    #[test]
    fn a_failed_rename_takes_back_the_directories_before_it() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        // A file where the second directory's parent must be: its rename fails.
        fs::create_dir(root.join("homes")).unwrap();
        fs::write(root.join("systems"), "in the way").unwrap();
        let s = scaffold(&["homes/bob/default.nix", "systems/web/default.nix"]);
        let err = format!("{:#}", s.write(root, |_| Ok(())).unwrap_err());
        assert!(
            err.contains("moving systems/web into place failed")
                && err.contains("nothing was left behind"),
            "{err}"
        );
        let left: Vec<_> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(fs::read_dir(root.join("homes")).unwrap().next().is_none());
        assert_eq!(
            fs::read_to_string(root.join("systems")).unwrap(),
            "in the way"
        );
    }

    #[test]
    fn writes_every_file() {
        let t = tempfile::tempdir().unwrap();
        let mut staged = Vec::new();
        scaffold(&["homes/bob/default.nix", "homes/bob@ws/default.nix"])
            .write(t.path(), |paths| {
                staged = paths.iter().map(|p| p.to_string()).collect();
                Ok(())
            })
            .unwrap()
            .unwrap();
        assert_eq!(
            staged,
            ["homes/bob/default.nix", "homes/bob@ws/default.nix"]
        );
        assert!(repo::leftover_scaffolds(t.path()).is_empty());
        assert_eq!(
            fs::read_to_string(t.path().join("homes/bob@ws/default.nix")).unwrap(),
            "# homes/bob@ws/default.nix\n"
        );
    }
}
