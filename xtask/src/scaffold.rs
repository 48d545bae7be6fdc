//! Scaffolding shared by `new-user` and `new-host`: templates rendered into a set of new
//! files, checked before anything is written, written all-or-nothing, staged with
//! `git add --intent-to-add` (a flake only sees files git knows) and evaluated in one nix
//! call. The tasks only decide which files to write and what to evaluate.
//!
//! All-or-nothing, even when the process is killed (the protocol, [`Scaffold::write`]):
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

use crate::{
    Ctx,
    nix::{self, Nix, NixError},
    repo, term,
};

/// Fills `@key@` placeholders (nixpkgs' substituteAll style). A `@` that does not open a
/// known key is kept, so `homes/@user@@global` renders as `homes/bob@global`; values are
/// inserted verbatim and never re-scanned, so a value containing `@` cannot inject a key.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let value = after.find('@').and_then(|end| {
            let key = &after[..end];
            vars.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v, end))
        });
        match value {
            Some((v, end)) => {
                out.push_str(v);
                rest = &after[end + 1..];
            }
            None => {
                out.push('@');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces the template line that starts with `marker` (after its indentation) by
/// `replacement` at the same indentation, or removes it with `None`. Used where a value
/// cannot be a placeholder because the template must stay a Nix file that parses: the
/// template shows the default (`users = [ ];`, a commented example) and this swaps it.
pub fn replace_line(text: &str, marker: &str, replacement: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_start();
        if !body.starts_with(marker) {
            out.push_str(line);
            continue;
        }
        if let Some(new) = replacement {
            out.push_str(&line[..line.len() - body.len()]);
            out.push_str(new);
            out.push('\n');
        }
    }
    out
}

/// A Nix list of strings in the repo's (nixfmt) style: `[ ]`, `[ "a" ]`, or one item a line.
pub fn nix_string_list(items: &[String], indent: &str) -> String {
    match items {
        [] => "[ ]".to_string(),
        [one] => format!("[ {} ]", repo::nix_string(one)),
        many => {
            let lines: String = many
                .iter()
                .map(|i| format!("{indent}  {}\n", repo::nix_string(i)))
                .collect();
            format!("[\n{lines}{indent}]")
        }
    }
}

/// Refuses, before anything is written, when the repository already has errors: a broken
/// name stops the flake's discovery of every home and host, and a broken meta.nix (syntax,
/// shape, system) breaks its host; either way the new files could not be evaluated, and a
/// failure after writing would leave them behind. meta.nix is read with nix (one call);
/// without nix only the layout is checked, as `check --lint-only` does.
pub fn ensure_sound(ctx: &Ctx, repo: &mut repo::Repo) -> Result<()> {
    if nix::find_on_path("nix").is_some() {
        repo.load_meta(&ctx.nix())?;
    }
    let errors: Vec<String> = repo
        .findings
        .iter()
        .filter(|f| f.severity == repo::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    if !errors.is_empty() {
        bail!(
            "the repository has errors, so the new files could not be checked against it; nothing was written:\n  {}\n  fix them first (cargo xtask check lists everything), then run this again",
            errors.join("\n  ")
        );
    }
    Ok(())
}

/// The files a task is about to create, each in a directory that must not exist yet.
#[derive(Debug, Default)]
pub struct Scaffold {
    /// Repo-relative path and content, in writing order.
    files: Vec<(String, String)>,
}

/// What the flake is asked after writing: attribute paths of its outputs, all evaluated in
/// one nix process, and the command that repeats the check later.
pub struct Evaluation {
    pub attrs: Vec<String>,
    pub later: String,
}

impl Scaffold {
    pub fn file(&mut self, rel: String, content: String) {
        self.files.push((rel, content));
    }

    pub fn paths(&self) -> Vec<&str> {
        self.files.iter().map(|(rel, _)| rel.as_str()).collect()
    }

    /// The directories the scaffold creates (`homes/bob`, `systems/web`): the parents of its
    /// files. Scaffolding never adds to an existing one.
    fn new_dirs(&self) -> Vec<&str> {
        let mut dirs: Vec<&str> = Vec::new();
        for (rel, _) in &self.files {
            let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// Refuses when any new directory already exists in any form (directory, file, link,
    /// even a dangling one): the user's files are never overwritten or mixed with new ones.
    pub fn check_free(&self, root: &Path) -> Result<()> {
        let mut taken = Vec::new();
        for dir in self.new_dirs() {
            match fs::symlink_metadata(root.join(dir)) {
                Ok(meta) => {
                    let kind = if meta.is_dir() { "directory" } else { "file" };
                    taken.push(format!("{dir} already exists (a {kind})"));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => taken.push(format!("{dir} cannot be created: {e}")),
            }
        }
        if !taken.is_empty() {
            bail!(
                "{}; nothing was written (existing files are never overwritten: edit them, or move them away and run this again)",
                taken.join("; ")
            );
        }
        Ok(())
    }

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

    /// Everything after validation: print (dry run) or write, stage and evaluate.
    pub fn apply(&self, ctx: &Ctx, dry_run: bool, eval: &Evaluation) -> Result<()> {
        self.check_free(&ctx.root)?;
        let expr = eval_expr(&ctx.root, &eval.attrs);
        if dry_run {
            let mut out = String::new();
            for (rel, content) in &self.files {
                out.push_str(&format!("--- {rel}\n{content}"));
            }
            out.push_str(&format!("{}\n", self.stage_cmd(ctx)));
            match ctx.nix().eval_expr_cmd(&expr) {
                Ok(c) => out.push_str(&format!("{c}\n")),
                Err(_) => out.push_str("# nix is not on PATH: the evaluation would be skipped\n"),
            }
            // write_all instead of print!: a closed pipe (`| head`) is an error, not a panic.
            std::io::stdout()
                .lock()
                .write_all(out.as_bytes())
                .context("writing to stdout")?;
            term::info("dry run: nothing was written");
            return Ok(());
        }
        let staged = self.write(&ctx.root, |paths| stage(ctx, paths))?;
        for rel in self.paths() {
            term::info(&format!("created {rel}"));
        }
        staged?;
        evaluate(&ctx.nix(), &ctx.root, &expr, eval, &self.paths())
    }

    fn stage_cmd<'a>(&self, ctx: &'a Ctx) -> xshell::Cmd<'a> {
        stage_cmd(ctx, &self.paths())
    }
}

fn stage_cmd<'a>(ctx: &'a Ctx, paths: &[&str]) -> xshell::Cmd<'a> {
    cmd!(ctx.sh, "git add --intent-to-add -- {paths...}")
}

fn in_git(ctx: &Ctx) -> bool {
    nix::find_on_path("git").is_some()
        && cmd!(ctx.sh, "git rev-parse --is-inside-work-tree")
            .quiet()
            .ignore_stderr()
            .read()
            .is_ok_and(|out| out.trim() == "true")
}

/// `git add --intent-to-add`: flakes ignore untracked files, the most common cause of
/// "path does not exist" right after adding a module. Outside git there is nothing to do.
fn stage(ctx: &Ctx, paths: &[&str]) -> Result<()> {
    if !in_git(ctx) {
        term::info("not a git repository: nothing to stage");
        return Ok(());
    }
    let stage = stage_cmd(ctx, paths);
    let shown = stage.to_string();
    term::command(&shown);
    stage.quiet().run().map_err(|e| {
        anyhow!(
            "the files were written but git could not stage them ({e}); the flake cannot see them until you run: {shown}"
        )
    })
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

/// One nix process for every attribute: `getFlake` of `nix::flake_ref` reads the flake as
/// `nix eval ROOT#…` would (tracked and intent-to-add files only, on every nix version),
/// and a list holds all the results. It
/// also names outputs exactly: `nix eval ROOT#homeConfigurations.bob` would first try
/// `legacyPackages.<this system>.homeConfigurations.bob`, which lib/ provides, and so
/// ignore the system in homes/bob/meta.nix.
fn eval_expr(root: &Path, attrs: &[String]) -> String {
    let items: String = attrs.iter().map(|a| format!(" f.{a}")).collect();
    format!(
        "let f = builtins.getFlake {}; in [{items} ]",
        repo::nix_string(&nix::flake_ref(root))
    )
}

/// Evaluates the new files. An error in them (or anywhere the evaluation reaches) fails
/// the task with file and line; a nix that cannot run at all only warns, because the
/// scaffold itself is complete and `eval.later` checks it once nix works.
fn evaluate(nix: &Nix, root: &Path, expr: &str, eval: &Evaluation, written: &[&str]) -> Result<()> {
    if nix::find_on_path("nix").is_none() {
        term::warning(&format!(
            "nix is not on PATH, so the new files were not evaluated; once nix is installed run: {}",
            eval.later
        ));
        return Ok(());
    }
    let e = match nix.eval_expr_json::<Vec<serde_json::Value>>(expr) {
        Ok(_) => {
            term::info(&term::paint(
                term::Style::Green,
                "the new configuration evaluates",
            ));
            return Ok(());
        }
        Err(e) => e,
    };
    // nix's own stderr when the runner kept it; otherwise (a nix without flakes) the
    // runner's message, which already says what to do.
    let (raw, message) = match e.downcast_ref::<NixError>() {
        Some(ne) => (ne.stderr.clone(), ne.message()),
        None => {
            let text = format!("{e:#}");
            let first = text.lines().next().unwrap_or_default().to_string();
            (text, first)
        }
    };
    if nix::cannot_run(&raw) {
        term::warning(&format!(
            "the new files were not evaluated, nix cannot run here: {message}\n  they are written and staged; once nix can fetch the flake's inputs, run: {}",
            eval.later
        ));
        return Ok(());
    }
    let location = match locate(root, &raw, written) {
        Some((file, Some(line))) => format!("{file}:{line}: "),
        Some((file, None)) => format!("{file}: "),
        None => String::new(),
    };
    bail!(
        "the files were written and staged, but the configuration does not evaluate:\n  {location}{message}\n  fix it, then run: {}",
        eval.later
    )
}

/// The repo-relative file (and line) a nix error points at, preferring one of the
/// `written` files.
fn locate(root: &Path, err: &str, written: &[&str]) -> Option<(String, Option<u32>)> {
    let mut found = repo::nix_error_locations(root, err);
    let preferred = found
        .iter()
        .position(|(f, _)| written.contains(&f.as_str()))
        .unwrap_or(0);
    (!found.is_empty()).then(|| found.swap_remove(preferred))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_known_keys_only() {
        let vars = [("user", "bob"), ("host", "ws")];
        assert_eq!(render("homes/@user@@global", &vars), "homes/bob@global");
        assert_eq!(
            render("homes/<user>@@host@ x@y.org @", &vars),
            "homes/<user>@ws x@y.org @"
        );
        // A value is not re-scanned: "@host@" inside it stays literal.
        assert_eq!(
            render("@user@", &[("user", "@host@"), ("host", "no")]),
            "@host@"
        );
    }

    #[test]
    fn lines_are_replaced_at_their_indentation() {
        let t = "{\n  # a = 1;\n  # note\n  b = 2;\n}\n";
        assert_eq!(
            replace_line(t, "# a = ", Some("a = \"x\";")),
            "{\n  a = \"x\";\n  # note\n  b = 2;\n}\n"
        );
        assert_eq!(
            replace_line(t, "# note", None),
            "{\n  # a = 1;\n  b = 2;\n}\n"
        );
    }

    #[test]
    fn string_lists_are_formatted_like_nixfmt() {
        assert_eq!(nix_string_list(&[], "  "), "[ ]");
        assert_eq!(nix_string_list(&["bob".into()], "  "), "[ \"bob\" ]");
        assert_eq!(
            nix_string_list(&["a".into(), "b".into()], "  "),
            "[\n    \"a\"\n    \"b\"\n  ]"
        );
    }

    #[test]
    fn errors_are_located_in_the_written_files() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("lib")).unwrap();
        fs::write(t.path().join("lib/default.nix"), "{ }\n").unwrap();
        fs::create_dir_all(t.path().join("homes/bob")).unwrap();
        fs::write(t.path().join("homes/bob/default.nix"), "{ }\n").unwrap();
        let (nixpkgs, repo) = ("a".repeat(32), "b".repeat(32));
        let err = format!(
            "error: undefined variable 'x' at /nix/store/{nixpkgs}-source/lib/modules.nix:5:1: at /nix/store/{repo}-source/lib/default.nix:9:1: at /nix/store/{repo}-source/homes/bob/default.nix:3:15:"
        );
        let err = err.as_str();
        assert_eq!(
            locate(t.path(), err, &["homes/bob/default.nix"]),
            Some(("homes/bob/default.nix".into(), Some(3)))
        );
        // nixpkgs' lib/modules.nix is not in the repo; lib/default.nix is.
        assert_eq!(
            locate(t.path(), err, &[]),
            Some(("lib/default.nix".into(), Some(9)))
        );
        assert_eq!(locate(t.path(), "error: oops", &[]), None);
    }

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
