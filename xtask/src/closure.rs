//! Package changes between two closures, computed here rather than by
//! `nix store diff-closures`: one `nix-store --query --graphml` per side (each path of
//! the closure with its NAR size), both running at once, then
//! every store path's `name-version` grouped by name, as nvd and dix do. A name only in
//! the new closure is added, only in the old one removed, in both with other versions
//! changed; rebuilds of the same version are no package change. The closure sizes are the
//! sums of the paths' NAR sizes (what `nix path-info -S` calls the closure size).
//!
//! Generic over store paths (generations, systems); `home` and the tasks use it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{nix::Nix, term};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    /// The version, `""` for none; several versions in one closure are joined by `, `.
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub name: String,
    pub old: String,
    pub new: String,
}

/// Closure sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Size {
    pub before: u64,
    pub after: u64,
    pub delta: i64,
}

/// The package changes from one closure to another, each name once, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageDiff {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    pub changed: Vec<Change>,
    pub size: Size,
}

impl PackageDiff {
    /// The package changes from `old` (none: a first install, everything is added) to
    /// `new`, both store paths (or links to them).
    pub fn between(nix: &Nix<'_>, old: Option<&Path>, new: &Path) -> Result<PackageDiff> {
        let roots: Vec<&Path> = old.into_iter().chain([new]).collect();
        let mut sides = Summary::of_all(nix, &roots)?;
        let new = sides.pop().context("nix described no closure")?;
        let old = sides.pop();
        Ok(diff(old.as_ref(), &new))
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// The human form, one line per package through `line` (stdout for `diff`, stderr
    /// where the diff accompanies a switch), then the closure sizes.
    pub fn print(&self, line: fn(&str)) {
        if self.is_empty() {
            line("no package changes");
        } else {
            line(&format!(
                "packages: {} changed, {} added, {} removed",
                self.changed.len(),
                self.added.len(),
                self.removed.len()
            ));
        }
        let v = |s: &str| if s.is_empty() { "<none>" } else { s }.to_string();
        let with_version = |p: &Package| {
            if p.version.is_empty() {
                p.name.clone()
            } else {
                format!("{} {}", p.name, p.version)
            }
        };
        for c in &self.changed {
            line(&format!(
                "  {} {} {} → {}",
                term::paint(term::Style::Yellow, "~"),
                c.name,
                v(&c.old),
                v(&c.new)
            ));
        }
        for p in &self.added {
            line(&format!(
                "  {} {}",
                term::paint(term::Style::Green, "+"),
                with_version(p)
            ));
        }
        for p in &self.removed {
            line(&format!(
                "  {} {}",
                term::paint(term::Style::Red, "-"),
                with_version(p)
            ));
        }
        let s = self.size;
        let sign = if s.delta < 0 { "-" } else { "+" };
        line(&format!(
            "closure size: {} → {} ({sign}{})",
            term::human_size(s.before),
            term::human_size(s.after),
            term::human_size(s.delta.unsigned_abs())
        ));
    }
}

/// The outputs a multi-output package's store path name may end in (`foo-1.2-man`).
const OUTPUTS: [&str; 7] = ["bin", "dev", "doc", "info", "lib", "man", "out"];

/// A store path's file name without its hash: `<hash>-jq-1.7.1` → `jq-1.7.1`; None for a
/// name that does not start with a store hash (32 characters and a `-`).
pub fn strip_store_hash(file_name: &str) -> Option<&str> {
    match file_name.split_once('-') {
        Some((hash, rest))
            if hash.len() == 32
                && hash.bytes().all(|b| b.is_ascii_alphanumeric())
                && !rest.is_empty() =>
        {
            Some(rest)
        }
        _ => None,
    }
}

/// `name-version` → (name, version), as nvd and dix split store path names: the version
/// starts at the first `-` followed by a digit (`python3.12-requests-2.31.0` →
/// `python3.12-requests`, `2.31.0`), without an output suffix (`man-db-2.12.1-man` →
/// `2.12.1`, so a package's outputs are one version); None for a name without one
/// (`home-manager-files`).
pub fn split_name_version(s: &str) -> (&str, Option<&str>) {
    let bytes = s.as_bytes();
    let Some(at) = (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'-' && bytes[i + 1].is_ascii_digit())
    else {
        return (s, None);
    };
    let mut version = &s[at + 1..];
    if let Some((v, output)) = version.rsplit_once('-')
        && OUTPUTS.contains(&output)
        && !v.is_empty()
    {
        version = v;
    }
    (&s[..at], Some(version))
}

/// One closure summarised: every package name with its versions, and the closure size.
/// What `diff` compares, and what the cache keeps for a store path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `(name, version)` of every path, sorted by name then version, each pair once; the
    /// version is `""` for a name without one.
    pub packages: Vec<(String, String)>,
    pub size: u64,
}

/// The cache entries' format; a change of it makes older entries misses.
const CACHE_FORMAT: &str = "homelab-xtask closure summary 2";

impl Summary {
    /// From a closure's paths (base names) and their NAR sizes.
    pub fn of(closure: &[(&str, u64)]) -> Summary {
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(closure.len());
        let mut size = 0;
        for (path, nar_size) in closure {
            let (name, version) = split_name_version(strip_store_hash(path).unwrap_or(path));
            pairs.push((name, version.unwrap_or_default()));
            size += nar_size;
        }
        pairs.sort_unstable();
        pairs.dedup();
        Summary {
            packages: pairs
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            size,
        }
    }

    /// The summary of each root's closure. A store path's closure never changes while
    /// the path exists, so the summaries of roots seen before come from the cache; nix
    /// is asked only about the others (one `nix-store --query --graphml` each, all at once), and
    /// their answers are kept for next time: `diff` after a build asks only about the
    /// new generation, the active one being known since the last diff or switch.
    pub fn of_all(nix: &Nix<'_>, roots: &[&Path]) -> Result<Vec<Summary>> {
        let keys: Vec<Option<CacheKey>> = roots.iter().map(|r| CacheKey::of(r)).collect();
        let mut found: Vec<Option<Summary>> = keys
            .iter()
            .map(|k| k.as_ref().and_then(CacheKey::read))
            .collect();
        let missing: Vec<usize> = (0..roots.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let asked: Vec<PathBuf> = missing.iter().map(|&i| roots[i].to_path_buf()).collect();
            // Each side is summarised, and kept, by the thread that reads its nix, while
            // the other nix still runs.
            let computed = nix.closures(&asked, |i, closure| {
                let summary = Summary::of(closure);
                if let Some(key) = &keys[missing[i]] {
                    key.write(&summary);
                }
                summary
            })?;
            for (i, summary) in missing.into_iter().zip(computed) {
                found[i] = Some(summary);
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    fn to_text(&self) -> String {
        let mut text = String::with_capacity(self.packages.len() * 24);
        text.push_str("size ");
        text.push_str(&self.size.to_string());
        text.push('\n');
        for (name, version) in &self.packages {
            text.push_str(name);
            text.push('\t');
            text.push_str(version);
            text.push('\n');
        }
        text
    }

    fn from_text(text: &str) -> Option<Summary> {
        let (first, rest) = text.split_once('\n')?;
        let size = first.strip_prefix("size ")?.parse().ok()?;
        let mut packages = Vec::new();
        let bytes = rest.as_bytes();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', bytes) {
            let line = &rest[start..end];
            let tab = memchr::memchr(b'\t', line.as_bytes())?;
            packages.push((line[..tab].to_string(), line[tab + 1..].to_string()));
            start = end + 1;
        }
        (start == bytes.len()).then_some(Summary { packages, size })
    }
}

/// Where a store path's summary is cached, and what it is valid for: the path's inode and
/// change time. A store path is immutable while it exists; one collected and built again
/// is a new directory, with a new inode and change time, so a stale entry never matches.
struct CacheKey {
    file: PathBuf,
    store: PathBuf,
    header: String,
}

impl CacheKey {
    /// None for what is not a store path (or when there is no cache directory).
    fn of(root: &Path) -> Option<CacheKey> {
        CacheKey::at(
            root,
            &crate::nix::store_dir(),
            &crate::cache::dir("closures")?,
        )
    }

    fn at(root: &Path, store: &Path, cache: &Path) -> Option<CacheKey> {
        use std::os::unix::fs::MetadataExt;
        let path = std::fs::canonicalize(root).ok()?;
        if path.parent()? != store {
            return None;
        }
        let meta = std::fs::metadata(&path).ok()?;
        let name = path.file_name()?.to_str()?;
        Some(CacheKey {
            file: cache.join(name),
            store: store.to_path_buf(),
            header: format!(
                "{CACHE_FORMAT} ino {} ctime {}.{:09}",
                meta.ino(),
                meta.ctime(),
                meta.ctime_nsec()
            ),
        })
    }

    fn read(&self) -> Option<Summary> {
        Summary::from_text(&crate::cache::read(&self.file, &self.header)?)
    }

    /// Keeps `summary`, and drops the entries of store paths that no longer exist (the
    /// garbage collector took them), so the cache does not outgrow the store.
    fn write(&self, summary: &Summary) {
        if !crate::cache::write(&self.file, &self.header, &summary.to_text()) {
            return;
        }
        if let Some(dir) = self.file.parent() {
            crate::cache::prune(dir, |name| !self.store.join(name).exists());
        }
    }
}

fn diff(old: Option<&Summary>, new: &Summary) -> PackageDiff {
    let none = Summary::default();
    let old = old.unwrap_or(&none);
    let mut d = PackageDiff {
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        size: Size {
            before: old.size,
            after: new.size,
            delta: new.size as i64 - old.size as i64,
        },
    };
    // Both sides are sorted by name: one pass over the two, a name at a time.
    fn by_name(s: &Summary) -> impl Iterator<Item = &[(String, String)]> {
        s.packages.chunk_by(|a, b| a.0 == b.0)
    }
    let (mut ov, mut nv) = (by_name(old).peekable(), by_name(new).peekable());
    let join = |group: &[(String, String)]| {
        group
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    loop {
        let order = match (ov.peek(), nv.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(o), Some(n)) => o[0].0.cmp(&n[0].0),
        };
        match order {
            std::cmp::Ordering::Less => {
                let o = ov.next().unwrap_or_default();
                d.removed.push(Package {
                    name: o[0].0.clone(),
                    version: join(o),
                });
            }
            std::cmp::Ordering::Greater => {
                let n = nv.next().unwrap_or_default();
                d.added.push(Package {
                    name: n[0].0.clone(),
                    version: join(n),
                });
            }
            std::cmp::Ordering::Equal => {
                let (o, n) = (ov.next().unwrap_or_default(), nv.next().unwrap_or_default());
                if o != n {
                    d.changed.push(Change {
                        name: n[0].0.clone(),
                        old: join(o),
                        new: join(n),
                    });
                }
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_where_nvd_splits_them() {
        let split = split_name_version;
        assert_eq!(split("hello-2.12.1"), ("hello", Some("2.12.1")));
        assert_eq!(
            split("python3.12-requests-2.31.0"),
            ("python3.12-requests", Some("2.31.0"))
        );
        assert_eq!(split("python3-3.12.4-env"), ("python3", Some("3.12.4-env")));
        assert_eq!(
            split("gnome-shell-extension-x-42"),
            ("gnome-shell-extension-x", Some("42"))
        );
        assert_eq!(split("home-manager-files"), ("home-manager-files", None));
        assert_eq!(split("hm-session-vars.sh"), ("hm-session-vars.sh", None));
        assert_eq!(split("openssl-3.0.13-bin"), ("openssl", Some("3.0.13")));
        assert_eq!(split("man-db-2.12.1-man"), ("man-db", Some("2.12.1")));
        assert_eq!(
            split("nixos-system-ws-24.05"),
            ("nixos-system-ws", Some("24.05"))
        );
        assert_eq!(split("x-"), ("x-", None));
    }

    #[test]
    fn store_names_lose_their_hash() {
        let h = "0123456789abcdfghijklmnpqrsvwxyz";
        assert_eq!(strip_store_hash(&format!("{h}-jq-1.7.1")), Some("jq-1.7.1"));
        assert_eq!(strip_store_hash(&format!("{h}-")), None);
        assert_eq!(strip_store_hash("short-jq-1.7"), None);
        assert_eq!(strip_store_hash("nohash"), None);
    }

    #[test]
    fn packages_are_grouped_by_name_each_once() {
        let h = |c: char| c.to_string().repeat(32);
        let n = |c: char, rest: &str| format!("{}-{rest}", h(c));
        // Each side's closure, as nix lists it (the root included).
        let old = vec![
            (n('a', "gen"), 100),
            (n('c', "tool-1.0"), 10),
            (n('d', "gone-2"), 20),
            (n('e', "same-3"), 30),
        ];
        let new = vec![
            (n('b', "gen"), 110),
            (n('f', "tool-1.1"), 12),
            (n('g', "fresh-0.5"), 5),
            (n('e', "same-3"), 30),
            (n('h', "same-3"), 31),
        ];
        let of = |c: &[(String, u64)]| {
            Summary::of(&c.iter().map(|(p, s)| (p.as_str(), *s)).collect::<Vec<_>>())
        };
        let (old, new) = (of(&old), of(&new));
        let d = diff(Some(&old), &new);
        assert_eq!(
            d.changed,
            vec![Change {
                name: "tool".into(),
                old: "1.0".into(),
                new: "1.1".into()
            }]
        );
        assert_eq!(
            d.added,
            vec![Package {
                name: "fresh".into(),
                version: "0.5".into()
            }]
        );
        assert_eq!(
            d.removed,
            vec![Package {
                name: "gone".into(),
                version: "2".into()
            }]
        );
        assert_eq!(
            d.size,
            Size {
                before: 160,
                after: 188,
                delta: 28
            }
        );
        // A first install: everything is added.
        let first = diff(None, &new);
        assert_eq!(first.added.len(), 4);
        assert!(first.removed.is_empty() && first.changed.is_empty());
        assert_eq!(first.size.before, 0);
    }

    #[test]
    fn summaries_keep_every_version_and_survive_the_cache_text() {
        let h = "0123456789abcdfghijklmnpqrsvwxyz";
        let paths = [
            format!("{h}-tool-1.0"),
            format!("{h}-tool-1.1"),
            format!("{h}-tool-1.1-man"),
            format!("{h}-home-manager-files"),
        ];
        let closure: Vec<(&str, u64)> = paths.iter().map(|p| (p.as_str(), 10)).collect();
        let s = Summary::of(&closure);
        assert_eq!(
            s.packages,
            [
                ("home-manager-files".to_string(), String::new()),
                ("tool".to_string(), "1.0".to_string()),
                ("tool".to_string(), "1.1".to_string()),
            ]
        );
        assert_eq!(s.size, 40);
        assert_eq!(Summary::from_text(&s.to_text()), Some(s.clone()));
        // Damage reads as nothing, never as a smaller closure.
        let text = s.to_text();
        assert_eq!(Summary::from_text(&text[..text.len() - 1]), None);
        assert_eq!(Summary::from_text("size x\n"), None);
        assert_eq!(Summary::from_text("size 1\nno-tab\n"), None);
    }

    #[test]
    fn cache_entries_are_for_store_paths_and_their_exact_directory() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let cache = t.path().join("cache");
        let root = store.join("0123456789abcdfghijklmnpqrsvwxyz-gen");
        std::fs::create_dir_all(&root).unwrap();
        let summary = Summary {
            packages: vec![("jq".into(), "1.7".into())],
            size: 5,
        };
        // Only a store path has an entry.
        assert!(CacheKey::at(t.path(), &store, &cache).is_none());
        let key = CacheKey::at(&root, &store, &cache).unwrap();
        assert_eq!(key.read(), None, "nothing cached yet");
        key.write(&summary);
        assert_eq!(
            CacheKey::at(&root, &store, &cache).unwrap().read(),
            Some(summary.clone())
        );
        // Collected and built again: another directory, so the entry no longer matches.
        std::fs::remove_dir(&root).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir(&root).unwrap();
        let rebuilt = CacheKey::at(&root, &store, &cache).unwrap();
        assert_eq!(rebuilt.read(), None);
        // Writing drops the entries of paths the store no longer has.
        let gone = cache.join("0123456789abcdfghijklmnpqrsvwxyz-gone");
        std::fs::write(&gone, "x").unwrap();
        rebuilt.write(&summary);
        assert!(!gone.exists());
        assert_eq!(rebuilt.read(), Some(summary));
    }
}
