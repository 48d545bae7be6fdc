//! Loopback "machines" for the deploy tests (tests/deploy.rs) and the deploy benchmark
//! (src/tasks/bench/deploy.rs), which both include this file (`#[path]`): one sshd per
//! machine on a loopback port, with generated keys, its own `$HOME`, `$USER` and profiles
//! through sshd's SetEnv, sharing this machine's /nix/store (a chroot store could not run
//! the activation scripts it receives). Only std and anyhow, which both crates have.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

pub const SSHD: &str = "/usr/sbin/sshd";

/// The client key (its `.pub` is the only authorized key) and the host key every
/// machine's sshd uses, generated in `dir`.
pub struct Keys {
    pub client: PathBuf,
    pub host: PathBuf,
    pub authorized: PathBuf,
}

impl Keys {
    pub fn new(dir: &Path) -> Result<Keys> {
        // sshd's privilege separation directory (Debian creates it at boot).
        let _ = fs::create_dir_all("/run/sshd");
        fs::create_dir_all(dir)?;
        let (client, host) = (dir.join("client_key"), dir.join("host_key"));
        for k in [&client, &host] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(k)
                .output()
                .context("ssh-keygen (openssh-client) is needed")?;
            if !out.status.success() {
                bail!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let authorized = dir.join("authorized_keys");
        fs::copy(client.with_extension("pub"), &authorized)?;
        Ok(Keys {
            client,
            host,
            authorized,
        })
    }

    /// The ssh options for a machine on `port`, one word each (deploy.sshOpts,
    /// NIX_SSHOPTS).
    pub fn ssh_words(&self, port: u16) -> Vec<String> {
        vec![
            "-p".into(),
            port.to_string(),
            "-i".into(),
            self.client.display().to_string(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    /// Starts the sshd of the machine in `dir` (created, with its home and profile
    /// directories) on a free loopback port, its sessions running as `user` with the extra
    /// environment `env` (` NAME=value …`), through `launcher` (None: sshd itself; else a
    /// command that ends by exec'ing sshd with the arguments it is given). Waits (bounded)
    /// until it listens; returns it and its port. Its log is `dir/sshd.log`.
    pub fn start(
        &self,
        dir: &Path,
        user: &str,
        env: &str,
        launcher: Option<Command>,
    ) -> Result<(Child, u16)> {
        fs::create_dir_all(dir.join("home/.local/state/nix/profiles"))?;
        fs::create_dir_all(dir.join("profiles"))?;
        let port = free_port()?;
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {auth}\nPermitRootLogin yes\nStrictModes no\nUsePAM no\nPidFile none\n\
                 SetEnv HOME={home} USER={user} LOGNAME={user} STUB_STATE_DIR={dir} XTASK_SYSTEM_PROFILE={dir}/profiles/system XTASK_DROID_PROFILE={dir}/profiles/nix-on-droid TMPDIR={dir} \"NIX_CONFIG=substituters =\"{env}\n",
                hk = self.host.display(),
                auth = self.authorized.display(),
                home = dir.join("home").display(),
                dir = dir.display(),
            ),
        )?;
        let log = dir.join("sshd.log");
        let mut child = launcher
            .unwrap_or_else(|| Command::new(SSHD))
            .arg("-f")
            .arg(&config)
            .args(["-D", "-e"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting sshd")?;
        // Bounded: sshd listens within milliseconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "sshd did not start: {}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok((child, port))
    }
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
