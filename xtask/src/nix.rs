//! The nix runner: the one place that builds nix command lines. It adds the flags every
//! call needs (flakes enabled without touching the user's nix.conf), lets nix's own log
//! stream to the terminal during builds, and turns failures into errors that name the
//! command and what to do.
//!
//! Version notes: the forms used here work from Nix 2.8 (Debian 12) to 2.3x.
//! `nix build --print-out-paths` only exists from 2.13, so builds use `--json`;
//! `--extra-experimental-features` exists from 2.4 (older nix has no flakes at all).

use std::{
    env,
    ffi::OsStr,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, de::DeserializeOwned};
use xshell::{Cmd, Shell, cmd};

use crate::term;

mod error;
mod probe;
mod store;
pub use error::{NixError, cannot_run, environment_fix, failure, trim_error};
pub use probe::{Bounded, Version, run_bounded};
pub use store::{GcSummary, store_dir};

pub const FEATURES: &str = "nix-command flakes";

pub const INSTALL_HELP: &str = "nix is required; install it with:\n  \
    NixOS:               it is already there; check that nix is on PATH\n  \
    Debian/Ubuntu:       sudo apt-get install nix-bin   (Nix >= 2.8; single-user root needs `sandbox = false`)\n  \
    other Linux and WSL: sh <(curl -L https://nixos.org/nix/install) --daemon   (WSL without systemd: --no-daemon)\n  \
    macOS:               sh <(curl -L https://nixos.org/nix/install)\n\
    then open a new shell so that nix is on PATH";

pub struct Nix<'a> {
    sh: &'a Shell,
    pub verbose: bool,
}

/// One built output, as `nix build --json` reports it.
#[derive(Debug, Deserialize)]
struct BuildResult {
    outputs: std::collections::BTreeMap<String, PathBuf>,
}

/// `cmd` as a process to run, and as a line a user can paste into a shell (what `-v`
/// prints and what errors show as "tried:"). xshell's own Display of a command is not shell
/// syntax (it writes Rust escapes), so commands are shown from the process they become.
pub fn prepare(cmd: Cmd<'_>) -> (std::process::Command, String) {
    let command = std::process::Command::from(cmd);
    let shown = shell_line(&command);
    (command, shown)
}

/// A process's program and arguments as a shell line, each quoted where the shell would
/// read it otherwise.
pub fn shell_line(c: &std::process::Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| crate::home::shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A nix command to suggest to the user (`nix flake lock`), runnable as printed on a stock
/// nix.conf, where flakes are experimental: with the feature flag the xtask passes too.
pub fn suggest(args: &str) -> String {
    format!("nix --extra-experimental-features '{FEATURES}' {args}")
}

impl<'a> Nix<'a> {
    pub fn new(sh: &'a Shell, verbose: bool) -> Nix<'a> {
        Nix { sh, verbose }
    }

    /// `nix <args>` with flakes enabled. Fails early, with install instructions, when nix is
    /// not on PATH.
    pub fn cmd<I, A>(&self, args: I) -> Result<Cmd<'a>>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        ensure_on_path("nix")?;
        Ok(cmd!(self.sh, "nix --extra-experimental-features {FEATURES}").args(args))
    }

    /// A companion nix tool (`nix-env`, `nix-store`): same install check, no feature flag.
    pub fn tool(&self, tool: &str) -> Result<Cmd<'a>> {
        ensure_on_path(tool)?;
        Ok(self.sh.cmd(tool))
    }

    /// Evaluates a Nix expression (`nix eval --json --expr`) and decodes the result.
    pub fn eval_expr_json<T: DeserializeOwned>(&self, expr: &str) -> Result<T> {
        self.json(self.eval_expr_cmd(expr)?, "the expression")
    }

    /// The command [`Nix::eval_expr_json`] runs, for tasks that print it (`--dry-run`).
    pub fn eval_expr_cmd(&self, expr: &str) -> Result<Cmd<'a>> {
        self.cmd(["eval", "--json", "--impure", "--expr", expr])
    }

    /// Evaluates `installable` (e.g. `/repo#homeConfigurations`), optionally through
    /// `--apply FN`, and decodes the JSON.
    pub fn eval_json<T: DeserializeOwned>(
        &self,
        installable: &str,
        apply: Option<&str>,
    ) -> Result<T> {
        let mut args = vec!["eval", "--json", installable];
        if let Some(f) = apply {
            args.extend(["--apply", f]);
        }
        self.json(self.cmd(args)?, installable)
    }

    /// Runs `nix eval --json --impure --expr EXPR` and returns the raw outcome, success or
    /// not: `check` reads the `trace:` lines and the error of a failed evaluation itself
    /// instead of turning it into one error. `--impure` because `builtins.getFlake` of an
    /// unlocked local flake (a working tree) is refused in pure mode.
    pub fn eval_expr_output(
        &self,
        expr: &str,
        on_stderr_line: impl FnMut(&str),
    ) -> Result<EvalOutput> {
        let (cmd, shown) = prepare(self.eval_expr_cmd(expr)?);
        if self.verbose {
            term::command(&shown);
        }
        // Streamed: check reads its trace marks as they come, for its progress.
        let (status, stdout, stderr) = stream(cmd, &shown, on_stderr_line)?;
        if !status.success() {
            // A nix that cannot run flakes at all is not a finding about the repo.
            if stderr.contains("--extra-experimental-features")
                || (stderr.contains("experimental Nix feature") && stderr.contains("is disabled"))
            {
                return Err(failure(&shown, "the flake", &stderr));
            }
        }
        Ok(EvalOutput {
            success: status.success(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr,
            shown,
        })
    }

    /// `nix flake check ROOT`, the documented validation of a flake's outputs; returns the
    /// trimmed error when it fails. nix's progress is captured, not streamed, because the
    /// caller reports the failure as a finding.
    pub fn flake_check(&self, root: &Path) -> Result<Option<String>> {
        let cmd = self.cmd([OsStr::new("flake"), OsStr::new("check"), root.as_os_str()])?;
        let (out, _) = self.capture(cmd, true)?;
        if out.status.success() {
            return Ok(None);
        }
        Ok(Some(trim_error(&String::from_utf8_lossy(&out.stderr))))
    }

    /// Runs `cmd` to completion with both streams captured, whatever its exit status;
    /// `announce` shows the command line first. Returns the output and that line.
    fn capture(&self, cmd: Cmd<'_>, announce: bool) -> Result<(std::process::Output, String)> {
        let (mut cmd, shown) = prepare(cmd);
        if announce {
            term::command(&shown);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {shown}"))?;
        Ok((out, shown))
    }

    fn json<T: DeserializeOwned>(&self, cmd: Cmd<'_>, what: &str) -> Result<T> {
        let (out, shown) = self.capture(cmd, self.verbose)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(failure(&shown, what, &stderr));
        }
        if self.verbose && !stderr.trim().is_empty() {
            term::raw(&stderr);
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("nix printed JSON the xtask did not expect (tried: {shown})"))
    }

    /// Builds installables, streaming nix's log to the terminal, and returns the `out`
    /// paths in order. With `out_link` the first result gets that GC root (`out_link`,
    /// `out_link-1`, … for more), so a collection cannot remove it mid-way.
    pub fn build(&self, installables: &[String], out_link: Option<&Path>) -> Result<Vec<PathBuf>> {
        let mut args: Vec<String> = vec!["build".into(), "--json".into()];
        match out_link {
            Some(link) => args.extend(["--out-link".into(), link.display().to_string()]),
            None => args.push("--no-link".into()),
        }
        if self.verbose {
            args.push("--print-build-logs".into());
        }
        args.extend(installables.iter().cloned());
        let (cmd, shown) = prepare(self.cmd(&args)?);
        term::command(&shown);
        // stdout is the JSON; nix's log (stderr) is passed through line by line as it
        // comes, so a failure can be explained like `check` explains it.
        let (status, stdout, log) = stream(cmd, &shown, |line| term::raw(&format!("{line}\n")))?;
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        if !status.success() {
            // nix's message is above; the causes it words badly get their fix here: no
            // network or no flake.lock (as `check` says it), a path it cannot put into a URL.
            let fix = environment_fix(&log)
                .or_else(|| {
                    installables
                        .iter()
                        .any(|i| i.contains(char::is_whitespace))
                        .then(|| environment_fix("is not a valid URL"))
                        .flatten()
                })
                .unwrap_or("fix the error nix names, or run with -v for the full build log");
            bail!(
                "nix build failed for {} (see nix's message above)\n  tried: {shown}\n  {fix}",
                installables.join(" ")
            );
        }
        let results: Vec<BuildResult> = serde_json::from_str(&stdout).with_context(|| {
            format!("nix build printed JSON the xtask did not expect (tried: {shown})")
        })?;
        results
            .into_iter()
            .map(|r| {
                r.outputs
                    .get("out")
                    .or_else(|| r.outputs.values().next())
                    .cloned()
                    .context("nix build reported a result without outputs")
            })
            .collect()
    }
}

impl<'a> Nix<'a> {
    /// `nix copy` of `paths` to another store (`ssh-ng://…`): nix's own transfer, with
    /// substitution on the destination (it fetches what a cache has itself) and without
    /// signature checks (the paths were built here, by us). `derivation`: copy the .drv
    /// files (for a build on the destination) instead of outputs.
    pub fn copy_cmd(&self, to: &str, paths: &[String], derivation: bool) -> Result<Cmd<'a>> {
        let mut args: Vec<&str> = vec![
            "copy",
            "--no-check-sigs",
            "--substitute-on-destination",
            "--to",
            to,
        ];
        if derivation {
            args.push("--derivation");
        }
        args.extend(paths.iter().map(String::as_str));
        self.cmd(args)
    }

    /// `nix-store --realise DRV…`: builds derivations already in the store (the one
    /// evaluation instantiated them) without evaluating again; prints the outputs.
    pub fn realise_cmd(&self, drvs: &[String]) -> Result<Cmd<'a>> {
        Ok(self.tool("nix-store")?.arg("--realise").args(drvs))
    }
}

/// Runs `cmd` with nix's stderr read line by line as it comes (`on_line` sees each one:
/// progress, trace marks) and stdout drained on its own thread, so a large result cannot
/// block nix on a full pipe. Returns the exit status, stdout and the whole stderr.
fn stream(
    mut cmd: std::process::Command,
    shown: &str,
    mut on_line: impl FnMut(&str),
) -> Result<(std::process::ExitStatus, Vec<u8>, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {shown}"))?;
    let mut stdout_pipe = child.stdout.take().context("nix's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout_pipe.read_to_end(&mut buf).map(|_| buf)
    });
    let mut stderr = String::new();
    let stderr_pipe = child.stderr.take().context("nix's stderr")?;
    for line in BufReader::new(stderr_pipe).lines() {
        let line = line.with_context(|| format!("reading the output of {shown}"))?;
        on_line(&line);
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let status = child.wait().with_context(|| format!("running {shown}"))?;
    let stdout = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reading the output of {shown} failed"))?
        .with_context(|| format!("reading the output of {shown}"))?;
    Ok((status, stdout, stderr))
}

/// What a `nix eval` printed, whether or not it succeeded.
#[derive(Debug)]
pub struct EvalOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    pub shown: String,
}

/// Runs a command that changes something, or only prints it with `dry_run`
/// (nh's command builder pattern: the printed line is exactly what would run).
pub fn run_step(cmd: Cmd<'_>, dry_run: bool) -> Result<()> {
    let (mut cmd, shown) = prepare(cmd);
    if dry_run {
        term::out(&shown);
        return Ok(());
    }
    term::command(&shown);
    // No stdin, as xshell gave its commands: an ssh inside (nixos-rebuild --target-host)
    // must not eat a caller's piped input; prompts read the terminal itself.
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Looks for `tool` on PATH; the error says how to install nix.
pub fn ensure_on_path(tool: &str) -> Result<()> {
    if find_on_path(tool).is_some() {
        return Ok(());
    }
    bail!("`{tool}` was not found on PATH.\n{INSTALL_HELP}")
}

pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// This machine's Nix system double (`x86_64-linux`, `aarch64-darwin`, …), from the
/// architecture and OS the xtask was compiled for: no nix call is needed.
pub fn current_system() -> String {
    // Rust's arch names are Nix's for every supported system (x86_64, aarch64).
    let arch = env::consts::ARCH;
    let os = match env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{arch}-{os}")
}

/// The systems [`pick_system`] accepts: the repo's `supported-systems`, handed down by the
/// repo layer at start-up (`repo::Defaults::install`) so that this layer needs no repo.
static SUPPORTED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

pub fn set_supported_systems(systems: Vec<String>) {
    // The first call wins: rules are installed once per process.
    let _ = SUPPORTED.set(systems);
}

/// `--system` checked against the systems installed by [`set_supported_systems`]; before
/// that (unit tests) against this machine's only. New code calls `repo::pick_system`.
pub fn pick_system(flag: Option<&str>) -> Result<String> {
    let fallback = [current_system()];
    let supported = SUPPORTED.get().map_or(&fallback[..], Vec::as_slice);
    pick_system_in(flag, supported)
}

/// `--system`: one of `supported`, or this machine's when not given or `auto` (then said,
/// so a user on another architecture sees which home variant is used).
pub fn pick_system_in(flag: Option<&str>, supported: &[String]) -> Result<String> {
    let system = match flag {
        Some(s) if s != "auto" => s.to_string(),
        _ => {
            let s = current_system();
            term::info(&format!("system: {s} (detected; --system overrides)"));
            s
        }
    };
    if !supported.contains(&system) {
        let list = supported.join(", ");
        // A --system the repo does not support is a usage error; this machine's own system
        // (detected) is not the command line's fault, and "auto" is what just failed.
        if flag.is_some_and(|s| s != "auto") {
            return Err(crate::UsageError(format!(
                "system '{system}' is not supported; use one of {list} (or auto for this machine's; supported-systems in Cargo.toml lists them)"
            ))
            .into());
        }
        bail!(
            "this machine's system, {system}, is not supported by the repository ({list}); add it to supported-systems in Cargo.toml, or pass --system with one of those"
        );
    }
    Ok(system)
}

/// The flake reference of an attribute of the repo: `/abs/root#attr`.
pub fn installable(root: &Path, attr: &str) -> String {
    format!("{}#{attr}", root.display())
}

/// The flake reference `builtins.getFlake` needs to see exactly what `nix eval ROOT#attr`
/// sees. Version note: Nix 2.8 reads `getFlake "/abs/path"` as a `path:` flake, which
/// includes files git does not track, while the command line (all versions) and newer
/// `getFlake` use `git+file:` for a directory inside a git work tree. Spelling out
/// `git+file://TOP?dir=SUB` gives the command line's view on every version from 2.4 on.
pub fn flake_ref(root: &Path) -> String {
    let top = root.ancestors().find(|d| d.join(".git").exists());
    match top {
        Some(top) => {
            let sub = root.strip_prefix(top).unwrap_or(Path::new(""));
            let mut r = format!("git+file://{}", top.display());
            if !sub.as_os_str().is_empty() {
                r.push_str(&format!("?dir={}", sub.display()));
            }
            r
        }
        None => format!("path:{}", root.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_is_detected() {
        let s = current_system();
        assert!(
            s.ends_with("-linux")
                || s.ends_with("-darwin")
                || cfg!(not(any(target_os = "linux", target_os = "macos")))
        );
    }

    #[test]
    fn shown_commands_are_shell_lines_that_run_as_printed() {
        let args = [
            "%s|",
            "a b",
            "it's",
            "$HOME",
            "x\ny",
            "«function»",
            "${id}",
            "",
        ];
        let mut cmd = std::process::Command::new("printf");
        cmd.args(args);
        let line = shell_line(&cmd);
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}");
        let expected: String = args[1..].iter().map(|a| format!("{a}|")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{line}");
    }

    #[test]
    fn an_unsupported_machine_without_system_is_not_a_usage_error() {
        // No --system given (or `auto`): the machine is the problem, not the command line,
        // and "auto" is the one thing not to suggest.
        let supported = ["riscv64-plan9".to_string()];
        for flag in [None, Some("auto")] {
            let err = pick_system_in(flag, &supported).unwrap_err();
            assert!(err.downcast_ref::<crate::UsageError>().is_none(), "{err}");
            assert!(!err.to_string().contains("or auto"), "{err}");
        }
    }

    #[test]
    fn systems_are_picked_and_checked() {
        let supported = ["aarch64-linux".to_string(), current_system()];
        let pick = |flag| pick_system_in(flag, &supported);
        assert_eq!(pick(Some("aarch64-linux")).unwrap(), "aarch64-linux");
        assert_eq!(pick(Some("auto")).unwrap(), current_system());
        assert_eq!(pick(None).unwrap(), current_system());
        let err = pick(Some("riscv64-linux")).unwrap_err().to_string();
        assert!(
            err.contains("riscv64-linux") && err.contains("aarch64-linux"),
            "{err}"
        );
    }
}
