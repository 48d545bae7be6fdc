//! The static lint's memory between runs: for each `.nix` file it parsed, the file's
//! identity on disk and what its syntax said. A file whose identity is unchanged is not
//! read or parsed again, only looked at (one `stat`), as git's index does: in a homelab of
//! a thousand homes reading and parsing the files is most of what the lint costs, and a
//! pre-commit hook or an editor runs the lint again and again over files that did not
//! change.
//!
//! The identity is the size, the modification and change times (in nanoseconds) and the
//! inode: an edit changes the change time even when it keeps the size and puts the
//! modification time back, and an editor that saves by renaming a new file over the old
//! one changes the inode. A file changed within [`SETTLE`] of the run is not kept, since
//! a second change in the same tick of the file system's clock could keep every field (git
//! calls such entries racily clean). The cache is per repository and per build of the
//! xtask (a new parser may read a file differently), in the xtask's cache directory.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rustix::fs::Stat;

use super::syntax::FileReport;

/// Files changed this recently are parsed again next time (see the module comment). Two
/// seconds covers the coarsest clocks a repository may live on (FAT's two seconds; ext4's
/// and tmpfs's ticks are milliseconds).
const SETTLE: Duration = Duration::from_secs(2);

const FORMAT: &str = "homelab-xtask lint 1";

/// A file's identity on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    size: u64,
    mtime: (i64, u64),
    ctime: (i64, u64),
    ino: u64,
}

impl FileId {
    // The fields' types differ between Linux and macOS: the casts are needed on one.
    #[allow(clippy::unnecessary_cast)]
    pub fn of(st: &Stat) -> FileId {
        FileId {
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as u64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as u64),
            ino: st.st_ino as u64,
        }
    }

    /// Whether the file had settled before `now` (see [`SETTLE`]).
    fn settled(&self, now: SystemTime) -> bool {
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let limit = now.saturating_sub(SETTLE);
        let at = |(s, ns): (i64, u64)| {
            u64::try_from(s)
                .ok()
                .map(|s| Duration::from_secs(s) + Duration::from_nanos(ns))
        };
        at(self.mtime).is_some_and(|t| t < limit) && at(self.ctime).is_some_and(|t| t < limit)
    }

    fn write_line(&self, rel: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "F {} {} {} {} {} {} {rel}",
            self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1, self.ino
        );
    }

    fn parse(fields: &str) -> Option<FileId> {
        let mut n = fields.split(' ');
        // Seconds may be negative (before 1970); sizes and inodes use all 64 bits (NFS).
        let mut word = || n.next();
        let size = word()?.parse().ok()?;
        let mtime = (word()?.parse().ok()?, word()?.parse().ok()?);
        let ctime = (word()?.parse().ok()?, word()?.parse().ok()?);
        let ino = word()?.parse().ok()?;
        Some(FileId {
            size,
            mtime,
            ctime,
            ino,
        })
    }
}

/// The cache as read at the start of a run. The text is kept whole and indexed, not
/// decoded: a file's entry is decoded only when the file is looked up.
pub struct LintCache {
    file: PathBuf,
    header: String,
    text: String,
    /// Each entry's (path start, path end, entry start, entry end) in `text`, sorted by
    /// path, as written: an entry is its `F` line (the identity, then the path) and the
    /// report's lines.
    index: Vec<(usize, usize, usize, usize)>,
    /// When the run started, for [`SETTLE`].
    now: SystemTime,
}

impl LintCache {
    /// The cache of the repository at `root` for this build of the xtask (empty when there
    /// is none yet or it is damaged); None when there is nowhere to keep one.
    pub fn open(root: &Path) -> Option<LintCache> {
        LintCache::open_in(root, &crate::cache::dir("lint")?)
    }

    pub(super) fn open_in(root: &Path, dir: &Path) -> Option<LintCache> {
        use std::os::unix::fs::MetadataExt;
        let exe = std::env::current_exe().ok()?.metadata().ok()?;
        let file = dir.join(file_name(root)?);
        let header = format!(
            "{FORMAT} xtask {} {}.{:09} {}",
            exe.len(),
            exe.mtime(),
            exe.mtime_nsec(),
            exe.ino()
        );
        let text = crate::cache::read(&file, &header).unwrap_or_default();
        let index = index(&text).unwrap_or_default();
        let text = if index.is_empty() {
            String::new()
        } else {
            text
        };
        Some(LintCache {
            file,
            header,
            text,
            index,
            now: SystemTime::now(),
        })
    }

    /// Whether the cache has an entry for `rel` (to look at the file only then).
    pub fn knows(&self, rel: &str) -> bool {
        self.position(rel).is_some()
    }

    fn position(&self, rel: &str) -> Option<usize> {
        self.index
            .binary_search_by(|&(p, q, _, _)| self.text[p..q].cmp(rel))
            .ok()
    }

    /// What the cache says about `rel`, if its identity is still `id`: the report, and
    /// where the entry is in the cache's text (to keep it).
    pub fn lookup(&self, rel: &str, id: FileId) -> Option<(FileReport, (usize, usize))> {
        let (p, q, start, end) = self.index[self.position(rel)?];
        if FileId::parse(&self.text[start + 2..p - 1])? != id {
            return None;
        }
        let report = FileReport::read_lines(rel, &self.text[q + 1..end])?;
        Some((report, (start, end)))
    }

    /// The cache's text from `a` to `b`, where [`LintCache::lookup`] found an entry.
    pub fn slice(&self, a: usize, b: usize) -> &str {
        &self.text[a..b]
    }

    /// The entry to keep for a file just parsed, or None if it is too fresh to trust (or
    /// its report does not fit the format).
    pub fn entry(&self, rel: &str, id: FileId, report: &FileReport) -> Option<String> {
        // A path read lossily (a name that is not UTF-8) may stand for two files.
        // Looked for as byte 0xEF, U+FFFD's first (other characters start with it too: such
        // a rare path is parsed again next time), with memchr: thousands of paths on a
        // first run, in the dev build.
        if !id.settled(self.now) || memchr::memchr2(b'\n', 0xEF, rel.as_bytes()).is_some() {
            return None;
        }
        let mut text = String::with_capacity(128);
        id.write_line(rel, &mut text);
        report.write_lines(&mut text).then_some(text)
    }

    /// Writes `entries` (in path order) as the new cache unless they are what it already
    /// holds.
    pub fn store(self, entries: String) {
        if entries != self.text && crate::cache::write(&self.file, &self.header, &entries) {
            self.forget_gone_repositories();
        }
    }

    /// Removes the caches of repositories that no longer exist (a moved clone, a
    /// benchmark's fixture), so the cache does not grow without end.
    fn forget_gone_repositories(&self) {
        if let Some(dir) = self.file.parent() {
            crate::cache::prune(dir, |name| {
                repository(name).is_some_and(|repo| !repo.join("flake.nix").exists())
            });
        }
    }
}

/// The repository's path as a file name: `/` cannot be in one.
fn file_name(root: &Path) -> Option<String> {
    Some(root.to_str()?.replace('%', "%25").replace('/', "%2F"))
}

/// The repository whose cache is the file `name`; None for other files.
fn repository(name: &str) -> Option<PathBuf> {
    name.starts_with("%2F")
        .then(|| PathBuf::from(name.replace("%2F", "/").replace("%25", "%")))
}

/// Each entry's `(path start, path end, entry start, entry end)` in `text`; None if the
/// text is not a sequence of entries sorted by path.
fn index(text: &str) -> Option<Vec<(usize, usize, usize, usize)>> {
    let mut index: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
        let line = &text[start..end];
        if let Some(fields) = line.strip_prefix("F ") {
            // The path follows the six numbers.
            let mut spaces = memchr::memchr_iter(b' ', fields.as_bytes());
            let at = spaces.nth(5)? + 1;
            let (p, q) = (start + 2 + at, end);
            if let Some(last) = index.last_mut() {
                last.3 = start;
                if text[last.0..last.1] >= text[p..q] {
                    return None;
                }
            }
            index.push((p, q, start, text.len()));
        } else if index.is_empty() {
            return None;
        }
        start = end + 1;
    }
    (start == text.len()).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tree::Tree;
    use std::fs;

    fn repo() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("flake.nix"), "{ outputs = _: { }; }\n").unwrap();
        fs::create_dir_all(t.path().join("homes/alice")).unwrap();
        fs::write(
            t.path().join("homes/alice/default.nix"),
            "{ imports = [ ./a.nix ]; }\n",
        )
        .unwrap();
        fs::write(t.path().join("homes/alice/a.nix"), "{ x = ; }\n").unwrap();
        t
    }

    /// Walks with the cache's clock moved `later`: a file's change time cannot be set
    /// back to make it look settled, so the clock goes forward instead.
    fn walk(root: &Path, cache: &Path, later: Duration) -> Tree {
        let mut c = LintCache::open_in(root, cache).unwrap();
        c.now += later;
        Tree::walk_with(root, Some(c), 2)
    }

    fn findings(tree: &Tree) -> Vec<String> {
        let mut out: Vec<String> = tree
            .nix
            .iter()
            .filter_map(|f| f.report.as_ref())
            .flat_map(FileReport::lines_for_test)
            .collect();
        out.sort();
        out
    }

    #[test]
    fn unchanged_files_come_from_the_cache_with_the_same_findings() {
        let (r, c) = (repo(), tempfile::tempdir().unwrap());
        let later = SETTLE * 2;
        let first = walk(r.path(), c.path(), later).writer_done();
        assert_eq!((first.parsed, first.cached), (3, 0));
        let second = walk(r.path(), c.path(), later);
        assert_eq!((second.parsed, second.cached), (0, 3));
        assert_eq!(findings(&second), findings(&first));
        assert!(!findings(&second).is_empty());
    }

    #[test]
    fn a_changed_file_is_parsed_again_even_with_its_size_and_mtime_kept() {
        let (r, c) = (repo(), tempfile::tempdir().unwrap());
        let later = SETTLE * 2;
        drop(walk(r.path(), c.path(), later).writer_done());
        let a = r.path().join("homes/alice/a.nix");
        let mtime = fs::metadata(&a).unwrap().modified().unwrap();
        // Same length, error fixed, modification time put back: the change time moved.
        fs::write(&a, "{ x = 1; }\n").unwrap();
        fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let tree = walk(r.path(), c.path(), later);
        assert_eq!((tree.parsed, tree.cached), (1, 2));
        assert!(
            !findings(&tree).iter().any(|f| f.contains("a.nix:")),
            "{:?}",
            findings(&tree)
        );
        drop(tree.writer_done());
        // Saved by renaming a new file over it: another inode.
        let tmp = r.path().join("homes/alice/.a.nix.swp");
        fs::write(&tmp, "{ x = ; }\n").unwrap();
        fs::rename(&tmp, &a).unwrap();
        let tree = walk(r.path(), c.path(), later);
        assert_eq!((tree.parsed, tree.cached), (1, 2));
        assert!(
            findings(&tree)
                .iter()
                .any(|f| f.starts_with("homes/alice/a.nix:1:"))
        );
    }

    #[test]
    fn fresh_files_are_not_kept_and_damage_or_another_build_is_a_miss() {
        let (r, c) = (repo(), tempfile::tempdir().unwrap());
        // Just written: not trusted next time.
        drop(walk(r.path(), c.path(), Duration::ZERO).writer_done());
        let tree = walk(r.path(), c.path(), SETTLE * 2);
        assert_eq!((tree.parsed, tree.cached), (3, 0));
        drop(tree.writer_done());
        let file = c.path().join(file_name(r.path()).unwrap());
        let text = fs::read_to_string(&file).unwrap();
        // Another build of the xtask wrote it: its header differs.
        fs::write(&file, text.replacen("xtask ", "xtask 1", 1)).unwrap();
        assert_eq!(walk(r.path(), c.path(), SETTLE * 2).cached, 0);
        // Damaged: cut in the middle of an entry.
        fs::write(&file, &text[..text.len() - 5]).unwrap();
        assert_eq!(walk(r.path(), c.path(), SETTLE * 2).cached, 0);
    }

    #[test]
    fn identities_survive_their_line_whatever_their_values() {
        let id = FileId {
            size: u64::MAX,
            mtime: (-1, 999_999_999),
            ctime: (i64::MAX, 0),
            ino: u64::MAX,
        };
        let mut line = String::new();
        id.write_line("homes/a b/default.nix", &mut line);
        let fields = line.strip_prefix("F ").unwrap();
        let numbers: Vec<&str> = fields.splitn(7, ' ').take(6).collect();
        assert_eq!(FileId::parse(&numbers.join(" ")), Some(id));
        assert_eq!(index(&line).unwrap().len(), 1, "a path with a space");
    }

    #[test]
    fn the_index_takes_only_entries_sorted_by_path() {
        let sorted = "F 1 2 3 4 5 6 a\nR 1 1 I 0 ./x.nix\nF 1 2 3 4 5 6 b\n";
        let entries = index(sorted).unwrap();
        assert_eq!(entries.len(), 2);
        let (p, q, start, end) = entries[0];
        assert_eq!(
            (&sorted[p..q], &sorted[start..end]),
            ("a", "F 1 2 3 4 5 6 a\nR 1 1 I 0 ./x.nix\n")
        );
        assert_eq!(
            index(sorted.replace("a\n", "c\n").as_str()),
            None,
            "out of order"
        );
        assert_eq!(index("R 1 1 I 0 ./x.nix\n"), None, "no entry to belong to");
        assert_eq!(index("F 1 2 3 a\n"), None, "too few numbers");
    }

    #[test]
    fn caches_of_repositories_that_are_gone_are_removed() {
        let (r, c) = (repo(), tempfile::tempdir().unwrap());
        let gone = c.path().join("%2Fnonexistent%2Frepo");
        fs::write(&gone, "x").unwrap();
        let other = c.path().join("notes");
        fs::write(&other, "x").unwrap();
        drop(walk(r.path(), c.path(), SETTLE * 2).writer_done());
        assert!(!gone.exists());
        assert!(other.exists(), "not a repository's cache");
        assert!(c.path().join(file_name(r.path()).unwrap()).exists());
    }
}
