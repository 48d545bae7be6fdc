//! One target's deployment: build, copy, activate through the target-side script, confirm
//! over a new connection (or see it roll back by itself).

use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Paths, Target};
use crate::{
    home,
    nix::Nix,
    remote::{self, Sudo},
    repo::BuildOn,
    term::{self, Style},
};

/// Everything one target's deployment needs, shared by reference with the worker threads.
pub(super) struct Job<'a> {
    pub(super) target: &'a Target,
    pub(super) paths: &'a Paths,
    pub(super) sudo: Sudo,
}

pub(super) struct Settings<'a> {
    pub(super) root: &'a std::path::Path,
    pub(super) verbose: bool,
    pub(super) confirm_timeout: u64,
    pub(super) backup: &'a str,
    pub(super) password: Option<&'a str>,
    pub(super) dry_run: bool,
    pub(super) diff: bool,
}

/// Why a target did not deploy.
pub(super) enum Failed {
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

    pub(super) fn say(&self, msg: &str) {
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
        let mut running = self.spawn_script(s, args, None)?;
        running.close_stdin();
        running.finish().map_err(|e| failed(format!("{e:#}")))
    }

    /// The target-side script with `args`, started (its stdin open, the sudo password
    /// written first when sudo needs one); as the master connection of `shared` if given.
    fn spawn_script(
        &self,
        s: &Settings,
        args: &[&str],
        shared: Option<&remote::Shared>,
    ) -> Result<remote::Running, Failed> {
        let r = self.target.remote();
        let command = r.script_command(self.sudo, args);
        let cmd = match shared {
            Some(shared) => r.ssh_master(shared, &command),
            None => r.ssh(&command),
        };
        let stdin = match self.sudo {
            Sudo::Password => s.password.map(|p| format!("{p}\n")),
            _ => None,
        };
        remote::Running::spawn(cmd, &self.prefix(), stdin.as_deref(), true)
            .map_err(|e| failed(format!("{e:#}")))
    }

    pub(super) fn run(&self, s: &Settings) -> Result<&'static str, Failed> {
        let t = self.target;
        let r = t.remote();
        let sh = xshell::Shell::new().map_err(|e| failed(e.to_string()))?;
        sh.change_dir(s.root);
        let nix = Nix::new(&sh, s.verbose);
        let drv = vec![self.paths.drv.clone()];
        let out = vec![self.paths.out.clone()];
        let with_sshopts = |cmd: xshell::Cmd<'_>, shared: Option<&remote::Shared>| {
            let mut c = std::process::Command::from(cmd);
            c.env("NIX_SSHOPTS", r.nix_sshopts(shared));
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

        // The steps, as commands: --dry-run prints them, a deployment runs them (through
        // the connection they share, when there is one).
        // The steps, as commands: --dry-run prints them, a deployment runs them. A local
        // build needs no connection; the steps that talk to the target run through the
        // connection they share, when there is one.
        let local_build = match t.settings.build_on {
            BuildOn::Local => Some((
                "build".to_string(),
                std::process::Command::from(nix.realise_cmd(&drv).map_err(nix_err)?),
            )),
            BuildOn::Remote => None,
        };
        type Steps = Vec<(String, std::process::Command)>;
        let target_steps = |shared: Option<&remote::Shared>| -> Result<Steps, Failed> {
            Ok(match t.settings.build_on {
                BuildOn::Local => vec![(
                    "copy".into(),
                    with_sshopts(
                        nix.copy_cmd(&r.store_url(), &out, false).map_err(nix_err)?,
                        shared,
                    ),
                )],
                BuildOn::Remote => vec![
                    (
                        "copy the derivation".into(),
                        with_sshopts(
                            nix.copy_cmd(&r.store_url(), &drv, true).map_err(nix_err)?,
                            shared,
                        ),
                    ),
                    (
                        "build on the target".into(),
                        r.ssh_via(
                            shared,
                            &format!("nix-store --realise {}", home::shell_quote(&self.paths.drv)),
                        ),
                    ),
                ],
            })
        };
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
            for (what, cmd) in local_build.iter().chain(&target_steps(None)?) {
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
        // anything, and ends, nothing changed, when a step fails and we hang up. It is
        // the master connection the steps that talk to the target run through, so the
        // whole deployment connects twice: for the activation, and to confirm it.
        let mut on_go_args = activate_args;
        on_go_args[0] = "activate-on-go";
        let shared = remote::Shared::new();
        let mut early = self.spawn_script(s, &on_go_args, shared.as_ref())?;
        // The local build runs while ssh connects.
        if let Some((what, cmd)) = local_build {
            self.say(&what);
            if let Err(e) = self.local(cmd, &what) {
                let _ = early.kill();
                return Err(e);
            }
        }
        // The rest through the master once it is up (else each connects on its own).
        let up = shared
            .as_ref()
            .filter(|sh| sh.wait_ready(&mut early, Duration::from_secs(15)));
        let rest = target_steps(up)?;
        for (what, cmd) in rest {
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
