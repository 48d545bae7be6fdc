//! Scaffolding shared by `new-user` and `new-host`: templates rendered into a set of new
//! files, checked before anything is written, written all-or-nothing, staged with
//! `git add --intent-to-add` (a flake only sees files git knows) and evaluated in one nix
//! call. The tasks only decide which files to write and what to evaluate.

use std::{
    fs,
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
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

    /// Writes every file or none: on a failure half-way, the files and directories this
    /// call created are removed again, and only those.
    pub fn write(&self, root: &Path) -> Result<()> {
        let mut created = Created::default();
        for (rel, content) in &self.files {
            if let Err(e) = created.write(root, rel, content) {
                let leftovers = created.undo();
                let cleanup = if leftovers.is_empty() {
                    "nothing was left behind".to_string()
                } else {
                    format!(
                        "could not remove {}; delete them by hand",
                        leftovers.join(", ")
                    )
                };
                return Err(e.context(format!("writing {rel} failed; {cleanup}")));
            }
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
        self.write(&ctx.root)?;
        for rel in self.paths() {
            term::info(&format!("created {rel}"));
        }
        self.stage(ctx)?;
        evaluate(&ctx.nix(), &ctx.root, &expr, eval, &self.paths())
    }

    fn stage_cmd<'a>(&self, ctx: &'a Ctx) -> xshell::Cmd<'a> {
        let paths = self.paths();
        cmd!(ctx.sh, "git add --intent-to-add -- {paths...}")
    }

    /// `git add --intent-to-add`: flakes ignore untracked files, the most common cause of
    /// "path does not exist" right after adding a module. Outside git there is nothing to do.
    fn stage(&self, ctx: &Ctx) -> Result<()> {
        let in_git = nix::find_on_path("git").is_some()
            && cmd!(ctx.sh, "git rev-parse --is-inside-work-tree")
                .quiet()
                .ignore_stderr()
                .read()
                .is_ok_and(|out| out.trim() == "true");
        if !in_git {
            term::info("not a git repository: nothing to stage");
            return Ok(());
        }
        let stage = self.stage_cmd(ctx);
        let shown = stage.to_string();
        term::command(&shown);
        stage.quiet().run().map_err(|e| {
            anyhow!(
                "the files were written but git could not stage them ({e}); the flake cannot see them until you run: {shown}"
            )
        })
    }
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

/// What one [`Scaffold::write`] created, so a failure can take exactly that back.
#[derive(Default)]
struct Created {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Created {
    fn write(&mut self, root: &Path, rel: &str, content: &str) -> Result<()> {
        let path = root.join(rel);
        // Create missing ancestors one by one (not create_dir_all) to know which are ours.
        let mut dir = root.to_path_buf();
        let parents: Vec<_> = Path::new(rel)
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .collect();
        for part in parents {
            dir.push(part);
            if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            self.dirs.push(dir.clone());
        }
        // create_new: a file that appeared since the check is never overwritten.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        self.files.push(path.clone());
        file.write_all(content.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Removes what was created, newest first; returns what could not be removed.
    fn undo(self) -> Vec<String> {
        let mut left = Vec::new();
        for f in self.files.iter().rev() {
            if fs::remove_file(f).is_err() {
                left.push(f.display().to_string());
            }
        }
        // remove_dir only removes empty directories: anything someone else put there stays.
        for d in self.dirs.iter().rev() {
            if fs::remove_dir(d).is_err() {
                left.push(d.display().to_string());
            }
        }
        left
    }
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
    fn a_failure_half_way_removes_what_was_written() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        // homes/ does not exist yet; a file sits where the third file's directory must go,
        // which check_free would refuse: write() is called directly to force the failure.
        fs::create_dir(root.join("systems")).unwrap();
        fs::write(root.join("systems/web"), "in the way").unwrap();
        let s = scaffold(&[
            "homes/bob/default.nix",
            "homes/bob/meta.nix",
            "systems/web/default.nix",
        ]);
        let err = format!("{:#}", s.write(root).unwrap_err());
        assert!(
            err.contains("writing systems/web/default.nix failed; nothing was left behind"),
            "{err}"
        );
        assert!(
            !root.join("homes").exists(),
            "homes/ was created by the write and must be gone"
        );
        assert_eq!(
            fs::read_to_string(root.join("systems/web")).unwrap(),
            "in the way"
        );
        assert!(root.join("systems").is_dir());
    }

    #[test]
    fn writes_every_file() {
        let t = tempfile::tempdir().unwrap();
        scaffold(&["homes/bob/default.nix", "homes/bob@ws/default.nix"])
            .write(t.path())
            .unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("homes/bob@ws/default.nix")).unwrap(),
            "# homes/bob@ws/default.nix\n"
        );
    }
}
