//! `cargo xtask deploy`: hosts, standalone homes and Nix-on-Droid phones over ssh, in
//! parallel, with automatic ("magic") rollback.
//!
//! 1. Targets are data: the `deploy` attribute of meta.nix (repo model); selection by name,
//!    `--on @tag,name,glob`.
//! 2. One nix process evaluates every selected target (drvPath and outPath).
//! 3. Per target, up to `--parallel` at once (std threads): build (here, or on the target
//!    with buildOn = "remote"), `nix copy` to `ssh-ng://`, activate through the target-side
//!    script (remote::SCRIPT: lock, pre-flight, rollback timer, profile, activation), then
//!    confirm over a *new* ssh connection. Without the confirmation the target rolls itself
//!    back after `--confirm-timeout` seconds.
//! 4. A summary table (or `--json`); exit 1 when any target failed or rolled back.

use std::{
    collections::VecDeque,
    io::BufRead,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    Ctx, Reported, UsageError,
    cli::Deploy,
    home,
    nix::{self, Nix},
    remote::{self, Remote, Sudo},
    repo::{self, BuildOn, Repo},
    term::{self, Style},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Host,
    Home,
    Droid,
}

impl Kind {
    /// The kind as the target-side script names it.
    fn script_kind(self) -> &'static str {
        match self {
            Kind::Host => "system",
            Kind::Home => "home",
            Kind::Droid => "droid",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Kind::Host => "systems",
            Kind::Home => "homes",
            Kind::Droid => "droids",
        }
    }
}

#[derive(Debug, Clone)]
struct Target {
    kind: Kind,
    name: String,
    settings: repo::Deploy,
}

impl Target {
    fn remote(&self) -> Remote {
        Remote {
            dest: self.settings.target_host.clone(),
            ssh_opts: self.settings.ssh_opts.clone(),
        }
    }

    /// Only a host's activation needs root; its ssh user may be someone else.
    fn needs_sudo(&self) -> bool {
        self.kind == Kind::Host && self.settings.ssh_user().is_some_and(|u| u != "root")
    }
}

/// The one evaluation's answer per target.
#[derive(Debug, Clone, Deserialize)]
struct Paths {
    drv: String,
    out: String,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    target: String,
    kind: Kind,
    host: String,
    generation: String,
    seconds: f64,
    /// deployed, failed, rolled-back, skipped (fail-fast), unchanged (--diff).
    outcome: &'static str,
    message: String,
}

/// Every target with deploy settings, in the order hosts, homes, droids.
fn deployable(repo: &Repo) -> Vec<Target> {
    let hosts = repo.hosts.values().filter_map(|h| {
        let settings = h.deploy.clone()?;
        Some(Target {
            kind: Kind::Host,
            name: h.name.clone(),
            settings,
        })
    });
    let homes = repo.standalone_users().filter_map(|u| {
        let settings = u.deploy.clone()?;
        Some(Target {
            kind: Kind::Home,
            name: u.name.clone(),
            settings,
        })
    });
    let droids = repo.droids.values().filter_map(|d| {
        let settings = d.deploy.clone()?;
        Some(Target {
            kind: Kind::Droid,
            name: d.name.clone(),
            settings,
        })
    });
    hosts.chain(homes).chain(droids).collect()
}

fn glob_matches(pattern: &str, text: &str) -> bool {
    // The only patterns home::glob cannot judge are bash's extglob forms: taken literally.
    match home::glob_matches(pattern, text) {
        Some(m) => m,
        None => pattern == text,
    }
}

/// Positional names and `--on` items, OR'd; nothing given selects every target.
fn select(all: &[Target], names: &[String], on: &[String]) -> Result<Vec<Target>> {
    if names.is_empty() && on.is_empty() {
        return Ok(all.to_vec());
    }
    let mut picked = vec![false; all.len()];
    let mut unknown = Vec::new();
    for item in names {
        let (dir, name) = match item.split_once('/') {
            Some((d, n)) => (Some(d), n.trim_end_matches('/')),
            None => (None, item.as_str()),
        };
        let mut found = false;
        for (i, t) in all.iter().enumerate() {
            if t.name == name && dir.is_none_or(|d| d == t.kind.dir()) {
                picked[i] = true;
                found = true;
            }
        }
        if !found {
            unknown.push(item.clone());
        }
    }
    for item in on.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let mut found = false;
        for (i, t) in all.iter().enumerate() {
            let hit = match item.strip_prefix('@') {
                Some(tag) => t.settings.tags.iter().any(|x| glob_matches(tag, x)),
                None => glob_matches(item, &t.name),
            };
            if hit {
                picked[i] = true;
                found = true;
            }
        }
        if !found {
            unknown.push(format!("--on {item}"));
        }
    }
    if !unknown.is_empty() {
        let known: Vec<String> = all
            .iter()
            .map(|t| format!("{}/{}", t.kind.dir(), t.name))
            .collect();
        return Err(UsageError(format!(
            "{} selects no deployable target; known targets (those whose meta.nix has deploy.targetHost): {}",
            unknown.join(", "),
            term::list(&known)
        ))
        .into());
    }
    Ok(all
        .iter()
        .zip(picked)
        .filter(|(_, p)| *p)
        .map(|(t, _)| t.clone())
        .collect())
}

/// The flake attribute (of `flake`, the flake's outputs) of what a target of this kind
/// and name deploys.
fn attr_expr(kind: Kind, name: &str) -> String {
    let name = repo::nix_string(name);
    match kind {
        Kind::Host => {
            format!("flake.nixosConfigurations.${{{name}}}.config.system.build.toplevel")
        }
        Kind::Home => format!("flake.homeConfigurations.${{{name}}}.activationPackage"),
        Kind::Droid => format!("flake.nixOnDroidConfigurations.${{{name}}}.activationPackage"),
    }
}

/// The expression of the one evaluation: `[ { drv; out; } … ]`, one per target, in order
/// (also what `cargo xtask bench deploy` times).
pub(crate) fn eval_expr<'n>(
    root: &std::path::Path,
    targets: impl IntoIterator<Item = (Kind, &'n str)>,
) -> String {
    let items: String = targets
        .into_iter()
        .map(|(kind, name)| {
            format!(
                " (let p = {}; in {{ drv = p.drvPath; out = p.outPath; }})",
                attr_expr(kind, name)
            )
        })
        .collect();
    format!(
        "let flake = builtins.getFlake {}; in [{items} ]",
        repo::nix_string(&nix::flake_ref(root))
    )
}

/// The one nix process: drvPath and outPath of every target.
fn evaluate(nix: &Nix, root: &std::path::Path, targets: &[Target]) -> Result<Vec<Paths>> {
    let expr = eval_expr(root, targets.iter().map(|t| (t.kind, t.name.as_str())));
    term::info(&format!(
        "evaluating {} target(s) in one nix process",
        targets.len()
    ));
    let paths: Vec<Paths> = nix
        .eval_expr_json(&expr)
        .context("evaluating the targets; cargo xtask check names the broken one")?;
    if paths.len() != targets.len() {
        bail!(
            "nix returned {} results for {} targets",
            paths.len(),
            targets.len()
        );
    }
    Ok(paths)
}

/// The sudo mode of each target, probed (`sudo -n true`, all at once) before anything
/// runs, and the password when one is needed and `--ask-sudo-password` allows asking
/// (once).
fn sudo_modes(targets: &[Target], ask: bool) -> Result<(Vec<Sudo>, Option<String>)> {
    // The probes run at once (one ssh connection each, the slow part), not one by one.
    let probes: Vec<Option<Result<bool>>> = std::thread::scope(|scope| {
        let running: Vec<_> = targets
            .iter()
            .map(|t| {
                t.needs_sudo().then(|| {
                    scope.spawn(|| {
                        remote::run_prefixed(t.remote().ssh("sudo -n true"), "", None, false)
                            .map(|ran| ran.status.success())
                    })
                })
            })
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the sudo probe panicked")))
                })
            })
            .collect()
    });
    let mut modes = Vec::new();
    let mut need_password = Vec::new();
    for (t, probe) in targets.iter().zip(probes) {
        match probe.transpose()? {
            None => modes.push(Sudo::No),
            Some(true) => modes.push(Sudo::NoPassword),
            Some(false) => {
                modes.push(Sudo::Password);
                need_password.push(t.name.clone());
            }
        }
    }
    if need_password.is_empty() {
        return Ok((modes, None));
    }
    if !ask {
        bail!(
            "sudo asks for a password on {}; pass --ask-sudo-password to type it once now, or allow the ssh user passwordless sudo there",
            need_password.join(", ")
        );
    }
    Ok((modes, Some(read_password(&need_password)?)))
}

/// Reads the sudo password from the terminal, without echo, before any parallel output.
fn read_password(hosts: &[String]) -> Result<String> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("--ask-sudo-password needs a terminal to read the password from")?;
    term::info(&format!("sudo password for {}: ", hosts.join(", ")));
    let old = rustix::termios::tcgetattr(&tty).ok();
    if let Some(old) = &old {
        let mut quiet = old.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &quiet);
    }
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if let Some(old) = &old {
        let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, old);
    }
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Everything one target's deployment needs, shared by reference with the worker threads.
struct Job<'a> {
    target: &'a Target,
    paths: &'a Paths,
    sudo: Sudo,
}

struct Settings<'a> {
    root: &'a std::path::Path,
    verbose: bool,
    confirm_timeout: u64,
    backup: &'a str,
    password: Option<&'a str>,
    dry_run: bool,
    diff: bool,
}

/// Why a target did not deploy.
enum Failed {
    Failed(String),
    RolledBack(String),
}

fn failed(msg: impl Into<String>) -> Failed {
    Failed::Failed(msg.into())
}

impl Job<'_> {
    fn prefix(&self) -> String {
        term::paint(Style::Bold, &format!("[{}]", self.target.name))
    }

    fn say(&self, msg: &str) {
        term::info(&format!("{} {msg}", self.prefix()));
    }

    /// Runs a local command (nix) with prefixed output; Err with its last error line.
    fn local(&self, cmd: std::process::Command, what: &str) -> Result<(), Failed> {
        let ran = remote::run_prefixed(cmd, &self.prefix(), None, true)
            .map_err(|e| failed(format!("{what}: {e:#}")))?;
        if ran.status.success() {
            Ok(())
        } else {
            Err(failed(format!("{what} failed: {}", ran.reason())))
        }
    }

    /// The target-side script with `args`; its output is shown prefixed.
    fn script(&self, s: &Settings, args: &[&str]) -> Result<remote::Ran, Failed> {
        let mut running = self.spawn_script(s, args)?;
        running.close_stdin();
        running.finish().map_err(|e| failed(format!("{e:#}")))
    }

    /// The target-side script with `args`, started (its stdin open, the sudo password
    /// written first when sudo needs one).
    fn spawn_script(&self, s: &Settings, args: &[&str]) -> Result<remote::Running, Failed> {
        let r = self.target.remote();
        let cmd = r.ssh(&r.script_command(self.sudo, args));
        let stdin = match self.sudo {
            Sudo::Password => s.password.map(|p| format!("{p}\n")),
            _ => None,
        };
        remote::Running::spawn(cmd, &self.prefix(), stdin.as_deref(), true)
            .map_err(|e| failed(format!("{e:#}")))
    }

    fn run(&self, s: &Settings) -> Result<&'static str, Failed> {
        let t = self.target;
        let r = t.remote();
        let sh = xshell::Shell::new().map_err(|e| failed(e.to_string()))?;
        sh.change_dir(s.root);
        let nix = Nix::new(&sh, s.verbose);
        let drv = vec![self.paths.drv.clone()];
        let out = vec![self.paths.out.clone()];
        let with_sshopts = |cmd: xshell::Cmd<'_>| {
            let mut c = std::process::Command::from(cmd);
            c.env("NIX_SSHOPTS", r.nix_sshopts());
            c
        };
        let nix_err = |e: anyhow::Error| failed(format!("{e:#}"));
        let kind = t.kind.script_kind();
        let token = format!(
            "{}-{}",
            store_hash(&self.paths.out),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let timeout = s.confirm_timeout.to_string();
        let activate_args = [
            "activate",
            kind,
            &self.paths.out,
            &token,
            &timeout,
            s.backup,
        ];

        // The steps, as commands: --dry-run prints them, a deployment runs them.
        let mut steps: Vec<(String, std::process::Command)> = Vec::new();
        match t.settings.build_on {
            BuildOn::Local => {
                steps.push((
                    "build".into(),
                    std::process::Command::from(nix.realise_cmd(&drv).map_err(nix_err)?),
                ));
                steps.push((
                    "copy".into(),
                    with_sshopts(nix.copy_cmd(&r.store_url(), &out, false).map_err(nix_err)?),
                ));
            }
            BuildOn::Remote => {
                steps.push((
                    "copy the derivation".into(),
                    with_sshopts(nix.copy_cmd(&r.store_url(), &drv, true).map_err(nix_err)?),
                ));
                steps.push((
                    "build on the target".into(),
                    r.ssh(&format!(
                        "nix-store --realise {}",
                        home::shell_quote(&self.paths.drv)
                    )),
                ));
            }
        }
        if s.diff {
            let ran = self.script(s, &["current", kind])?;
            if !ran.status.success() {
                return Err(failed(format!(
                    "cannot read its current generation: {}",
                    ran.reason()
                )));
            }
            let current = ran.tail.last().cloned().unwrap_or_default();
            if current == self.paths.out {
                self.say("unchanged: the target runs this generation");
                return Ok("unchanged");
            }
            self.say(&format!(
                "would change: {} -> {}",
                if current.is_empty() {
                    "(nothing)"
                } else {
                    &current
                },
                self.paths.out
            ));
            return Ok("would-change");
        }
        if s.dry_run {
            for (what, cmd) in &steps {
                term::out(&format!("[{}] {what}: {}", t.name, show(cmd)));
            }
            let activate = r.ssh(&format!(
                "<the target-side script> {}",
                activate_args.join(" ")
            ));
            term::out(&format!("[{}] activate: {}", t.name, show(&activate)));
            let confirm = r.ssh(&format!(
                "<the target-side script> confirm {kind} {} {token}",
                self.paths.out
            ));
            term::out(&format!(
                "[{}] confirm (a new connection): {}",
                t.name,
                show(&confirm)
            ));
            return Ok("dry-run");
        }
        // The activation's connection is opened while the steps (build and copy, or
        // the build there) run: the target side waits for our "go" before it changes
        // anything, and ends, nothing changed, when a step fails and we hang up.
        let mut on_go_args = activate_args;
        on_go_args[0] = "activate-on-go";
        let mut early = self.spawn_script(s, &on_go_args)?;
        for (what, cmd) in steps {
            self.say(what.as_str());
            if let Err(e) = self.local(cmd, &what) {
                let _ = early.kill();
                return Err(e);
            }
        }
        self.say("activate");
        let ran = if early.exited() {
            // That connection ended before the go (nothing ran there): a new one.
            let _ = early.finish();
            self.script(s, &activate_args)?
        } else {
            early.send("go\n");
            early.finish().map_err(|e| failed(format!("{e:#}")))?
        };
        match ran.code() {
            Some(0) => {}
            Some(2) => {
                return Err(failed(format!(
                    "pre-flight refused, nothing changed: {}",
                    ran.reason()
                )));
            }
            // The profile's lock is held there (a local switch, another deployment).
            Some(6) => {
                return Err(failed(format!("busy, nothing changed: {}", ran.reason())));
            }
            Some(1) => {
                return Err(failed(format!(
                    "activation failed, the previous generation is restored: {}",
                    ran.reason()
                )));
            }
            // ssh's own failure: the connection was lost (or never made); whether the
            // activation ran is for the confirmation to find out.
            Some(255) | None => self.say(&format!(
                "the connection was lost ({}); confirming over a new one",
                ran.reason()
            )),
            Some(_) => return Err(failed(format!("activation failed: {}", ran.reason()))),
        }

        // Confirm over a NEW connection before the target's timer runs out.
        let deadline = Instant::now() + Duration::from_secs(s.confirm_timeout);
        let confirm_args = ["confirm", kind, &self.paths.out, &token];
        let mut last = String::new();
        while Instant::now() < deadline {
            let ran = self.script(s, &confirm_args)?;
            match ran.code() {
                Some(0) => return Ok("deployed"),
                Some(3) => return Err(Failed::RolledBack(ran.reason())),
                Some(1) => return Err(failed(ran.reason())),
                _ => last = ran.reason(),
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Err(Failed::RolledBack(format!(
            "could not confirm within {} s ({last}); the target rolls back by itself",
            s.confirm_timeout
        )))
    }
}

/// `abc…` of `/nix/store/abc…-name`: names the canary per generation.
fn store_hash(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split('-').next().unwrap_or(base).to_string()
}

/// A command line as it would be typed (environment that matters included).
fn show(cmd: &std::process::Command) -> String {
    let env: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| {
            Some(format!(
                "{}={}",
                k.to_string_lossy(),
                home::shell_quote(&v?.to_string_lossy())
            ))
        })
        .collect();
    let words: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| home::shell_quote(&a.to_string_lossy()))
        .collect();
    env.into_iter().chain(words).collect::<Vec<_>>().join(" ")
}

impl Deploy {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let start = Instant::now();
        let nix = ctx.nix();
        let mut repo = ctx.repo()?;
        repo.load_meta(&nix)?;
        repo.ensure_valid()?;
        let all = deployable(&repo);
        if all.is_empty() {
            return Err(UsageError(format!(
                "no target has deploy settings; add one to a meta.nix, like {}",
                repo::DEPLOY_SHAPE
            ))
            .into());
        }
        let targets = select(&all, &self.targets, &self.on)?;
        // Passwords are asked for before any parallel output starts.
        let (modes, password) = if self.dry_run {
            (vec![Sudo::No; targets.len()], None)
        } else {
            sudo_modes(&targets, self.ask_sudo_password)?
        };
        let paths = evaluate(&nix, &repo.root, &targets)?;
        let settings = Settings {
            root: &repo.root,
            verbose: ctx.verbose,
            confirm_timeout: self.confirm_timeout,
            backup: &repo.defaults.backup_extension,
            password: password.as_deref(),
            dry_run: self.dry_run,
            diff: self.diff,
        };
        let jobs: Vec<Job> = targets
            .iter()
            .zip(&paths)
            .zip(modes)
            .map(|((target, paths), sudo)| Job {
                target,
                paths,
                sudo,
            })
            .collect();
        let reports = run_all(&jobs, &settings, usize::from(self.parallel), self.fail_fast);
        print_summary(&reports, self.json, start.elapsed())?;
        if reports
            .iter()
            .any(|r| matches!(r.outcome, "failed" | "rolled-back" | "skipped"))
        {
            return Err(Reported.into());
        }
        Ok(())
    }
}

/// Runs the jobs on up to `parallel` threads; the reports come back in the jobs' order.
fn run_all(jobs: &[Job], s: &Settings, parallel: usize, fail_fast: bool) -> Vec<Report> {
    let queue: Mutex<VecDeque<usize>> = Mutex::new((0..jobs.len()).collect());
    let reports: Mutex<Vec<Option<Report>>> = Mutex::new(vec![None; jobs.len()]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..parallel.min(jobs.len()) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(i) = next else { break };
                    let job = &jobs[i];
                    let started = Instant::now();
                    let (outcome, message) = if stop.load(Ordering::SeqCst) {
                        (
                            "skipped",
                            "not started: an earlier target failed (--fail-fast)".to_string(),
                        )
                    } else {
                        match job.run(s) {
                            Ok(o) => (o, String::new()),
                            Err(Failed::Failed(m)) => ("failed", m),
                            Err(Failed::RolledBack(m)) => ("rolled-back", m),
                        }
                    };
                    if matches!(outcome, "failed" | "rolled-back") {
                        job.say(&term::paint(Style::Red, &format!("{outcome}: {message}")));
                        if fail_fast {
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    let report = Report {
                        target: format!("{}/{}", job.target.kind.dir(), job.target.name),
                        kind: job.target.kind,
                        host: job.target.settings.target_host.clone(),
                        generation: job.paths.out.clone(),
                        seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                        outcome,
                        message,
                    };
                    reports.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(report);
                }
            });
        }
    });
    reports
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

fn print_summary(reports: &[Report], json: bool, elapsed: Duration) -> Result<()> {
    if json {
        term::out(&serde_json::to_string_pretty(reports)?);
    }
    let width = reports
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    term::info(&format!(
        "\n{:<width$}  {:<44}  {:>6}  outcome",
        "target", "generation", "time"
    ));
    for r in reports {
        let style = match r.outcome {
            "failed" | "rolled-back" | "skipped" => Style::Red,
            _ => Style::Green,
        };
        let generation = r.generation.rsplit('/').next().unwrap_or(&r.generation);
        let generation: String = generation.chars().take(44).collect();
        term::info(&format!(
            "{:<width$}  {generation:<44}  {:>5.1}s  {}{}",
            r.target,
            r.seconds,
            term::paint(style, r.outcome),
            if r.message.is_empty() {
                String::new()
            } else {
                format!(": {}", r.message)
            }
        ));
    }
    let bad = reports
        .iter()
        .filter(|r| matches!(r.outcome, "failed" | "rolled-back" | "skipped"))
        .count();
    term::info(&format!(
        "deploy: {} target(s), {bad} not deployed ({:.1} s)",
        reports.len(),
        elapsed.as_secs_f64()
    ));
    Ok(())
}
