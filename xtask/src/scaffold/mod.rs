//! Scaffolding shared by `new-user` and `new-host`: templates rendered into a set of new
//! files, checked before anything is written, written all-or-nothing, staged with
//! `git add --intent-to-add` (a flake only sees files git knows) and evaluated in one nix
//! call. The tasks only decide which files to write and what to evaluate.
//!
//! The text of the files comes from `template`; writing them all-or-nothing, even when
//! the process is killed, is `atomic`.

mod atomic;
mod template;

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

pub use atomic::prepare;
pub use template::{nix_string_list, render, replace_line};

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

    /// Everything after validation: print (dry run) or write, stage and evaluate.
    pub fn apply(&self, ctx: &Ctx, dry_run: bool, eval: &Evaluation) -> Result<()> {
        self.check_free(&ctx.root)?;
        let expr = eval_expr(&ctx.root, &eval.attrs);
        if dry_run {
            let mut out = String::new();
            for (rel, content) in &self.files {
                out.push_str(&format!("--- {rel}\n{content}"));
            }
            out.push_str(&format!("{}\n", nix::prepare(self.stage_cmd(ctx)).1));
            match ctx.nix().eval_expr_cmd(&expr) {
                Ok(c) => out.push_str(&format!("{}\n", nix::prepare(c).1)),
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
    let (mut stage, shown) = crate::nix::prepare(stage_cmd(ctx, paths));
    term::command(&shown);
    let why = match stage.stdin(std::process::Stdio::null()).status() {
        Ok(status) if status.success() => return Ok(()),
        Ok(status) => status.to_string(),
        Err(e) => e.to_string(),
    };
    Err(anyhow!(
        "the files were written but git could not stage them ({why}); the flake cannot see them until you run: {shown}"
    ))
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
}
