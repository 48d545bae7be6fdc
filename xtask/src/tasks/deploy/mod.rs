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
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::{
    Ctx, Reported, UsageError,
    cli::Deploy,
    remote::{Remote, Sudo},
    repo::{self},
    term::{self, Style},
};

mod job;
mod sudo;
mod targets;

use job::{Failed, Job, Settings};
use sudo::sudo_modes;
pub(crate) use targets::eval_expr;
use targets::{deployable, evaluate, select};

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
