//! Running things on another machine over ssh, with nothing of ours installed there: the
//! ssh command lines (a fresh connection, or for the steps up to an activation one
//! connection they share, [`Shared`]; a confirmation always gets a new one of its own, so
//! it proves that a *new* connection works), the target-side script
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

/// Where the target-side script keeps its state when it runs as root through sudo.
const ROOT_STATE: &str = "/run/homelab-xtask-deploy";

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

/// One ssh connection that a target's steps up to its activation share: the activation's
/// own connection, opened first as a ControlMaster, which `nix copy` (and a build on the
/// target) then run through instead of connecting again. An ssh connection costs a key
/// exchange, an authentication and a new sshd process on the target, which is most of a
/// small deployment's time. The socket lives in a private temporary directory.
pub struct Shared {
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Shared {
    /// None where no socket path would do (ssh binds `PATH.<16 random characters>`, and a
    /// socket's path is at most 104 bytes on macOS, 108 on Linux; NIX_SSHOPTS is split at
    /// whitespace): the steps then connect each on their own. Under /tmp, not `$TMPDIR`,
    /// which can be long (macOS, `nix develop`).
    pub fn new() -> Option<Shared> {
        let dir = tempfile::Builder::new()
            .prefix("xtask-ssh-")
            .tempdir_in("/tmp")
            .ok()?;
        let socket = dir.path().join("s");
        let text = socket.to_str()?;
        (text.len() + 17 < 104 && !text.contains(char::is_whitespace))
            .then_some(Shared { socket, _dir: dir })
    }

    /// Waits until the master connection is up (its socket exists), as long as `master`
    /// runs and at most `limit`; false if it did not come up.
    pub fn wait_ready(&self, master: &mut Running, limit: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if self.socket.exists() {
                return true;
            }
            if master.exited() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    }

    /// ssh options that put a command on the master connection (first: ssh keeps the
    /// first value it is given for an option).
    fn client_opts(&self) -> [String; 2] {
        [
            "-o".into(),
            format!("ControlPath={}", self.socket.display()),
        ]
    }
}

impl Remote {
    /// `ssh … DEST REMOTE_COMMAND` (the command is one string, run by the remote shell).
    pub fn ssh(&self, remote_command: &str) -> Command {
        self.ssh_with(&[], remote_command)
    }

    fn ssh_with(&self, first: &[String], remote_command: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(first)
            .args(SSH_BASE)
            .args(&self.ssh_opts)
            .arg("--")
            .arg(&self.dest)
            .arg(remote_command);
        c
    }

    /// [`Remote::ssh`] as the master connection of `shared`: it runs `remote_command` and
    /// carries the other steps' commands until that ends.
    pub fn ssh_master(&self, shared: &Shared, remote_command: &str) -> Command {
        let [o, path] = shared.client_opts();
        // ControlPersist=no: a `ControlPersist` in the user's ssh config would send the
        // master to the background, where it would outlive the deployment.
        let first = [
            o.clone(),
            "ControlMaster=yes".into(),
            o.clone(),
            "ControlPersist=no".into(),
            o,
            path,
        ];
        self.ssh_with(&first, remote_command)
    }

    /// [`Remote::ssh`] through `shared`'s master connection (a connection of its own if
    /// the master is not up).
    pub fn ssh_via(&self, shared: Option<&Shared>, remote_command: &str) -> Command {
        let first: Vec<String> = shared.map(|s| s.client_opts().to_vec()).unwrap_or_default();
        self.ssh_with(&first, remote_command)
    }

    /// The store URL `nix copy` talks to (nix runs `nix-daemon --stdio` there over ssh).
    pub fn store_url(&self) -> String {
        format!("ssh-ng://{}", self.dest)
    }

    /// NIX_SSHOPTS for nix's own ssh calls: the same options as ours, through `shared`'s
    /// master connection if given.
    pub fn nix_sshopts(&self, shared: Option<&Shared>) -> String {
        shared
            .map(|s| s.client_opts().to_vec())
            .unwrap_or_default()
            .into_iter()
            .chain(SSH_BASE.iter().map(|s| s.to_string()))
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
        // Root's state (locks, canaries) is not the ssh user's, and not in a directory
        // every user can write to, where another could have put it first: in /run,
        // root's own, cleared at boot (as a deployment in flight is by a reboot).
        let state = if sudo == Sudo::No {
            "\"$d\"".to_string()
        } else {
            ROOT_STATE.to_string()
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
pub fn run_prefixed(cmd: Command, prefix: &str, stdin: Option<&str>, show: bool) -> Result<Ran> {
    let mut running = Running::spawn(cmd, prefix, stdin, show)?;
    running.close_stdin();
    running.finish()
}

/// A child process started by [`Running::spawn`]: its output is shown (and kept) as it
/// comes, its stdin stays open for [`Running::send`] until [`Running::close_stdin`].
pub struct Running {
    program: String,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    tail: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// Waited for: nothing left for Drop to end.
    waited: bool,
}

impl Running {
    /// Starts `cmd` with piped stdin (`stdin` written first), stdout and stderr.
    pub fn spawn(
        mut cmd: Command,
        prefix: &str,
        stdin: Option<&str>,
        show: bool,
    ) -> Result<Running> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {program}; is it installed and on PATH?"))?;
        let mut running = Running {
            program,
            stdin: child.stdin.take(),
            tail: Arc::new(Mutex::new(Vec::new())),
            readers: Vec::new(),
            waited: false,
            child,
        };
        if let Some(text) = stdin {
            running.send(text);
        }
        let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(running.child.stdout.take().context("the child's stdout")?),
            Box::new(running.child.stderr.take().context("the child's stderr")?),
        ];
        for pipe in pipes {
            let tail = Arc::clone(&running.tail);
            let prefix = prefix.to_string();
            running.readers.push(std::thread::spawn(move || {
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
            }));
        }
        Ok(running)
    }

    /// Writes `text` to its stdin. A closed pipe (the command did not read, or ended) is
    /// not this function's failure: its exit status tells.
    pub fn send(&mut self, text: &str) {
        if let Some(pipe) = &mut self.stdin {
            let _ = pipe.write_all(text.as_bytes()).and_then(|()| pipe.flush());
        }
    }

    /// Whether it has exited already.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Ends its input (end of file there).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Stops it (SIGKILL; ssh's connection closes with it), then waits as [`finish`] does.
    ///
    /// [`finish`]: Running::finish
    pub fn kill(mut self) -> Result<Ran> {
        let _ = self.child.kill();
        self.finish()
    }

    /// Waits for it to exit and for its output to be read.
    pub fn finish(mut self) -> Result<Ran> {
        self.close_stdin();
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.program))?;
        self.waited = true;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(Ran { status, tail })
    }
}

/// One that was neither finished nor killed (an early return) is ended, not left behind.
impl Drop for Running {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
            c.contains("exec sudo -S -p '' sh \"$f\" /run/homelab-xtask-deploy confirm"),
            "{c}"
        );
        assert!(r.nix_sshopts(None).ends_with("-x -p 2222"));
        assert_eq!(r.store_url(), "ssh-ng://root@pi");
        let args: Vec<String> = r
            .ssh("true")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[args.len() - 3..], ["--", "root@pi", "true"]);
    }
}
