//! The xtask's cache: `$XDG_CACHE_HOME/homelab-xtask/<kind>/` (else
//! `~/.cache/homelab-xtask/<kind>/`), for answers that cost a nix process or a parse of
//! thousands of files and that the xtask can tell are still right without asking again
//! (a store path's closure; a file whose size, times and inode are unchanged).
//!
//! Only ever a shortcut: an entry that is missing, unreadable, corrupt or written by
//! another format is recomputed, and a write that fails (read-only home, full disk) is
//! ignored. Writes are atomic (a temporary file renamed into place), so two runs at once
//! never read half an entry, and an entry ends with its length (`end N`), so one cut short
//! by a crash (the rename is not synced: a sync would cost every run) reads as missing,
//! never as a shorter answer.

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
/// for) and is whole; the text between the header line and the end line.
pub fn read(path: &Path, header: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let rest = text.strip_prefix(header)?.strip_prefix('\n')?;
    let body = rest.strip_suffix('\n')?;
    let (body, end) = match body.rsplit_once('\n') {
        Some((body, end)) => (&rest[..body.len() + 1], end),
        None => ("", body),
    };
    let len: usize = end.strip_prefix("end ")?.parse().ok()?;
    (len == body.len()).then(|| body.to_string())
}

/// Writes `header`, a newline, `body` (empty, or ending with a newline) and the end line
/// to `path` atomically; false if it could not.
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
        .write_all(format!("{header}\n").as_bytes())
        .and_then(|()| tmp.write_all(body.as_bytes()))
        .and_then(|()| tmp.write_all(format!("end {}\n", body.len()).as_bytes()));
    written.is_ok() && tmp.persist(path).is_ok()
}

/// Removes the entries of `dir` whose subject is `gone` (a store path collected, a
/// repository moved), so the cache does not outgrow what it is about, and the temporary
/// files of writes a kill interrupted (older than an hour: a write in progress is
/// younger). One pass over the directory, after a write.
pub fn prune(dir: &Path, gone: impl Fn(&str) -> bool) {
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let remove = if name.starts_with(".tmp") {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < hour_ago)
        } else {
            gone(&name)
        };
        if remove {
            let _ = fs::remove_file(entry.path());
        }
    }
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
        assert!(write(&path, "fmt 1 key", ""));
        assert_eq!(read(&path, "fmt 1 key").as_deref(), Some(""));
        // Cut short at a line's end, or anywhere: missing, never a shorter entry.
        assert!(write(&path, "fmt 1 key", "a\nb\n"));
        let whole = fs::read_to_string(&path).unwrap();
        for cut in 1..whole.len() {
            fs::write(&path, &whole[..cut]).unwrap();
            assert_eq!(
                read(&path, "fmt 1 key"),
                None,
                "cut at {cut}: {:?}",
                &whole[..cut]
            );
        }
        // Or with a line missing from its middle.
        fs::write(&path, whole.replace("a\n", "")).unwrap();
        assert_eq!(read(&path, "fmt 1 key"), None);
        assert!(write(&path, "fmt 1 key", "a\nb\n"));
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

    #[test]
    fn prune_removes_gone_entries_and_old_temporary_files_only() {
        let t = tempfile::tempdir().unwrap();
        for name in ["keep", "gone", ".tmpfresh", ".tmpold"] {
            fs::write(t.path().join(name), "x").unwrap();
        }
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        fs::File::options()
            .write(true)
            .open(t.path().join(".tmpold"))
            .unwrap()
            .set_modified(day_ago)
            .unwrap();
        prune(t.path(), |name| name == "gone");
        let mut left: Vec<String> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".tmpfresh", "keep"]);
    }
}
