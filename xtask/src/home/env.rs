//! Whose home this is: `$USER`, `$HOME` and the state directories, read once and
//! checked before anything is built from them, and who may deploy it.

use std::{
    env,
    io::ErrorKind,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::repo;

/// The environment the profile rules read. Captured once so that tests of the rules do
/// not depend on the process environment.
#[derive(Debug, Clone)]
pub struct UserEnv {
    pub user: String,
    pub home: PathBuf,
    pub(super) xdg_state_home: Option<PathBuf>,
    pub(super) nix_state_dir: Option<PathBuf>,
}

impl UserEnv {
    pub fn from_process() -> Result<UserEnv> {
        // `USER` is what Home Manager's activation checks; LOGNAME is its POSIX twin (cron,
        // some `su` setups set only that).
        let user = env::var("USER")
            .or_else(|_| env::var("LOGNAME"))
            .context("neither USER nor LOGNAME is set; set USER to your login name")?;
        // The name becomes part of paths (the per-user profile directory), so it must be
        // a name a home can have before any path is built from it (`USER=../x`).
        repo::validate_name(&user).map_err(|e| {
            anyhow::anyhow!(
                "$USER (or $LOGNAME) is not a user name a home can have: {e}; set USER to your login name"
            )
        })?;
        let home = env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .context("HOME is not set; set it to your home directory")?;
        Ok(UserEnv {
            user,
            home,
            xdg_state_home: non_empty("XDG_STATE_HOME"),
            nix_state_dir: non_empty("NIX_STATE_DIR"),
        })
    }

    /// The environment and the user a task about one's own home works on: `user`, else
    /// `$USER`, checked by [`check_runner`] (`writes`: the task changes the home). The
    /// profile is found through the user's own `$HOME` and `$XDG_STATE_HOME`, so only the
    /// user may run it.
    pub fn own(user: Option<String>, writes: bool) -> Result<(UserEnv, String)> {
        let env = UserEnv::from_process()?;
        let user = user.unwrap_or_else(|| env.user.clone());
        check_runner(&user, &env, writes)?;
        Ok((env, user))
    }

    /// A user and home with no XDG or Nix state overrides (benchmarks, tests).
    pub fn new(user: &str, home: &std::path::Path) -> UserEnv {
        UserEnv {
            user: user.into(),
            home: home.to_path_buf(),
            xdg_state_home: None,
            nix_state_dir: None,
        }
    }

    /// `${XDG_STATE_HOME:-$HOME/.local/state}`.
    pub fn state_home(&self) -> PathBuf {
        self.xdg_state_home
            .clone()
            .unwrap_or_else(|| self.home.join(".local/state"))
    }

    /// Home Manager's own state: `…/home-manager` (gcroots, and our switch lock).
    pub fn hm_state_dir(&self) -> PathBuf {
        self.state_home().join("home-manager")
    }

    /// Home Manager's GC root of the generation whose files `$HOME` has.
    pub fn current_home_root(&self) -> PathBuf {
        self.hm_state_dir().join("gcroots/current-home")
    }

    /// `${NIX_STATE_DIR:-/nix/var/nix}/profiles/per-user/$USER`, the legacy profile directory.
    pub fn per_user_profiles(&self) -> PathBuf {
        self.nix_state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/nix/var/nix"))
            .join("profiles/per-user")
            .join(&self.user)
    }

    /// `path` with `$HOME` shown as `~`, for messages.
    pub fn tilde(&self, path: &Path) -> String {
        match path.strip_prefix(&self.home) {
            Ok(rel) if rel.as_os_str().is_empty() => "~".into(),
            Ok(rel) => format!("~/{}", rel.display()),
            Err(_) => path.display().to_string(),
        }
    }

    /// `$HOME` must be a directory a task can trust before it reads or writes under it:
    /// absolute (a relative one would put profiles inside whatever the working directory
    /// is, e.g. the repository), existing (nothing creates a home on the side), and owned
    /// by the caller (`sudo -E` keeps HOME but runs as root: every link and profile entry
    /// would then belong to root). `writes`: the task changes `$HOME`, so it must be
    /// writable and have room, which is said here rather than by the first failing write.
    pub fn check_home(&self, writes: bool) -> Result<()> {
        let home = &self.home;
        if !home.is_absolute() {
            bail!(
                "$HOME is {:?}, a relative path; set HOME to the absolute path of your home directory (e.g. HOME=/home/{})",
                home.display().to_string(),
                self.user
            );
        }
        let meta = match std::fs::metadata(home) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => bail!(
                "$HOME ({}) does not exist; set HOME to your home directory (nothing creates one here)",
                home.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "$HOME ({}) cannot be read; check its permissions",
                        home.display()
                    )
                });
            }
        };
        if !meta.is_dir() {
            bail!(
                "$HOME ({}) is not a directory; set HOME to your home directory",
                home.display()
            );
        }
        let euid = rustix::process::geteuid().as_raw();
        if meta.uid() != euid {
            bail!(
                "$HOME ({}) belongs to uid {}, but this runs as uid {euid}{}: the files and profile links it makes would belong to the wrong user; run it as {} itself (without sudo)",
                home.display(),
                meta.uid(),
                if euid == 0 {
                    " (root, e.g. through sudo -E)"
                } else {
                    ""
                },
                self.user
            );
        }
        if writes {
            writable(home, "$HOME")?;
        }
        Ok(())
    }
}

/// Says, before the first write, when `dir` is read-only or full, naming the path and
/// the fix (nix would otherwise report a raw SQLite or "os error 28" message).
pub fn writable(dir: &Path, what: &str) -> Result<()> {
    use rustix::fs::{Access, access, statvfs};
    if let Err(e) = access(dir, Access::WRITE_OK) {
        let why = if e == rustix::io::Errno::ROFS {
            "is on a read-only file system"
        } else {
            "is not writable for this user"
        };
        bail!(
            "{what} ({}) {why}; a switch writes links, backups and profile entries there: remount it read-write or fix its permissions, then try again",
            dir.display()
        );
    }
    // Links and profile entries need a few inodes and blocks; none at all is the
    // failure users hit (a full disk), and it is cheap to ask.
    if let Ok(st) = statvfs(dir)
        && (st.f_bavail == 0 || (st.f_files > 0 && st.f_favail == 0))
    {
        bail!(
            "{what} ({}) is on a full file system (no space or no inodes left); free some space there, then try again",
            dir.display()
        );
    }
    Ok(())
}

fn non_empty(var: &str) -> Option<PathBuf> {
    env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Only the user may deploy their own home: `activate` checks `$USER`, writes with the
/// caller's ownership and uses the caller's profile. It also checks `user` against the
/// naming rule, since callers build profile paths and flake attributes from it
/// (`generations ../x`), and `$HOME` (see [`UserEnv::check_home`]).
pub fn check_runner(user: &str, env: &UserEnv, writes: bool) -> Result<()> {
    repo::validate_name(user).map_err(|e| {
        crate::UsageError(format!(
            "{user:?} is not a user name a home can have: {e}; name a home in homes/"
        ))
    })?;
    if user == repo::rules().reserved_host {
        return Err(crate::UsageError(format!(
            "'{user}' is reserved (homes/<user>@{user} is the standalone-only part of a home), so no home is called that; name a home in homes/"
        ))
        .into());
    }
    if user == env.user {
        return env.check_home(writes);
    }
    if env.user == "root" {
        bail!(
            "you are root, but this is {user}'s home: as root it would use root's profile and leave root-owned files in {user}'s home; run it as {user} (e.g. `sudo -u {user} -i`, then `cargo xtask switch`)"
        );
    }
    bail!(
        "you are {}, but this is {user}'s home; log in as {user} and run the command there",
        env.user
    )
}
