//! The lock of a home profile: one switch, rollback or gc at a time, and it covers the
//! activation itself, not just the xtask process.
//!
//! It is an advisory `flock` on `…/home-manager/switch.lock`. The kernel keeps it while any
//! descriptor of that open file lives, and the `activate` child inherits one
//! ([`Lock::share_with`]): if the xtask is killed while `activate` runs, the orphaned
//! activation still holds the lock until it ends, so no second switch can race it. When
//! every holder has exited, however it exited, the lock is free.

use std::{
    fs::{self, File, OpenOptions},
    io::{ErrorKind, Read, Seek, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

pub struct Lock {
    file: File,
    path: PathBuf,
    /// This run created the lock file (a first switch).
    created: bool,
}

impl Lock {
    /// Takes the lock in `dir` (created), or fails naming the holder. `what` names the
    /// profile for the message ("alice's home").
    pub fn acquire(dir: &Path, what: &str) -> Result<Lock> {
        let path = dir.join("switch.lock");
        fs::create_dir_all(dir).map_err(|e| io_error(e, dir, "creating"))?;
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(e, &path, "creating the lock file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    holder.to_string()
                };
                bail!(
                    "another switch, rollback or gc of {what} is running ({holder}), or an activation it started is still running after it was stopped; wait for it to finish, then try again\n  lock: {} (`fuser -v {}` shows who holds it)",
                    path.display(),
                    path.display()
                );
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        Ok(Lock {
            file,
            path,
            created: !existed,
        })
    }

    /// Who holds the lock in `dir`, without creating or changing anything (for `doctor`):
    /// `None` when there is no lock file or nobody holds it, else the holder it records
    /// ("pid N: …", or "another process"). The probe holds the lock for an instant only.
    pub fn holder(dir: &Path) -> Result<Option<String>> {
        let path = lock_path(dir);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e, &path, "opening the lock file")),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                Ok(Some(if holder.is_empty() {
                    "another process".to_string()
                } else {
                    holder.to_string()
                }))
            }
            Err(fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("probing {}", path.display()))
            }
        }
    }

    /// Writes who holds the lock into it, for the message of a run that has to wait.
    /// Called only once the holder is about to change something: a run that only looks
    /// (a blocked pre-flight) leaves the file as it was, byte for byte. A full disk must not
    /// leave an empty lock file behind that a later run reads as "another process".
    pub fn announce(&self) -> Result<()> {
        let me = format!(
            "pid {}: {}",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        let mut f = &self.file;
        let written = self
            .file
            .set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(me.as_bytes()));
        if let Err(e) = written {
            if self.created {
                let _ = fs::remove_file(&self.path);
            }
            return Err(io_error(e, &self.path, "writing the lock file"));
        }
        Ok(())
    }

    /// Makes `cmd`'s process inherit a descriptor of the locked file, so the lock lives as
    /// long as that process, even past the xtask's own end (SIGKILL).
    pub fn share_with(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let fd = self.file.as_raw_fd();
        // SAFETY: the closure runs between fork and exec and only calls fcntl(2), which is
        // async-signal-safe; `fd` stays open in the parent for the whole spawn.
        unsafe {
            cmd.pre_exec(move || {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                Ok(())
            });
        }
    }
}

/// An I/O failure under `$HOME` with its path and the fix.
pub fn io_error(e: std::io::Error, path: &Path, doing: &str) -> anyhow::Error {
    let fix = match e.raw_os_error() {
        Some(28) => "the file system is full: free some space there, then try again",
        Some(30) => "the file system is read-only: remount it read-write, then try again",
        _ if e.kind() == ErrorKind::PermissionDenied => {
            "permission denied: fix the ownership or permissions of that path (it must belong to you)"
        }
        _ => "fix the cause above, then try again",
    };
    anyhow::anyhow!("{doing} {} failed: {e}; {fix}", path.display())
}

/// The lock path for messages and tests.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join("switch.lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_while_a_child_holds_the_first() {
        let t = tempfile::tempdir().unwrap();
        let lock = Lock::acquire(t.path(), "t's home").unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("1");
        lock.share_with(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        drop(lock);
        // The xtask's own descriptor is gone; the child's keeps the lock.
        let err = Lock::acquire(t.path(), "t's home").err().unwrap();
        assert!(
            format!("{err:#}").contains("an activation it started"),
            "{err:#}"
        );
        child.wait().unwrap();
        Lock::acquire(t.path(), "t's home").unwrap();
    }

    #[test]
    fn the_probe_names_the_holder_and_creates_nothing() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("state");
        assert_eq!(Lock::holder(&dir).unwrap(), None);
        assert!(!dir.exists(), "the probe created the directory");
        let lock = Lock::acquire(&dir, "t's home").unwrap();
        lock.announce().unwrap();
        let held = Lock::holder(&dir).unwrap().unwrap();
        assert!(
            held.starts_with(&format!("pid {}", std::process::id())),
            "{held}"
        );
        drop(lock);
        // A test spawning a child in parallel may hold a copy of the descriptor between
        // its fork and exec: give that instant time to pass.
        let freed = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            Lock::holder(&dir).unwrap().is_none()
        });
        assert!(freed, "the lock stayed held after it was dropped");
    }
}
