//! Where the profile lives and what its generations are: the directory the `home-manager`
//! script picks, the `home-manager-<N>-link` generations, and the migration of a legacy
//! per-user profile (activation-init's `migrateProfile`), all per ../shared/hm-contract.md.

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use serde::Serialize;

use super::env::UserEnv;
use crate::{nix::Nix, term};

/// A profile directory; the profile itself is the `home-manager` link in it.
#[derive(Debug, Clone)]
pub struct Profile {
    pub dir: PathBuf,
    /// False on first install: the directory still has to be created.
    pub exists: bool,
}

/// One generation link `home-manager-<id>-link`.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub id: u64,
    /// `YYYY-MM-DD HH:MM` of the link in local time, as `home-manager generations` shows it.
    pub date: String,
    /// The store path of the generation.
    pub path: PathBuf,
    pub current: bool,
}

impl UserEnv {
    /// The profile directory as the `home-manager` script picks it: the XDG one when it
    /// exists, else the per-user one under the Nix state dir; when neither exists (first
    /// install) the XDG one, which the caller creates.
    pub fn profile(&self) -> Profile {
        let xdg = self.xdg_profiles();
        if xdg.is_dir() {
            return Profile {
                dir: xdg,
                exists: true,
            };
        }
        let global = self.per_user_profiles();
        if global.is_dir() {
            return Profile {
                dir: global,
                exists: true,
            };
        }
        Profile {
            dir: xdg,
            exists: false,
        }
    }

    /// `${XDG_STATE_HOME:-~/.local/state}/nix/profiles`.
    pub fn xdg_profiles(&self) -> PathBuf {
        self.state_home().join("nix/profiles")
    }

    /// The store path of the active generation, the one whose files `$HOME` has: Home
    /// Manager's GC root of it (after `switch --specialisation` that is the
    /// specialisation), else the profile's generation; None before the first switch.
    pub fn active_generation(&self) -> Option<PathBuf> {
        fs::canonicalize(self.current_home_root())
            .or_else(|_| fs::canonicalize(self.profile().link()))
            .ok()
    }
}

impl Profile {
    /// The profile link `nix-env --profile` takes.
    pub fn link(&self) -> PathBuf {
        self.dir.join("home-manager")
    }

    /// The link of generation `id`.
    pub fn generation_link(&self, id: u64) -> PathBuf {
        self.dir.join(format!("home-manager-{id}-link"))
    }

    /// The id of the generation the profile points to, if any.
    pub fn current_id(&self) -> Option<u64> {
        let target = fs::read_link(self.link()).ok()?;
        generation_id(target.file_name()?.to_str()?)
    }

    /// Every generation, newest (highest id) first.
    pub fn generations(&self) -> Result<Vec<Generation>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        let current = self.current_id();
        let mut gens = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", self.dir.display()))?;
            let Some(id) = entry.file_name().to_str().and_then(generation_id) else {
                continue;
            };
            let link = entry.path();
            let Ok(path) = fs::read_link(&link) else {
                continue;
            };
            let mtime = fs::symlink_metadata(&link)
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH);
            gens.push(Generation {
                id,
                date: format_local(mtime),
                path,
                current: current == Some(id),
            });
        }
        gens.sort_by_key(|g| std::cmp::Reverse(g.id));
        Ok(gens)
    }
}

/// `home-manager-17-link` → 17.
fn generation_id(name: &str) -> Option<u64> {
    name.strip_prefix("home-manager-")?
        .strip_suffix("-link")?
        .parse()
        .ok()
}

/// `YYYY-MM-DD HH:MM` in the machine's time zone (`TZ`, else /etc/localtime), as Home
/// Manager prints generation dates; UTC where no zone can be found.
pub fn format_local(t: SystemTime) -> String {
    let Ok(ts) = jiff::Timestamp::try_from(t) else {
        return "????-??-?? ??:??".into();
    };
    let tz = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
    ts.to_zoned_datetime(tz)
        .strftime("%Y-%m-%d %H:%M")
        .to_string()
}

/// A legacy profile to move: Home Manager's `migrateProfile` takes the per-user one (or
/// `$XDG_STATE_HOME/home-manager/profiles`) when the XDG profile directory exists.
#[derive(Debug)]
pub struct Migration {
    pub from: PathBuf,
    pub to: PathBuf,
    /// The generation links to carry over (none when the XDG profile exists already, in
    /// which case Home Manager only deletes the old links).
    pub links: Vec<PathBuf>,
}

impl UserEnv {
    /// What `migrateProfile` would do now, if anything. It runs inside `activate`, after the
    /// driver has set the profile; done there, the driver's `nix-env --set` would already
    /// have created `home-manager` in the XDG directory, so the migration would see it and
    /// only delete the old links: the history would be lost. The driver migrates first.
    pub fn pending_migration(&self) -> Option<Migration> {
        let per_user = self.per_user_profiles();
        let hm_profiles = self.hm_state_dir().join("profiles");
        // `[[ -e …/home-manager ]]`: the link must resolve.
        let from = [per_user, hm_profiles]
            .into_iter()
            .find(|d| d.join("home-manager").exists())?;
        let to = self.xdg_profiles();
        if !to.exists() {
            return None;
        }
        let links = if fs::symlink_metadata(to.join("home-manager")).is_ok() {
            Vec::new()
        } else {
            old_links(&from)
        };
        Some(Migration { from, to, links })
    }
}

/// `home-manager-*` in `dir` except the profile link itself, sorted.
fn old_links(dir: &Path) -> Vec<PathBuf> {
    let mut links: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                e.file_name()
                    .to_str()?
                    .starts_with("home-manager-")
                    .then(|| e.path())
            })
            .collect()
        })
        .unwrap_or_default();
    links.sort();
    links
}

impl Migration {
    /// The commands, as [`Migration::run`] performs them (for --dry-run).
    pub fn shown(&self) -> Vec<String> {
        let q = |p: &Path| crate::home::shell_quote(&p.display().to_string());
        let mut out = Vec::new();
        for l in &self.links {
            let name = l.file_name().unwrap_or_default();
            out.push(format!(
                "nix-store --realise {} --add-root {}",
                q(l),
                q(&self.to.join(name))
            ));
        }
        if !self.links.is_empty() {
            out.push(format!(
                "cp -P {} {}",
                q(&self.from.join("home-manager")),
                q(&self.to)
            ));
        }
        out.push(format!(
            "rm {} {}/home-manager-*",
            q(&self.from.join("home-manager")),
            q(&self.from)
        ));
        out
    }

    /// Moves the generations: each becomes a GC-rooted link in the new directory (keeping
    /// its date), the profile link is copied, then the old links go. Old links are only
    /// removed once every new one exists, so a failure midway loses nothing.
    pub fn run(&self, nix: &Nix<'_>) -> Result<()> {
        term::info(&format!(
            "migrating the Home Manager profile from {} to {} (as Home Manager's activation does)",
            self.from.display(),
            self.to.display()
        ));
        for l in &self.links {
            let name = l.file_name().context("a profile link without a name")?;
            let new = self.to.join(name);
            let realise = nix
                .tool("nix-store")?
                .arg("--realise")
                .arg(l)
                .arg("--add-root")
                .arg(&new)
                .quiet()
                .ignore_stdout();
            realise
                .run()
                .with_context(|| format!("migrating {} to {}", l.display(), new.display()))?;
            // The link's date is the generation's date (`generations`, `gc --older-than`).
            if let Ok(m) = fs::symlink_metadata(l)
                && let Ok(t) = m.modified()
            {
                let ts = rustix::fs::Timestamps {
                    last_access: to_timespec(t),
                    last_modification: to_timespec(t),
                };
                let _ = rustix::fs::utimensat(
                    rustix::fs::CWD,
                    &new,
                    &ts,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                );
            }
        }
        if !self.links.is_empty() {
            let target = fs::read_link(self.from.join("home-manager"))
                .context("reading the old profile link")?;
            let link = self.to.join("home-manager");
            std::os::unix::fs::symlink(&target, &link)
                .with_context(|| format!("creating {}", link.display()))?;
        }
        for l in std::iter::once(self.from.join("home-manager")).chain(old_links(&self.from)) {
            fs::remove_file(&l)
                .with_context(|| format!("removing the old link {}", l.display()))?;
        }
        Ok(())
    }
}

fn to_timespec(t: SystemTime) -> rustix::fs::Timespec {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    rustix::fs::Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_ids() {
        assert_eq!(generation_id("home-manager-12-link"), Some(12));
        assert_eq!(generation_id("home-manager"), None);
        assert_eq!(generation_id("home-manager-x-link"), None);
    }

    #[test]
    fn local_dates_have_the_home_manager_form() {
        let d = format_local(UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096));
        assert_eq!(d.len(), 16, "{d}");
        assert_eq!(&d[4..5], "-");
        assert_eq!(&d[13..14], ":");
    }

    fn env_in(home: &Path, nix_state: &Path) -> UserEnv {
        UserEnv {
            user: "mig".into(),
            home: home.to_path_buf(),
            xdg_state_home: None,
            nix_state_dir: Some(nix_state.to_path_buf()),
        }
    }

    #[test]
    fn migration_is_pending_only_as_migrate_profile_says() {
        let t = tempfile::tempdir().unwrap();
        let (home, state) = (t.path().join("h"), t.path().join("nix"));
        let env = env_in(&home, &state);
        let old = env.per_user_profiles();
        fs::create_dir_all(&old).unwrap();
        // No old profile: nothing to do.
        assert!(env.pending_migration().is_none());
        std::os::unix::fs::symlink("/", old.join("home-manager-1-link")).unwrap();
        std::os::unix::fs::symlink("home-manager-1-link", old.join("home-manager")).unwrap();
        // Old profile, but no XDG directory: Home Manager keeps using the old one.
        assert!(env.pending_migration().is_none());
        fs::create_dir_all(env.xdg_profiles()).unwrap();
        let m = env.pending_migration().unwrap();
        assert_eq!(m.from, old);
        assert_eq!(m.links, vec![old.join("home-manager-1-link")]);
        // The XDG profile exists already: only the old links would be deleted.
        std::os::unix::fs::symlink("x", env.xdg_profiles().join("home-manager")).unwrap();
        assert!(env.pending_migration().unwrap().links.is_empty());
    }
}
