//! `cargo xtask doctor`: is this machine (and this checkout) ready for `cargo xtask switch`?
//! One line per check, each failing one with its fix; `--json` for scripts. Exit 1 when
//! something would block a switch (an error), 0 otherwise (warnings allowed).
//!
//! Nothing here changes anything, and nothing may hang: every nix call runs under a time
//! limit (`XTASK_DOCTOR_TIMEOUT` seconds, default 15; fetching an input gets twice that),
//! and a check whose call ran out of time says so instead of waiting.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use serde::Serialize;

use crate::{
    Ctx, Reported,
    cli::Doctor,
    home::{self, Lock, UserEnv},
    nix::{self, Nix, Version},
    repo::{self, Repo, Severity as FindingSeverity},
    term::{self, Style},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Severity {
    /// Passed, or not applicable (then `ok` is false and the detail says why it was skipped).
    Info,
    /// Worth fixing; a switch still works.
    Warning,
    /// A switch would be blocked.
    Error,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    ok: bool,
    severity: Severity,
    detail: String,
    fix: Option<String>,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn push(
        &mut self,
        check: &str,
        ok: bool,
        severity: Severity,
        detail: String,
        fix: Option<String>,
    ) {
        self.checks.push(Check {
            check: check.to_string(),
            ok,
            severity,
            detail,
            fix,
        });
    }
    fn ok(&mut self, check: &str, detail: impl Into<String>) {
        self.push(check, true, Severity::Info, detail.into(), None);
    }
    fn warn(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(
            check,
            false,
            Severity::Warning,
            detail.into(),
            Some(fix.into()),
        );
    }
    fn fail(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(
            check,
            false,
            Severity::Error,
            detail.into(),
            Some(fix.into()),
        );
    }
    fn skip(&mut self, check: &str, why: &str) {
        self.push(
            check,
            false,
            Severity::Info,
            format!("skipped: {why}"),
            None,
        );
    }
}

/// The time limit of one quick nix call.
fn timeout() -> Duration {
    let secs = std::env::var("XTASK_DOCTOR_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(15);
    Duration::from_secs(secs)
}

impl Doctor {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let mut r = Report::default();
        let nix = ctx.nix();
        let version = check_nix(&mut r, &nix);
        const NO_NIX: &str = "nix cannot run (see above)";
        let nix_ok = if version.is_some() {
            check_flakes(&mut r, &nix)
        } else {
            r.skip("flakes", NO_NIX);
            false
        };
        if nix_ok {
            let local = check_store(&mut r, &nix);
            check_settings(&mut r, &nix, version.as_ref(), local);
        } else {
            r.skip("store", NO_NIX);
            r.skip("nix settings", NO_NIX);
        }
        let env = match UserEnv::from_process() {
            Ok(env) => {
                match env.check_home(true) {
                    Ok(()) => r.ok("$HOME", env.home.display().to_string()),
                    Err(e) => r.fail(
                        "$HOME",
                        format!("{e:#}"),
                        "fix $HOME as said, then run doctor again",
                    ),
                }
                Some(env)
            }
            Err(e) => {
                r.fail("$USER", format!("{e:#}"), "export USER=<your login name>");
                None
            }
        };
        match &env {
            Some(env) => {
                check_profile(&mut r, env);
                check_lock(&mut r, env);
            }
            None => {
                r.skip("profile", "$USER is not usable");
                r.skip("lock", "$USER is not usable");
            }
        }
        match (ctx.repo(), &env) {
            (Ok(repo), Some(env)) => check_repo(&mut r, &repo, env, nix_ok.then_some(&nix)),
            (Ok(repo), None) => {
                check_layout(&mut r, &repo);
                r.skip("home", "$USER is not usable");
            }
            (Err(e), _) => r.fail(
                "repository",
                format!("{e:#}"),
                "fix the repository as said (cargo xtask check --lint-only shows every problem)",
            ),
        }
        check_git(&mut r, &ctx.root);
        if nix_ok {
            check_inputs(&mut r, &nix, &ctx.root);
        } else {
            r.skip("flake.lock", NO_NIX);
        }
        check_store_space(&mut r);
        check_platform(&mut r, env.as_ref(), &ctx.root);
        print(&r, self.json)
    }
}

fn print(r: &Report, json: bool) -> Result<()> {
    let errors = r
        .checks
        .iter()
        .filter(|c| c.severity == Severity::Error)
        .count();
    let warnings = r
        .checks
        .iter()
        .filter(|c| c.severity == Severity::Warning)
        .count();
    if json {
        term::out(&serde_json::to_string_pretty(&r.checks)?);
    } else {
        for c in &r.checks {
            let mark = match (c.ok, c.severity) {
                (true, _) => term::paint(Style::Green, "✓"),
                (false, Severity::Error) => term::paint(Style::Red, "✗"),
                (false, Severity::Warning) => term::paint(Style::Yellow, "!"),
                (false, Severity::Info) => term::paint(Style::Dim, "-"),
            };
            term::info(&format!(
                "{mark} {}: {}",
                term::paint(Style::Bold, &c.check),
                c.detail
            ));
            if let Some(fix) = &c.fix {
                let fix = fix.replace('\n', "\n      ");
                term::info(&format!("    fix: {fix}"));
            }
        }
        let verdict = if errors > 0 {
            "a switch would be blocked"
        } else {
            "ready to switch"
        };
        term::info(&format!(
            "doctor: {} checks, {errors} errors, {warnings} warnings: {verdict}",
            r.checks.len()
        ));
    }
    if errors > 0 {
        return Err(Reported.into());
    }
    Ok(())
}

/// nix on PATH and its version.
fn check_nix(r: &mut Report, nix: &Nix<'_>) -> Option<Version> {
    let Some(path) = nix::find_on_path("nix") else {
        let mut fix = nix::INSTALL_HELP.to_string();
        if cfg!(target_os = "macos") {
            fix.push_str("\n(a macOS update can drop nix from /etc/zshrc: re-add the `nix-daemon.sh` lines the installer put there)");
        }
        r.fail("nix", "nix is not on PATH", fix);
        return None;
    };
    match nix.version(timeout()) {
        Ok(v) if !v.at_least(2, 4) => {
            r.fail(
                "nix",
                format!("{} at {}: no flakes support (Nix >= 2.8 is needed)", v.text, path.display()),
                "upgrade nix to 2.18 or newer: https://nixos.org/download (Debian/Ubuntu: apt-get install nix-bin)",
            );
            None
        }
        Ok(v) if !v.at_least(2, 8) => {
            r.warn(
                "nix",
                format!(
                    "{} at {}: older than 2.8, the oldest version the xtask is tested with",
                    v.number(),
                    path.display()
                ),
                "upgrade nix (2.18+ recommended): https://nixos.org/download",
            );
            Some(v)
        }
        Ok(v) => {
            let note = if v.at_least(2, 18) {
                ""
            } else {
                " (works; 2.18+ recommended)"
            };
            r.ok("nix", format!("{} at {}{note}", v.number(), path.display()));
            Some(v)
        }
        Err(e) => {
            r.fail(
                "nix",
                format!("{} does not run: {e:#}", path.display()),
                "reinstall nix or fix its installation (see README's Install), then open a new shell",
            );
            None
        }
    }
}

/// Flakes usable: a trivial evaluation with the feature flag every xtask call passes.
fn check_flakes(r: &mut Report, nix: &Nix<'_>) -> bool {
    let out = match nix.bounded(["eval", "--expr", "builtins ? getFlake"], timeout()) {
        Ok(out) => out,
        Err(e) => {
            r.fail("flakes", format!("{e:#}"), "see README's Install");
            return false;
        }
    };
    if out.success() && out.stdout.trim() == "true" {
        r.ok(
            "flakes",
            "usable (the xtask passes --extra-experimental-features 'nix-command flakes')",
        );
        return true;
    }
    if out.timed_out() {
        r.fail(
            "flakes",
            format!("`{}`: {}", out.shown, out.problem()),
            "nix hangs on a trivial evaluation: check that the nix daemon runs (`systemctl status nix-daemon`) and that nix.conf has no unreachable store",
        );
        return false;
    }
    let why = nix::failure(&out.shown, "a trivial expression", &out.stderr);
    let detail = format!("{why:#}");
    let (detail, fix) = match detail.split_once("\n  tried: ") {
        Some((d, rest)) => (
            d.to_string(),
            rest.split_once("\n  ")
                .map_or("see README's Install".to_string(), |(_, f)| f.to_string()),
        ),
        None => (detail, "see README's Install".to_string()),
    };
    r.fail("flakes", detail, fix);
    false
}

/// Store writable or daemon reachable. `nix store ping` opens the store as every command
/// does (2.4–2.18; `nix store info` from 2.19 keeps `ping` as an alias), in milliseconds.
/// Returns whether the store is a local one (no daemon).
fn check_store(r: &mut Report, nix: &Nix<'_>) -> bool {
    let daemon_fix = if cfg!(target_os = "macos") {
        "start the nix daemon: sudo launchctl kickstart -k system/org.nixos.nix-daemon"
    } else {
        "start the nix daemon: sudo systemctl start nix-daemon (WSL without systemd: enable systemd in /etc/wsl.conf, or reinstall nix with --no-daemon)"
    };
    let out = match nix.bounded(["store", "ping"], timeout()) {
        Ok(out) => out,
        Err(e) => {
            r.fail("store", format!("{e:#}"), daemon_fix);
            return false;
        }
    };
    let text = format!("{}{}", out.stdout, out.stderr);
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Store URL:"))
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|| "?".into());
    if !out.success() {
        let problem = out.problem();
        let fix = if problem.contains("daemon") || problem.contains("socket") || out.timed_out() {
            daemon_fix.to_string()
        } else if problem.contains("ermission denied") {
            "the store is not writable for you and no daemon answers: use the multi-user install (a daemon), or run as the store's owner".to_string()
        } else {
            "fix what nix says (README's Install)".to_string()
        };
        r.fail("store", format!("`{}`: {problem}", out.shown), fix);
        return false;
    }
    let local = url == "local" || url.starts_with('/') || url.starts_with("local");
    if local && !rustix::process::geteuid().is_root() {
        let db = Path::new("/nix/var/nix/db");
        if db.exists() && rustix::fs::access(db, rustix::fs::Access::WRITE_OK).is_err() {
            r.fail(
                "store",
                format!(
                    "local store ({url}), but {} is not writable for you and no daemon is used",
                    db.display()
                ),
                format!("{daemon_fix}; or chown the single-user store to yourself"),
            );
            return local;
        }
    }
    let how = if local {
        "writable local store"
    } else {
        "daemon reachable"
    };
    r.ok("store", format!("{url} ({how})"));
    local
}

/// A setting from `nix show-config --json` (2.4–2.19: `{"name": {"value": …}}`; the same
/// shape from `nix config show --json`, 2.20+); plain values as older nix printed them.
fn setting<'a>(config: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    let v = config.get(name)?;
    Some(v.get("value").unwrap_or(v))
}

/// Trusted user and sandbox: the tests pass `sandbox = false` through NIX_CONFIG, which
/// nix honours for trusted users only.
fn check_settings(r: &mut Report, nix: &Nix<'_>, version: Option<&Version>, local: bool) {
    let new = version.is_some_and(Version::has_config_show);
    let args: &[&str] = if new {
        &["config", "show", "--json"]
    } else {
        &["show-config", "--json"]
    };
    let out = match nix.bounded(args, timeout()) {
        Ok(out) => out,
        Err(e) => {
            r.warn(
                "nix settings",
                format!("{e:#}"),
                "run `nix show-config` to see what fails",
            );
            return;
        }
    };
    let config: Option<serde_json::Value> = out
        .success()
        .then(|| serde_json::from_str(&out.stdout).ok())
        .flatten();
    let Some(config) = config else {
        r.warn(
            "nix settings",
            format!("`{}`: {}", out.shown, out.problem()),
            "run that command to see what fails",
        );
        return;
    };
    let sandbox = match setting(&config, "sandbox") {
        Some(serde_json::Value::Bool(b)) => b.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => "?".into(),
    };
    let trusted_users: Vec<String> = match setting(&config, "trusted-users") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Some(serde_json::Value::String(s)) => s.split_whitespace().map(String::from).collect(),
        _ => Vec::new(),
    };
    let me = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::geteuid().as_raw()));
    // A single-user (local) store is the user's own: every setting applies.
    let trusted = local || rustix::process::geteuid().is_root() || is_trusted(&me, &trusted_users);
    let detail = format!(
        "sandbox = {sandbox}; {me} is {}trusted (trusted-users = {})",
        if trusted { "" } else { "not " },
        trusted_users.join(" ")
    );
    if !trusted && sandbox != "false" && sandbox != "relaxed" {
        r.warn(
            "nix settings",
            detail,
            "`cargo xtask test` needs the sandbox off and cannot turn it off for an untrusted user: set `sandbox = relaxed` (or false) in /etc/nix/nix.conf, or add yourself to trusted-users there, then restart the daemon",
        );
    } else {
        r.ok("nix settings", detail);
    }
}

fn is_trusted(user: &str, trusted: &[String]) -> bool {
    let groups = my_groups();
    trusted.iter().any(|t| {
        t == "*"
            || t == user
            || t.strip_prefix('@')
                .is_some_and(|g| groups.iter().any(|m| m == g))
    })
}

/// The names of the groups this process is in (from /etc/group).
fn my_groups() -> Vec<String> {
    let mut gids: Vec<u32> = rustix::process::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    gids.push(rustix::process::getegid().as_raw());
    let text = fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid: u32 = f.nth(1)?.parse().ok()?;
            gids.contains(&gid).then(|| name.to_string())
        })
        .collect()
}

/// The profile directory Home Manager will use, and a pending legacy migration.
fn check_profile(r: &mut Report, env: &UserEnv) {
    let profile = env.profile();
    let shown = env.tilde(&profile.dir);
    if !profile.exists {
        r.ok("profile", format!("{shown} (created by the first switch)"));
    } else if rustix::fs::access(&profile.dir, rustix::fs::Access::WRITE_OK).is_err() {
        r.fail(
            "profile",
            format!("{shown} is not writable for {}", env.user),
            format!(
                "fix its ownership (sudo chown {} {})",
                env.user,
                profile.dir.display()
            ),
        );
        return;
    } else {
        let gens = profile.generations().map(|g| g.len()).unwrap_or(0);
        let current = profile
            .current_id()
            .map_or("none".to_string(), |i| i.to_string());
        r.ok(
            "profile",
            format!("{shown} ({gens} generations, current: {current})"),
        );
    }
    if let Some(m) = env.pending_migration() {
        r.warn(
            "profile migration",
            format!(
                "a legacy Home Manager profile in {} ({} generation links) is pending migration to {}",
                m.from.display(),
                m.links.len(),
                m.to.display()
            ),
            "run `cargo xtask switch`: it moves the generations first (as Home Manager's activation does), so the history is kept",
        );
    }
}

/// A running switch or activation, and an activation a killed switch left half done.
fn check_lock(r: &mut Report, env: &UserEnv) {
    let dir = env.hm_state_dir();
    let path = dir.join("switch.lock");
    match Lock::holder(&dir) {
        Ok(Some(holder)) => r.fail(
            "lock",
            format!("an activation or switch is running ({holder})"),
            format!(
                "wait for it to finish (`fuser -v {}` shows the holder); the lock is free once every holder has exited",
                path.display()
            ),
        ),
        Ok(None) => r.ok("lock", format!("free ({})", env.tilde(&path))),
        Err(e) => r.warn("lock", format!("{e:#}"), "check the permissions of that file"),
    }
    if let Some((profiled, active)) = home::activation_mismatch(env, &env.profile()) {
        r.warn(
            "activation",
            format!(
                "the profile's generation {} is not the one $HOME has ({}): a switch or rollback was stopped mid-way",
                profiled.display(),
                active.map_or("none".into(), |a| a.display().to_string())
            ),
            "run `cargo xtask switch` again (it repairs this first), or `cargo xtask rollback`",
        );
    }
}

fn check_layout(r: &mut Report, repo: &Repo) {
    let errors: Vec<String> = repo
        .findings
        .iter()
        .filter(|f| f.severity == FindingSeverity::Error)
        .map(|f| f.to_string())
        .collect();
    if errors.is_empty() {
        r.ok(
            "layout",
            format!("{} users, {} hosts", repo.users.len(), repo.hosts.len()),
        );
    } else {
        r.fail(
            "layout",
            format!("{} problems: {}", errors.len(), errors.join("; ")),
            "fix them as said (`cargo xtask check --lint-only` lists them)",
        );
    }
}

/// `$USER` has a home in homes/, and its meta.nix against this machine's system.
fn check_repo(r: &mut Report, repo: &Repo, env: &UserEnv, nix: Option<&Nix<'_>>) {
    check_layout(r, repo);
    let user = &env.user;
    let homes: Vec<&str> = repo.standalone_users().map(|u| u.name.as_str()).collect();
    let Some(u) = repo.users.get(user).filter(|u| u.base) else {
        let other = homes.first().copied().unwrap_or("<user>");
        // No suggestion the xtask would refuse: `new-user root` needs --allow-root, and a
        // home is switched by its own user only.
        let fix = if user == repo::RESERVED_USER {
            format!(
                "run doctor and switch as the user whose home you deploy (e.g. `sudo -u {other} -i`), not as root"
            )
        } else {
            format!(
                "create it with `cargo xtask new-user {user}`, or log in as a user who has one ({}) and run doctor there",
                term::list(&homes)
            )
        };
        r.fail(
            "home",
            format!(
                "$USER is {user}, but there is no homes/{user} (homes: {})",
                term::list(&homes)
            ),
            fix,
        );
        r.skip("system", "no home for $USER");
        return;
    };
    let mut parts = vec![format!("homes/{user}")];
    if u.global {
        parts.push(format!("homes/{user}@{}", repo::rules().reserved_host));
    }
    r.ok("home", parts.join(" + "));
    unit_check(r, user);
    let here = nix::current_system();
    if !repo::rules().is_supported(&here) {
        r.fail(
            "system",
            format!("this machine is {here}, which the repository does not support"),
            format!(
                "add it to supported-systems in Cargo.toml (now: {})",
                repo::rules().supported_systems.join(", ")
            ),
        );
        return;
    }
    if !u.has_meta {
        r.ok(
            "system",
            format!(
                "{here} (homes/{user} has no meta.nix; the repo's default is {})",
                repo.defaults.default_system
            ),
        );
        return;
    }
    let Some(nix) = nix else {
        r.skip(
            "system",
            "nix cannot run, so homes/{user}/meta.nix cannot be read",
        );
        return;
    };
    let rel = format!("homes/{user}/meta.nix");
    let file = repo.root.join(&rel);
    let expr = format!(
        "let m = import (/. + {}); in if builtins.isAttrs m then {{ system = m.system or null; }} else {{ not_attrs = builtins.typeOf m; }}",
        repo::nix_string(&file.display().to_string())
    );
    let shape = format!("write it like {{ system = \"{here}\"; }}");
    let out = match nix.bounded(["eval", "--json", "--impure", "--expr", &expr], timeout()) {
        Ok(out) => out,
        Err(e) => {
            r.fail("system", format!("{rel}: {e:#}"), shape);
            return;
        }
    };
    if !out.success() {
        let msg = out.problem();
        let msg = msg.strip_prefix("error: ").unwrap_or(&msg).to_string();
        r.fail(
            "system",
            format!("{rel} cannot be read: {msg}"),
            format!("fix the file: {shape}"),
        );
        return;
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    if let Some(kind) = v.get("not_attrs").and_then(|k| k.as_str()) {
        r.fail(
            "system",
            format!("{rel} is a {kind}, not an attribute set"),
            shape,
        );
        return;
    }
    match v.get("system") {
        Some(serde_json::Value::String(s)) if repo::rules().is_supported(s) => {
            if *s == here {
                r.ok("system", format!("{here}, as {rel} says"));
            } else {
                r.warn(
                    "system",
                    format!("{rel} says {s}, but this machine is {here}: switch builds this machine's variant"),
                    format!("set system = \"{here}\" in {rel} if the home is meant for this machine (or pass --system {s})"),
                );
            }
        }
        None | Some(serde_json::Value::Null) => r.ok(
            "system",
            format!(
                "{here} ({rel} sets none; the repo's default is {})",
                repo.defaults.default_system
            ),
        ),
        Some(other) => r.fail(
            "system",
            format!("{rel}: system = {other} is not a supported system"),
            format!("use one of {}", repo::rules().supported_systems.join(", ")),
        ),
    }
}

/// NixOS' Home Manager module managing the same user: a standalone switch refuses it.
fn unit_check(r: &mut Report, user: &str) {
    let dir = std::env::var_os("XTASK_SYSTEMD_UNIT_DIR")
        .map_or_else(|| PathBuf::from("/etc/systemd/system"), PathBuf::from);
    let unit = dir.join(format!("home-manager-{user}.service"));
    if unit.exists() {
        r.warn(
            "nixos module",
            format!(
                "NixOS' Home Manager module manages {user}'s home here ({})",
                unit.display()
            ),
            "deploy with `cargo xtask switch --host <host>`, or pass --force-standalone",
        );
    }
}

/// git present, and no `.nix` file the flake cannot see.
fn check_git(r: &mut Report, root: &Path) {
    let Some(git) = nix::find_on_path("git") else {
        r.fail(
            "git",
            "git is not on PATH (flakes in a git repository need it)",
            "install git (Debian/Ubuntu: apt-get install git; macOS: xcode-select --install)",
        );
        return;
    };
    let sh = match xshell::Shell::new() {
        Ok(sh) => sh,
        Err(e) => {
            r.warn("git", e.to_string(), "");
            return;
        }
    };
    sh.change_dir(root);
    let version = nix::run_bounded(sh.cmd(&git).arg("--version"), timeout())
        .ok()
        .filter(|o| o.success())
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_else(|| git.display().to_string());
    let untracked: Vec<String> = repo::untracked_nix_findings(root)
        .into_iter()
        .map(|f| f.path)
        .collect();
    if untracked.is_empty() {
        r.ok(
            "git",
            format!("{version}; every .nix file of homes/, systems/, droids/, lib/ is tracked"),
        );
    } else {
        r.fail(
            "git",
            format!(
                "{} untracked .nix file(s) the flake cannot see: {}",
                untracked.len(),
                untracked.join(", ")
            ),
            format!("git add -N {}", untracked.join(" ")),
        );
    }
}

/// flake.lock present and each locked input fetchable (or already in the store).
fn check_inputs(r: &mut Report, nix: &Nix<'_>, root: &Path) {
    let declared = match nix.declared_inputs(root, timeout()) {
        Ok(d) => d,
        Err(e) => {
            r.fail("flake.lock", format!("{e:#}"), "fix flake.nix");
            return;
        }
    };
    let lock_path = root.join("flake.lock");
    let lock: serde_json::Value = match fs::read_to_string(&lock_path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                r.fail(
                    "flake.lock",
                    format!("flake.lock is not valid JSON: {e}"),
                    "restore it from git (`git checkout flake.lock`), or recreate it with `cargo xtask update` where the network is reachable",
                );
                return;
            }
        },
        Err(_) if declared.is_empty() => {
            r.ok(
                "flake.lock",
                "the flake has no inputs, so it needs no flake.lock",
            );
            return;
        }
        Err(_) => {
            r.fail(
                "flake.lock",
                format!("flake.lock is missing; flake.nix declares {}", declared.join(", ")),
                "run `cargo xtask update` (or `nix flake lock`) where the network is reachable, and commit flake.lock",
            );
            return;
        }
    };
    let nodes = lock.get("nodes").and_then(|n| n.as_object());
    let root_inputs = nodes
        .and_then(|n| n.get(lock.get("root").and_then(|r| r.as_str()).unwrap_or("root")))
        .and_then(|n| n.get("inputs"))
        .and_then(|i| i.as_object())
        .cloned()
        .unwrap_or_default();
    let missing: Vec<&String> = declared
        .iter()
        .filter(|d| !root_inputs.contains_key(*d))
        .collect();
    if !missing.is_empty() {
        r.fail(
            "flake.lock",
            format!("flake.lock does not lock {}", term::list(&missing)),
            format!(
                "run `cargo xtask update {}` where the network is reachable, and commit flake.lock",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
    } else {
        r.ok("flake.lock", format!("locks {}", term::list(&declared)));
    }
    // Every locked node, fetched in parallel, each within its own time limit: a locked
    // input with its narHash is taken from the store when it is there already.
    let locked: BTreeMap<String, serde_json::Value> = nodes
        .map(|n| {
            n.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.get("locked")?.clone())))
                .collect()
        })
        .unwrap_or_default();
    let limit = timeout() * 2;
    let results: Vec<(String, String, Result<nix::Bounded>)> = std::thread::scope(|s| {
        let handles: Vec<_> = locked
            .iter()
            .map(|(name, attrs)| {
                let original = nodes
                    .and_then(|n| n.get(name))
                    .and_then(|n| n.get("original"))
                    .map(describe)
                    .unwrap_or_else(|| describe(attrs));
                let expr = format!(
                    "(builtins.fetchTree (builtins.fromJSON {})).narHash",
                    repo::nix_string(&attrs.to_string())
                );
                let prepared = nix.prepare([
                    "eval",
                    "--json",
                    "--option",
                    "connect-timeout",
                    "5",
                    "--expr",
                    &expr,
                ]);
                let handle = s.spawn(move || prepared?.run(limit));
                (name.clone(), original, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(n, o, h)| {
                let res = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the check panicked")));
                (n, o, res)
            })
            .collect()
    });
    for (name, original, res) in results {
        let check = format!("input {name}");
        match res {
            Ok(out) if out.success() => r.ok(&check, format!("{original}: fetchable (or in the store)")),
            Ok(out) if out.timed_out() => r.warn(
                &check,
                format!("{original}: not fetched within {} s", limit.as_secs()),
                "a slow or unreachable network: try again where it is reachable (a switch would wait for it too)",
            ),
            Ok(out) => {
                let problem = out.problem();
                let fix = if problem.contains("hash mismatch") || problem.contains("NAR hash") {
                    format!("its content changed since flake.lock was written: `cargo xtask update {name}`")
                } else {
                    "connect to the network (or a substituter that has it) and switch again; flake.lock needs no change".to_string()
                };
                r.fail(&check, format!("{original} cannot be fetched: {problem}"), fix);
            }
            Err(e) => r.fail(&check, format!("{original}: {e:#}"), "see README's Install"),
        }
    }
}

/// A flake reference from lock attributes, for messages: `github:NixOS/nixpkgs/nixos-unstable`.
fn describe(attrs: &serde_json::Value) -> String {
    let get = |k: &str| attrs.get(k).and_then(|v| v.as_str()).unwrap_or("");
    match get("type") {
        t @ ("github" | "gitlab" | "sourcehut") => {
            let r = if get("ref").is_empty() {
                get("rev")
            } else {
                get("ref")
            };
            let mut s = format!("{t}:{}/{}", get("owner"), get("repo"));
            if !r.is_empty() {
                s.push('/');
                s.push_str(r);
            }
            s
        }
        "path" => format!("path:{}", get("path")),
        "git" | "tarball" | "file" | "hg" => format!("{}+{}", get("type"), get("url")),
        "indirect" => format!("flake:{}", get("id")),
        other => other.to_string(),
    }
}

/// Free space where the store lives: builds and the profile need room there.
fn check_store_space(r: &mut Report) {
    let store = crate::nix::store_dir();
    let st = match rustix::fs::statvfs(&store) {
        Ok(st) => st,
        Err(e) => {
            r.skip("store space", &format!("{}: {e}", store.display()));
            return;
        }
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let gib = free as f64 / (1u64 << 30) as f64;
    let detail = format!("{gib:.1} GiB free in {}", store.display());
    let gc = "free space: `cargo xtask gc` (old home generations and unreachable store paths), or `nix-collect-garbage -d`";
    if free < 256 << 20 || (st.f_files > 0 && st.f_favail == 0) {
        r.fail(
            "store space",
            format!("{detail}: too little for a build"),
            gc,
        );
    } else if free < 2 << 30 {
        r.warn(
            "store space",
            format!("{detail}: a larger build may not fit"),
            gc,
        );
    } else {
        r.ok("store space", detail);
    }
}

/// WSL and macOS specifics.
fn check_platform(r: &mut Report, env: Option<&UserEnv>, root: &Path) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if release.to_lowercase().contains("microsoft") {
        let wsl1 = !release.to_lowercase().contains("wsl2");
        if wsl1 {
            r.warn(
                "platform",
                format!("WSL 1 ({})", release.trim()),
                "Nix works poorly on WSL 1: convert the distribution with `wsl --set-version <distro> 2`",
            );
        } else if !Path::new("/run/systemd/system").is_dir()
            && Path::new("/nix/var/nix/daemon-socket").exists()
        {
            r.warn(
                "platform",
                "WSL 2 without systemd, but nix is a daemon install: the daemon does not start by itself",
                "enable systemd ([boot] systemd=true in /etc/wsl.conf, then `wsl --shutdown`), or reinstall nix with --no-daemon",
            );
        } else if root.starts_with("/mnt/") {
            r.warn(
                "platform",
                format!("WSL 2; the repository is on the Windows file system ({})", root.display()),
                "clone it into the Linux file system (e.g. ~/homelab): /mnt/c is slow and loses permissions",
            );
        } else {
            r.ok("platform", format!("WSL 2 ({})", release.trim()));
        }
        return;
    }
    if cfg!(target_os = "macos") {
        let daemon = Path::new("/Library/LaunchDaemons/org.nixos.nix-daemon.plist").exists();
        let home_ok = env.is_none_or(|e| e.home.starts_with("/Users"));
        if !home_ok {
            r.warn(
                "platform",
                "macOS, but $HOME is not under /Users: homes default to /Users/<user> on Darwin",
                "set home.homeDirectory in your home, or HOME to /Users/<you>",
            );
        } else if !daemon {
            r.warn(
                "platform",
                "macOS without the nix daemon's launchd service",
                "reinstall nix with the multi-user installer: sh <(curl -L https://nixos.org/nix/install)",
            );
        } else {
            r.ok("platform", "macOS with the nix daemon (after a macOS update, re-add the nix lines to /etc/zshrc if nix disappears)");
        }
        return;
    }
    r.ok(
        "platform",
        format!("{} ({})", std::env::consts::OS, nix::current_system()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_of_both_shapes_are_read() {
        let new: serde_json::Value = serde_json::from_str(
            r#"{"sandbox":{"value":false},"trusted-users":{"value":["root","@wheel"]}}"#,
        )
        .unwrap();
        assert_eq!(
            setting(&new, "sandbox"),
            Some(&serde_json::Value::Bool(false))
        );
        let old: serde_json::Value = serde_json::from_str(r#"{"sandbox":"relaxed"}"#).unwrap();
        assert_eq!(setting(&old, "sandbox").unwrap(), "relaxed");
        assert!(is_trusted("x", &["*".into()]));
        assert!(!is_trusted("x", &["root".into()]));
    }

    #[test]
    fn lock_attributes_read_as_flake_references() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"type":"github","owner":"NixOS","repo":"nixpkgs","ref":"nixos-unstable"}"#,
        )
        .unwrap();
        assert_eq!(describe(&v), "github:NixOS/nixpkgs/nixos-unstable");
        let v: serde_json::Value =
            serde_json::from_str(r#"{"type":"path","path":"/tmp/x"}"#).unwrap();
        assert_eq!(describe(&v), "path:/tmp/x");
    }
}
