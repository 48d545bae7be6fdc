//! Figure of issue 12's `gc`: selecting what to delete among 1000 generations (bound:
//! 20 ms), in process: listing the profile's generations (`Profile::generations`: read the
//! directory, each link's target and mtime), the current one, the in-use check and
//! `home::expired` with `--keep 10 --older-than 30d`, as `gc` runs them.
//!
//! The profile is generated: `home-manager-1…1000-link`, one an hour (their mtimes set, half past),
//! pointing to a few real store paths (`nix-store --add`); the newest is current and is the
//! one `$HOME` has (`current-home`), and only it points to its store path.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, ensure};

use super::{Bencher, Figure, Scratch};
use crate::home::{self, Profile};

const GENERATIONS: u64 = 1000;
const KEEP: usize = 10;
const OLDER_THAN: u64 = 30 * 24 * 3600;

pub fn run(b: &Bencher) -> Result<Vec<Figure>> {
    let tmp = Scratch::new("gc")?;
    let (profiles, current_home) = fixture(&tmp.0)?;
    let now = SystemTime::now();
    // Generation N was made (1000 - N) hours and half an hour ago: older than 30 days are
    // 1…280 (the newest 10 would be kept whatever their age).
    let expected = (1..GENERATIONS).filter(|n| GENERATIONS - n >= 720).count();
    let select = || -> Result<()> {
        let profile = Profile::new(profiles.clone(), "home-manager");
        let gens = profile.generations()?;
        let current = profile.current_id();
        let in_use: Vec<PathBuf> = fs::read_link(&current_home).into_iter().collect();
        for a in &in_use {
            ensure!(
                gens.iter().any(|g| home::is_or_specialises(&g.path, a)),
                "the generation in use is not in the profile"
            );
        }
        let protected = |g: &home::Generation| {
            Some(g.id) == current || in_use.iter().any(|a| home::is_or_specialises(&g.path, a))
        };
        let doomed = home::expired(&gens, KEEP, Some(OLDER_THAN), now, protected);
        ensure!(
            gens.len() == GENERATIONS as usize && doomed.len() == expected,
            "selected {} of {} generations; expected {expected} of {GENERATIONS}",
            doomed.len(),
            gens.len()
        );
        Ok(())
    };
    let ours = b.median(select)?;
    Ok(vec![Figure {
        name: format!("gc: select among {GENERATIONS} generations"),
        ours,
        baseline: None,
        bound: format!("--keep {KEEP} --older-than 30d; issue: <= 20 ms"),
    }])
}

/// The profile directory (1000 generation links, the profile link to the newest) and the
/// `current-home` root, under `dir`.
fn fixture(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    // Five real store paths: the first for the current generation only.
    let mut paths = Vec::new();
    for i in 0..5 {
        let src = dir.join(format!("bench-gc-generation-{i}"));
        fs::create_dir_all(src.join("home-files"))?;
        fs::write(src.join("gen-version"), format!("{i}\n"))?;
        let out = Command::new("nix-store")
            .arg("--add")
            .arg(&src)
            .env("NIX_CONFIG", super::NIX_CONFIG)
            .output()
            .context("running nix-store --add")?;
        ensure!(
            out.status.success(),
            "nix-store --add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        paths.push(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ));
    }
    let profiles = dir.join("profiles");
    fs::create_dir_all(&profiles)?;
    let now = SystemTime::now();
    for n in 1..=GENERATIONS {
        let target = if n == GENERATIONS {
            &paths[0]
        } else {
            &paths[1 + (n as usize % 4)]
        };
        let link = profiles.join(format!("home-manager-{n}-link"));
        std::os::unix::fs::symlink(target, &link)?;
        let made = now - Duration::from_secs((GENERATIONS - n) * 3600 + 1800);
        let secs = made.duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
        let ts = rustix::fs::Timespec {
            tv_sec: secs as i64,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &link,
            &rustix::fs::Timestamps {
                last_access: ts,
                last_modification: ts,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("setting the mtime of {}", link.display()))?;
    }
    std::os::unix::fs::symlink(
        format!("home-manager-{GENERATIONS}-link"),
        profiles.join("home-manager"),
    )?;
    let current_home = dir.join("current-home");
    std::os::unix::fs::symlink(&paths[0], &current_home)?;
    Ok((profiles, current_home))
}
