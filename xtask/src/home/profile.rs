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
    /// The profile link's name in `dir`: `home-manager`, or `system` for a NixOS host's
    /// profile (`gc --system`); generations are `<name>-<N>-link`.
    pub name: String,
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
    /// The link's mtime: when the generation was made (`gc --older-than`).
    #[serde(skip)]
    pub made: SystemTime,
}

impl UserEnv {
    /// The profile directory as the `home-manager` script picks it: the XDG one when it
    /// exists, else the per-user one under the Nix state dir; when neither exists (first
    /// install) the XDG one, which the caller creates.
    pub fn profile(&self) -> Profile {
        let xdg = self.xdg_profiles();
        if xdg.is_dir() {
            return Profile::new(xdg, "home-manager");
        }
        let global = self.per_user_profiles();
        if global.is_dir() {
            return Profile::new(global, "home-manager");
        }
        Profile {
            exists: false,
            ..Profile::new(xdg, "home-manager")
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
    /// The profile `dir/name` (as it is, existing or not).
    pub fn new(dir: PathBuf, name: &str) -> Profile {
        Profile {
            exists: dir.is_dir(),
            dir,
            name: name.to_string(),
        }
    }

    /// The profile whose link is `link` (`/nix/var/nix/profiles/system`).
    pub fn at(link: &Path) -> Profile {
        let name = link
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Profile::new(link.parent().unwrap_or(Path::new("/")).to_path_buf(), &name)
    }

    /// The profile link `nix-env --profile` takes.
    pub fn link(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The link of generation `id`.
    pub fn generation_link(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{}-{id}-link", self.name))
    }

    /// The id of the generation the profile points to, if any.
    pub fn current_id(&self) -> Option<u64> {
        let target = fs::read_link(self.link()).ok()?;
        generation_id(&self.name, target.file_name()?.to_str()?)
    }

    /// The profile link and every generation link (what `uninstall` removes).
    pub fn links(&self) -> Vec<PathBuf> {
        let mut links: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| {
                    let e = e.ok()?;
                    let name = e.file_name().into_string().ok()?;
                    (name == self.name || generation_id(&self.name, &name).is_some())
                        .then(|| e.path())
                })
                .collect()
            })
            .unwrap_or_default();
        links.sort();
        links
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
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| generation_id(&self.name, n))
            else {
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
                made: mtime,
            });
        }
        gens.sort_by_key(|g| std::cmp::Reverse(g.id));
        Ok(gens)
    }
}

/// What `gc` deletes of `gens` (newest first): a generation goes only if it is not among
/// the newest `keep`, is older than `older_than` (seconds before `now`; `None`: any age),
/// and is not `protected`. `keep` counts positions, so after a rollback the protected
/// current generation may be older than the kept ones and stays as well.
pub fn expired(
    gens: &[Generation],
    keep: usize,
    older_than: Option<u64>,
    now: SystemTime,
    protected: impl Fn(&Generation) -> bool,
) -> Vec<&Generation> {
    let cutoff = older_than.map(|s| now - std::time::Duration::from_secs(s));
    gens.iter()
        .skip(keep)
        .filter(|g| cutoff.is_none_or(|c| g.made < c))
        .filter(|g| !protected(g))
        .collect()
}

/// `home-manager-17-link` → 17 (for the profile `home-manager`).
fn generation_id(profile: &str, name: &str) -> Option<u64> {
    let id = name
        .strip_prefix(profile)?
        .strip_prefix('-')?
        .strip_suffix("-link")?;
    // `u64::parse` takes a leading `+`; nix-env's names never have one.
    if !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
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
        assert_eq!(
            generation_id("home-manager", "home-manager-12-link"),
            Some(12)
        );
        assert_eq!(generation_id("home-manager", "home-manager"), None);
        assert_eq!(generation_id("home-manager", "home-manager-x-link"), None);
        assert_eq!(generation_id("home-manager", "home-manager-+1-link"), None);
        assert_eq!(generation_id("system", "system-3-link"), Some(3));
        assert_eq!(generation_id("system", "home-manager-3-link"), None);
    }

    fn gen_at(id: u64, days_ago: u64, now: SystemTime) -> Generation {
        Generation {
            id,
            date: String::new(),
            path: PathBuf::from(format!("/nix/store/{id}-home-manager-generation")),
            current: false,
            made: now - std::time::Duration::from_secs(days_ago * 86_400),
        }
    }

    #[test]
    fn a_generation_goes_only_if_keep_and_age_both_let_it() {
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        // Newest first: 6 is a day old, 1 sixty days.
        let gens: Vec<Generation> = [(6, 1), (5, 10), (4, 20), (3, 40), (2, 50), (1, 60)]
            .iter()
            .map(|&(id, d)| gen_at(id, d, now))
            .collect();
        let ids = |v: Vec<&Generation>| v.iter().map(|g| g.id).collect::<Vec<_>>();
        assert_eq!(ids(expired(&gens, 2, None, now, |_| false)), [4, 3, 2, 1]);
        // Older than 30 days: 3, 2, 1; the newest two are kept anyway.
        assert_eq!(
            ids(expired(&gens, 2, Some(30 * 86_400), now, |_| false)),
            [3, 2, 1]
        );
        // --keep 5 protects 2 although it is old.
        assert_eq!(
            ids(expired(&gens, 5, Some(30 * 86_400), now, |_| false)),
            [1]
        );
        // The protected one stays whatever both say.
        assert_eq!(
            ids(expired(&gens, 1, Some(30 * 86_400), now, |g| g.id == 2)),
            [3, 1]
        );
        // Exactly at the cutoff is not older than it.
        assert_eq!(
            ids(expired(&gens, 1, Some(60 * 86_400), now, |_| false)),
            Vec::<u64>::new()
        );
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
