//! The xtask's cache: `$XDG_CACHE_HOME/homelab-xtask/<kind>/` (else
//! `~/.cache/homelab-xtask/<kind>/`), for answers that cost a nix process or a parse of
//! thousands of files and that the xtask can tell are still right without asking again
//! (a store path's closure; a file whose size, times and inode are unchanged).
//!
//! Only ever a shortcut: an entry that is missing, unreadable, corrupt or written by
//! another format is recomputed, and a write that fails (read-only home, full disk) is
//! ignored. Writes are atomic (a temporary file renamed into place), so two runs at once
//! never read half an entry.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

/// The directory of one kind of entry (`closures`, `lint`); None without a home.
pub fn dir(kind: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".cache"))
        })?;
    Some(base.join("homelab-xtask").join(kind))
}

/// An entry's text, if it starts with `header` (the format and what the entry is valid
/// for); the rest after the header line.
pub fn read(path: &Path, header: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let rest = text.strip_prefix(header)?.strip_prefix('\n')?;
    Some(rest.to_string())
}

/// Writes `header`, a newline and `body` to `path` atomically; false if it could not.
pub fn write(path: &Path, header: &str, body: &str) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    if fs::create_dir_all(dir).is_err() {
        return false;
    }
    let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return false;
    };
    let written = tmp
        .write_all(header.as_bytes())
        .and_then(|()| tmp.write_all(b"\n"))
        .and_then(|()| tmp.write_all(body.as_bytes()));
    written.is_ok() && tmp.persist(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_other_headers_or_damage_read_as_missing() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("kind/entry");
        assert!(write(&path, "fmt 1 key", "a\nb\n"));
        assert_eq!(read(&path, "fmt 1 key").as_deref(), Some("a\nb\n"));
        assert_eq!(read(&path, "fmt 2 key"), None, "another format");
        assert_eq!(
            read(&path, "fmt 1 ke"),
            None,
            "a prefix of the header is not it"
        );
        fs::write(&path, [0xff, 0xfe]).unwrap();
        assert_eq!(read(&path, "fmt 1 key"), None, "damaged");
        assert_eq!(read(&t.path().join("missing"), "fmt 1 key"), None);
        // Where nothing can be written, the write says so and nothing fails.
        let blocked = t.path().join("file");
        fs::write(&blocked, "x").unwrap();
        assert!(!write(&blocked.join("entry"), "h", "b"));
    }
}
