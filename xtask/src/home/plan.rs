//! The pre-flight: for every file of a generation, what its own `activate` will do to
//! `$HOME` — computed before anything changes, by Home Manager's rules
//! (../shared/hm-contract.md, "Collisions and linking"), and stricter than Home Manager
//! exactly where its link step would lose data, nowhere else.
//!
//! The check step's verdicts are Home Manager's by construction: the generation's own
//! check-link-targets script runs (it only reads) on every target whose verdict is not
//! obvious, and where it disagrees with the model here the file is blocked.

use std::{
    collections::{BTreeMap, HashSet},
    ffi::OsString,
    fs::{self, File},
    io::{ErrorKind, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{
    env::UserEnv,
    generation::GenerationInfo,
    glob::{self, Match},
};
use crate::term;

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

    /// Sets exactly these variables on `cmd`: inherited HOME_MANAGER_BACKUP_* (and
    /// DRY_RUN / VERBOSE) are removed, so the script does what the pre-flight planned.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        for k in [
            "HOME_MANAGER_BACKUP_EXT",
            "HOME_MANAGER_BACKUP_COMMAND",
            "HOME_MANAGER_BACKUP_OVERWRITE",
            "DRY_RUN",
            "VERBOSE",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(self.env());
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

/// What activation does with one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Absent: linked (parents created).
    Link,
    /// A link (Home Manager's, foreign with the same content, or dangling) replaced.
    Relink,
    /// An identical file left in place (no backup extension, no backup command).
    Keep,
    /// Moved to `backup`.
    Backup,
    /// The backup command runs on it.
    Command,
    /// Forced with no extension: the file is deleted and replaced by the link.
    Replace,
    /// Activation would refuse it, or lose data: nothing may change.
    Block,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub path: PathBuf,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What activation will do to `$HOME`, computed before anything changes.
#[derive(Debug, Default, Serialize)]
pub struct Preflight {
    /// Files of the generation.
    pub files: usize,
    /// How many targets get each action.
    pub summary: BTreeMap<Action, usize>,
    /// One step per managed path.
    pub plan: Vec<Step>,
    /// Whether the generation's check script was run on the targets that needed it.
    pub check_script_ran: bool,
}

impl Preflight {
    pub fn blocked(&self) -> impl Iterator<Item = &Step> {
        self.plan.iter().filter(|s| s.action == Action::Block)
    }

    pub fn is_blocked(&self) -> bool {
        self.summary.get(&Action::Block).copied().unwrap_or(0) > 0
    }

    fn push(&mut self, step: Step) {
        *self.summary.entry(step.action).or_default() += 1;
        self.plan.push(step);
    }

    /// The complete list: a summary, then one line per target that is not simply linked.
    pub fn print(&self, env: &UserEnv) {
        let count = |a| self.summary.get(&a).copied().unwrap_or(0);
        term::info(&format!(
            "{} {} files: {} link, {} relink, {} keep, {} backup, {} command, {} replace, {} blocked",
            term::paint(term::Style::Bold, "pre-flight:"),
            self.files,
            count(Action::Link),
            count(Action::Relink),
            count(Action::Keep),
            count(Action::Backup),
            count(Action::Command),
            count(Action::Replace),
            count(Action::Block),
        ));
        let t = |p: &Path| env.tilde(p);
        for s in &self.plan {
            match s.action {
                Action::Link => {}
                Action::Relink => {
                    if let Some(r) = &s.reason {
                        term::info(&format!("  relink   {} ({r})", t(&s.path)));
                    }
                }
                Action::Keep => term::info(&format!(
                    "  keep     {} (identical, left in place)",
                    t(&s.path)
                )),
                Action::Backup => term::info(&format!(
                    "  backup   {} → {}{}",
                    t(&s.path),
                    s.backup.as_deref().map(t).unwrap_or_default(),
                    s.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )),
                Action::Command => term::info(&format!(
                    "  command  {} (the backup command runs on it)",
                    t(&s.path)
                )),
                Action::Replace => term::warning(&format!(
                    "{} {} is DELETED and replaced: home.file force = true and no backup extension (pass -b EXT to keep a copy)",
                    term::paint(term::Style::Red, "replace"),
                    t(&s.path)
                )),
                Action::Block => term::error(&format!(
                    "blocked: {}: {}",
                    t(&s.path),
                    s.reason.as_deref().unwrap_or("")
                )),
            }
        }
    }
}

/// The pre-flight of `generation` (its `home-files/` against `env.home`), with the
/// generation's own check script run where its verdict matters.
pub fn preflight(info: &GenerationInfo, env: &UserEnv, backup: &Backup) -> Result<Preflight> {
    let home_files = info.path.join("home-files");
    let (mut pf, candidates) = model(&home_files, &info.forced, env, backup)?;
    if let Some(script) = &info.check_script {
        cross_check(&mut pf, candidates, script, &home_files, env, backup)?;
    }
    Ok(pf)
}

/// The pre-flight, and the lock for a real run. The pre-flight runs under the lock, so
/// no other switch changes `$HOME` between the check and the activation it vouches for.
/// Only before the very first switch (no lock file yet) it runs once unlocked first: a
/// blocked switch must leave `$HOME` exactly as it was, not even a new lock file.
pub fn preflight_locked(
    info: &GenerationInfo,
    env: &UserEnv,
    backup: &Backup,
    what: &str,
    dry_run: bool,
) -> Result<(Preflight, Option<super::Lock>)> {
    let dir = env.hm_state_dir();
    if dry_run {
        return Ok((preflight(info, env, backup)?, None));
    }
    if !super::lock::lock_path(&dir).exists() {
        let pf = preflight(info, env, backup)?;
        if pf.is_blocked() {
            return Ok((pf, None));
        }
    }
    let lock = super::Lock::acquire(&dir, what)?;
    Ok((preflight(info, env, backup)?, Some(lock)))
}

/// Where a directory on the way to a target stands.
#[derive(Debug, Clone)]
enum DirState {
    /// A real directory, or a link to one inside `$HOME`.
    Usable,
    /// Does not exist: created by `mkdir -p`.
    Absent,
    /// Resolves outside `$HOME` or into the store: only a target activation leaves as it
    /// is (an identical file kept) is fine; anything written there is blocked.
    Outside(String),
    /// Writing below it would leave `$HOME` or fail midway.
    Blocked(String),
}

struct Walk<'a> {
    env: &'a UserEnv,
    backup: &'a Backup,
    /// Forced-path patterns with `$HOME` expanded, each followed by `*`.
    forced: Vec<String>,
    canonical_home: PathBuf,
    store: PathBuf,
    /// The `homeFilePattern` prefix: `$(readlink -e /nix/store)/`.
    hm_prefix: String,
    /// Targets the check script must judge: (source, target, our check-step error?).
    candidates: Vec<Candidate>,
}

struct Candidate {
    source: PathBuf,
    target: PathBuf,
    index: usize,
    /// The model's check-step verdict: Home Manager's check refuses it.
    refused: bool,
}

/// Compares `home_files` with `$HOME` by the contract's rules, in one directory walk: one
/// `lstat` per target, contents read only when sizes match. `forced` are the check
/// script's `forcedPaths` words (`$HOME/<path>`).
pub fn preflight_files(
    home_files: &Path,
    forced: &[String],
    env: &UserEnv,
    backup: &Backup,
) -> Result<Preflight> {
    Ok(model(home_files, forced, env, backup)?.0)
}

/// The model's plan and the targets the check script must confirm.
fn model(
    home_files: &Path,
    forced: &[String],
    env: &UserEnv,
    backup: &Backup,
) -> Result<(Preflight, Vec<Candidate>)> {
    let home = env.home.display().to_string();
    let store = crate::nix::store_dir();
    let canonical_store = fs::canonicalize(&store).unwrap_or_else(|_| store.clone());
    let mut walk = Walk {
        env,
        backup,
        forced: forced
            .iter()
            .map(|f| format!("{}*", f.replace("$HOME", &home)))
            .collect(),
        canonical_home: fs::canonicalize(&env.home).unwrap_or_else(|_| env.home.clone()),
        hm_prefix: format!("{}/", canonical_store.display()),
        store: canonical_store,
        candidates: Vec::new(),
    };
    let mut pf = Preflight::default();
    let mut rel = PathBuf::new();
    walk.dir(home_files, &mut rel, &DirState::Usable, &mut pf)
        .with_context(|| format!("reading the generation's files in {}", home_files.display()))?;
    pf.files = pf.plan.len();
    Ok((pf, walk.candidates))
}

impl Walk<'_> {
    fn dir(
        &mut self,
        dir: &Path,
        rel: &mut PathBuf,
        state: &DirState,
        out: &mut Preflight,
    ) -> std::io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            rel.push(entry.file_name());
            let target = self.env.home.join(&*rel);
            if entry.file_type()?.is_dir() {
                let sub = self.dir_state(&target, state);
                self.dir(&entry.path(), rel, &sub, out)?;
            } else {
                let step = match state {
                    DirState::Blocked(reason) => block(&target, reason.clone()),
                    DirState::Outside(reason) => {
                        let s = self.file(&entry.path(), &target, out.plan.len());
                        if s.action == Action::Keep {
                            s
                        } else {
                            block(&target, reason.clone())
                        }
                    }
                    DirState::Absent => self.absent(&target),
                    DirState::Usable => self.file(&entry.path(), &target, out.plan.len()),
                };
                out.push(step);
            }
            rel.pop();
        }
        Ok(())
    }

    fn absent(&self, target: &Path) -> Step {
        step(target, Action::Link)
    }

    /// The state of `$HOME/<dir>` given its parent's.
    fn dir_state(&self, dir: &Path, parent: &DirState) -> DirState {
        match parent {
            DirState::Usable => {}
            // Below a directory that leads out, everything does.
            DirState::Outside(_) | DirState::Blocked(_) | DirState::Absent => {
                return parent.clone();
            }
        }
        let t = self.env.tilde(dir);
        match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => DirState::Absent,
            Err(e) => DirState::Blocked(format!("{t} cannot be read ({e}); fix its permissions")),
            Ok(m) if m.file_type().is_symlink() => match fs::canonicalize(dir) {
                Err(_) => DirState::Blocked(format!(
                    "{t} is a dangling symlink where a directory is needed: activation would fail midway; remove it (rm {t}) and switch again"
                )),
                Ok(real) if real.starts_with(&self.store) => DirState::Outside(format!(
                    "{t} is a symlink into the Nix store ({}), e.g. an older generation's whole-directory link: files cannot be written through it; remove it (rm {t}) and switch again",
                    real.display()
                )),
                Ok(real) if !real.starts_with(&self.canonical_home) => DirState::Outside(format!(
                    "{t} is a symlink to {}, outside $HOME: links and backups would be written there; replace it with a directory (or remove it) and switch again",
                    real.display()
                )),
                Ok(real) if !real.is_dir() => DirState::Blocked(format!(
                    "{t} is a symlink to a file where a directory is needed; move it away and switch again"
                )),
                Ok(_) => DirState::Usable,
            },
            Ok(m) if m.is_dir() => DirState::Usable,
            Ok(_) => DirState::Blocked(format!(
                "{t} is a file where Home Manager needs a directory: activation would fail midway; move it away (mv {t} {t}.old) and switch again"
            )),
        }
    }

    fn forced(&self, target: &Path) -> bool {
        let Some(t) = target.to_str() else {
            return false;
        };
        self.forced
            .iter()
            .any(|p| glob::matches(p, t) == Match::Yes)
    }

    /// One target in a usable directory.
    fn file(&mut self, source: &Path, target: &Path, index: usize) -> Step {
        let forced = self.forced(target);
        // Only messages need the `~` form: built when one is written.
        let t = || self.env.tilde(target);
        let meta = match fs::symlink_metadata(target) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return step(target, Action::Link),
            Err(e) => {
                return block(
                    target,
                    format!("it cannot be read ({e}); fix its permissions"),
                );
            }
        };
        if meta.file_type().is_symlink() {
            let points_to = fs::read_link(target).unwrap_or_default();
            if forced {
                return step(target, Action::Relink);
            }
            if fs::metadata(target).is_err() {
                // `-e` is false: the check step skips it, the link step replaces it.
                return relink(target, "a dangling symlink, replaced");
            }
            if self.is_hm_link(&points_to) {
                return step(target, Action::Relink);
            }
            if same_content(source, target, None) {
                return relink(
                    target,
                    "a symlink Home Manager did not make, with the same content: replaced",
                );
            }
            self.candidates.push(Candidate {
                source: source.to_path_buf(),
                target: target.to_path_buf(),
                index,
                refused: true,
            });
            return block(
                target,
                format!(
                    "a symlink to {} that Home Manager did not make, with other content; Home Manager refuses to clobber it (symlinks are never backed up): remove it (rm {}) and switch again",
                    points_to.display(),
                    t()
                ),
            );
        }
        let is_dir = meta.is_dir();
        let b = self.backup;
        // Contents are compared only where the outcome depends on them: with an extension
        // or a command every existing file is moved or handed over, identical or not, so
        // the common switch reads no file at all.
        let mut same: Option<bool> = None;
        let mut identical = || {
            *same.get_or_insert_with(|| !is_dir && same_content(source, target, Some(meta.len())))
        };
        // The check step (4a–4d, Home Manager's order), as if the target were not forced.
        let refusal = if b.command.is_some() {
            None
        } else if let Some(ext) = &b.ext {
            let bak = with_ext(target, ext);
            (bak.exists() && !b.overwrite && !identical()).then(|| {
                format!(
                    "its backup {bt} exists and would be clobbered; move {bt} away, or pass --overwrite-backup (or -b EXT for another extension)",
                    bt = self.env.tilde(&bak)
                )
            })
        } else {
            (!identical()).then(|| {
                format!(
                    "it exists{} and would be clobbered; pass -b EXT to back it up, or move it away",
                    if is_dir { " (a directory)" } else { "" }
                )
            })
        };
        if let Some(r) = refusal {
            // Home Manager's own script confirms the refusal — or, for a forced target,
            // that it skips it (a glob the matcher here reads differently would show).
            self.candidates.push(Candidate {
                source: source.to_path_buf(),
                target: target.to_path_buf(),
                index,
                refused: !forced,
            });
            if !forced {
                return block(target, r);
            }
        }
        // The link step's slow path: T exists and is not a symlink.
        if b.command.is_some() {
            return step(target, Action::Command);
        }
        if let Some(ext) = &b.ext {
            return self.backup_step(target, &with_ext(target, ext), is_dir);
        }
        if identical() {
            return step(target, Action::Keep);
        }
        if is_dir {
            // Only forced gets here: `ln -Tsf` onto a directory fails after earlier moves.
            return block(
                target,
                format!(
                    "a directory where a forced file goes (home.file force = true, no backup extension): activation would fail midway; move it away (mv {t} {t}.old) or pass -b EXT",
                    t = t()
                ),
            );
        }
        Step {
            reason: Some("home.file force = true and no backup extension: deleted".into()),
            ..step(target, Action::Replace)
        }
    }

    /// `mv T T.<ext>` (with OVERWRITE first `rm T.<ext>`): allowed only where it loses
    /// nothing. Plain `mv` silently replaces a file or a dangling link and moves T *into* a
    /// directory; an overwrite never follows a symlinked backup or recurses into one.
    fn backup_step(&self, target: &Path, bak: &Path, is_dir: bool) -> Step {
        let what = if is_dir { "the directory" } else { "it" };
        // Only messages need the `~` forms: built when one is written.
        let (t, bt) = (|| self.env.tilde(target), || self.env.tilde(bak));
        match fs::symlink_metadata(bak) {
            Err(e) if e.kind() == ErrorKind::NotFound => Step {
                backup: Some(bak.to_path_buf()),
                ..step(target, Action::Backup)
            },
            Err(e) => block(
                target,
                format!("its backup path {} cannot be read ({e})", bt()),
            ),
            Ok(m) if m.file_type().is_symlink() => block(
                target,
                format!(
                    "its backup path {bt} is a symlink: moving {what} there would destroy that link (and --overwrite-backup never follows one); move {bt} away and switch again",
                    bt = bt()
                ),
            ),
            Ok(m) if m.is_dir() => block(
                target,
                format!(
                    "its backup path {bt} is a directory: {t} would be moved inside it; move {bt} away and switch again",
                    bt = bt(),
                    t = t()
                ),
            ),
            Ok(_) if self.backup.overwrite => Step {
                backup: Some(bak.to_path_buf()),
                reason: Some(format!(
                    "replaces the old backup {} (--overwrite-backup)",
                    bt()
                )),
                ..step(target, Action::Backup)
            },
            Ok(_) => block(
                target,
                format!(
                    "its backup {bt} exists and moving {what} there would overwrite it (Home Manager does that even for identical and forced files); move {bt} away, or pass --overwrite-backup (or -b EXT for another extension)",
                    bt = bt()
                ),
            ),
        }
    }

    /// `homeFilePattern`: `$(readlink -e /nix/store)/*-home-manager-files/*`, a glob on
    /// the link's own text.
    fn is_hm_link(&self, points_to: &Path) -> bool {
        points_to
            .to_str()
            .and_then(|p| p.strip_prefix(&self.hm_prefix))
            .is_some_and(|rest| rest.contains("-home-manager-files/"))
    }
}

fn step(target: &Path, action: Action) -> Step {
    Step {
        path: target.to_path_buf(),
        action,
        backup: None,
        reason: None,
    }
}

fn relink(target: &Path, reason: &str) -> Step {
    Step {
        reason: Some(reason.into()),
        ..step(target, Action::Relink)
    }
}

fn block(target: &Path, reason: String) -> Step {
    Step {
        reason: Some(reason),
        ..step(target, Action::Block)
    }
}

fn with_ext(target: &Path, ext: &str) -> PathBuf {
    let mut name: OsString = target.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// Runs the generation's check script on the targets whose check-step verdict is a
/// refusal (or would be, were they not forced) and blocks every target where it and the
/// model disagree: Home Manager's own code has the last word on what it refuses. Targets
/// the check passes in every Home Manager release (absent, its own links, dangling links,
/// identical content, a free backup path, a backup command) are not sent.
fn cross_check(
    pf: &mut Preflight,
    candidates: Vec<Candidate>,
    script: &Path,
    home_files: &Path,
    env: &UserEnv,
    backup: &Backup,
) -> Result<()> {
    if candidates.is_empty() {
        return Ok(());
    }
    let Some(bash) = crate::nix::find_on_path("bash") else {
        term::warning(
            "bash is not on PATH, so the generation's check script cannot confirm the pre-flight; install bash for Home Manager's own verdicts",
        );
        return Ok(());
    };
    // `activate` passes the resolved home-files path and `find`'s paths below it.
    let canonical = fs::canonicalize(home_files).unwrap_or_else(|_| home_files.to_path_buf());
    let mut cmd = Command::new(bash);
    cmd.arg(script).arg(&canonical);
    for c in &candidates {
        let rel = c.source.strip_prefix(home_files).unwrap_or(&c.source);
        cmd.arg(canonical.join(rel));
    }
    backup.apply(&mut cmd);
    cmd.env("HOME", &env.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd
        .output()
        .with_context(|| format!("running the generation's check script {}", script.display()))?;
    pf.check_script_ran = true;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let refused = refused_targets(&text);
    let index: HashSet<&Path> = candidates.iter().map(|c| c.target.as_path()).collect();
    for c in &candidates {
        let says = refused.contains(&c.target);
        if says == c.refused {
            continue;
        }
        let t = env.tilde(&c.target);
        let reason = if says {
            format!(
                "Home Manager's check refuses it (its own check-link-targets script says so; the pre-flight's model did not expect it): move {t} away, or pass -b EXT, and switch again"
            )
        } else {
            format!(
                "the pre-flight expected Home Manager's check to refuse it, but the generation's check script accepts it; resolve {t} by hand (move it away) and switch again"
            )
        };
        replace_step(pf, c.index, block(&c.target, reason));
    }
    if !out.status.success() && refused.iter().all(|r| !index.contains(r.as_path())) {
        // It failed for a reason that names no target (e.g. "a link target changed while
        // resolving symlinks"): nothing can be promised.
        let msg = term_strip(&text);
        let first = candidates[0].index;
        replace_step(
            pf,
            first,
            block(
                &candidates[0].target,
                format!(
                    "the generation's check script failed: {}; fix that and switch again",
                    msg.trim()
                ),
            ),
        );
    }
    Ok(())
}

fn replace_step(pf: &mut Preflight, index: usize, new: Step) {
    if let Some(old) = pf.plan.get_mut(index) {
        if let Some(n) = pf.summary.get_mut(&old.action) {
            *n -= 1;
        }
        *pf.summary.entry(new.action).or_default() += 1;
        *old = new;
    }
}

/// Removes ANSI colour codes.
fn term_strip(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for n in chars.by_ref() {
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The targets a check script's messages refuse: `Existing file 'T' would be clobbered`
/// and `Existing file 'B' would be clobbered by backing up 'T'`; before 2025 the first
/// read `Existing file 'T' is in the way of 'S'` (the warnings of that form go on:
/// `…, will be skipped …`, `…, will be moved …`, `… and 'B' exists. …`).
fn refused_targets(output: &str) -> HashSet<PathBuf> {
    let mut out = HashSet::new();
    for line in term_strip(output).lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("Existing file '")
            && let Some((t, source)) = rest.split_once("' is in the way of '")
            && source.ends_with('\'')
            && !source.contains("', will be ")
            && !source.contains("' and '")
        {
            out.insert(PathBuf::from(t));
        } else if let Some((_, t)) = line.split_once("' would be clobbered by backing up '") {
            if let Some(t) = t.trim_end().strip_suffix('\'') {
                out.insert(PathBuf::from(t));
            }
        } else if let Some(rest) = line.split_once("Existing file '").map(|(_, r)| r)
            && let Some(t) = rest.trim_end().strip_suffix("' would be clobbered")
        {
            out.insert(PathBuf::from(t));
        }
    }
    out
}

/// Whether `source` (following links) has the bytes of `target` (`cmp -s`, which follows
/// links too). `target_len` is the size from the caller's lstat of a regular file: sizes
/// first, so differing files are rarely read, each side costing one open and one fstat.
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::symlink;

    /// A generation tree (`files`) and a home (`home`) in a temporary directory; each
    /// managed file's source holds `managed\n`.
    struct Tree {
        _t: tempfile::TempDir,
        files: PathBuf,
        home: PathBuf,
        outside: PathBuf,
    }

    fn tree(managed: &[&str]) -> Tree {
        let t = tempfile::tempdir().unwrap();
        let (files, home, src, outside) = (
            t.path().join("files"),
            t.path().join("home"),
            t.path().join("src"),
            t.path().join("outside"),
        );
        for d in [&files, &home, &src, &outside] {
            fs::create_dir_all(d).unwrap();
        }
        for name in managed {
            let s = src.join(name.replace('/', "_"));
            fs::write(&s, "managed\n").unwrap();
            fs::create_dir_all(files.join(name).parent().unwrap()).unwrap();
            symlink(&s, files.join(name)).unwrap();
        }
        Tree {
            _t: t,
            files,
            home,
            outside,
        }
    }

    fn plan_of(
        t: &Tree,
        forced: &[&str],
        backup: &Backup,
    ) -> BTreeMap<String, (Action, Option<String>)> {
        let env = UserEnv::new("u", &t.home);
        let forced: Vec<String> = forced.iter().map(|f| format!("$HOME/{f}")).collect();
        let pf = preflight_files(&t.files, &forced, &env, backup).unwrap();
        assert_eq!(pf.files, pf.plan.len());
        pf.plan
            .into_iter()
            .map(|s| {
                let rel = s.path.strip_prefix(&t.home).unwrap().display().to_string();
                (rel, (s.action, s.reason))
            })
            .collect()
    }

    fn bak() -> Backup {
        Backup {
            ext: Some("bak".into()),
            ..Backup::default()
        }
    }

    /// Each rule of the contract's "Collisions and linking", and the stricter blocks, on
    /// one generated tree (no nix needed).
    #[test]
    fn the_plan_follows_home_managers_rules() {
        let names = [
            ".new",
            ".same",
            ".differs",
            ".dir",
            ".hm",
            ".dangling",
            ".foreign-same",
            ".foreign-other",
            ".same-bak",
            ".bakdir",
            ".baklink",
            ".plain/y",
            ".out/x",
            ".out/kept",
            ".c",
            ".config/z",
        ];
        let t = tree(&names);
        let h = &t.home;
        fs::write(h.join(".same"), "managed\n").unwrap();
        fs::write(h.join(".differs"), "mine\n").unwrap();
        fs::create_dir(h.join(".dir")).unwrap();
        // A Home Manager link: its text names a `*-home-manager-files` store path.
        symlink("/nix/store/x-home-manager-files/.hm", h.join(".hm")).unwrap();
        symlink(t.outside.join("gone"), h.join(".dangling")).unwrap();
        fs::write(t.outside.join("same"), "managed\n").unwrap();
        symlink(t.outside.join("same"), h.join(".foreign-same")).unwrap();
        fs::write(t.outside.join("other"), "other\n").unwrap();
        symlink(t.outside.join("other"), h.join(".foreign-other")).unwrap();
        fs::write(h.join(".same-bak"), "managed\n").unwrap();
        fs::write(h.join(".same-bak.bak"), "an old backup\n").unwrap();
        fs::write(h.join(".bakdir"), "mine\n").unwrap();
        fs::create_dir(h.join(".bakdir.bak")).unwrap();
        fs::write(h.join(".baklink"), "mine\n").unwrap();
        symlink(t.outside.join("other"), h.join(".baklink.bak")).unwrap();
        fs::write(h.join(".plain"), "a file where a directory goes\n").unwrap();
        fs::create_dir(t.outside.join("d")).unwrap();
        fs::write(t.outside.join("d/kept"), "managed\n").unwrap();
        symlink(t.outside.join("d"), h.join(".out")).unwrap();
        fs::write(h.join(".c"), "mine\n").unwrap();
        fs::create_dir_all(h.join(".config")).unwrap();
        fs::write(h.join(".config/z"), "mine\n").unwrap();

        use Action as A;
        let p = plan_of(&t, &[], &bak());
        let action = |k: &str| p[k].0;
        assert_eq!(action(".new"), A::Link);
        // With an extension every existing file is moved aside, identical or not.
        assert_eq!(action(".same"), A::Backup);
        assert_eq!(action(".differs"), A::Backup);
        assert_eq!(action(".dir"), A::Backup);
        assert_eq!(action(".hm"), A::Relink);
        assert_eq!(action(".dangling"), A::Relink);
        assert_eq!(action(".foreign-same"), A::Relink);
        assert_eq!(action(".foreign-other"), A::Block);
        // Stricter than Home Manager where its `mv` would destroy something.
        assert_eq!(action(".same-bak"), A::Block, "{:?}", p[".same-bak"]);
        assert_eq!(action(".bakdir"), A::Block);
        assert_eq!(action(".baklink"), A::Block);
        assert_eq!(action(".plain/y"), A::Block);
        assert_eq!(action(".out/x"), A::Block);
        assert!(p[".out/x"].1.as_deref().unwrap().contains("outside $HOME"));
        // Activation writes nothing for a kept identical file, even outside: but with an
        // extension it would move it, so it blocks.
        assert_eq!(action(".out/kept"), A::Block);

        // No extension, no command: identical files stay, differing ones are refused.
        let none = plan_of(&t, &[], &Backup::default());
        assert_eq!(none[".same"].0, A::Keep);
        assert_eq!(none[".out/kept"].0, A::Keep);
        assert_eq!(none[".differs"].0, A::Block);
        assert_eq!(none[".dir"].0, A::Block);

        // Forcing `.c` forces `.config/z` too (a string prefix); forced files are
        // replaced without an extension, moved with one.
        let forced = plan_of(&t, &[".c"], &Backup::default());
        assert_eq!(forced[".c"].0, A::Replace);
        assert_eq!(forced[".config/z"].0, A::Replace);
        assert_eq!(plan_of(&t, &[".c"], &bak())[".config/z"].0, A::Backup);

        // A backup command takes every existing non-link file.
        let cmd = Backup {
            command: Some("true".into()),
            ..Backup::default()
        };
        let c = plan_of(&t, &[], &cmd);
        assert_eq!(c[".differs"].0, A::Command);
        assert_eq!(c[".same-bak"].0, A::Command);
        assert_eq!(c[".foreign-other"].0, A::Block);

        // --overwrite-backup replaces a backup file, never a symlink or a directory.
        let ow = Backup {
            overwrite: true,
            ..bak()
        };
        let o = plan_of(&t, &[], &ow);
        assert_eq!(o[".same-bak"].0, A::Backup);
        assert_eq!(o[".bakdir"].0, A::Block);
        assert_eq!(o[".baklink"].0, A::Block);
    }

    #[test]
    fn reads_the_check_scripts_refusals() {
        let out = "\x1b[1;31mExisting file '/h/a b' would be clobbered\x1b[0m\nExisting file '/h/x.bak' would be clobbered by backing up '/h/x'\nExisting file '/h/s' is in the way of '/n/s', will be skipped since they are the same\nExisting file '/h/m' is in the way of '/n/m', will be moved to '/h/m.bak'\nExisting file '/h/o' is in the way of '/n/o' and '/h/o.bak' exists. Backup will be clobbered due to HOME_MANAGER_BACKUP_OVERWRITE=1\n";
        let r = refused_targets(out);
        assert_eq!(r.len(), 2, "{r:?}");
        // Home Manager before 2025 words the refusal differently.
        let old = refused_targets("Existing file '/h/it's' is in the way of '/n/it's'\n");
        assert!(old.contains(Path::new("/h/it's")), "{old:?}");
        assert!(r.contains(Path::new("/h/a b")));
        assert!(r.contains(Path::new("/h/x")));
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
        assert_eq!(Backup::new(&defaults, Some(""), None, false).ext, None);
    }
}
