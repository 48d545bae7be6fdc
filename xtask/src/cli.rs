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
    /// What changes between two generations (default: a new build and the active one): files, packages, sizes.
    Diff(Diff),
    /// List a home's generations, newest first.
    Generations(Generations),
    /// Go back to the previous (or a given) generation and activate it.
    Rollback(Rollback),
    /// Delete old home (or --system) generations and stale GC roots, then collect garbage.
    Gc(Gc),
    /// Remove the home from this machine: its links in $HOME, its generations, its GC roots.
    Uninstall(Uninstall),
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
    /// Deploy hosts, homes and phones over ssh, in parallel, with automatic rollback.
    Deploy(Deploy),
    /// List the packages (name and version) of a home's active or a given generation.
    Packages(Packages),
    /// Print one option of a home or host (programs.git.enable) as JSON.
    #[command(name = "option")]
    EvalOption(EvalOption),
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
    /// Print JSON on stdout: {"homes":[{"name","parts","standalone","system","hosts","deploy"}],"hosts":[{"name","system","users","deploy"}],"droids":[{"name","system","users","deploy"}]}.
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
            "diff",
            "ask",
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
    /// Also show what changes (files, packages) next to the pre-flight, as `diff` does.
    #[arg(long)]
    pub diff: bool,
    /// Show what changes, then ask before activating (reads y/N from stdin; without an
    /// answer, e.g. stdin closed, nothing changes).
    #[arg(long)]
    pub ask: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Diff {
    /// USER: build USER's home (default: $USER) and compare it with the active generation.
    /// OLD NEW: compare two generations, given as store paths or links to them (./result,
    /// a profile's home-manager-3-link).
    // One name is a user, two are paths: a user name never has two parts, so the forms
    // cannot be confused, and a bad name is still reported as a name.
    #[arg(value_name = "USER | OLD NEW", num_args = 0..=2)]
    pub args: Vec<String>,
    /// Compare from this generation of the profile (default: the current one).
    #[arg(long, value_name = "ID")]
    pub from: Option<u64>,
    /// Compare to this generation of the profile (default: the current one).
    #[arg(long, value_name = "ID")]
    pub to: Option<u64>,
    /// Build for this system instead of the detected one.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub system: Option<String>,
    /// Print JSON on stdout: {"user","system","current","generation","added","removed",
    /// "changed","dangling","preflight","packages":{"added","removed","changed","size"}}.
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
    #[arg(conflicts_with = "system")]
    pub user: Option<String>,
    /// Keep this many newest generations (default: the repo's keep-generations).
    #[arg(long, value_name = "N")]
    pub keep: Option<u32>,
    /// Also keep every generation younger than this: Nh, Nd or Nw (hours, days, weeks),
    /// e.g. 12h, 30d, 2w. A generation goes only if --keep and --older-than both let it.
    #[arg(long, value_name = "DURATION", value_parser = parse_age, allow_hyphen_values = true)]
    pub older_than: Option<Age>,
    /// The NixOS system profile (/nix/var/nix/profiles/system) instead of a home, as root;
    /// the booted and the current system are never deleted.
    #[arg(long)]
    pub system: bool,
    /// Only delete old generations and stale roots; skip the store-wide `nix-store --gc`.
    #[arg(long)]
    pub no_store_gc: bool,
    /// List what would go (generations with date and size, stale roots, the bytes the store
    /// gc would free) and the exact commands; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON on stdout: {"profile","keep","older_than","delete":[{"id","date","path","closure_size"}],"kept","stale_roots","store","dry_run"}.
    #[arg(long)]
    pub json: bool,
}

/// A `--older-than` duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Age {
    pub seconds: u64,
    /// As given (`30d`), for messages and JSON.
    pub text: String,
}

/// `Nh`, `Nd`, `Nw` with N a whole number of at least 1. No minutes or months: `m` means
/// one or the other depending on the tool, so it is refused rather than guessed.
pub fn parse_age(s: &str) -> Result<Age, String> {
    let forms = "the accepted forms are Nh, Nd and Nw: a whole number of hours, days or weeks of at least 1, e.g. 12h, 30d, 2w";
    let unit = s.chars().last().unwrap_or(' ');
    let number = &s[..s.len() - unit.len_utf8().min(s.len())];
    let per = match unit {
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(format!("{s:?} is not a duration; {forms}")),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a duration; {forms}"));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is too long a duration; {forms}"))?;
    if n == 0 {
        return Err(format!("{s:?} is no time at all; {forms}"));
    }
    let seconds = n
        .checked_mul(per)
        .ok_or_else(|| format!("{s:?} is too long a duration; {forms}"))?;
    Ok(Age {
        seconds,
        text: s.to_string(),
    })
}

#[derive(Debug, Args)]
pub struct Uninstall {
    /// The user whose home to remove (default: $USER).
    pub user: Option<String>,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// List what would go and what stays; change nothing.
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

#[derive(Debug, Args)]
pub struct Deploy {
    /// What to deploy: host, home or droid names (`systems/NAME`, `homes/NAME`,
    /// `droids/NAME` when a name is shared). Default: every target whose meta.nix has
    /// deploy.targetHost.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Select by tag or name, comma separated, any may match: `@tag` (a glob over
    /// deploy.tags), a name or a glob (`web-*`).
    #[arg(long, value_delimiter = ',', value_name = "@TAG,NAME,GLOB")]
    pub on: Vec<String>,
    /// Deploy this many targets at once.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Evaluate, then print the exact commands per target; change nothing anywhere.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as JSON on stdout: [{"target","kind","host","generation","seconds","outcome","message"}].
    #[arg(long)]
    pub json: bool,
    /// Start no further target after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Seconds a target waits for the deployer to reach it again after activating, before
    /// it rolls itself back.
    #[arg(long, default_value_t = 30, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    pub confirm_timeout: u64,
    /// Ask for the sudo password of non-root hosts once, up front (else sudo must not ask).
    #[arg(long)]
    pub ask_sudo_password: bool,
    /// Show what would change on each target (its current generation against the new one)
    /// and change nothing.
    #[arg(long, conflicts_with = "dry_run")]
    pub diff: bool,
}

#[derive(Debug, Args)]
pub struct Packages {
    /// The user whose packages to list (default: $USER).
    pub user: Option<String>,
    /// The generation to read (an id from `cargo xtask generations`; default: the active one).
    #[arg(long, value_name = "ID")]
    pub generation: Option<u64>,
    /// Print JSON on stdout: {"user","generation","path","home_path","packages":[{"name","version","path"}]}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalOption {
    /// The option's attribute path under `config`: `programs.git.enable`, `home.packages`,
    /// `home.file.".bashrc".text` (quote a segment that has dots).
    #[arg(value_name = "NAME.PATH")]
    pub name: String,
    /// The user whose standalone home to evaluate (default: $USER).
    #[arg(conflicts_with = "host")]
    pub user: Option<String>,
    /// Evaluate the option of this NixOS host's configuration instead.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_age("12h").unwrap().seconds, 12 * 3600);
        assert_eq!(parse_age("30d").unwrap().seconds, 30 * 86_400);
        assert_eq!(parse_age("2w").unwrap().seconds, 14 * 86_400);
        for bad in [
            "-1d",
            "abc",
            "30",
            "",
            "d",
            "0d",
            "1m",
            "1.5d",
            "+1d",
            " 1d",
            "1 d",
            "1D",
            "é",
            "99999999999999999999w",
        ] {
            let e = parse_age(bad).unwrap_err();
            assert!(e.contains("Nh, Nd and Nw"), "{bad}: {e}");
        }
    }
}
