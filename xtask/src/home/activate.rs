//! Activation and restore: setting the profile and running a generation's `activate` as
//! one critical section, so the profile and `$HOME` never end up naming different
//! generations.
//!
//! From the profile change until a generation is fully active again, SIGINT, SIGTERM,
//! SIGHUP and SIGQUIT only stop the running child; a failure, an interrupt, or anything
//! that unwinds (a drop guard) restores what was active before: the profile, the
//! generation `gcroots/current-home` named (a specialisation too), the links the failed
//! generation added, and the files it moved to their backups.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context, Result, bail};

use super::{
    env::UserEnv,
    lock::Lock,
    plan::{Action, Backup, Preflight},
    profile::Profile,
};
use crate::{nix::Nix, term};

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
            s.push_str(&format!("{k}={} ", super::shell_quote(&v)));
        }
        s.push_str(&format!(
            "{} --driver-version 1",
            super::shell_quote(&self.script.display().to_string())
        ));
        s
    }

    /// Runs it with the lock shared (see [`Lock::share_with`]); its output goes to stderr
    /// so that `--json` keeps stdout clean, or nowhere once stderr is gone.
    pub fn run(&self, lock: &Lock) -> Result<()> {
        let shown = self.shown();
        term::command(&shown);
        let mut cmd = Command::new(&self.script);
        cmd.args(["--driver-version", "1"]);
        self.backup.apply(&mut cmd);
        if self.verbose {
            cmd.env("VERBOSE", "1");
        }
        cmd.stdin(Stdio::null());
        child_output(&mut cmd, true);
        lock.share_with(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {}", self.script.display()))?;
        // A stop signal that reaches only the xtask (`kill PID`, Ctrl-\ which bash ignores,
        // a hang-up the activation's process group does not get) must stop the activation
        // too, or it would run on and the stop would mean nothing: the watcher passes it
        // on as SIGTERM. Waiting stays a plain blocking wait, so a switch pays nothing.
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let done = Arc::clone(&done);
            let pid = rustix::process::Pid::from_raw(child.id() as i32);
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    if flag(&INTERRUPTED, false).load(Ordering::SeqCst) {
                        if let Some(pid) = pid {
                            let _ =
                                rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                        }
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            })
        };
        let status = child.wait();
        done.store(true, Ordering::SeqCst);
        let _ = watcher.join();
        let status = status.with_context(|| format!("waiting for {}", self.script.display()))?;
        if !status.success() {
            bail!("activation failed ({status}); its messages are above\n  tried: {shown}");
        }
        Ok(())
    }
}

/// A child's stdout (`to_stderr`: sent to stderr, else discarded) and stderr: the
/// terminal, or nothing once a write there failed, so no child dies of a dead pipe.
fn child_output(cmd: &mut Command, to_stderr: bool) {
    use std::os::fd::AsFd;
    if term::output_lost() {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        return;
    }
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) if to_stderr => cmd.stdout(Stdio::from(fd)),
        _ => cmd.stdout(Stdio::null()),
    };
    cmd.stderr(Stdio::inherit());
}

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static HUNG_UP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
/// True outside a critical section: the signals then do what they do by default.
static DEFAULT_ACTION: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag(f: &'static OnceLock<Arc<AtomicBool>>, init: bool) -> &'static Arc<AtomicBool> {
    f.get_or_init(|| Arc::new(AtomicBool::new(init)))
}

/// The critical section of a switch or rollback. The handlers (signal-hook) are
/// installed once and only record the signal while a section is open; outside one they
/// perform the default action. Handlers, unlike an ignored disposition, are reset by exec,
/// so `activate` (in the terminal's process group) still gets Ctrl-C and stops, and the
/// xtask, which sees its failure and [`Critical::interrupted`], restores.
pub struct Critical(());

impl Critical {
    pub fn enter() -> Critical {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        static INSTALLED: OnceLock<()> = OnceLock::new();
        let default = flag(&DEFAULT_ACTION, true);
        INSTALLED.get_or_init(|| {
            for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] {
                // Registration only fails for signals that cannot be caught; these can.
                let _ = signal_hook::flag::register_conditional_default(sig, Arc::clone(default));
                let _ = signal_hook::flag::register(sig, Arc::clone(flag(&INTERRUPTED, false)));
            }
            let _ = signal_hook::flag::register(SIGHUP, Arc::clone(flag(&HUNG_UP, false)));
        });
        flag(&INTERRUPTED, false).store(false, Ordering::SeqCst);
        default.store(false, Ordering::SeqCst);
        Critical(())
    }

    /// Whether a stop signal arrived since [`Critical::enter`]. After SIGHUP the terminal
    /// is gone: output is dropped from then on.
    pub fn interrupted(&self) -> bool {
        if flag(&HUNG_UP, false).load(Ordering::SeqCst) {
            term::lose_output();
        }
        flag(&INTERRUPTED, false).load(Ordering::SeqCst)
    }
}

impl Drop for Critical {
    fn drop(&mut self) {
        flag(&DEFAULT_ACTION, true).store(true, Ordering::SeqCst);
    }
}

/// How the profile moves to the new generation.
pub enum SetProfile {
    /// `nix-env --profile P --set GEN` (a generation with gen-version).
    Set(PathBuf),
    /// `nix-env --profile P --switch-generation N` (rollback: an explicit id, never
    /// "whatever is previous by the time nix-env runs").
    SwitchTo(u64),
    /// An old-style generation (no gen-version) sets the profile from its `activate`.
    ByActivate,
}

/// What was active before: restored on failure.
#[derive(Debug, Clone)]
pub struct Previous {
    pub id: Option<u64>,
    /// What `gcroots/current-home` named (a specialisation after `switch --specialisation`).
    pub active: Option<PathBuf>,
}

impl Previous {
    pub fn read(env: &UserEnv, profile: &Profile) -> Previous {
        Previous {
            id: profile.current_id(),
            active: fs::read_link(env.current_home_root()).ok(),
        }
    }
}

/// One move of a profile and `$HOME` to a generation, under the lock.
pub struct Transition<'a> {
    pub nix: Nix<'a>,
    pub env: &'a UserEnv,
    pub profile: &'a Profile,
    pub lock: &'a Lock,
    pub backup: &'a Backup,
    pub verbose: bool,
}

impl Transition<'_> {
    /// The `nix-env` command of `set`, if any.
    pub fn set_command(&self, set: &SetProfile) -> Result<Option<xshell::Cmd<'_>>> {
        let base = || -> Result<xshell::Cmd<'_>> {
            Ok(self
                .nix
                .tool("nix-env")?
                .arg("--profile")
                .arg(self.profile.link()))
        };
        Ok(match set {
            SetProfile::Set(g) => Some(base()?.arg("--set").arg(g)),
            SetProfile::SwitchTo(id) => {
                Some(base()?.arg("--switch-generation").arg(id.to_string()))
            }
            SetProfile::ByActivate => None,
        })
    }

    /// Sets the profile, then runs `activate` of `active`, as one critical section. The
    /// pre-flight `plan` lets a restore put backed-up files back. `interrupted` and
    /// `failed` say what happened, for the last line. Details are printed; the error is
    /// [`crate::Reported`].
    pub fn run(
        &self,
        set: &SetProfile,
        active: &Path,
        plan: &Preflight,
        interrupted: &str,
        failed: &str,
    ) -> Result<()> {
        self.lock.announce()?;
        let previous = Previous::read(self.env, self.profile);
        let critical = Critical::enter();
        let mut guard = RestoreGuard {
            t: self,
            previous: &previous,
            failed: active,
            plan,
            armed: true,
            what: interrupted,
        };
        let restores = !matches!(set, SetProfile::ByActivate);
        if let Some(cmd) = self.set_command(set)?
            && let Err(e) = run_quietly(cmd)
        {
            if !critical.interrupted() {
                // nix-env changes the profile atomically: it is still where it was.
                guard.armed = false;
                return Err(e.context("setting the profile to the new generation"));
            }
            term::error(&format!("{e:#}"));
            return Err(guard.restore_now(interrupted));
        }
        let activated = if critical.interrupted() {
            Err(anyhow::anyhow!("interrupted before activation started"))
        } else {
            Activation {
                script: active.join("activate"),
                backup: self.backup,
                verbose: self.verbose,
            }
            .run(self.lock)
        };
        if let Err(e) = activated {
            term::error(&format!("{e:#}"));
            let what = if critical.interrupted() {
                interrupted
            } else {
                failed
            };
            if restores {
                return Err(guard.restore_now(what));
            }
            guard.armed = false;
            term::error(&format!(
                "{what}; this old-style generation manages the profile itself, so check `cargo xtask generations`"
            ));
            return Err(crate::Reported.into());
        }
        guard.armed = false;
        if critical.interrupted() {
            // The signal reached only the xtask (not the activation's process group), after
            // or while the activation ran to its end: nothing to undo, but say it was noticed.
            term::warning(
                "a stop signal arrived during activation, which completed anyway: the new generation is active",
            );
        }
        Ok(())
    }

    /// After a failed or interrupted activation: the profile back to `previous.id`, the
    /// generation that was active activated again, the failed generation's extra links
    /// removed and its backups put back. On a first install (nothing before) the new
    /// profile links and the failed generation's links are removed.
    fn restore(&self, previous: &Previous, failed: &Path, plan: &Preflight, what: &str) {
        let failed_files = fs::canonicalize(failed.join("home-files")).ok();
        let Some(id) = previous.id else {
            if let Some(new) = self.profile.current_id() {
                let _ = fs::remove_file(self.profile.generation_link(new));
            }
            let _ = fs::remove_file(self.profile.link());
            if fs::canonicalize(self.env.current_home_root()).ok() == fs::canonicalize(failed).ok()
            {
                let _ = fs::remove_file(self.env.current_home_root());
            }
            if let Some(f) = &failed_files {
                remove_links_into(f, None, &self.env.home);
            }
            put_backups_back(plan);
            term::error(&format!(
                "{what}; this was the first switch, so its profile links and the links it made were removed again and backed-up files put back; switch again"
            ));
            return;
        };
        let back = self
            .set_command(&SetProfile::SwitchTo(id))
            .and_then(|c| run_quietly(c.context("no command")?));
        if let Err(e) = back {
            term::error(&format!(
                "{what}; setting the profile back to generation {id} failed too ({e:#}); run `cargo xtask rollback --to {id}`"
            ));
            return;
        }
        let active = previous
            .active
            .clone()
            .filter(|a| a.join("activate").is_file())
            .unwrap_or_else(|| self.profile.generation_link(id));
        // The stop that led here has been acted on; only a new one stops the restore.
        flag(&INTERRUPTED, false).store(false, Ordering::SeqCst);
        let reactivated = Activation {
            script: active.join("activate"),
            backup: self.backup,
            verbose: self.verbose,
        }
        .run(self.lock);
        if let Some(f) = &failed_files {
            let restored = fs::canonicalize(active.join("home-files")).ok();
            remove_links_into(f, restored.as_deref(), &self.env.home);
        }
        put_backups_back(plan);
        match reactivated {
            Ok(()) => term::error(&format!(
                "{what}; restored generation {id}: it is active again (profile and $HOME)"
            )),
            Err(e) => term::error(&format!(
                "{what}, and re-activating generation {id} failed too ({e:#}); the profile is at generation {id} but $HOME may be half switched; fix the cause, then run `cargo xtask switch`"
            )),
        }
    }
}

/// Restores when dropped armed: an early return, an error or a panic between the profile
/// change and the end of activation never leaves them apart.
struct RestoreGuard<'a, 'b> {
    t: &'a Transition<'b>,
    previous: &'a Previous,
    failed: &'a Path,
    plan: &'a Preflight,
    armed: bool,
    what: &'a str,
}

impl RestoreGuard<'_, '_> {
    fn restore_now(&mut self, what: &str) -> anyhow::Error {
        self.armed = false;
        self.t.restore(self.previous, self.failed, self.plan, what);
        crate::Reported.into()
    }
}

impl Drop for RestoreGuard<'_, '_> {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            self.t
                .restore(self.previous, self.failed, self.plan, self.what);
        }
    }
}

/// Runs a step of the critical section; its output must not be able to kill it.
fn run_quietly(cmd: xshell::Cmd<'_>) -> Result<()> {
    let (mut c, shown) = crate::nix::prepare(cmd);
    term::command(&shown);
    c.stdin(Stdio::null());
    child_output(&mut c, false);
    let status = c.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Removes every link in `home` that points into `failed` (a `*-home-manager-files` path)
/// for a file `restored` lacks, and the directories that leaves empty.
fn remove_links_into(failed: &Path, restored: Option<&Path>, home: &Path) {
    fn walk(dir: &Path, rel: &mut PathBuf, failed: &Path, restored: Option<&Path>, home: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            rel.push(e.file_name());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), rel, failed, restored, home);
            } else if restored.is_none_or(|r| fs::symlink_metadata(r.join(&*rel)).is_err()) {
                let target = home.join(&*rel);
                if fs::read_link(&target).is_ok_and(|p| p == failed.join(&*rel))
                    && fs::remove_file(&target).is_ok()
                {
                    let mut dir = target.parent();
                    while let Some(d) = dir {
                        if d == home || fs::remove_dir(d).is_err() {
                            break;
                        }
                        dir = d.parent();
                    }
                }
            }
            rel.pop();
        }
    }
    walk(failed, &mut PathBuf::new(), failed, restored, home);
}

/// Files the failed activation moved to their backups go back where they were, where
/// nothing took their place.
fn put_backups_back(plan: &Preflight) {
    for s in &plan.plan {
        if s.action != Action::Backup {
            continue;
        }
        let Some(bak) = &s.backup else { continue };
        if fs::symlink_metadata(&s.path).is_err() && fs::symlink_metadata(bak).is_ok() {
            let _ = fs::rename(bak, &s.path);
        }
    }
}

/// The generation the profile names and the one Home Manager last activated
/// (`gcroots/current-home`), when they differ: a switch or rollback was killed (SIGKILL,
/// power loss) between setting the profile and finishing activation.
pub fn activation_mismatch(env: &UserEnv, profile: &Profile) -> Option<(PathBuf, Option<PathBuf>)> {
    let profiled = fs::canonicalize(profile.link()).ok()?;
    let active = fs::read_link(env.current_home_root()).ok();
    let agree = active
        .as_ref()
        .is_some_and(|a| is_or_specialises(&profiled, a));
    (!agree).then_some((profiled, active))
}

/// Whether `active` is `generation` or one of its specialisations (a specialisation's
/// activation records its own store path).
pub fn is_or_specialises(generation: &Path, active: &Path) -> bool {
    let active = fs::canonicalize(active).unwrap_or_else(|_| active.to_path_buf());
    active == generation
        || fs::read_dir(generation.join("specialisation")).is_ok_and(|d| {
            d.filter_map(|e| fs::canonicalize(e.ok()?.path()).ok())
                .any(|s| s == active)
        })
}
