//! `cargo xtask`: every deployment chore of the homelab flake as one command.
//!
//! Layout (rust-analyzer's xtask style): `cli` declares the whole command line, each task
//! is a module in `tasks/` with one `run`, and the shared pieces are named for what they
//! are: `repo` (the repo model), `nix` (the nix runner), `home` (a home's profile,
//! pre-flight, lock, activation and comparison), `closure` (package changes between two
//! store paths), `term` (human output). Layers point down only: tasks → home → repo →
//! closure → nix → term; a task never imports another task.

mod cache;
mod cli;
mod closure;
mod home;
mod nix;
mod remote;
mod repo;
mod scaffold;
mod tasks;
mod term;

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use xshell::Shell;

use crate::{cli::Task, nix::Nix, repo::Repo};

/// What every task gets: the shell (cwd = repo root) and the flags shared by all tasks.
/// The layout is scanned lazily, because `test` and `bench` do not need it.
pub struct Ctx {
    pub sh: Shell,
    pub root: PathBuf,
    pub verbose: bool,
}

impl Ctx {
    pub fn nix(&self) -> Nix<'_> {
        Nix::new(&self.sh, self.verbose)
    }

    /// The repo model, layout only (no nix).
    pub fn repo(&self) -> Result<Repo> {
        Repo::scan(&self.root)
    }
}

/// A failure whose details the task already printed (e.g. `check`'s findings): exit 1
/// without a second message.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed (details above)")
    }
}

impl std::error::Error for Reported {}

/// A bad value for a flag that clap cannot check (e.g. `--only` naming no home or host):
/// exit 2, like clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help.
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<Reported>().is_none() {
                term::error(&format!("{e:#}"));
            }
            if e.downcast_ref::<UsageError>().is_some() {
                return ExitCode::from(2);
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> Result<()> {
    let sh = Shell::new().context("creating a shell")?;
    let cwd = sh.current_dir();
    let root = Repo::find_root(cli.flake.as_deref(), &cwd)?;
    // The naming rules and supported systems of this repository (Cargo.toml), for every
    // layer, before any task looks at a name.
    repo::Defaults::load(&root)?.install(&root)?;
    sh.change_dir(&root);
    let ctx = Ctx {
        sh,
        root,
        verbose: cli.verbose,
    };
    match cli.task {
        Task::Demo(t) => t.run(&ctx),
        Task::List(t) => t.run(&ctx),
        Task::Check(t) => t.run(&ctx),
        Task::BuildHome(t) => t.run(&ctx),
        Task::Switch(t) => t.run(&ctx),
        Task::Diff(t) => t.run(&ctx),
        Task::Generations(t) => t.run(&ctx),
        Task::Rollback(t) => t.run(&ctx),
        Task::Gc(t) => t.run(&ctx),
        Task::Uninstall(t) => t.run(&ctx),
        Task::NewUser(t) => t.run(&ctx),
        Task::NewHost(t) => t.run(&ctx),
        Task::Test(t) => t.run(&ctx),
        Task::Bench(t) => t.run(&ctx),
        Task::Doctor(t) => t.run(&ctx),
        Task::Update(t) => t.run(&ctx),
        Task::Deploy(t) => t.run(&ctx),
        Task::Packages(t) => t.run(&ctx),
        Task::EvalOption(t) => t.run(&ctx),
    }
}
