//! Sudo without prompts mid-run: every host is probed before anything runs, and a
//! password, when one is needed and allowed, is asked once, up front.

use std::io::BufRead;

use anyhow::{Context, Result, bail};

use super::Target;
use crate::{
    remote::{self, Sudo},
    term,
};

/// The sudo mode of each target, probed (`sudo -n true`, all at once) before anything
/// runs, and the password when one is needed and `--ask-sudo-password` allows asking
/// (once).
pub(super) fn sudo_modes(targets: &[Target], ask: bool) -> Result<(Vec<Sudo>, Option<String>)> {
    // The probes run at once (one ssh connection each, the slow part), not one by one.
    let probes: Vec<Option<Result<bool>>> = std::thread::scope(|scope| {
        let running: Vec<_> = targets
            .iter()
            .map(|t| {
                t.needs_sudo().then(|| {
                    scope.spawn(|| {
                        remote::run_prefixed(t.remote().ssh("sudo -n true"), "", None, false)
                            .map(|ran| ran.status.success())
                    })
                })
            })
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the sudo probe panicked")))
                })
            })
            .collect()
    });
    let mut modes = Vec::new();
    let mut need_password = Vec::new();
    for (t, probe) in targets.iter().zip(probes) {
        match probe.transpose()? {
            None => modes.push(Sudo::No),
            Some(true) => modes.push(Sudo::NoPassword),
            Some(false) => {
                modes.push(Sudo::Password);
                need_password.push(t.name.clone());
            }
        }
    }
    if need_password.is_empty() {
        return Ok((modes, None));
    }
    if !ask {
        bail!(
            "sudo asks for a password on {}; pass --ask-sudo-password to type it once now, or allow the ssh user passwordless sudo there",
            need_password.join(", ")
        );
    }
    Ok((modes, Some(read_password(&need_password)?)))
}

/// Reads the sudo password from the terminal, without echo, before any parallel output.
fn read_password(hosts: &[String]) -> Result<String> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("--ask-sudo-password needs a terminal to read the password from")?;
    term::info(&format!("sudo password for {}: ", hosts.join(", ")));
    let old = rustix::termios::tcgetattr(&tty).ok();
    if let Some(old) = &old {
        let mut quiet = old.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &quiet);
    }
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if let Some(old) = &old {
        let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, old);
    }
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
