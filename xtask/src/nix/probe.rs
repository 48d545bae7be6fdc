//! Nix calls with a time limit, and the version of the nix on PATH: what `doctor` and
//! `update` need to ask nix about the machine without ever hanging on it (a daemon that
//! does not answer, an input fetched over a dead network).
//!
//! Version notes, in one place (the forms differ between the Nix 2.8 of Debian 12 and the
//! 2.18–2.3x users run):
//! - `nix flake update NAME…` takes input names from 2.19 on; before, names go to
//!   `nix flake lock --update-input NAME` (2.19+ still accepts that, deprecated).
//!   Lix numbers itself 2.90+ but keeps the 2.18 command line: it gets the old form.
//! - `nix config show` replaces `nix show-config` from 2.20 (the old name stays an alias).
//! - `nix store ping` is `nix store info` from 2.19 (the old name stays an alias); its
//!   `--json` (with `trusted`) appeared in 2.15.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    process::{ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xshell::Cmd;

use super::Nix;

/// The version `nix --version` reports: `nix (Nix) 2.8.0`, `nix (Lix, like Nix) 2.91.1`,
/// `nix (Determinate Nix 3.6.2) 2.29.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub lix: bool,
    /// The whole line, for messages.
    pub text: String,
}

impl Version {
    pub fn parse(output: &str) -> Option<Version> {
        let line = output.lines().find(|l| !l.trim().is_empty())?.trim();
        // The version is the last word that starts with a digit.
        let word = line
            .split_whitespace()
            .rev()
            .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
        let mut nums = word
            .split(['.', '-', '+', 'p'])
            .map(|n| n.parse::<u32>().ok());
        let major = nums.next()??;
        let minor = nums.next()??;
        let patch = nums.next().flatten().unwrap_or(0);
        Some(Version {
            major,
            minor,
            patch,
            lix: line.contains("Lix"),
            text: line.to_string(),
        })
    }

    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    pub fn number(&self) -> String {
        format!("{}.{}.{}", self.major, self.minor, self.patch)
    }

    /// `nix flake update NAME…` (CppNix 2.19+) rather than `nix flake lock --update-input`.
    pub fn flake_update_takes_inputs(&self) -> bool {
        !self.lix && self.at_least(2, 19)
    }

    /// `nix config show` (CppNix 2.20+) rather than `nix show-config`.
    pub fn has_config_show(&self) -> bool {
        !self.lix && self.at_least(2, 20)
    }
}

/// What a bounded command did.
#[derive(Debug)]
pub struct Bounded {
    /// `None` when it did not finish in time (it was killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    pub shown: String,
    pub timeout: Duration,
}

impl Bounded {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// nix's message, trimmed to the error lines, or the timeout.
    pub fn problem(&self) -> String {
        if self.timed_out() {
            return format!("no answer within {} s", self.timeout.as_secs());
        }
        let msg = super::trim_error(&self.stderr);
        if msg.is_empty() {
            format!(
                "failed ({})",
                self.status.map_or(-1, |s| s.code().unwrap_or(-1))
            )
        } else {
            msg
        }
    }
}

/// Runs `cmd` with both streams captured; after `timeout` it and everything it started
/// (its process group) are killed. Never waits longer than `timeout` plus a moment.
pub fn run_bounded(cmd: Cmd<'_>, timeout: Duration) -> Result<Bounded> {
    Prepared::from(cmd).run(timeout)
}

/// A command line turned into a process description that can move to another thread
/// (an xshell `Cmd` borrows its shell), so independent bounded calls can run in parallel.
#[derive(Debug)]
pub struct Prepared {
    shown: String,
    command: std::process::Command,
}

impl From<Cmd<'_>> for Prepared {
    fn from(cmd: Cmd<'_>) -> Prepared {
        let (command, shown) = super::prepare(cmd);
        Prepared { shown, command }
    }
}

impl Prepared {
    /// See [`run_bounded`].
    pub fn run(self, timeout: Duration) -> Result<Bounded> {
        let Prepared { shown, mut command } = self;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a timeout also ends the fetchers nix started (git, curl).
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("running {shown}"))?;
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("running {shown}"))?
            {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let pid = rustix::process::Pid::from_child(&child);
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(5));
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        Ok(Bounded {
            status,
            stdout,
            stderr,
            shown,
            timeout,
        })
    }
}

impl Nix<'_> {
    /// `nix --version` (no feature flag: every nix knows it), within `timeout`.
    pub fn version(&self, timeout: Duration) -> Result<Version> {
        let out = run_bounded(self.tool("nix")?.arg("--version"), timeout)?;
        if !out.success() {
            bail!("`{}` failed: {}", out.shown, out.problem());
        }
        Version::parse(&out.stdout).with_context(|| {
            format!(
                "`{}` printed {:?}, which names no version",
                out.shown,
                out.stdout.trim()
            )
        })
    }

    /// `nix <args>` (flakes enabled) within `timeout`, whatever its outcome.
    pub fn bounded<I, A>(&self, args: I, timeout: Duration) -> Result<Bounded>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<std::ffi::OsStr>,
    {
        run_bounded(self.cmd(args)?, timeout)
    }

    /// The input names `ROOT/flake.nix` declares (`inputs.<name>`), read without locking or
    /// fetching anything: the file is imported as a plain Nix expression.
    pub fn declared_inputs(
        &self,
        root: &std::path::Path,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let flake = root.join("flake.nix");
        let expr = format!(
            "builtins.attrNames ((import (/. + {})).inputs or {{ }})",
            nix_string(&flake.display().to_string())
        );
        let out = self.bounded(["eval", "--json", "--impure", "--expr", &expr], timeout)?;
        if !out.success() {
            bail!("{} cannot be read: {}", flake.display(), out.problem());
        }
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("`{}` printed JSON the xtask did not expect", out.shown))
    }

    /// `nix <args>` (flakes enabled), ready to run on another thread with [`Prepared::run`].
    pub fn prepare<I, A>(&self, args: I) -> Result<Prepared>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<std::ffi::OsStr>,
    {
        Ok(Prepared::from(self.cmd(args)?))
    }
}

/// A Nix string literal (this layer's own: `repo` sits above it).
fn nix_string(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace("${", "\\${")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_every_flavour_parse() {
        let v = Version::parse("nix (Nix) 2.8.0\n").unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.lix), (2, 8, 0, false));
        assert!(!v.flake_update_takes_inputs() && !v.has_config_show());
        let v = Version::parse("nix (Nix) 2.19.2").unwrap();
        assert!(v.flake_update_takes_inputs() && !v.has_config_show());
        let v = Version::parse("nix (Determinate Nix 3.6.2) 2.29.0").unwrap();
        assert_eq!(v.number(), "2.29.0");
        assert!(v.has_config_show());
        let v = Version::parse("nix (Lix, like Nix) 2.91.1").unwrap();
        assert!(v.lix && !v.flake_update_takes_inputs());
        let v = Version::parse("nix (Nix) 2.24pre20240101_abc").unwrap();
        assert_eq!((v.major, v.minor), (2, 24));
        assert!(Version::parse("no version here").is_none());
    }

    #[test]
    fn a_command_that_hangs_is_stopped() {
        let sh = xshell::Shell::new().unwrap();
        let started = Instant::now();
        let out = run_bounded(
            xshell::cmd!(sh, "sh -c 'sleep 30 & sleep 30'"),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(out.timed_out());
        assert!(started.elapsed() < Duration::from_secs(5));
        let out = run_bounded(xshell::cmd!(sh, "echo hi"), Duration::from_secs(5)).unwrap();
        assert!(out.success() && out.stdout == "hi\n");
    }
}
