//! The home profile: where a user's Home Manager profile and generations live, the GC root
//! of the active generation, the switch lock, the pre-flight and activation, exactly as
//! ../shared/hm-contract.md and the `home-manager` script define them, so a machine switched
//! with the xtask and one switched with `home-manager` stay interchangeable.

use std::{
    env,
    ffi::{OsString, c_int},
    fs::{self, File, OpenOptions},
    io::{self, ErrorKind, Read, Seek, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::term;

/// The environment the profile rules read. Captured once so that tests of the rules do
/// not depend on the process environment.
#[derive(Debug, Clone)]
pub struct UserEnv {
    pub user: String,
    pub home: PathBuf,
    xdg_state_home: Option<PathBuf>,
    nix_state_dir: Option<PathBuf>,
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
        crate::repo::validate_name(&user).map_err(|e| {
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

    /// `${XDG_STATE_HOME:-$HOME/.local/state}`.
    fn state_home(&self) -> PathBuf {
        self.xdg_state_home
            .clone()
            .unwrap_or_else(|| self.home.join(".local/state"))
    }

    /// Home Manager's own state: `…/home-manager` (gcroots, and our switch lock).
    pub fn hm_state_dir(&self) -> PathBuf {
        self.state_home().join("home-manager")
    }

    /// The profile directory as the `home-manager` script picks it: the XDG one when it
    /// exists, else the per-user one under the Nix state dir; when neither exists (first
    /// install) the XDG one, which the caller creates.
    pub fn profile(&self) -> Profile {
        let xdg = self.state_home().join("nix/profiles");
        if xdg.is_dir() {
            return Profile {
                dir: xdg,
                exists: true,
            };
        }
        let global = self
            .nix_state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/nix/var/nix"))
            .join("profiles/per-user")
            .join(&self.user);
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

    /// `path` with `$HOME` shown as `~`, for messages.
    pub fn tilde(&self, path: &Path) -> String {
        match path.strip_prefix(&self.home) {
            Ok(rel) if rel.as_os_str().is_empty() => "~".into(),
            Ok(rel) => format!("~/{}", rel.display()),
            Err(_) => path.display().to_string(),
        }
    }
}

fn non_empty(var: &str) -> Option<PathBuf> {
    env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

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
    /// `YYYY-MM-DD HH:MM` (UTC) of the link, as `home-manager generations` shows it.
    pub date: String,
    /// The store path of the generation.
    pub path: PathBuf,
    pub current: bool,
}

impl Profile {
    /// The profile link `nix-env --profile` takes.
    pub fn link(&self) -> PathBuf {
        self.dir.join("home-manager")
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
                date: format_utc(mtime),
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

/// `YYYY-MM-DD HH:MM` in UTC (days-from-civil inverse; no time zone database needed).
pub fn format_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The effective user id of this process (std has no API for it; libc is linked anyway).
pub fn effective_uid() -> u32 {
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid takes nothing, always succeeds and touches no memory of ours.
    unsafe { geteuid() }
}

/// Whether a process with this pid exists (`kill(pid, 0)`: no signal is sent). A process
/// of another user counts as alive (EPERM), so nothing of theirs is touched.
pub fn process_alive(pid: i32) -> bool {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists; no memory is involved.
    let r = unsafe { kill(pid, 0) };
    // ESRCH is 3 on Linux and macOS.
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(3)
}

/// The switch lock: one switch (or rollback) of a profile at a time. The kernel releases
/// it when the holder exits, however it exits, so a killed switch never blocks the next.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock in `dir` (created), or fails naming the holder.
    pub fn acquire(dir: &Path, what: &str) -> Result<Lock> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("switch.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process"
                } else {
                    holder
                };
                bail!(
                    "another switch of {what} is running ({holder}); wait for it to finish, then try again\n  lock: {}",
                    path.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        // Say who holds it, for the message of the one that has to wait.
        let args: Vec<String> = env::args().collect();
        let me = format!("pid {}: {}", std::process::id(), args.join(" "));
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(me.as_bytes())?;
        Ok(Lock { _file: file })
    }
}

/// SIGINT and SIGTERM (the same numbers on Linux and macOS).
const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
/// What `signal` returns when it fails.
const SIG_ERR: usize = usize::MAX;

/// Set by [`note_signal`]: a SIGINT or SIGTERM arrived during a critical section.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The handler of the critical section. It only records the signal (an atomic store is
/// async-signal-safe); the xtask goes on and restores a consistent state.
extern "C" fn note_signal(_signum: c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Sets the disposition of `signum` to `handler` (a function address, or SIG_DFL = 0 /
/// SIG_IGN = 1) and returns the previous one, through C's `signal` from the libc std
/// already links (std has no API for it, and the project adds no crate for six lines).
/// The only unsafe code of the crate's signal handling.
fn set_signal_disposition(signum: c_int, handler: usize) -> usize {
    unsafe extern "C" {
        fn signal(signum: c_int, handler: usize) -> usize;
    }
    // SAFETY: `signal` has no memory preconditions; `handler` is SIG_DFL, SIG_IGN, a
    // disposition `signal` returned earlier, or `note_signal`, which is async-signal-safe.
    unsafe { signal(signum, handler) }
}

/// The critical section of a switch or rollback: from setting the profile until the new
/// generation (or, after a failure, the previous one again) is active. Ctrl-C or a
/// SIGTERM must not stop the xtask there, or the profile would name a generation that
/// `$HOME` does not have. They are caught, not ignored (SIG_IGN): ignored signals are
/// inherited through exec, caught ones are reset to the default, so `activate` (in the
/// terminal's process group) still gets Ctrl-C and stops, and the xtask, which sees its
/// failure and [`Critical::interrupted`], restores the previous generation.
/// Dropping it puts the previous handlers back.
pub struct Critical {
    previous: Vec<(c_int, usize)>,
}

impl Critical {
    pub fn enter() -> Critical {
        INTERRUPTED.store(false, Ordering::SeqCst);
        let handler = note_signal as extern "C" fn(c_int) as usize;
        let previous = [SIGINT, SIGTERM]
            .into_iter()
            .filter_map(|sig| {
                let old = set_signal_disposition(sig, handler);
                (old != SIG_ERR).then_some((sig, old))
            })
            .collect();
        Critical { previous }
    }

    /// Whether a SIGINT or SIGTERM arrived since [`Critical::enter`].
    pub fn interrupted(&self) -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }
}

impl Drop for Critical {
    fn drop(&mut self) {
        for &(sig, old) in &self.previous {
            set_signal_disposition(sig, old);
        }
    }
}

/// The generation the profile names and the one Home Manager last activated
/// (`gcroots/current-home`), when they differ: a switch or rollback was killed (SIGKILL,
/// power loss) between setting the profile and finishing activation.
pub fn activation_mismatch(env: &UserEnv, profile: &Profile) -> Option<(PathBuf, Option<PathBuf>)> {
    let profiled = fs::canonicalize(profile.link()).ok()?;
    let active = fs::read_link(env.hm_state_dir().join("gcroots/current-home")).ok();
    let agree = active.as_ref().is_some_and(|a| {
        // A specialisation's activation records its own store path, which the profiled
        // generation links as specialisation/<name>.
        *a == profiled
            || fs::read_dir(profiled.join("specialisation")).is_ok_and(|d| {
                d.filter_map(|e| fs::canonicalize(e.ok()?.path()).ok())
                    .any(|s| s == *a)
            })
    });
    (!agree).then_some((profiled, active))
}

/// Moves the profile with `set_profile`, then activates, as one critical section: from the
/// profile change until a generation is fully active again, Ctrl-C and SIGTERM stop only the
/// running child, and a failure or an interrupt restores `previous` (profile and `$HOME`).
/// `set_profile` is None for an old-style generation, which manages the profile itself (so
/// there is nothing to restore). Messages: `interrupted` when a signal stopped it, `failed`
/// when activation failed. Details are printed; the error is [`crate::Reported`].
pub fn set_and_activate(
    ctx: &crate::Ctx,
    profile: &Profile,
    set_profile: Option<xshell::Cmd<'_>>,
    activation: &Activation<'_>,
    previous: Option<u64>,
    interrupted: &str,
    failed: &str,
) -> Result<()> {
    let critical = Critical::enter();
    let restores = set_profile.is_some();
    if let Some(set) = set_profile
        && let Err(e) = crate::nix::run_step(set, false)
    {
        if !critical.interrupted() {
            // nix-env changes the profile atomically: it is still where it was.
            return Err(e.context("setting the profile to the new generation"));
        }
        term::error(&format!("{e:#}"));
        restore(ctx, profile, previous, activation.backup, interrupted)?;
        return Err(crate::Reported.into());
    }
    // A signal between the two steps: do not start the activation at all.
    let activated = if critical.interrupted() {
        Err(anyhow::anyhow!("interrupted before activation started"))
    } else {
        activation.run()
    };
    if let Err(e) = activated {
        term::error(&format!("{e:#}"));
        let what = if critical.interrupted() {
            interrupted
        } else {
            failed
        };
        if restores {
            // A failed activation may have linked part of the files already.
            restore(ctx, profile, previous, activation.backup, what)?;
        } else {
            term::error(&format!(
                "{what}; this old-style generation manages the profile itself, so check `cargo xtask generations`"
            ));
        }
        return Err(crate::Reported.into());
    }
    if critical.interrupted() {
        // The signal reached only the xtask (not the activation's process group), after or
        // while the activation ran to its end: nothing to undo, but say it was noticed.
        term::warning(
            "a stop signal arrived during activation, which completed anyway: the new generation is active",
        );
    }
    Ok(())
}

/// After a failed or interrupted activation: the profile back to the `previous`
/// generation and that generation activated again, so the profile and `$HOME` agree; on a
/// first install (no previous generation) the new profile links removed. `what` says what
/// happened, for the one line that ends the story.
pub fn restore(
    ctx: &crate::Ctx,
    profile: &Profile,
    previous: Option<u64>,
    backup: &Backup,
    what: &str,
) -> Result<()> {
    let Some(id) = previous else {
        // First install: remove the links this switch made, so the next one starts clean.
        if let Some(new) = profile.current_id() {
            let _ = fs::remove_file(profile.dir.join(format!("home-manager-{new}-link")));
        }
        let _ = fs::remove_file(profile.link());
        term::error(&format!(
            "{what}; this was the first switch, so its profile links were removed again (there is no generation to restore). Files linked before it stopped stay; switch again"
        ));
        return Ok(());
    };
    let back = ctx
        .nix()
        .tool("nix-env")?
        .arg("--profile")
        .arg(profile.link())
        .arg("--switch-generation")
        .arg(id.to_string());
    crate::nix::run_step(back, false)
        .with_context(|| format!("{what}; setting the profile back to generation {id}"))?;
    let script = profile.dir.join(format!("home-manager-{id}-link/activate"));
    match (Activation {
        script,
        backup,
        verbose: ctx.verbose,
    })
    .run()
    {
        Ok(()) => term::error(&format!(
            "{what}; restored generation {id}: it is active again (profile and $HOME)"
        )),
        Err(e) => term::error(&format!(
            "{what}, and re-activating generation {id} failed too ({e:#}); the profile is at generation {id} but $HOME may be half switched; fix the cause, then run `cargo xtask switch`"
        )),
    }
    Ok(())
}

/// The pre-flight, and the lock for a real run. The first pre-flight runs unlocked,
/// because a blocked switch must leave `$HOME` exactly as it was (not even a lock file).
/// Under the lock it runs again only if another switch finished in between (the profile or
/// Home Manager's current-home root moved), so a 5000-file home is not checked twice.
pub fn preflight_and_lock(
    env: &UserEnv,
    profile: &Profile,
    generation: &Path,
    backup: &Backup,
    what: &str,
    dry_run: bool,
) -> Result<(Preflight, Option<Lock>)> {
    let marker = || {
        (
            fs::read_link(profile.link()).ok(),
            fs::read_link(env.hm_state_dir().join("gcroots/current-home")).ok(),
        )
    };
    let before = marker();
    let pf = preflight(generation, &env.home, backup)?;
    if dry_run || !pf.blockers.is_empty() {
        return Ok((pf, None));
    }
    let lock = Lock::acquire(&env.hm_state_dir(), what)?;
    if marker() == before {
        return Ok((pf, Some(lock)));
    }
    Ok((preflight(generation, &env.home, backup)?, Some(lock)))
}

/// How conflicting files are handled, i.e. the HOME_MANAGER_BACKUP_* variables.
#[derive(Debug, Clone, Default)]
pub struct Backup {
    pub ext: Option<String>,
    pub command: Option<String>,
    pub overwrite: bool,
}

impl Backup {
    /// The one way switch, rollback and diff decide how conflicting files are handled:
    /// `-b EXT` or else the repo's `backup-extension` (an empty one means none), the
    /// backup command (empty = none) and whether an existing backup may be replaced.
    pub fn new(
        defaults: &crate::repo::Defaults,
        ext: Option<&str>,
        command: Option<&str>,
        overwrite: bool,
    ) -> Backup {
        Backup {
            ext: Some(ext.unwrap_or(&defaults.backup_extension))
                .filter(|e| !e.is_empty())
                .map(str::to_string),
            command: command.filter(|c| !c.is_empty()).map(str::to_string),
            overwrite,
        }
    }

    /// The variables `activate` reads, in the order they are shown.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut vars = Vec::new();
        if let Some(ext) = &self.ext {
            vars.push(("HOME_MANAGER_BACKUP_EXT", ext.clone()));
        }
        if let Some(c) = &self.command {
            vars.push(("HOME_MANAGER_BACKUP_COMMAND", c.clone()));
        }
        if self.overwrite {
            vars.push(("HOME_MANAGER_BACKUP_OVERWRITE", "1".into()));
        }
        vars
    }
}

/// Something in `$HOME` that activation would refuse (or that would lose data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Blocker {
    /// `target` differs and its backup `backup` already exists.
    BackupExists { target: PathBuf, backup: PathBuf },
    /// `target` is a symlink Home Manager did not make.
    ForeignSymlink { target: PathBuf, points_to: PathBuf },
    /// `target` is a directory where a file goes.
    Directory { target: PathBuf },
    /// `parent` is not a directory, so `target` cannot be created.
    NotADirectory { target: PathBuf, parent: PathBuf },
    /// `target` differs and no backup is configured.
    Clobber { target: PathBuf },
}

impl Blocker {
    /// The problem and the flag or command that resolves it, for one line of output.
    pub fn describe(&self, env: &UserEnv) -> String {
        let t = |p: &Path| env.tilde(p);
        match self {
            Blocker::BackupExists { target, backup } => format!(
                "{} is blocked by {}: the backup of the existing file would overwrite it; move {} away or pass --overwrite-backup",
                t(target),
                t(backup),
                t(backup)
            ),
            Blocker::ForeignSymlink { target, points_to } => format!(
                "{} is a symlink to {} that Home Manager did not make (symlinks are never backed up); remove it (rm {}) and switch again",
                t(target),
                points_to.display(),
                t(target)
            ),
            Blocker::Directory { target } => format!(
                "{} is a directory where Home Manager puts a file; move it away (mv {} {}.old) and switch again",
                t(target),
                t(target),
                t(target)
            ),
            Blocker::NotADirectory { target, parent } => format!(
                "{} is a file where Home Manager needs a directory (for {}); move it away and switch again",
                t(parent),
                t(target)
            ),
            Blocker::Clobber { target } => format!(
                "{} exists and would be clobbered; pass -b EXT to back it up, or move it away",
                t(target)
            ),
        }
    }
}

/// What activation will do to `$HOME`, computed before anything changes.
#[derive(Debug, Default, Serialize)]
pub struct Preflight {
    /// Files of the generation.
    pub files: usize,
    /// Targets that do not exist yet.
    pub new: usize,
    /// Targets that are already Home Manager's links.
    pub linked: usize,
    /// Existing files that will be moved to their backup (`(file, backup)`), or handed to
    /// the backup command (backup = None).
    pub backups: Vec<(PathBuf, Option<PathBuf>)>,
    /// Existing files with the generation's content: left alone.
    pub identical: Vec<PathBuf>,
    /// Existing targets of `home.file.<path>.force = true`: replaced without a check or a
    /// backup, as Home Manager does.
    pub forced: Vec<PathBuf>,
    pub blockers: Vec<Blocker>,
}

/// The pre-flight of a generation: its `home-files/` against `home`, minus the targets
/// Home Manager forces (see [`forced_paths`]).
pub fn preflight(generation: &Path, home: &Path, backup: &Backup) -> Result<Preflight> {
    let forced = forced_paths(generation);
    preflight_files(&generation.join("home-files"), &forced, home, backup)
}

/// Compares `home_files` with `home` by the contract's collision rules, in one directory
/// walk: one `lstat` per file, contents read only when sizes match. `forced` are
/// `$HOME`-relative prefixes whose targets are replaced without a check.
pub fn preflight_files(
    home_files: &Path,
    forced: &[String],
    home: &Path,
    backup: &Backup,
) -> Result<Preflight> {
    let mut out = Preflight::default();
    let mut rel = PathBuf::new();
    let ctx = Walk {
        home,
        backup,
        forced,
    };
    walk(home_files, &mut rel, &ctx, &mut out)
        .with_context(|| format!("reading the generation's files in {}", home_files.display()))?;
    Ok(out)
}

struct Walk<'a> {
    home: &'a Path,
    backup: &'a Backup,
    forced: &'a [String],
}

fn walk(dir: &Path, rel: &mut PathBuf, ctx: &Walk<'_>, out: &mut Preflight) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        rel.push(entry.file_name());
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), rel, ctx, out)?;
        } else {
            out.files += 1;
            let target = ctx.home.join(&*rel);
            // Home Manager matches forced paths as string prefixes (`$target == $forced*`).
            let forced = !ctx.forced.is_empty()
                && rel
                    .to_str()
                    .is_some_and(|r| ctx.forced.iter().any(|f| r.starts_with(f.as_str())));
            if !forced {
                check_one(&entry.path(), &target, ctx.backup, out);
            } else if fs::symlink_metadata(&target).is_ok() {
                out.forced.push(target);
            } else {
                out.new += 1;
            }
        }
        rel.pop();
    }
    Ok(())
}

/// The targets (relative to `$HOME`) that Home Manager replaces without a collision check:
/// `home.file.<path>.force = true`. Activation reads them from its check-link-targets
/// script, `forcedPaths=("$HOME"/'<path>' …)`, which the `activate` script names; the
/// pre-flight reads the same line. A generation without one (older Home Manager, other
/// drivers) forces nothing, so the pre-flight can only be stricter than activation.
pub fn forced_paths(generation: &Path) -> Vec<String> {
    let Ok(activate) = fs::read_to_string(generation.join("activate")) else {
        return Vec::new();
    };
    let script = activate
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '=' | ';'))
        .find(|t| t.starts_with('/') && t.ends_with("check-link-targets.sh"));
    let Some(text) = script.and_then(|p| fs::read_to_string(p).ok()) else {
        return Vec::new();
    };
    text.lines()
        .find_map(|l| l.trim().strip_prefix("forcedPaths=("))
        .map(|list| {
            shell_words(list.trim_end().trim_end_matches(')'))
                .into_iter()
                .filter_map(|w| w.strip_prefix("$HOME/").map(str::to_string))
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Splits a bash word list as written by Nix's `escapeShellArg` (`'…'` with `'\''` for a
/// quote) and `"$HOME"`: quotes removed, nothing expanded.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '"'));
            }
            '\\' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.next());
            }
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

fn check_one(source: &Path, target: &Path, backup: &Backup, out: &mut Preflight) {
    let meta = match fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            out.new += 1;
            return;
        }
        Err(e) if e.kind() == ErrorKind::NotADirectory => {
            let parent = target
                .ancestors()
                .skip(1)
                .find(|a| fs::symlink_metadata(a).is_ok_and(|m| !m.is_dir()))
                .unwrap_or(target)
                .to_path_buf();
            out.blockers.push(Blocker::NotADirectory {
                target: target.to_path_buf(),
                parent,
            });
            return;
        }
        // Unreadable (permissions): let activation report it in its own words.
        Err(_) => return,
    };
    if meta.file_type().is_symlink() {
        let points_to = fs::read_link(target).unwrap_or_default();
        if is_hm_link(&points_to) {
            out.linked += 1;
        } else if same_content(source, target, None) {
            out.identical.push(target.to_path_buf());
        } else {
            out.blockers.push(Blocker::ForeignSymlink {
                target: target.to_path_buf(),
                points_to,
            });
        }
    } else if meta.is_dir() {
        out.blockers.push(Blocker::Directory {
            target: target.to_path_buf(),
        });
    } else if same_content(source, target, Some(meta.len())) {
        out.identical.push(target.to_path_buf());
    } else if backup.command.is_some() {
        out.backups.push((target.to_path_buf(), None));
    } else if let Some(ext) = &backup.ext {
        let mut name: OsString = target.as_os_str().to_owned();
        name.push(".");
        name.push(ext);
        let bak = PathBuf::from(name);
        // lstat: a dangling symlink in the way is still in the way.
        if fs::symlink_metadata(&bak).is_ok() && !backup.overwrite {
            out.blockers.push(Blocker::BackupExists {
                target: target.to_path_buf(),
                backup: bak,
            });
        } else {
            out.backups.push((target.to_path_buf(), Some(bak)));
        }
    } else {
        out.blockers.push(Blocker::Clobber {
            target: target.to_path_buf(),
        });
    }
}

/// A link into a `*-home-manager-files` store path: Home Manager's own.
pub fn is_hm_link(points_to: &Path) -> bool {
    let store = store_dir();
    let Ok(rest) = points_to.strip_prefix(&store) else {
        return false;
    };
    let mut parts = rest.components();
    parts.next().is_some_and(|c| {
        c.as_os_str()
            .to_string_lossy()
            .ends_with("-home-manager-files")
    }) && parts.next().is_some()
}

fn store_dir() -> PathBuf {
    non_empty("NIX_STORE_DIR").unwrap_or_else(|| PathBuf::from("/nix/store"))
}

/// Whether `source` (following links) has the bytes of the regular file `target`, whose
/// size is known from the caller's lstat: sizes first, so differing files are rarely read,
/// and through open files, so each side costs one open, one fstat and the reads.
fn same_content(source: &Path, target: &Path, target_len: Option<u64>) -> bool {
    fn read(mut f: File, len: u64) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(usize::try_from(len).ok()?.saturating_add(1));
        f.read_to_end(&mut buf).ok()?;
        Some(buf)
    }
    let Ok(src) = File::open(source) else {
        return false;
    };
    let Ok(meta) = src.metadata() else {
        return false;
    };
    if !meta.is_file() || target_len.is_some_and(|l| l != meta.len()) {
        return false;
    }
    let Ok(dst) = File::open(target) else {
        return false;
    };
    if target_len.is_none() {
        // A symlink target: its size is only known once followed.
        match dst.metadata() {
            Ok(m) if m.is_file() && m.len() == meta.len() => {}
            _ => return false,
        }
    }
    match (read(src, meta.len()), read(dst, meta.len())) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

impl Preflight {
    /// The complete list, one line per file that is not simply new or already linked.
    pub fn print(&self, env: &UserEnv) {
        term::info(&format!(
            "{} {} files: {} new, {} already linked, {} to back up, {} identical (skipped), {} blocked",
            term::paint(term::Style::Bold, "pre-flight:"),
            self.files,
            self.new,
            self.linked,
            self.backups.len(),
            self.identical.len(),
            self.blockers.len()
        ));
        for (file, bak) in &self.backups {
            match bak {
                Some(b) => term::info(&format!(
                    "  back up  {} → {}",
                    env.tilde(file),
                    env.tilde(b)
                )),
                None => term::info(&format!(
                    "  back up  {} (with the backup command)",
                    env.tilde(file)
                )),
            }
        }
        for file in &self.identical {
            term::info(&format!("  identical {} (left as it is)", env.tilde(file)));
        }
        for file in &self.forced {
            term::info(&format!(
                "  replace  {} (force = true: no backup)",
                env.tilde(file)
            ));
        }
        for b in &self.blockers {
            term::error(&format!("blocked: {}", b.describe(env)));
        }
    }
}

/// The activation of a generation: `<generation>/activate --driver-version 1` with the
/// contract's variables. Inherited HOME_MANAGER_BACKUP_* are removed, so activation does
/// exactly what the pre-flight checked.
pub struct Activation<'a> {
    pub script: PathBuf,
    pub backup: &'a Backup,
    pub verbose: bool,
}

impl Activation<'_> {
    fn vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = self.backup.env();
        if self.verbose {
            vars.push(("VERBOSE", "1".into()));
        }
        vars
    }

    /// The command line exactly as it runs, variables first (for --dry-run and the log).
    pub fn shown(&self) -> String {
        let mut s = String::new();
        for (k, v) in self.vars() {
            s.push_str(&format!("{k}={} ", shell_quote(&v)));
        }
        s.push_str(&format!(
            "{} --driver-version 1",
            shell_quote(&self.script.display().to_string())
        ));
        s
    }

    /// Runs it; its output goes to stderr so that `--json` keeps stdout clean.
    pub fn run(&self) -> Result<()> {
        let shown = self.shown();
        term::command(&shown);
        let mut cmd = Command::new(&self.script);
        cmd.args(["--driver-version", "1"]);
        for k in [
            "HOME_MANAGER_BACKUP_EXT",
            "HOME_MANAGER_BACKUP_COMMAND",
            "HOME_MANAGER_BACKUP_OVERWRITE",
            "DRY_RUN",
            "VERBOSE",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(self.vars()).stdout(Stdio::from(io::stderr()));
        let status = cmd
            .status()
            .with_context(|| format!("running {}", self.script.display()))?;
        if !status.success() {
            bail!("activation failed ({status}); its messages are above\n  tried: {shown}");
        }
        Ok(())
    }
}

/// Single-quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a generation says about itself: the user and home its `activate` checks (Home
/// Manager writes `checkUsername '<u>'` and `checkHomeDirectory '<dir>'` into it), so the
/// pre-flight needs no second evaluation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub username: Option<String>,
    pub home_directory: Option<String>,
}

pub fn expected(generation: &Path) -> Result<Expected> {
    let script = generation.join("activate");
    let text =
        fs::read_to_string(&script).with_context(|| format!("reading {}", script.display()))?;
    Ok(parse_expected(&text))
}

fn parse_expected(script: &str) -> Expected {
    let mut e = Expected::default();
    for line in script.lines() {
        let line = line.trim();
        if let Some(arg) = line.strip_prefix("checkUsername ") {
            e.username = e.username.or_else(|| unquote(arg));
        } else if let Some(arg) = line.strip_prefix("checkHomeDirectory ") {
            e.home_directory = e.home_directory.or_else(|| unquote(arg));
        }
    }
    e
}

/// One shell word as Nix's `escapeShellArg` writes it: `'...'` with `'\''` for quotes, or bare.
fn unquote(word: &str) -> Option<String> {
    let word = word.trim();
    if !word.starts_with('\'') {
        return (!word.is_empty() && !word.contains(char::is_whitespace)).then(|| word.to_string());
    }
    let mut out = String::new();
    let mut rest = word;
    while let Some(r) = rest.strip_prefix('\'') {
        let end = r.find('\'')?;
        out.push_str(&r[..end]);
        rest = &r[end + 1..];
        match rest.strip_prefix("\\'") {
            Some(r) => {
                out.push('\'');
                rest = r;
            }
            None => break,
        }
    }
    rest.trim().is_empty().then_some(out)
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
    fn utc_dates() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01 00:00");
        assert_eq!(
            format_utc(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "2024-02-29 12:34"
        );
    }

    #[test]
    fn reads_the_checks_of_activate() {
        let e = parse_expected("x\ncheckUsername 'alice'\ncheckHomeDirectory '/home/o'\\''b'\n");
        assert_eq!(e.username.as_deref(), Some("alice"));
        assert_eq!(e.home_directory.as_deref(), Some("/home/o'b"));
        assert_eq!(
            parse_expected("checkUsername bob").username.as_deref(),
            Some("bob")
        );
        assert_eq!(parse_expected("echo hi"), Expected::default());
    }

    #[test]
    fn hm_links() {
        assert!(is_hm_link(Path::new(
            "/nix/store/abc-home-manager-files/.bashrc"
        )));
        assert!(!is_hm_link(Path::new("/nix/store/abc-home-manager-files")));
        assert!(!is_hm_link(Path::new("/nix/store/abc-dotfiles/.bashrc")));
        assert!(!is_hm_link(Path::new("/home/a/dotfiles/.bashrc")));
    }

    /// Every collision rule of the contract on one generated tree (no nix needed): links
    /// that are not into a `*-home-manager-files` path count as foreign.
    #[test]
    fn preflight_applies_the_collision_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let (files, home) = (tmp.path().join("files"), tmp.path().join("home"));
        let src = tmp.path().join("src");
        fs::create_dir_all(files.join(".config")).unwrap();
        fs::create_dir_all(home.join(".dir")).unwrap();
        fs::create_dir_all(&src).unwrap();
        for name in [
            ".new",
            ".same",
            ".differs",
            ".blocked",
            ".dir",
            ".link",
            ".config/x",
            ".plain/y",
        ] {
            let s = src.join(name.replace('/', "_"));
            fs::write(&s, "managed\n").unwrap();
            fs::create_dir_all(files.join(name).parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&s, files.join(name)).unwrap();
        }
        fs::write(home.join(".same"), "managed\n").unwrap();
        fs::write(home.join(".differs"), "mine\n").unwrap();
        fs::write(home.join(".blocked"), "mine\n").unwrap();
        fs::write(home.join(".blocked.bak"), "old\n").unwrap();
        fs::write(home.join(".plain"), "a file where a directory goes\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", home.join(".link")).unwrap();
        let backup = Backup {
            ext: Some("bak".into()),
            ..Backup::default()
        };

        let pf = preflight_files(&files, &[], &home, &backup).unwrap();
        assert_eq!(pf.files, 8);
        assert_eq!(pf.new, 2, "{pf:?}"); // .new, .config/x
        assert_eq!(pf.identical, [home.join(".same")]);
        assert_eq!(
            pf.backups,
            [(home.join(".differs"), Some(home.join(".differs.bak")))]
        );
        let mut blockers = pf.blockers.clone();
        blockers.sort_by_key(|b| format!("{b:?}"));
        assert_eq!(
            blockers,
            [
                Blocker::BackupExists {
                    target: home.join(".blocked"),
                    backup: home.join(".blocked.bak")
                },
                Blocker::Directory {
                    target: home.join(".dir")
                },
                Blocker::ForeignSymlink {
                    target: home.join(".link"),
                    points_to: "/etc/hostname".into()
                },
                Blocker::NotADirectory {
                    target: home.join(".plain/y"),
                    parent: home.join(".plain")
                },
            ]
        );

        let overwrite = Backup {
            overwrite: true,
            ..backup.clone()
        };
        assert_eq!(
            preflight_files(&files, &[], &home, &overwrite)
                .unwrap()
                .blockers
                .len(),
            3
        );
        let none = Backup::default();
        let pf = preflight_files(&files, &[], &home, &none).unwrap();
        assert!(pf.blockers.contains(&Blocker::Clobber {
            target: home.join(".differs")
        }));
    }

    #[test]
    fn backup_settings() {
        let defaults = crate::repo::Defaults::default();
        let b = Backup::new(&defaults, None, Some(""), false);
        assert_eq!(b.ext.as_deref(), Some("bak"));
        assert_eq!(b.command, None);
        let b = Backup::new(&defaults, Some("old"), Some("mv -n"), true);
        assert_eq!(
            b.env(),
            [
                ("HOME_MANAGER_BACKUP_EXT", "old".to_string()),
                ("HOME_MANAGER_BACKUP_COMMAND", "mv -n".to_string()),
                ("HOME_MANAGER_BACKUP_OVERWRITE", "1".to_string()),
            ]
        );
        // An empty extension (flag or repo default) means no backups.
        assert_eq!(Backup::new(&defaults, Some(""), None, false).ext, None);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("bak"), "bak");
        assert_eq!(shell_quote("mv -n"), "'mv -n'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn forced_paths_are_read_from_the_check_script() {
        assert_eq!(
            shell_words(r#""$HOME"/'.config/a b' "$HOME"/'it'\''s' "$HOME"/'.x'"#),
            vec!["$HOME/.config/a b", "$HOME/it's", "$HOME/.x"]
        );
        let t = tempfile::tempdir().unwrap();
        let check = t.path().join("abc-check-link-targets.sh");
        fs::write(&check, "# -*- sh -*-\nforcedPaths=(\"$HOME\"/'.x' \"$HOME\"/'.config/app')\nnewGenFiles=\"$1\"\n").unwrap();
        let generation = t.path().join("gen");
        fs::create_dir_all(generation.join("home-files/.config/app")).unwrap();
        fs::write(
            generation.join("activate"),
            format!(
                "find \"$newGenFiles\" -exec bash {} \"$newGenFiles\" {{}} +\n",
                check.display()
            ),
        )
        .unwrap();
        assert_eq!(forced_paths(&generation), vec![".x", ".config/app"]);
        // Forced targets are replaced, not checked: a differing file is no blocker and gets
        // no backup, even with one in the way.
        fs::write(generation.join("home-files/.x"), "new").unwrap();
        fs::write(generation.join("home-files/.config/app/conf"), "new").unwrap();
        let home = t.path().join("home");
        fs::create_dir_all(home.join(".config/app")).unwrap();
        fs::write(home.join(".x"), "old").unwrap();
        fs::write(home.join(".x.bak"), "older").unwrap();
        let backup = Backup {
            ext: Some("bak".into()),
            ..Backup::default()
        };
        let pf = preflight(&generation, &home, &backup).unwrap();
        assert!(pf.blockers.is_empty(), "{:?}", pf.blockers);
        assert_eq!(pf.forced, vec![home.join(".x")]);
        assert_eq!(pf.new, 1);
        // No script: nothing is forced, and the same home blocks.
        fs::write(generation.join("activate"), "#!/bin/sh\n").unwrap();
        assert!(forced_paths(&generation).is_empty());
        assert_eq!(
            preflight(&generation, &home, &backup)
                .unwrap()
                .blockers
                .len(),
            1
        );
    }

    #[test]
    fn processes_are_told_alive_or_gone() {
        assert!(process_alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
