//! One pass over what the flake reads: the directories under homes/, systems/, droids/ and
//! lib/ (and flake.nix), with the text of every `.nix` file, while git lists the files it
//! tracks.
//!
//! The static lint needs all of it, and in a homelab of a thousand homes the walk and the
//! parse are the lint's cost, in about equal parts of system calls and parsing: so the
//! walk is done once, shared by the layout scan ([`super::Repo::scan_tree`]) and the syntax
//! analysis, spread over the cores, each file parsed by the thread that read it, with
//! directory-relative `openat` (a short lookup, no `fstat` per directory as `opendir`
//! does, no `statx` per file as `read_to_string` does), and files unchanged since an
//! earlier run are neither read nor parsed ([`super::lint_cache`]).

use std::{
    collections::BTreeSet,
    ffi::CStr,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags};

use super::{
    NIX_DIRS,
    lint_cache::{FileId, LintCache},
    syntax::{self, FileReport},
};

/// A `.nix` file found by the walk.
#[derive(Debug)]
pub struct NixFile {
    pub rel: String,
    /// None: unreadable or not UTF-8, which nix reports itself, better than a guess could.
    pub text: Option<String>,
    /// What its syntax says, parsed by the thread that read it; None for the meta.nix files
    /// of homes and machines, which the repo model reads as data instead.
    pub report: Option<FileReport>,
    /// Its entry for the next run's lint cache.
    keep: Keep,
}

/// A file's entry in the lint cache written after the walk.
#[derive(Debug, Default)]
enum Keep {
    /// None (no cache, a meta.nix, a file too fresh to trust).
    #[default]
    Nothing,
    /// The entry the cache already has: this byte range of its text.
    Cached(usize, usize),
    /// Parsed now: its identity, for an entry of its report.
    New(FileId),
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Tree {
    /// The walked directories and the directories in them (`homes/alice`), repo-relative
    /// and sorted: what the layout scan lists. Not those behind a symlink: git stores the
    /// link, not the files behind it, and a link cycle would never end.
    dirs: Vec<String>,
    /// The `.nix` files, sorted by path (shared with the thread that writes the cache).
    pub nix: Arc<Vec<NixFile>>,
    /// The files git tracks (its index, `git add -N` ones included: all a flake in a git
    /// repository sees). None outside a git repository or without git: then every file is
    /// visible (a `path:` flake).
    pub tracked: Option<BTreeSet<String>>,
    /// Files whose report came from the lint cache, and files parsed.
    pub cached: usize,
    pub parsed: usize,
    /// Writes the new lint cache; joined when the tree is dropped, so that the process
    /// never ends halfway through the write.
    writer: Option<std::thread::JoinHandle<()>>,
    /// How many threads the walk may use.
    cores: usize,
    /// Walked directories that exist but could not be read, with why.
    unreadable: Vec<(String, std::io::Error)>,
}

impl Drop for Tree {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Tree {
    /// Walks `root`'s homes/, systems/, droids/, lib/ and flake.nix, and parses the `.nix`
    /// files as it reads them, on up to `cores` cores.
    pub fn walk(root: &Path, cores: usize) -> Tree {
        Tree::walk_with(root, LintCache::open(root), cores)
    }

    /// All the cores there are, for a walk that nothing else waits beside.
    pub fn all_cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// [`Tree::walk`] with the lint cache given (or none).
    pub(super) fn walk_with(root: &Path, cache: Option<LintCache>, cores: usize) -> Tree {
        // git reads its index while the directories are walked.
        let git = super::GitLsFiles::spawn(root, &["--cached"]);
        let mut tree = Tree::default();
        tree.cores = cores;
        if let Ok(top) = rustix::fs::openat(CWD, root, dir_flags(), Mode::empty()) {
            tree.read(top.as_fd(), cache.as_ref());
        }
        if let Some(cache) = cache {
            // The new cache is put together and written by a thread of its own, on the core
            // the walk no longer needs, while the layout scan and the analysis run.
            let files = Arc::clone(&tree.nix);
            tree.writer = Some(std::thread::spawn(move || {
                let mut entries = String::new();
                for f in files.iter() {
                    match (&f.keep, &f.report) {
                        (Keep::Cached(a, b), _) => entries.push_str(cache.slice(*a, *b)),
                        (Keep::New(id), Some(report)) => {
                            if let Some(entry) = cache.entry(&f.rel, *id, report) {
                                entries.push_str(&entry);
                            }
                        }
                        _ => {}
                    }
                }
                cache.store(entries);
            }));
        }
        tree.tracked = git.and_then(|g| g.wait()).map(|v| v.into_iter().collect());
        tree
    }

    fn read(&mut self, top: BorrowedFd<'_>, cache: Option<&LintCache>) {
        let mut roots: Vec<(String, OwnedFd)> = Vec::new();
        for dir in NIX_DIRS {
            // Followed if it is a link (a `homes` kept elsewhere), as nix's readDir does.
            let flags = dir_flags() - OFlags::NOFOLLOW;
            match rustix::fs::openat(top, dir, flags, Mode::empty()) {
                Ok(fd) => roots.push((dir.to_string(), fd)),
                Err(rustix::io::Errno::NOENT) => {}
                // Not a directory, not readable: the layout scan says so.
                Err(e) => self.unreadable.push((dir.to_string(), e.into())),
            }
        }
        let mut listings = vec![Listing::new(cache)];
        if let Some(kind) = kind_at(top, c"flake.nix", None) {
            listings[0].entry(top, "", "flake.nix", kind);
        }
        // Each walked directory's own entries first, then its subdirectories spread over
        // the cores: homes/ alone has a directory per home.
        let mut work: Vec<(BorrowedFd<'_>, Subdir)> = Vec::new();
        for (rel, fd) in &roots {
            let mut own = Listing::new(cache);
            own.dirs.push(rel.clone());
            // Read through a descriptor of its own: `fd` stays open for the threads.
            let subdirs = rustix::fs::openat(fd, c".", dir_flags(), Mode::empty())
                .ok()
                .and_then(|dup| own.read(dup, rel))
                .map(|(_, subdirs)| subdirs)
                .unwrap_or_default();
            // Listed whether or not they can be read: the layout scan names those.
            own.dirs.extend(subdirs.iter().map(|d| d.rel.clone()));
            work.extend(subdirs.into_iter().map(|d| (fd.as_fd(), d)));
            listings.push(own);
        }
        // The directories go to every core a few at a time, so that one that happens to get
        // bigger homes does not keep the others waiting.
        let threads = self.cores.min(8).min(work.len().div_ceil(100)).max(1);
        let next = AtomicUsize::new(0);
        let take = || {
            let mut listing = Listing::new(cache);
            loop {
                let start = next.fetch_add(BATCH, Ordering::Relaxed);
                let Some(batch) = work.get(start..(start + BATCH).min(work.len())) else {
                    break;
                };
                if batch.is_empty() {
                    break;
                }
                for (parent, sub) in batch {
                    listing.walk(*parent, sub);
                }
            }
            listing
        };
        std::thread::scope(|s| {
            let workers: Vec<_> = (1..threads).map(|_| s.spawn(take)).collect();
            // This thread takes its share rather than wait.
            listings.push(take());
            for w in workers {
                // A walker that panicked is a bug: not a reason to report fewer files.
                listings.push(w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
        });
        let mut nix = Vec::new();
        for l in listings {
            self.cached += l.cached;
            self.parsed += l.parsed;
            self.dirs.extend(l.dirs);
            nix.extend(l.nix);
        }
        self.dirs.sort_unstable();
        nix.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
        self.nix = Arc::new(nix);
    }

    /// Waits for the lint cache's write (tests read it next).
    #[cfg(test)]
    pub fn writer_done(mut self) -> Self {
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self
    }

    /// Whether the `.nix` file `rel` is a file (or a symlink to one), as `Path::is_file`
    /// would say. Only `.nix` files are kept: only they are asked about (`default.nix`,
    /// `meta.nix`), and keeping every file's path would cost the walk more.
    pub fn is_nix_file(&self, rel: &str) -> bool {
        rel.ends_with(".nix")
            && self
                .nix
                .binary_search_by(|f| f.rel.as_str().cmp(rel))
                .is_ok()
    }

    /// The subdirectories of `rel` (one of the walked directories: homes, systems, …),
    /// sorted; an error if it exists but could not be read.
    pub fn subdirs(&self, rel: &str) -> std::io::Result<Vec<String>> {
        if let Some((_, e)) = self.unreadable.iter().find(|(d, _)| d == rel) {
            return Err(std::io::Error::new(e.kind(), e.to_string()));
        }
        let prefix = format!("{rel}/");
        let start = self.dirs.partition_point(|d| d.as_str() < prefix.as_str());
        let names: Vec<String> = self.dirs[start..]
            .iter()
            .take_while(|d| d.starts_with(&prefix))
            .filter_map(|d| d.strip_prefix(&prefix))
            .filter(|name| !name.contains('/'))
            .map(str::to_string)
            .collect();
        Ok(names)
    }

    /// The text of a `.nix` file the walk read.
    pub fn text(&self, rel: &str) -> Option<&str> {
        let i = self
            .nix
            .binary_search_by(|f| f.rel.as_str().cmp(rel))
            .ok()?;
        self.nix[i].text.as_deref()
    }
}

/// Directories a thread takes at a time.
const BATCH: usize = 16;

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW
}

/// What a directory entry is. `d_type` says it without a system call, except for a symlink
/// (followed, as `is_file` does) and on file systems that do not fill it in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Other,
}

fn kind_at(dir: BorrowedFd<'_>, name: &CStr, hint: Option<FileType>) -> Option<Kind> {
    let kind = |t: FileType| match t {
        FileType::Directory => Kind::Dir,
        FileType::RegularFile => Kind::File,
        _ => Kind::Other,
    };
    match hint {
        Some(FileType::Directory) => Some(Kind::Dir),
        Some(FileType::RegularFile) => Some(Kind::File),
        Some(FileType::Symlink) => {
            // A link to a directory is not walked (see `Tree::dirs`), to a file it is one.
            let st = rustix::fs::statat(dir, name, AtFlags::empty()).ok()?;
            match kind(FileType::from_raw_mode(st.st_mode)) {
                Kind::File => Some(Kind::File),
                _ => Some(Kind::Other),
            }
        }
        Some(FileType::Unknown) | None => {
            let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => kind_at(dir, name, Some(FileType::Symlink)),
                t => Some(kind(t)),
            }
        }
        Some(_) => Some(Kind::Other),
    }
}

/// A directory to walk: its repo-relative path (lossy where its name or a parent's is not
/// UTF-8) and its name as it is on disk.
struct Subdir {
    rel: String,
    name: std::ffi::CString,
}

/// What one thread found.
struct Listing<'c> {
    cache: Option<&'c LintCache>,
    cached: usize,
    parsed: usize,
    buf: Vec<u8>,
    dirs: Vec<String>,
    nix: Vec<NixFile>,
}

impl<'c> Listing<'c> {
    fn new(cache: Option<&'c LintCache>) -> Self {
        Listing {
            cache,
            cached: 0,
            parsed: 0,
            buf: Vec::new(),
            dirs: Vec::new(),
            nix: Vec::new(),
        }
    }

    /// Walks `sub`, opened relative to `parent` by its name as it is on disk.
    fn walk(&mut self, parent: BorrowedFd<'_>, sub: &Subdir) {
        let Ok(fd) = rustix::fs::openat(parent, sub.name.as_c_str(), dir_flags(), Mode::empty())
        else {
            return;
        };
        let Some((dir, subdirs)) = self.read(fd, &sub.rel) else {
            return;
        };
        if let Ok(fd) = dir.fd() {
            for sub in &subdirs {
                self.walk(fd, sub);
            }
        }
    }

    /// Records the entries of the open directory `rel` and returns its subdirectories,
    /// which the caller walks.
    fn read(&mut self, fd: OwnedFd, rel: &str) -> Option<(Dir, Vec<Subdir>)> {
        let mut subdirs = Vec::new();
        let mut dir = Dir::new(fd).ok()?;
        while let Some(Ok(entry)) = dir.read() {
            let fd = dir.fd().ok()?;
            let raw = entry.file_name();
            if raw == c"." || raw == c".." {
                continue;
            }
            let Some(kind) = kind_at(fd, raw, Some(entry.file_type())) else {
                continue;
            };
            let name = raw.to_string_lossy();
            if kind == Kind::Dir {
                // A name that is not UTF-8 cannot be a valid one: the naming rule reports it
                // (by its lossy form), and the walk opens it by its own.
                subdirs.push(Subdir {
                    rel: join(rel, &name),
                    name: raw.to_owned(),
                });
            } else if kind == Kind::File && raw.to_str().is_ok() {
                self.entry(fd, rel, &name, kind);
            }
        }
        Some((dir, subdirs))
    }

    fn entry(&mut self, dir: BorrowedFd<'_>, rel: &str, name: &str, kind: Kind) {
        if kind != Kind::File {
            return;
        }
        if name.ends_with(".nix") {
            let file = self.nix_file(dir, name, &join(rel, name));
            self.nix.push(file);
        }
    }
}

impl Listing<'_> {
    /// Reads and parses a `.nix` file, unless the lint cache knows it: then one `stat`
    /// says it is unchanged.
    fn nix_file(&mut self, dir: BorrowedFd<'_>, name: &str, path: &str) -> NixFile {
        // The repo model reads meta.nix files as data: always their text.
        let cache = self.cache.filter(|_| !is_model_meta(path));
        if let Some(cache) = cache
            && cache.knows(path)
            && let Ok(st) = rustix::fs::statat(dir, name, AtFlags::empty())
            && let Some((report, (a, b))) = cache.lookup(path, FileId::of(&st))
        {
            self.cached += 1;
            return NixFile {
                rel: path.to_string(),
                text: None,
                report: Some(report),
                keep: Keep::Cached(a, b),
            };
        }
        let opened = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty());
        // The identity of the file opened (not of what the name meant a moment before: a
        // link can be pointed elsewhere meanwhile), taken before its text is read: a change
        // while it is read shows as a new identity next time.
        let id = opened
            .as_ref()
            .ok()
            .filter(|_| cache.is_some())
            .and_then(|fd| rustix::fs::fstat(fd).ok())
            .map(|st| FileId::of(&st));
        let text = opened.ok().and_then(|fd| read_text(&fd, &mut self.buf));
        let report = text
            .as_deref()
            .filter(|_| !is_model_meta(path))
            .map(|t| syntax::parse(path, t));
        self.parsed += usize::from(report.is_some());
        let keep = match (id, &report) {
            (Some(id), Some(_)) => Keep::New(id),
            _ => Keep::Nothing,
        };
        NixFile {
            rel: path.to_string(),
            text,
            report,
            keep,
        }
    }
}

/// `homes/<name>/meta.nix`, `systems/<name>/meta.nix`, `droids/<name>/meta.nix`: the files
/// the repo model reads as data, with findings of their own (a syntax error there is a
/// bad-meta finding, not a second syntax-error one).
fn is_model_meta(rel: &str) -> bool {
    // Asked of every file: the name first, the path only for a meta.nix.
    rel.ends_with("/meta.nix") && {
        let parts: Vec<&str> = rel.split('/').collect();
        matches!(parts.as_slice(), [dir, _, "meta.nix"] if *dir != "lib")
    }
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// The whole file, read until end of file into `buf` (one per thread, so that a file
/// costs no more memory than its text).
fn read_text(fd: &OwnedFd, buf: &mut Vec<u8>) -> Option<String> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize((buf.len() * 2).max(16 * 1024), 0);
        }
        match rustix::io::read(fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
    String::from_utf8(buf[..len].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn walk_lists_directories_files_and_nix_texts_without_following_directory_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::write(root.join("flake.nix"), "{ }").unwrap();
        fs::create_dir_all(root.join("homes/alice/sub")).unwrap();
        fs::write(root.join("homes/alice/default.nix"), "{ a = 1; }").unwrap();
        fs::write(root.join("homes/alice/sub/x.nix"), "x").unwrap();
        fs::write(root.join("homes/alice/notes.txt"), "t").unwrap();
        fs::create_dir_all(root.join("systems/pi")).unwrap();
        fs::write(root.join("systems/pi/meta.nix"), "m").unwrap();
        // A link to a file is a file; a link to a directory is not walked.
        std::os::unix::fs::symlink("default.nix", root.join("homes/alice/meta.nix")).unwrap();
        std::os::unix::fs::symlink("../systems", root.join("homes/loop")).unwrap();
        fs::write(root.join("outside.nix"), "o").unwrap();

        let tree = Tree::walk_with(root, None, 2);
        let rels: Vec<&str> = tree.nix.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            rels,
            [
                "flake.nix",
                "homes/alice/default.nix",
                "homes/alice/meta.nix",
                "homes/alice/sub/x.nix",
                "systems/pi/meta.nix"
            ]
        );
        assert_eq!(tree.text("homes/alice/meta.nix"), Some("{ a = 1; }"));
        assert!(tree.is_nix_file("homes/alice/meta.nix"));
        assert!(!tree.is_nix_file("homes/alice/gone.nix"));
        assert_eq!(tree.subdirs("homes").unwrap(), ["alice"]);
        assert!(tree.tracked.is_none(), "not a git repository");
    }

    #[test]
    fn names_that_are_not_utf8_are_listed_and_walked_and_a_linked_homes_is_followed() {
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let odd = root
            .join("config/homes")
            .join(std::ffi::OsStr::from_bytes(b"al\xffice"));
        fs::create_dir_all(&odd).unwrap();
        fs::write(odd.join("default.nix"), "{ }").unwrap();
        std::os::unix::fs::symlink("config/homes", root.join("homes")).unwrap();
        let tree = Tree::walk_with(root, None, 2);
        assert_eq!(tree.subdirs("homes").unwrap(), ["al\u{fffd}ice"]);
        assert!(tree.is_nix_file("homes/al\u{fffd}ice/default.nix"));
    }

    #[test]
    fn a_walked_directory_that_cannot_be_read_is_an_error_not_an_empty_one() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("homes"), "not a directory").unwrap();
        let tree = Tree::walk_with(t.path(), None, 2);
        assert!(tree.subdirs("homes").is_err());
        assert_eq!(tree.subdirs("systems").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn long_files_are_read_whole_and_non_utf8_ones_are_none() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("lib")).unwrap();
        let long = "# x\n".repeat(10_000);
        fs::write(t.path().join("lib/long.nix"), &long).unwrap();
        fs::write(t.path().join("lib/bin.nix"), [0xff, 0xfe]).unwrap();
        let tree = Tree::walk_with(t.path(), None, 2);
        assert_eq!(tree.text("lib/long.nix"), Some(long.as_str()));
        assert_eq!(tree.text("lib/bin.nix"), None);
        assert!(tree.is_nix_file("lib/bin.nix"));
    }
}
