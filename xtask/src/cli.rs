//! The whole command line, declared in one place (rust-analyzer's `flags.rs` pattern):
//! a reader sees every task and flag here, and each task module implements `run` on its
//! own args struct.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Deploy and check the homelab flake: homes/<user>, systems/<host>",
    long_about = "Deploy and check the homelab flake.\n\n\
        homes/<user> is a base home, homes/<user>@global is merged into the standalone home, \
        homes/<user>@<host> into that NixOS host's integrated home; systems/<host> holds a host \
        with its meta.nix. Repo defaults come from [workspace.metadata.xtask] in Cargo.toml.",
    version
)]
pub struct Cli {
    /// The flake directory (default: the nearest ancestor of the working directory with flake.nix).
    #[arg(long, global = true, value_name = "DIR")]
    pub flake: Option<PathBuf>,

    /// Print more: the nix commands that run and nix's full log.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub task: Task,
}

#[derive(Debug, Subcommand)]
pub enum Task {
    /// See it work first: the main job end to end in a throwaway $HOME, offline.
    Demo(Demo),
    /// List users with their parts and hosts with their system and users.
    List(List),
    /// Lint, then evaluate every home and host in one nix process; --full also builds them.
    Check(Check),
    /// Build a home's activation package (a generation) for this machine's system.
    BuildHome(BuildHome),
    /// Build, pre-flight and activate a home (or `--host`: nixos-rebuild a host).
    Switch(Switch),
    /// Show what a switch would change: files in $HOME and packages.
    Diff(Diff),
    /// List a home's generations, newest first.
    Generations(Generations),
    /// Go back to the previous (or a given) generation and activate it.
    Rollback(Rollback),
    /// Delete old home generations beyond the repo's keep-generations, then collect garbage.
    Gc(Gc),
    /// Scaffold homes/<name> (and @global / @<host> parts) for a new user.
    NewUser(NewUser),
    /// Scaffold systems/<host> with default.nix and meta.nix for a new machine.
    NewHost(NewHost),
    /// Run what CI runs: cargo fmt --check, clippy -D warnings, the test suite.
    Test(Test),
    /// Measure the xtask's overhead on generated fixtures, as ratios to plain nix run alongside.
    Bench(Bench),
    /// Check this machine and repository for what a switch needs; each problem with its fix.
    Doctor(Doctor),
    /// Update the flake's inputs (all or the named ones) and show each one's old -> new revision.
    Update(Update),
}

#[derive(Debug, Args)]
pub struct Demo {
    /// Keep the throwaway directory (flake, $HOME, profiles) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// Also print a summary on stdout: {"ok","seconds","steps":[{"command","ok","seconds","checked"}],"kept"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct List {
    /// Print JSON on stdout: {"homes":[{"name","parts","standalone","system","hosts"}],"hosts":[{"name","system","users"}]}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// One line per finding and a summary line.
    Human,
    /// A JSON list of findings on stdout.
    Json,
    /// GitHub Actions annotations (::error file=…,line=…::…).
    Github,
}

#[derive(Debug, Args)]
pub struct Check {
    /// Evaluate for every supported system, not only this machine's.
    #[arg(long)]
    pub all_systems: bool,
    /// Limit evaluation to these homes and hosts (comma separated; `homes/NAME` or
    /// `systems/NAME` when a home and a host share a name).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub only: Vec<String>,
    /// Also run `nix flake check` and build every activation package and system toplevel.
    #[arg(long)]
    pub full: bool,
    /// Build the activation packages / toplevels of the selected targets (implied by --full).
    #[arg(long)]
    pub build: bool,
    /// Shorthand for --format json.
    #[arg(long)]
    pub json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CheckFormat::Human)]
    pub format: CheckFormat,
    /// Treat warnings as errors.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Only the static lint: names, layout, untracked files and meta.nix (read by one small
    /// nix call, skipped with a warning when nix is missing); no home or host is evaluated.
    #[arg(long)]
    pub lint_only: bool,
}

#[derive(Debug, Args)]
pub struct BuildHome {
    /// The user whose home to build (default: $USER).
    pub user: Option<String>,
    /// Build for this system instead of the detected one (e.g. aarch64-linux).
    #[arg(long)]
    pub system: Option<String>,
    /// Print JSON on stdout: {"path","system","user"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Switch {
    /// The user whose home to switch (default: $USER).
    pub user: Option<String>,
    /// Deploy a NixOS host (with its integrated homes) with nixos-rebuild instead.
    // The standalone-only flags mean nothing to nixos-rebuild: a usage error, not ignored.
    #[arg(
        long,
        value_name = "HOST",
        conflicts_with_all = [
            "system",
            "backup_extension",
            "backup_command",
            "overwrite_backup",
            "specialisation",
            "force_standalone",
            "json",
        ]
    )]
    pub host: Option<String>,
    /// Build for this system instead of the detected one.
    #[arg(long)]
    pub system: Option<String>,
    /// Move conflicting files to FILE.EXT (default: the repo's backup-extension).
    #[arg(short = 'b', long = "backup-extension", value_name = "EXT")]
    pub backup_extension: Option<String>,
    /// Back conflicting files up with this command instead (HOME_MANAGER_BACKUP_COMMAND;
    /// needs a generation from Home Manager release-25.11 or later).
    #[arg(short = 'B', long, value_name = "CMD")]
    pub backup_command: Option<String>,
    /// Allow replacing an existing backup file inside $HOME (HOME_MANAGER_BACKUP_OVERWRITE;
    /// never a symlink or a directory; needs Home Manager release-25.11 or later).
    #[arg(long)]
    pub overwrite_backup: bool,
    /// Activate this specialisation of the generation.
    #[arg(long, value_name = "NAME")]
    pub specialisation: Option<String>,
    /// Switch standalone even though NixOS' home-manager-<user>.service manages this user.
    #[arg(long)]
    pub force_standalone: bool,
    /// With --host: deploy to this SSH destination.
    #[arg(long, value_name = "DEST", requires = "host")]
    pub target_host: Option<String>,
    /// With --host: build on this SSH destination.
    #[arg(long, value_name = "DEST", requires = "host")]
    pub build_host: Option<String>,
    /// With --host: use sudo on the target host.
    #[arg(long, requires = "host")]
    pub use_remote_sudo: bool,
    /// Build and pre-flight, print the exact commands, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Diff {
    /// The user whose home to compare (default: $USER).
    pub user: Option<String>,
    /// Build for this system instead of the detected one.
    #[arg(long)]
    pub system: Option<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Generations {
    /// The user whose generations to list (default: $USER).
    pub user: Option<String>,
    /// Print JSON on stdout: [{"id","date","path","closure_size","current"}].
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Rollback {
    /// The user whose home to roll back (default: $USER).
    pub user: Option<String>,
    /// Go to this generation id instead of the previous one.
    #[arg(long, value_name = "ID")]
    pub to: Option<u64>,
    /// Print the exact commands, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct Gc {
    /// The user whose old generations to delete (default: $USER).
    pub user: Option<String>,
    /// Keep this many newest generations (default: the repo's keep-generations).
    #[arg(long, value_name = "N")]
    pub keep: Option<u32>,
    /// Only delete old generations; skip the store-wide `nix-store --gc`.
    #[arg(long)]
    pub no_store_gc: bool,
    /// Print the exact commands, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct NewUser {
    /// The new user's name ([a-z_][a-z0-9_-]*).
    // A name like `-rf` reaches the naming rule (and its message) instead of clap's
    // "unexpected argument"; known flags such as --global are still flags.
    #[arg(allow_hyphen_values = true)]
    pub name: String,
    /// Also create homes/<name>@global (merged into the standalone home only).
    #[arg(long)]
    pub global: bool,
    /// Also create homes/<name>@<HOST> for this existing host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Record the home's system in homes/<name>/meta.nix (`auto`: this machine's).
    #[arg(long)]
    pub system: Option<String>,
    /// The git user.name to set up.
    #[arg(long)]
    pub full_name: Option<String>,
    /// The git user.email to set up.
    #[arg(long)]
    pub email: Option<String>,
    /// Allow the reserved name `root`.
    #[arg(long)]
    pub allow_root: bool,
    /// Print the files that would be written, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct NewHost {
    /// The new host's name ([a-z_][a-z0-9_-]*, not `global`).
    #[arg(allow_hyphen_values = true)]
    pub name: String,
    /// The host's system (`auto`: this machine's; default: auto).
    #[arg(long, default_value = "auto")]
    pub system: String,
    /// A user of this host (repeatable); recorded in meta.nix.
    #[arg(long = "user", value_name = "USER")]
    pub users: Vec<String>,
    /// Print the files that would be written, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct Test {
    /// Skip the test suite; only formatting and clippy.
    #[arg(long)]
    pub lint_only: bool,
}

#[derive(Debug, Args)]
pub struct Bench {
    /// Number of generated homes.
    #[arg(long, default_value_t = 100)]
    pub homes: usize,
    /// Number of generated hosts.
    #[arg(long, default_value_t = 10)]
    pub hosts: usize,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Only run the benchmarks whose name contains this.
    pub filter: Option<String>,
}

#[derive(Debug, Args)]
pub struct Doctor {
    /// Print JSON on stdout: [{"check","ok","severity","detail","fix"}].
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Update {
    /// The inputs to update (default: all of them), as flake.nix names them.
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<String>,
    /// Commit flake.lock with the summary of the changes as the message.
    #[arg(long)]
    pub commit: bool,
    /// Print the exact commands, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
