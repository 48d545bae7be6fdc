//! Package changes between two closures, computed here rather than by
//! `nix store diff-closures`: one `nix path-info -rs` per side, both running at once, then
//! every store path's `name-version` grouped by name, as nvd and dix do. A name only in
//! the new closure is added, only in the old one removed, in both with other versions
//! changed; rebuilds of the same version are no package change. The closure sizes are the
//! sums of the paths' NAR sizes (what `nix path-info -S` calls the closure size).
//!
//! Generic over store paths (generations, systems); `home` and the tasks use it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

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
        let roots: Vec<PathBuf> = old
            .into_iter()
            .chain([new])
            .map(Path::to_path_buf)
            .collect();
        let mut sides = nix.closures(&roots)?;
        let new = sides.pop().context("nix described no closure")?;
        let old = sides.pop();
        Ok(diff(old.as_deref(), &new))
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

/// name → its versions, and the size, of one closure (base names with their sizes).
fn versions(closure: &[(String, u64)]) -> (BTreeMap<&str, BTreeSet<&str>>, u64) {
    let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut size = 0;
    for (path, nar_size) in closure {
        let (name, version) = split_name_version(strip_store_hash(path).unwrap_or(path));
        out.entry(name)
            .or_default()
            .insert(version.unwrap_or_default());
        size += nar_size;
    }
    (out, size)
}

fn diff(old: Option<&[(String, u64)]>, new: &[(String, u64)]) -> PackageDiff {
    let (ov, before) = old.map(versions).unwrap_or_default();
    let (nv, after) = versions(new);
    let join = |v: &BTreeSet<&str>| v.iter().copied().collect::<Vec<_>>().join(", ");
    let mut d = PackageDiff {
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        size: Size {
            before,
            after,
            delta: after as i64 - before as i64,
        },
    };
    for (name, n) in &nv {
        match ov.get(name) {
            None => d.added.push(Package {
                name: name.to_string(),
                version: join(n),
            }),
            Some(o) if o != n => d.changed.push(Change {
                name: name.to_string(),
                old: join(o),
                new: join(n),
            }),
            Some(_) => {}
        }
    }
    for (name, o) in &ov {
        if !nv.contains_key(name) {
            d.removed.push(Package {
                name: name.to_string(),
                version: join(o),
            });
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
        // Each side's closure, as `nix path-info -rs` lists it (the root included).
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
}
