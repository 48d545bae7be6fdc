//! `cargo xtask diff [USER]`: what a switch would change, without changing it: the files
//! of the new generation against the active one (a unified diff for text), what the
//! pre-flight would do in `$HOME`, and the package changes (`nix store diff-closures`).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Serialize;
use similar::TextDiff;

use crate::{
    Ctx,
    cli::Diff,
    home::{self, Backup, GenerationInfo, HomeTarget, OutLinkDir, Preflight},
    term,
};

#[derive(Debug, Serialize)]
struct Report<'a> {
    user: &'a str,
    system: &'a str,
    /// The active generation, if there is one.
    current: Option<&'a Path>,
    generation: &'a Path,
    added: Vec<&'a str>,
    removed: Vec<&'a str>,
    changed: Vec<Changed>,
    preflight: &'a Preflight,
    /// `nix store diff-closures` output, one line per package (versions and sizes).
    packages: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
struct Changed {
    path: String,
    /// A unified diff, or a note for binary files.
    diff: String,
}

/// What a file of `home-files/` is, for comparison: its bytes, or, for a link to a
/// directory (a `home.file` with a directory source), where it points.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File(Vec<u8>),
    Dir(PathBuf),
}

impl Diff {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let target =
            HomeTarget::resolve(ctx, self.user.clone(), self.system.as_deref(), true, false)?;
        // A read-only task leaves nothing in the repo: the GC root lives as long as the diff.
        let work = OutLinkDir::new()?;
        let generation = target.build(ctx, &work.link())?;
        let HomeTarget {
            env,
            user,
            repo,
            system,
        } = target;
        let profile = env.profile();
        // The active generation is the one whose files $HOME has: Home Manager's GC root of
        // it, which after `switch --specialisation` is the specialisation, not the profile's
        // generation. The profile is the fallback for a machine that never had the root.
        let current = fs::canonicalize(env.current_home_root())
            .or_else(|_| fs::canonicalize(profile.link()))
            .ok();

        // Both `home-files` are links to `*-home-manager-files` store paths: the same path
        // is the same tree (a change of packages only), with nothing to read.
        let new_files = generation.join("home-files");
        let same_files = current.as_ref().is_some_and(|c| {
            let old_files = fs::canonicalize(c.join("home-files")).ok();
            old_files.is_some() && old_files == fs::canonicalize(&new_files).ok()
        });
        let new = read_tree(&new_files)?;
        let old = match &current {
            Some(_) if same_files => new.clone(),
            Some(c) => read_tree(&c.join("home-files"))?,
            None => BTreeMap::new(),
        };
        let added: Vec<&str> = new
            .keys()
            .filter(|k| !old.contains_key(*k))
            .map(String::as_str)
            .collect();
        let removed: Vec<&str> = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .map(String::as_str)
            .collect();
        let mut changed = Vec::new();
        for (rel, n) in &new {
            let Some(o) = old.get(rel) else { continue };
            // Files are links into the store: the same target is the same content, and
            // only files that point elsewhere are read.
            if o.target == n.target {
                continue;
            }
            let (o, n) = (o.load()?, n.load()?);
            if o != n {
                changed.push(Changed {
                    path: rel.clone(),
                    diff: describe(rel, &o, &n),
                });
            }
        }

        // What a plain `switch` would do.
        let backup = Backup::new(&repo.defaults, None, None, false);
        let pf = home::preflight(&GenerationInfo::read(&generation)?, &env, &backup)?;

        // Package changes come from nix itself; its output is the familiar one.
        let packages = match &current {
            Some(c) if c != &generation => ctx
                .nix()
                .cmd(["store", "diff-closures"])?
                .arg(c)
                .arg(&generation)
                .quiet()
                .read()
                .context("comparing the closures with nix store diff-closures")?,
            _ => String::new(),
        };

        if self.json {
            let report = Report {
                user: &user,
                system: &system,
                current: current.as_deref(),
                generation: &generation,
                added,
                removed,
                changed,
                preflight: &pf,
                packages: packages.lines().filter(|l| !l.trim().is_empty()).collect(),
            };
            term::out(&serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        match &current {
            Some(c) => term::info(&format!(
                "{user}: {} → {}",
                c.display(),
                generation.display()
            )),
            None => term::info(&format!(
                "{user} has no active generation yet: every file is new ({})",
                generation.display()
            )),
        }
        if current.as_deref() == Some(generation.as_path()) {
            term::info("the new generation is the active one: a switch would change nothing");
            return Ok(());
        }
        for a in &added {
            term::out(&format!("{} {a}", term::paint(term::Style::Green, "+")));
        }
        for r in &removed {
            term::out(&format!("{} {r}", term::paint(term::Style::Red, "-")));
        }
        for c in &changed {
            term::out(&format!(
                "{} {}",
                term::paint(term::Style::Yellow, "~"),
                c.path
            ));
            term::out(c.diff.trim_end_matches('\n'));
        }
        if added.is_empty() && removed.is_empty() && changed.is_empty() {
            term::out("no file changes");
        }
        if !packages.trim().is_empty() {
            term::out(&format!("packages:\n{}", packages.trim_end()));
        }
        pf.print(&env);
        Ok(())
    }
}

/// One file of `home-files/`, read only when it has to be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    path: PathBuf,
    /// Where the link points (Home Manager's files are links into the store), or, for a
    /// plain file, its own path.
    target: PathBuf,
    /// A link to a directory (a `home.file` with a directory source).
    dir: bool,
}

impl Node {
    fn load(&self) -> Result<Entry> {
        if self.dir {
            return Ok(Entry::Dir(self.target.clone()));
        }
        fs::read(&self.path)
            .map(Entry::File)
            .with_context(|| format!("reading {}", self.path.display()))
    }
}

/// Every file under `dir` by relative path (symlinks followed, as activation links them),
/// without reading contents.
fn read_tree(dir: &Path) -> Result<BTreeMap<String, Node>> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .display()
            .to_string();
        let link = fs::read_link(&path).ok();
        let meta = fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() && link.is_none() {
            walk(base, &path, out)?;
            continue;
        }
        out.insert(
            rel,
            Node {
                target: link.unwrap_or_else(|| path.clone()),
                path,
                dir: meta.is_dir(),
            },
        );
    }
    Ok(())
}

/// A unified diff of two versions of a file, or a one-line note when it is not text.
fn describe(rel: &str, old: &Entry, new: &Entry) -> String {
    match (old, new) {
        (Entry::File(o), Entry::File(n)) => {
            match (std::str::from_utf8(o), std::str::from_utf8(n)) {
                (Ok(o), Ok(n)) => TextDiff::from_lines(o, n)
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("a/{rel}"), &format!("b/{rel}"))
                    .to_string(),
                _ => format!("  binary file: {} → {} bytes\n", o.len(), n.len()),
            }
        }
        (Entry::Dir(o), Entry::Dir(n)) => {
            format!("  directory: {} → {}\n", o.display(), n.display())
        }
        (Entry::Dir(_), Entry::File(_)) => "  a directory becomes a file\n".into(),
        (Entry::File(_), Entry::Dir(_)) => "  a file becomes a directory\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_changes_are_unified_diffs() {
        let d = describe(
            ".bashrc",
            &Entry::File(b"a\nb\n".to_vec()),
            &Entry::File(b"a\nc\n".to_vec()),
        );
        assert!(
            d.contains("--- a/.bashrc") && d.contains("-b") && d.contains("+c"),
            "{d}"
        );
        let d = describe("x", &Entry::File(vec![0xff, 0]), &Entry::File(vec![0xfe]));
        assert!(d.contains("binary file: 2 → 1 bytes"), "{d}");
    }

    #[test]
    fn trees_are_read_through_links() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("src/d")).unwrap();
        fs::write(t.path().join("src/f"), "x").unwrap();
        fs::create_dir_all(t.path().join("tree/a")).unwrap();
        std::os::unix::fs::symlink(t.path().join("src/f"), t.path().join("tree/a/f")).unwrap();
        std::os::unix::fs::symlink(t.path().join("src/d"), t.path().join("tree/d")).unwrap();
        let tree = read_tree(&t.path().join("tree")).unwrap();
        assert_eq!(tree["a/f"].target, t.path().join("src/f"));
        assert_eq!(tree["a/f"].load().unwrap(), Entry::File(b"x".to_vec()));
        assert_eq!(
            tree["d"].load().unwrap(),
            Entry::Dir(t.path().join("src/d"))
        );
    }
}
