//! What changes from one generation to another: the files of `home-files/` (added,
//! removed, changed with a unified diff for text), the out-of-store links among them whose
//! target is missing, and the packages (`closure`). Shared by `diff` and `switch --diff` /
//! `--ask`, which show the same thing.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Serialize;
use similar::TextDiff;

use super::{env::UserEnv, profile::Profile};
use crate::{closure::PackageDiff, nix::Nix, term};

/// The generation whose files `$HOME` has: Home Manager's GC root of it, which after
/// `switch --specialisation` is the specialisation, not the profile's generation; the
/// profile is the fallback for a machine that never had the root. `None` before the first
/// switch.
pub fn active_generation(env: &UserEnv, profile: &Profile) -> Option<PathBuf> {
    fs::canonicalize(env.current_home_root())
        .or_else(|_| fs::canonicalize(profile.link()))
        .ok()
}

/// From `old` (none: a first install) to `new`.
#[derive(Debug)]
pub struct Comparison {
    pub files: FileDiff,
    pub packages: PackageDiff,
}

impl Comparison {
    pub fn between(nix: &Nix<'_>, old: Option<&Path>, new: &Path) -> Result<Comparison> {
        Ok(Comparison {
            files: FileDiff::between(old, new)?,
            packages: PackageDiff::between(nix, old, new)?,
        })
    }

    /// Files, then packages, one line at a time through `line`.
    pub fn print(&self, line: fn(&str)) {
        self.files.print(line);
        self.packages.print(line);
    }
}

#[derive(Debug, Default, Serialize)]
pub struct FileDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
    /// Links (`mkOutOfStoreSymlink`) whose target does not exist, in either generation:
    /// activation links them all the same, so they are shown, not an error.
    pub dangling: Vec<Dangling>,
}

#[derive(Debug, Serialize)]
pub struct Changed {
    pub path: String,
    /// A unified diff, or a note for binary files, directories and dangling links.
    pub diff: String,
}

#[derive(Debug, Serialize)]
pub struct Dangling {
    pub path: String,
    pub target: PathBuf,
    /// `old`, `new` or `both`.
    pub generation: &'static str,
}

impl FileDiff {
    pub fn between(old: Option<&Path>, new: &Path) -> Result<FileDiff> {
        // Both `home-files` are links to `*-home-manager-files` store paths: the same path
        // is the same tree (a change of packages only), with nothing to read.
        let new_files = new.join("home-files");
        let same_files = old.is_some_and(|c| {
            let old_files = fs::canonicalize(c.join("home-files")).ok();
            old_files.is_some() && old_files == fs::canonicalize(&new_files).ok()
        });
        let new = read_tree(&new_files)?;
        let old = match old {
            Some(_) if same_files => new.clone(),
            Some(c) => read_tree(&c.join("home-files"))?,
            None => BTreeMap::new(),
        };
        let mut d = FileDiff {
            added: new
                .keys()
                .filter(|k| !old.contains_key(*k))
                .cloned()
                .collect(),
            removed: old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .cloned()
                .collect(),
            ..FileDiff::default()
        };
        for (rel, n) in &new {
            let Some(o) = old.get(rel) else { continue };
            // Files are links into the store: the same target is the same content, and
            // only files that point elsewhere are read.
            if o.target == n.target {
                continue;
            }
            let (o, n) = (o.load()?, n.load()?);
            if o != n {
                d.changed.push(Changed {
                    path: rel.clone(),
                    diff: describe(rel, &o, &n),
                });
            }
        }
        let mut dangling: BTreeMap<(&str, &Path), &'static str> = BTreeMap::new();
        for (side, tree) in [("old", &old), ("new", &new)] {
            for (rel, node) in tree.iter().filter(|(_, n)| n.dangling) {
                dangling
                    .entry((rel.as_str(), node.target.as_path()))
                    .and_modify(|g| *g = "both")
                    .or_insert(side);
            }
        }
        d.dangling = dangling
            .into_iter()
            .map(|((path, target), generation)| Dangling {
                path: path.to_string(),
                target: target.to_path_buf(),
                generation,
            })
            .collect();
        Ok(d)
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// `+ added`, `- removed`, `~ changed` with its diff, then the dangling links.
    pub fn print(&self, line: fn(&str)) {
        for a in &self.added {
            line(&format!("{} {a}", term::paint(term::Style::Green, "+")));
        }
        for r in &self.removed {
            line(&format!("{} {r}", term::paint(term::Style::Red, "-")));
        }
        for c in &self.changed {
            line(&format!(
                "{} {}",
                term::paint(term::Style::Yellow, "~"),
                c.path
            ));
            line(c.diff.trim_end_matches('\n'));
        }
        if self.is_empty() {
            line("no file changes");
        }
        for d in &self.dangling {
            let which = match d.generation {
                "both" => "in both generations",
                "old" => "in the old generation",
                _ => "in the new generation",
            };
            line(&format!(
                "{} {} → {} is a dangling link {which}: its out-of-store target (mkOutOfStoreSymlink) does not exist; activation links it all the same",
                term::paint(term::Style::Yellow, "!"),
                d.path,
                d.target.display()
            ));
        }
    }
}

/// What a file of `home-files/` is, for comparison: its bytes, or, for a link to a
/// directory (a `home.file` with a directory source), where it points, or for a link
/// whose target is missing, that target.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File(Vec<u8>),
    Dir(PathBuf),
    Missing(PathBuf),
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
    /// A link whose target does not exist (an out-of-store link to a missing path).
    dangling: bool,
}

impl Node {
    fn load(&self) -> Result<Entry> {
        if self.dangling {
            return Ok(Entry::Missing(self.target.clone()));
        }
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
        // Not a generation (a store path of another kind): no files.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(());
        }
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
        let meta = match (fs::metadata(&path), &link) {
            (Ok(m), _) => Some(m),
            // A link that resolves to nothing: an out-of-store link whose target is gone.
            (Err(_), Some(_)) => None,
            (Err(e), None) => {
                return Err(e).with_context(|| format!("reading {}", path.display()));
            }
        };
        if meta.as_ref().is_some_and(|m| m.is_dir()) && link.is_none() {
            walk(base, &path, out)?;
            continue;
        }
        out.insert(
            rel,
            Node {
                target: link.unwrap_or_else(|| path.clone()),
                path,
                dir: meta.as_ref().is_some_and(|m| m.is_dir()),
                dangling: meta.is_none(),
            },
        );
    }
    Ok(())
}

/// A unified diff of two versions of a file, or a one-line note when it is not text.
fn describe(rel: &str, old: &Entry, new: &Entry) -> String {
    let what = |e: &Entry| match e {
        Entry::File(b) => format!("a file of {} bytes", b.len()),
        Entry::Dir(p) => format!("a directory ({})", p.display()),
        Entry::Missing(p) => format!("a dangling link to {}", p.display()),
    };
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
        (o, n) => format!("  {} → {}\n", what(o), what(n)),
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
        let d = describe(
            "l",
            &Entry::Missing("/gone".into()),
            &Entry::File(b"x".to_vec()),
        );
        assert_eq!(d, "  a dangling link to /gone → a file of 1 bytes\n");
    }

    #[test]
    fn trees_are_read_through_links() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("src/d")).unwrap();
        fs::write(t.path().join("src/f"), "x").unwrap();
        fs::create_dir_all(t.path().join("tree/a")).unwrap();
        std::os::unix::fs::symlink(t.path().join("src/f"), t.path().join("tree/a/f")).unwrap();
        std::os::unix::fs::symlink(t.path().join("src/d"), t.path().join("tree/d")).unwrap();
        std::os::unix::fs::symlink(t.path().join("gone"), t.path().join("tree/g")).unwrap();
        let tree = read_tree(&t.path().join("tree")).unwrap();
        assert_eq!(tree["a/f"].target, t.path().join("src/f"));
        assert_eq!(tree["a/f"].load().unwrap(), Entry::File(b"x".to_vec()));
        assert_eq!(
            tree["d"].load().unwrap(),
            Entry::Dir(t.path().join("src/d"))
        );
        assert_eq!(
            tree["g"].load().unwrap(),
            Entry::Missing(t.path().join("gone"))
        );
    }
}
