//! Store queries: closures with their sizes (`nix-store --query --graphml`), NAR and
//! closure sizes, references, what a garbage collection would free and what it did.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, Result, bail};
use xshell::Cmd;

use super::{Nix, failure, prepare, trim_error};
use crate::term;

impl Nix<'_> {
    /// The closure size (bytes) of each path, in one `nix path-info -S --json` call. Nix
    /// up to 2.18 prints a list of `{path, closureSize}`, later ones an object keyed by path.
    pub fn closure_sizes(
        &self,
        paths: &[PathBuf],
    ) -> Result<std::collections::BTreeMap<PathBuf, u64>> {
        self.path_sizes(paths, "closureSize", "the generations' closure sizes")
    }

    /// The size (bytes, the NAR size: what deleting that one path frees) of each path.
    /// One `nix path-info --json` per 2000 paths, so any number fits the argument limit.
    pub fn nar_sizes(&self, paths: &[PathBuf]) -> Result<std::collections::BTreeMap<PathBuf, u64>> {
        let mut out = std::collections::BTreeMap::new();
        for chunk in paths.chunks(2000) {
            out.extend(self.path_sizes(chunk, "narSize", "the sizes of store paths")?);
        }
        Ok(out)
    }

    fn path_sizes(
        &self,
        paths: &[PathBuf],
        field: &str,
        what: &str,
    ) -> Result<std::collections::BTreeMap<PathBuf, u64>> {
        let mut out = std::collections::BTreeMap::new();
        if paths.is_empty() {
            return Ok(out);
        }
        let mut args: Vec<std::ffi::OsString> = vec!["path-info".into()];
        if field == "closureSize" {
            args.push("-S".into());
        }
        args.push("--json".into());
        args.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
        let value: serde_json::Value = self.json(self.cmd(args)?, what)?;
        let size = |v: &serde_json::Value| v.get(field).and_then(serde_json::Value::as_u64);
        match value {
            serde_json::Value::Array(items) => {
                for item in &items {
                    if let (Some(p), Some(s)) =
                        (item.get("path").and_then(|p| p.as_str()), size(item))
                    {
                        out.insert(PathBuf::from(p), s);
                    }
                }
            }
            serde_json::Value::Object(map) => {
                for (p, item) in &map {
                    if let Some(s) = size(item) {
                        out.insert(PathBuf::from(p), s);
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// Runs a read-only `nix-store` query and returns its stdout lines.
    fn store_lines(&self, cmd: Cmd<'_>, what: &str) -> Result<Vec<String>> {
        let (out, shown) = self.capture(cmd, self.verbose)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "nix could not list {what}: {}\n  tried: {shown}",
                trim_error(&stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// The store paths no GC root keeps alive now: what `nix-store --gc` would delete.
    /// `--print-dead` exists from Nix 2.0 to 2.3x (`nix store gc --dry-run` from 2.4 only
    /// prints the same list). Like every gc, nix drops stale links from
    /// `/nix/var/nix/gcroots/auto` on the way; nothing else changes.
    pub fn dead_paths(&self) -> Result<Vec<PathBuf>> {
        let cmd = self.tool("nix-store")?.args(["--gc", "--print-dead"]);
        Ok(self
            .store_lines(cmd, "the dead store paths")?
            .into_iter()
            .filter(|l| l.starts_with('/'))
            .map(PathBuf::from)
            .collect())
    }

    /// Every GC root as `(root, store path)`: `nix-store --gc --print-roots`, whose lines
    /// are `ROOT -> STORE-PATH` (runtime roots show `{memory:…}`, `/proc/…` or
    /// `{censored}` as ROOT; they are kept, nothing is compared with them).
    pub fn roots(&self) -> Result<Vec<(String, PathBuf)>> {
        let cmd = self.tool("nix-store")?.args(["--gc", "--print-roots"]);
        Ok(self
            .store_lines(cmd, "the GC roots")?
            .into_iter()
            .filter_map(|l| {
                let (root, path) = l.rsplit_once(" -> ")?;
                Some((root.to_string(), PathBuf::from(path)))
            })
            .collect())
    }

    /// The closure of `paths` (`nix-store --query --requisites`), 2000 paths per call.
    pub fn requisites(&self, paths: &[PathBuf]) -> Result<std::collections::BTreeSet<PathBuf>> {
        let mut out = std::collections::BTreeSet::new();
        for chunk in paths.chunks(2000) {
            let cmd = self
                .tool("nix-store")?
                .args(["--query", "--requisites"])
                .args(chunk);
            out.extend(
                self.store_lines(cmd, "the closure")?
                    .into_iter()
                    .map(PathBuf::from),
            );
        }
        Ok(out)
    }
}

/// What `nix-store --gc` says it did, from its last line: `N store paths deleted, X MiB
/// freed` (Nix 2.8 to 2.3x; the size in B, KiB, MiB, GiB or TiB, two decimals).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GcSummary {
    pub paths: u64,
    pub bytes: u64,
}

impl GcSummary {
    /// The summary in nix's whole output, if there is one.
    pub fn parse(text: &str) -> Option<GcSummary> {
        text.lines().rev().find_map(|line| {
            let (count, rest) = line.trim().split_once(" store paths deleted, ")?;
            let size = rest.strip_suffix(" freed")?;
            let (number, unit) = size.split_once(' ')?;
            let factor = match unit {
                "B" | "bytes" => 1.0,
                "KiB" => 1024.0,
                "MiB" => 1024.0 * 1024.0,
                "GiB" => 1024.0 * 1024.0 * 1024.0,
                "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
                _ => return None,
            };
            let number: f64 = number.parse().ok()?;
            Some(GcSummary {
                paths: count.parse().ok()?,
                bytes: (number * factor).round() as u64,
            })
        })
    }
}

impl Nix<'_> {
    /// The store paths `path` refers to directly (`nix-store -q --references`), without
    /// `path` itself. `path` must be a store path, not a path inside one: nix answers for
    /// the store path that contains it, without following a final symlink.
    pub fn references(&self, path: &Path, what: &str) -> Result<Vec<PathBuf>> {
        let cmd = self
            .tool("nix-store")?
            .args(["-q", "--references"])
            .arg(path);
        let (out, shown) = self.capture(cmd, self.verbose)?;
        if !out.status.success() {
            return Err(failure(&shown, what, &String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .filter(|p| p != path)
            .collect())
    }
}

impl Nix<'_> {
    /// The closure of each root, every path with its NAR size, passed through `then` with
    /// the root's index:
    /// `nix-store --query --graphml ROOT` per root, all running side by side, each read
    /// (and given to `then`) by a thread of its own as soon as its nix is done. The store
    /// query is what costs the time, so two of them at once cost about one. Of the
    /// commands that list a closure with its sizes, this one costs least (2000 paths,
    /// measured on Nix 2.8: 48 ms against 55 for `nix path-info -rs`, which flushes each
    /// line, and 55 for `--json`), and its text is read without an XML or JSON parse
    /// ([`parse_graphml`]). Paths are base names (`<hash>-<name>`), unique within one
    /// store.
    pub fn closures<T: Send>(
        &self,
        roots: &[PathBuf],
        then: impl Fn(usize, &[(&str, u64)]) -> T + Sync,
    ) -> Result<Vec<T>> {
        // Each nix writes its listing into an unnamed temporary file, read once it exits:
        // through a pipe, two nix processes and their readers take turns on the cores
        // at every pipeful (measured: about 10 ms more for two closures of 2000 paths).
        let mut children = Vec::new();
        for root in roots {
            let (mut cmd, shown) = prepare(
                self.tool("nix-store")?
                    .args(["--query", "--graphml"])
                    .arg(root),
            );
            if self.verbose {
                term::command(&shown);
            }
            let started = tempfile::tempfile()
                .and_then(|listing| Ok((listing.try_clone()?, listing)))
                .context("creating a temporary file")
                .and_then(|(out, listing)| {
                    let child = cmd
                        .stdin(Stdio::null())
                        .stdout(out)
                        .stderr(Stdio::piped())
                        .spawn()
                        .with_context(|| format!("running {shown}"))?;
                    Ok((child, listing))
                });
            match started {
                Ok((child, listing)) => children.push((child, listing, shown)),
                Err(e) => {
                    // The ones already started are ended, not left behind.
                    for (child, _, _) in &mut children {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return Err(e);
                }
            }
        }
        let read = |i: usize,
                    child: std::process::Child,
                    mut listing: std::fs::File,
                    shown: String|
         -> Result<T> {
            use std::io::{Read, Seek};
            let out = child
                .wait_with_output()
                .with_context(|| format!("running {shown}"))?;
            if !out.status.success() {
                return Err(failure(
                    &shown,
                    "the closure",
                    &String::from_utf8_lossy(&out.stderr),
                ));
            }
            let mut text = Vec::new();
            listing
                .rewind()
                .and_then(|()| listing.read_to_end(&mut text))
                .with_context(|| format!("reading what {shown} printed"))?;
            let closure = parse_graphml(&text).with_context(|| {
                format!("nix printed a closure the xtask did not expect (tried: {shown})")
            })?;
            Ok(then(i, &closure))
        };
        std::thread::scope(|s| {
            let readers: Vec<_> = children
                .into_iter()
                .enumerate()
                .map(|(i, (child, listing, shown))| s.spawn(move || read(i, child, listing, shown)))
                .collect();
            readers
                .into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("reading nix's output failed")))
                })
                .collect()
        })
    }
}

/// The store directory: `NIX_STORE_DIR`, else /nix/store.
pub fn store_dir() -> PathBuf {
    std::env::var_os("NIX_STORE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/nix/store"), PathBuf::from)
}

/// The paths of the graph `nix-store --query --graphml` prints, as (base name, NAR size).
/// Its format is the same from Nix 2.0 to 2.3x (and Lix): per path a `<node id="PATH">`
/// element (the base name since Nix 2.4, the whole path before) holding
/// `<data key="narSize">N</data>`; the edges after it are not needed here. Hundreds of
/// kilobytes for a large closure: searched with memchr, which is quick even in the dev
/// build the xtask runs as.
pub fn parse_graphml(text: &[u8]) -> Result<Vec<(&str, u64)>> {
    const NODE: &str = "<node id=\"";
    const SIZE: &str = "<data key=\"narSize\">";
    let text = std::str::from_utf8(text).context("the graph is not UTF-8")?;
    let bytes = text.as_bytes();
    let (node, size) = (
        memchr::memmem::Finder::new(NODE),
        memchr::memmem::Finder::new(SIZE),
    );
    let mut out = Vec::new();
    let mut next = node.find(bytes);
    while let Some(at) = next {
        let id_start = at + NODE.len();
        let id_end = memchr::memchr(b'"', &bytes[id_start..])
            .map(|n| id_start + n)
            .context("a node's id does not end")?;
        let id = &text[id_start..id_end];
        next = node.find(&bytes[id_end..]).map(|n| id_end + n);
        // The size in this node, not in the next one.
        let block = &bytes[id_end..next.unwrap_or(bytes.len())];
        let size_start = size
            .find(block)
            .map(|n| id_end + n + SIZE.len())
            .with_context(|| format!("no narSize for {id}"))?;
        let size_end = memchr::memchr(b'<', &bytes[size_start..])
            .map(|n| size_start + n)
            .with_context(|| format!("the narSize of {id} does not end"))?;
        let nar_size = text[size_start..size_end]
            .trim()
            .parse()
            .with_context(|| format!("the narSize of {id} is not a number"))?;
        let base = memchr::memrchr(b'/', id.as_bytes()).map_or(id, |i| &id[i + 1..]);
        out.push((base, nar_size));
    }
    // nix ends the graph only once every path is in it.
    anyhow::ensure!(
        text.trim_end().ends_with("</graphml>"),
        "the graph does not end with </graphml>"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_store_gc_summary_in_nix_s_own_words() {
        // The tail of a real `nix-store --gc` run (Nix 2.8), and the forms of other sizes.
        let out = "finding garbage collector roots...\nremoving stale link from '/nix/var/nix/gcroots/auto/abc' to '/tmp/x/generation'\ndeleting garbage...\ndeleting '/nix/store/0g7k-hm-file'\ndeleting unused links...\nnote: currently hard linking saves 0.00 MiB\n12 store paths deleted, 1.50 MiB freed\n";
        assert_eq!(
            GcSummary::parse(out),
            Some(GcSummary {
                paths: 12,
                bytes: 1_572_864
            })
        );
        assert_eq!(
            GcSummary::parse("0 store paths deleted, 0.00 MiB freed\n"),
            Some(GcSummary { paths: 0, bytes: 0 })
        );
        assert_eq!(
            GcSummary::parse("3 store paths deleted, 2.00 GiB freed"),
            Some(GcSummary {
                paths: 3,
                bytes: 2 << 30
            })
        );
        assert_eq!(GcSummary::parse("deleting garbage...\n"), None);
        assert_eq!(GcSummary::parse("x store paths deleted, 1 MiB freed"), None);
    }

    #[test]
    fn closures_of_the_graphml_nix_store_prints() {
        // What Nix 2.8 prints (the edges are skipped), and Nix 2.3's whole-path ids.
        let out = br#"<?xml version='1.0' encoding='utf-8'?>
<graphml xmlns='http://graphml.graphdrawing.org/xmlns'>
<key id='narSize' for='node' attr.name='narSize' attr.type='int'/><graph id='G' edgedefault='directed'>
  <node id="bbb-gen">
    <data key="narSize">4096</data>
    <data key="name">gen</data>
    <data key="type">output-path</data>
  </node>
  <edge source="bbb-gen" target="aaa-pkg-1.0"/>
  <node id="/nix/store/aaa-pkg-1.0">
    <data key="narSize">128</data>
  </node>
</graph>
</graphml>
"#;
        assert_eq!(
            parse_graphml(out).unwrap(),
            vec![("bbb-gen", 4096), ("aaa-pkg-1.0", 128)]
        );
        let text = String::from_utf8_lossy(out);
        // A node without its size (the next node's is not taken for it), a size that is
        // not a number, a graph cut short.
        let no_size = text.replacen("<data key=\"narSize\">4096</data>", "", 1);
        let err = parse_graphml(no_size.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no narSize for bbb-gen"), "{err}");
        let bad = text.replacen(">128<", ">12x<", 1);
        assert!(parse_graphml(bad.as_bytes()).is_err());
        let cut = &text[..text.find("</graph>").unwrap()];
        assert!(parse_graphml(cut.as_bytes()).is_err());
    }
}
