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
    sync::Arc,
};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags};

use super::{
    ModelDir, NIX_DIRS,
    lint_cache::{FileId, LintCache},
    meta_text::{self, MetaRead},
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
    /// What a meta.nix of a home or machine says, read as data by the thread that read it.
    meta: Option<MetaRead>,
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
    /// The walked directories and the directories in them (`homes/alice`), sorted: what
    /// the layout scan lists. Not those behind a symlink: git stores the link, not the
    /// files behind it, and a link cycle would never end.
    dirs: Vec<Walked>,
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
        // git reads its index while the directories are walked; a thread of its own starts
        // it (a millisecond until git runs) and makes its answer a set.
        let at = root.to_path_buf();
        let ls_files =
            move || super::git_ls_files(&at, &["--cached"]).map(|v| v.into_iter().collect());
        // Without a thread (a process or memory limit), git runs after the walk instead.
        let git = std::thread::Builder::new().spawn(ls_files.clone());
        let mut tree = Tree::default();
        tree.cores = cores;
        if let Ok(top) = rustix::fs::openat(CWD, root, dir_flags(), Mode::empty()) {
            tree.read(top.as_fd(), cache.as_ref());
        }
        if let Some(cache) = cache {
            // The new cache is put together and written by a thread of its own, on the core
            // the walk no longer needs, while the layout scan and the analysis run (none if
            // no thread can be started: it is only a cache).
            let files = Arc::clone(&tree.nix);
            let writer = std::thread::Builder::new().spawn(move || {
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
            });
            tree.writer = writer.ok();
        }
        tree.tracked = match git {
            Ok(thread) => thread.join().ok().flatten(),
            Err(_) => ls_files(),
        };
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
        // The walked directories' own entries are read by this thread, and their
        // subdirectories (homes/ alone has a directory per home) handed to every core a few
        // at a time as they are read: the other threads start on the first homes while
        // this one still reads homes/, and one that happens to get bigger homes does not
        // keep the others waiting.
        let threads = self.cores.clamp(1, 8);
        let queue = Queue::default();
        std::thread::scope(|s| {
            // Closed however this thread leaves (a panic too), or the others would wait on.
            let _closed = Closing(&queue);
            // A thread that cannot be started (a process or memory limit) leaves its share
            // to the others, this one included.
            let workers: Vec<_> = (1..threads)
                .map_while(|_| {
                    std::thread::Builder::new()
                        .spawn_scoped(s, || queue.work(cache))
                        .ok()
                })
                .collect();
            let mut batch = Vec::with_capacity(BATCH);
            for (rel, fd) in &roots {
                let mut own = Listing::new(cache);
                own.dirs.push(Walked::new(rel.clone()));
                // Read through a descriptor of its own: `fd` stays open for the threads.
                if let Ok(dup) = rustix::fs::openat(fd, c".", dir_flags(), Mode::empty()) {
                    own.read(dup, rel, |name| {
                        batch.push(Job {
                            parent: fd.as_fd(),
                            root: rel,
                            name: name.to_owned(),
                        });
                        if batch.len() == BATCH {
                            queue.push(std::mem::take(&mut batch));
                        }
                    });
                }
                own.sort();
                listings.push(own);
            }
            queue.push(batch);
            queue.close();
            // This thread takes its share rather than wait.
            listings.push(queue.work(cache));
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
        // Sorted runs, one per thread: the stable sort finds them and merges them.
        self.dirs.sort_by(|a, b| a.rel.cmp(&b.rel));
        nix.sort_by(|a, b| a.rel.cmp(&b.rel));
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

    /// The directories in `rel` (homes, systems, droids), sorted, each with whether
    /// default.nix and meta.nix are files (or links to files) in it, as the walk saw them;
    /// an error if `rel` exists but could not be read.
    pub fn model_dirs(&self, rel: &str) -> std::io::Result<Vec<ModelDir>> {
        if let Some((_, e)) = self.unreadable.iter().find(|(d, _)| d == rel) {
            return Err(std::io::Error::new(e.kind(), e.to_string()));
        }
        let prefix = format!("{rel}/");
        let start = self
            .dirs
            .partition_point(|d| d.rel.as_str() < prefix.as_str());
        let dirs = self.dirs[start..]
            .iter()
            .take_while(|d| d.rel.starts_with(&prefix))
            .filter_map(|d| {
                let name = &d.rel[prefix.len()..];
                (!name.contains('/')).then(|| ModelDir {
                    name: name.to_string(),
                    default: d.default,
                    meta: d.meta,
                })
            })
            .collect();
        Ok(dirs)
    }

    /// What the meta.nix `rel` of a home or machine says; None if the walk could not read
    /// it.
    pub(super) fn meta(&self, rel: &str) -> Option<MetaRead> {
        let i = self
            .nix
            .binary_search_by(|f| f.rel.as_str().cmp(rel))
            .ok()?;
        self.nix[i].meta.clone()
    }

    /// The text of a `.nix` file the walk read.
    #[cfg(test)]
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

/// A directory of one of the walked directories (`homes/alice`), to walk: the walked
/// directory open, its path, and the name as it is on disk.
struct Job<'a> {
    parent: BorrowedFd<'a>,
    root: &'a str,
    name: std::ffi::CString,
}

/// The jobs not yet taken, and whether more may come.
#[derive(Default)]
struct Queue<'a> {
    jobs: std::sync::Mutex<(Vec<Job<'a>>, bool)>,
    ready: std::sync::Condvar,
}

impl<'a> Queue<'a> {
    fn push(&self, jobs: Vec<Job<'a>>) {
        if jobs.is_empty() {
            return;
        }
        self.lock().0.extend(jobs);
        self.ready.notify_one();
    }

    /// No more jobs will come.
    fn close(&self) {
        self.lock().1 = true;
        self.ready.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Job<'a>>, bool)> {
        // A walker that panicked leaves the list as it was: still a list of jobs.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes jobs a few at a time until there are none and no more will come, and walks
    /// them; returns what they hold, sorted (so that the whole is only merged after).
    fn work<'c>(&self, cache: Option<&'c LintCache>) -> Listing<'c> {
        let mut listing = Listing::new(cache);
        loop {
            let batch = {
                let mut jobs = self.lock();
                loop {
                    let n = jobs.0.len();
                    if n > 0 {
                        break jobs.0.split_off(n - n.min(BATCH));
                    }
                    if jobs.1 {
                        break Vec::new();
                    }
                    jobs = self.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
                }
            };
            if batch.is_empty() {
                break;
            }
            for job in batch {
                let rel = join(job.root, &job.name.to_string_lossy());
                // Listed whether or not it can be read: the layout scan names those.
                let (default, meta) = listing.walk(job.parent, &job.name, &rel);
                listing.dirs.push(Walked { rel, default, meta });
            }
        }
        listing.sort();
        listing
    }
}

/// Closes the queue when dropped.
struct Closing<'q, 'a>(&'q Queue<'a>);

impl Drop for Closing<'_, '_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A walked directory or one in it (`homes/alice`, repo-relative), and whether default.nix
/// and meta.nix are files (or links to files) in it: what the layout asks of it.
#[derive(Debug)]
struct Walked {
    rel: String,
    default: bool,
    meta: bool,
}

impl Walked {
    fn new(rel: String) -> Walked {
        Walked {
            rel,
            default: false,
            meta: false,
        }
    }
}

/// What one thread found.
struct Listing<'c> {
    cache: Option<&'c LintCache>,
    cached: usize,
    parsed: usize,
    buf: Vec<u8>,
    dirs: Vec<Walked>,
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

    fn sort(&mut self) {
        self.dirs.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
        self.nix.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    }

    /// Walks the directory `rel`, opened relative to `parent` by its name as it is on disk
    /// (the lossy `rel` may not name it: a name that is not UTF-8 cannot be a valid one, and
    /// the naming rule reports it by its lossy form). Returns whether default.nix and
    /// meta.nix are files in it.
    fn walk(&mut self, parent: BorrowedFd<'_>, name: &CStr, rel: &str) -> (bool, bool) {
        let Ok(fd) = rustix::fs::openat(parent, name, dir_flags(), Mode::empty()) else {
            return (false, false);
        };
        let mut subdirs = Vec::new();
        let Some((dir, has)) = self.read(fd, rel, |name| subdirs.push(name.to_owned())) else {
            return (false, false);
        };
        if let Ok(fd) = dir.fd() {
            for name in &subdirs {
                let sub = join(rel, &name.to_string_lossy());
                self.walk(fd, name, &sub);
            }
        }
        has
    }

    /// Records the entries of the open directory `rel` and passes the names of its
    /// subdirectories to `subdir`, for the caller to walk; says whether default.nix and
    /// meta.nix are files in it.
    fn read(
        &mut self,
        fd: OwnedFd,
        rel: &str,
        mut subdir: impl FnMut(&CStr),
    ) -> Option<(Dir, (bool, bool))> {
        let mut has = (false, false);
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
            if kind == Kind::Dir {
                subdir(raw);
            } else if kind == Kind::File
                && let Ok(name) = raw.to_str()
            {
                match name {
                    "default.nix" => has.0 = true,
                    "meta.nix" => has.1 = true,
                    _ => {}
                }
                self.entry(fd, rel, name, kind);
            }
        }
        Some((dir, has))
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
                meta: None,
                keep: Keep::Cached(a, b),
            };
        }
        let opened = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty());
        // The identity of the file opened (not of what the name meant a moment before: a
        // link can be pointed elsewhere meanwhile), taken before its text is read: a change
        // while it is read shows as a new identity next time.
        let st = opened
            .as_ref()
            .ok()
            .and_then(|fd| rustix::fs::fstat(fd).ok());
        let id = st.as_ref().filter(|_| cache.is_some()).map(FileId::of);
        let size = st.and_then(|st| usize::try_from(st.st_size).ok());
        let text = opened
            .ok()
            .and_then(|fd| read_text(&fd, size, &mut self.buf));
        let (report, meta) = match text.as_deref() {
            Some(t) if is_model_meta(path) => (None, Some(meta_text::read_meta(t))),
            Some(t) => (Some(syntax::parse(path, t)), None),
            None => (None, None),
        };
        self.parsed += usize::from(report.is_some());
        let keep = match (id, &report) {
            (Some(id), Some(_)) => Keep::New(id),
            _ => Keep::Nothing,
        };
        NixFile {
            rel: path.to_string(),
            text,
            report,
            meta,
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

/// The whole file, read into `buf` (one per thread, so that a file costs no more memory
/// than its text): until `size` bytes (what `fstat` said) came, which spares the read that
/// would only say the file ends there, else until end of file. A file that grew after the
/// `fstat` is read on to its end; one that grows just after the read is read as it was,
/// as any read of it would be.
fn read_text(fd: &OwnedFd, size: Option<usize>, buf: &mut Vec<u8>) -> Option<String> {
    let want = size.map_or(0, |s| s + 1);
    if buf.len() < want {
        buf.resize(want.max(16 * 1024), 0);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize((buf.len() * 2).max(16 * 1024), 0);
        }
        match rustix::io::read(fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if Some(len) == size {
                    break;
                }
            }
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
        assert_eq!(
            tree.model_dirs("homes").unwrap(),
            [ModelDir {
                name: "alice".into(),
                default: true,
                meta: true
            }]
        );
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
        assert_eq!(
            tree.model_dirs("homes").unwrap(),
            [ModelDir {
                name: "al\u{fffd}ice".into(),
                default: true,
                meta: false
            }]
        );
    }

    #[test]
    fn a_walked_directory_that_cannot_be_read_is_an_error_not_an_empty_one() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("homes"), "not a directory").unwrap();
        let tree = Tree::walk_with(t.path(), None, 2);
        assert!(tree.model_dirs("homes").is_err());
        assert_eq!(tree.model_dirs("systems").unwrap(), []);
    }

    /// Threads that cannot be started (here: too little address space for their stacks)
    /// must leave their share to the others, not leave them waiting for it forever. Run
    /// in a child process of this test binary, under the limit.
    #[test]
    fn a_walker_that_cannot_be_started_does_not_hang_the_walk() {
        const STACK: u64 = 1 << 30;
        const CHILD: &str = "XTASK_TEST_SPAWN_FAILS";
        if std::env::var_os(CHILD).is_some() {
            let t = tempfile::tempdir().unwrap();
            for i in 0..40 {
                fs::create_dir_all(t.path().join(format!("homes/u{i}"))).unwrap();
                fs::write(t.path().join(format!("homes/u{i}/default.nix")), "{ }").unwrap();
            }
            let vm_kib: u64 = fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .unwrap()
                .trim()
                .trim_end_matches(" kB")
                .parse()
                .unwrap();
            // Room for git's thread and one walker's stack, not for a second walker's.
            rustix::process::setrlimit(
                rustix::process::Resource::As,
                rustix::process::Rlimit {
                    current: Some(vm_kib * 1024 + 2 * STACK + STACK / 2),
                    maximum: None,
                },
            )
            .unwrap();
            let tree = Tree::walk_with(t.path(), None, 8);
            assert_eq!(tree.model_dirs("homes").unwrap().len(), 40);
            return;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "repo::tree::tests::a_walker_that_cannot_be_started_does_not_hang_the_walk",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("RUST_MIN_STACK", STACK.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut out = String::new();
                std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
                assert!(status.success(), "the walk failed under the limit: {out}");
                return;
            }
            if start.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the walk hung: a walker could not be started and the others wait on");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
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
        assert!(tree.nix.iter().any(|f| f.rel == "lib/bin.nix"));
    }
}
