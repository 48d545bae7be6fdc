//! What the demo checks in the throwaway `$HOME` after each step.

use std::{fs, path::Path};

use anyhow::{Result, anyhow};

use super::{OLD_BASHRC, USER, World};
use crate::home::UserEnv;

pub(super) fn expect(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond { Ok(()) } else { Err(anyhow!(what())) }
}

/// `~/rel` is Home Manager's link (into a `*-home-manager-files` store path) with `text`.
pub(super) fn expect_managed(w: &World, rel: &str, text: &str) -> Result<()> {
    let path = w.home.join(rel);
    let target = fs::read_link(&path).unwrap_or_default();
    expect(
        target.to_string_lossy().contains("-home-manager-files/"),
        || {
            format!(
                "~/{rel} to be a link into the generation's home-manager-files; found {}",
                describe(&path)
            )
        },
    )?;
    let found = fs::read_to_string(&path).unwrap_or_default();
    expect(found == text, || {
        format!("~/{rel} to read {text:?}; it reads {found:?}")
    })
}

/// `~/rel` is a regular file with `text`.
pub(super) fn expect_file(w: &World, rel: &str, text: &str) -> Result<()> {
    let path = w.home.join(rel);
    let plain = fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
    let found = fs::read_to_string(&path).unwrap_or_default();
    expect(plain && found == text, || {
        format!(
            "~/{rel} to be a regular file reading {text:?}; found {}",
            describe(&path)
        )
    })
}

/// `~/.bashrc` is still the user's own file.
pub(super) fn expect_old_bashrc(w: &World) -> Result<()> {
    expect_file(w, ".bashrc", OLD_BASHRC)?;
    expect(!w.home.join(".bashrc.bak").exists(), || {
        "no ~/.bashrc.bak yet".into()
    })
}

/// The profile has exactly the generations `ids`, and `current` is the current one, read
/// as every task reads a profile.
pub(super) fn expect_generations(w: &World, ids: &[u64], current: u64) -> Result<()> {
    let profile = UserEnv::new(USER, &w.home).profile();
    let mut found: Vec<u64> = profile
        .generations()
        .map(|gens| gens.iter().map(|g| g.id).collect())
        .unwrap_or_default();
    found.sort_unstable();
    let active = profile.current_id();
    expect(found == ids && active == Some(current), || {
        format!(
            "profile generations {ids:?} with {current} current in {}; found {found:?} with {} current",
            profile.dir.display(),
            active.map_or("none".into(), |a| a.to_string())
        )
    })
}

/// What is at `path`, for a message.
fn describe(path: &Path) -> String {
    match fs::symlink_metadata(path) {
        Err(_) => "nothing".into(),
        Ok(m) if m.file_type().is_symlink() => format!(
            "a link to {}",
            fs::read_link(path).unwrap_or_default().display()
        ),
        Ok(m) if m.is_dir() => "a directory".into(),
        Ok(_) => format!(
            "a file reading {:?}",
            fs::read_to_string(path).unwrap_or_default()
        ),
    }
}
