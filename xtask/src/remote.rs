//! Running things on another machine over ssh, with nothing of ours installed there: the
//! ssh command lines (a fresh connection every time, never a ControlMaster's, so a
//! confirmation proves that a *new* connection works), the target-side script
//! `xtask/remote/deploy.sh` (sent with each call), and child processes whose output is
//! shown line by line with the target's name in front.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};

use crate::{home::shell_quote, term};

/// The target side of a deployment: lock, pre-flight, activation, rollback timer, confirm.
pub const SCRIPT: &str = include_str!("../remote/deploy.sh");

/// Options every ssh call gets: no prompts (a prompt in a parallel run would hang it), no
/// shared connection, and a dead peer noticed within seconds.
const SSH_BASE: [&str; 14] = [
    "-T",
    "-o",
    "BatchMode=yes",
    "-o",
    "ControlMaster=no",
    "-o",
    "ControlPath=none",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=2",
    "-x",
];

/// How the target-side script gets root for a host whose ssh user is not root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sudo {
    /// The ssh user is root, or the step needs no root (homes, phones).
    No,
    /// `sudo -n`: passwordless sudo (probed first).
    NoPassword,
    /// `sudo -S`: the password, asked once up front, on stdin.
    Password,
}

/// One machine reachable over ssh: `[user@]host` and its extra ssh options.
#[derive(Debug, Clone)]
pub struct Remote {
    pub dest: String,
    pub ssh_opts: Vec<String>,
}

impl Remote {
    /// `ssh … DEST REMOTE_COMMAND` (the command is one string, run by the remote shell).
    pub fn ssh(&self, remote_command: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(SSH_BASE)
            .args(&self.ssh_opts)
            .arg("--")
            .arg(&self.dest)
            .arg(remote_command);
        c
    }

    /// The store URL `nix copy` talks to (nix runs `nix-daemon --stdio` there over ssh).
    pub fn store_url(&self) -> String {
        format!("ssh-ng://{}", self.dest)
    }

    /// NIX_SSHOPTS for nix's own ssh calls: the same options as ours.
    pub fn nix_sshopts(&self) -> String {
        SSH_BASE
            .iter()
            .map(|s| s.to_string())
            .chain(self.ssh_opts.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The remote command that runs [`SCRIPT`] with `args`: the script is written to the
    /// target's state directory (once per version of it) and run from there, so its
    /// worker can start itself again detached from the ssh connection.
    pub fn script_command(&self, sudo: Sudo, args: &[&str]) -> String {
        let version = fnv(SCRIPT.as_bytes());
        let run_as = match sudo {
            Sudo::No => "",
            Sudo::NoPassword => "sudo -n ",
            Sudo::Password => "sudo -S -p '' ",
        };
        // Root's state (locks, canaries) is not the ssh user's.
        let state = if sudo == Sudo::No {
            "\"$d\"".to_string()
        } else {
            "/tmp/xtask-deploy-root".to_string()
        };
        let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        format!(
            "umask 077; d=${{TMPDIR:-/tmp}}/xtask-deploy-$(id -u); mkdir -p \"$d\" && [ -O \"$d\" ] || {{ echo \"error: $d is not ours\" >&2; exit 4; }}; \
             f=\"$d/deploy-{version:016x}.sh\"; [ -f \"$f\" ] || {{ printf '%s' {script} > \"$f.$$\" && mv \"$f.$$\" \"$f\"; }} && \
             exec {run_as}sh \"$f\" {state} {args}",
            script = shell_quote(SCRIPT),
            args = args.join(" ")
        )
    }
}

/// FNV-1a: names the script's version in the file name on the target.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// What a child process did: its status and its last lines (for the error message).
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub tail: Vec<String>,
}

impl Ran {
    /// The exit code, or None when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The last line that looks like an error, else the last line.
    pub fn reason(&self) -> String {
        self.tail
            .iter()
            .rev()
            .find(|l| l.contains("error"))
            .or(self.tail.last())
            .cloned()
            .unwrap_or_else(|| format!("exited with {}", self.status))
    }
}

/// Runs `cmd`, showing each line of its stdout and stderr as `[prefix] line` (when
/// `show`), with `stdin` written to it first. Returns when it exits.
pub fn run_prefixed(
    mut cmd: Command,
    prefix: &str,
    stdin: Option<&str>,
    show: bool,
) -> Result<Ran> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {program}; is it installed and on PATH?"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A closed pipe (the command did not read) is not this function's failure.
        let _ = pipe.write_all(text.as_bytes());
    }
    let tail = Arc::new(Mutex::new(Vec::<String>::new()));
    let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stdout.take().context("the child's stdout")?),
        Box::new(child.stderr.take().context("the child's stderr")?),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|pipe| {
            let tail = Arc::clone(&tail);
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if show {
                        term::info(&format!("{prefix} {line}"));
                    }
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == 40 {
                        t.remove(0);
                    }
                    t.push(line);
                }
            })
        })
        .collect();
    let status = child
        .wait()
        .with_context(|| format!("waiting for {program}"))?;
    for r in readers {
        let _ = r.join();
    }
    let tail = tail.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Ran { status, tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_command_quotes_and_picks_the_state() {
        let r = Remote {
            dest: "root@pi".into(),
            ssh_opts: vec!["-p".into(), "2222".into()],
        };
        let c = r.script_command(Sudo::No, &["activate", "home", "/nix/store/x y"]);
        assert!(
            c.contains("exec sh \"$f\" \"$d\" activate home '/nix/store/x y'"),
            "{c}"
        );
        let c = r.script_command(Sudo::Password, &["confirm"]);
        assert!(
            c.contains("exec sudo -S -p '' sh \"$f\" /tmp/xtask-deploy-root confirm"),
            "{c}"
        );
        assert!(r.nix_sshopts().ends_with("-x -p 2222"));
        assert_eq!(r.store_url(), "ssh-ng://root@pi");
        let args: Vec<String> = r
            .ssh("true")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[args.len() - 3..], ["--", "root@pi", "true"]);
    }
}
