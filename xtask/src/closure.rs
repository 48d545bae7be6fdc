//! Package changes between two closures, computed here rather than by
//! `nix store diff-closures`: one `nix path-info -r --json` call for both sides, then
//! every store path's `name-version` grouped by name, as nvd and dix do. A name only in
//! the new closure is added, only in the old one removed, in both with other versions
//! changed; rebuilds of the same version are no package change. The closure sizes are the
//! sums of the paths' NAR sizes (what `nix path-info -S` calls the closure size).
//!
//! Generic over store paths (generations, systems); `home` and the tasks use it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::{
    nix::{Nix, PathInfo},
    term,
};

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
        let infos = nix.closure_infos(&roots)?;
        let graph = Graph::new(&infos);
        let old = old.map(|o| graph.closure(o)).transpose()?;
        let new = graph.closure(new)?;
        Ok(graph.diff(old.as_deref(), &new))
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

/// The union of the closures, by index: each path's name and version split once, its
/// references as indices, so each side's closure is a walk over integers.
struct Graph<'a> {
    infos: &'a [PathInfo],
    index: HashMap<&'a str, usize>,
    refs: Vec<Vec<usize>>,
    names: Vec<(&'a str, &'a str)>,
}

impl<'a> Graph<'a> {
    fn new(infos: &'a [PathInfo]) -> Graph<'a> {
        let index: HashMap<&str, usize> = infos
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let refs = infos
            .iter()
            .map(|p| {
                p.references
                    .iter()
                    .filter_map(|r| index.get(r.as_str()).copied())
                    .collect()
            })
            .collect();
        let names = infos
            .iter()
            .map(|p| {
                let (name, version) =
                    split_name_version(strip_store_hash(&p.name).unwrap_or(&p.name));
                (name, version.unwrap_or_default())
            })
            .collect();
        Graph {
            infos,
            index,
            refs,
            names,
        }
    }

    /// Which paths are reachable from `root` through the references.
    fn closure(&self, root: &Path) -> Result<Vec<bool>> {
        let resolved = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let base = resolved
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(&start) = self.index.get(base) else {
            bail!(
                "nix did not describe {} (is it a store path?); name a generation in the nix store",
                root.display()
            );
        };
        let mut seen = vec![false; self.infos.len()];
        let mut todo = vec![start];
        while let Some(i) = todo.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                todo.extend(self.refs[i].iter().copied().filter(|&r| !seen[r]));
            }
        }
        Ok(seen)
    }

    /// name → its versions, and the size, of one closure.
    fn versions(&self, closure: &[bool]) -> (BTreeMap<&'a str, BTreeSet<&'a str>>, u64) {
        let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut size = 0;
        for (i, _) in closure.iter().enumerate().filter(|(_, in_it)| **in_it) {
            let (name, version) = self.names[i];
            out.entry(name).or_default().insert(version);
            size += self.infos[i].nar_size;
        }
        (out, size)
    }

    fn diff(&self, old: Option<&[bool]>, new: &[bool]) -> PackageDiff {
        let (ov, before) = old.map(|o| self.versions(o)).unwrap_or_default();
        let (nv, after) = self.versions(new);
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

    fn info(name: &str, size: u64, refs: &[&str]) -> PathInfo {
        PathInfo {
            name: name.into(),
            nar_size: size,
            references: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn packages_are_grouped_by_name_each_once() {
        let h = |c: char| c.to_string().repeat(32);
        let (a, b) = (format!("{}-gen", h('a')), format!("{}-gen", h('b')));
        let n = |c: char, rest: &str| format!("{}-{rest}", h(c));
        let infos = vec![
            info(
                &a,
                100,
                &[
                    &a,
                    &n('c', "tool-1.0"),
                    &n('d', "gone-2"),
                    &n('e', "same-3"),
                ],
            ),
            info(
                &b,
                110,
                &[
                    &n('f', "tool-1.1"),
                    &n('g', "fresh-0.5"),
                    &n('e', "same-3"),
                    &n('h', "same-3"),
                ],
            ),
            info(&n('c', "tool-1.0"), 10, &[]),
            info(&n('d', "gone-2"), 20, &[]),
            info(&n('e', "same-3"), 30, &[]),
            info(&n('h', "same-3"), 31, &[]),
            info(&n('f', "tool-1.1"), 12, &[]),
            info(&n('g', "fresh-0.5"), 5, &[]),
        ];
        let graph = Graph::new(&infos);
        let old = graph
            .closure(Path::new(&format!("/nix/store/{a}")))
            .unwrap();
        let new = graph
            .closure(Path::new(&format!("/nix/store/{b}")))
            .unwrap();
        let d = graph.diff(Some(&old), &new);
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
        let first = graph.diff(None, &new);
        assert_eq!(first.added.len(), 4);
        assert!(first.removed.is_empty() && first.changed.is_empty());
        assert_eq!(first.size.before, 0);
    }
}
