//! Figures of the standalone deployment issue:
//! - `switch` wall time vs the raw floor, `nix build` + `nix-env --profile … --set` +
//!   `activate` as one shell script, on the same fixture in the same run (bound: 1.10×);
//! - the pre-flight of a home with 5000 files (bound: 100 ms), measured on the function.
//!
//! The fixture is a flake with the repo's lib/ and the test stub builders (a real
//! generation with the contract's `activate`), switched repeatedly into a private HOME.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use std::time::Instant;

use super::{Bencher, Figure, Scratch, median};
use crate::home::{self, Action, Backup, UserEnv};

const USER: &str = "benchuser";
const FILES: usize = 50;
const PREFLIGHT_FILES: usize = 5000;

pub fn run(b: &Bencher) -> Result<Vec<Figure>> {
    let tmp = Scratch::new("switch")?;
    figures(b, &tmp.0)
}

fn figures(b: &Bencher, tmp: &Path) -> Result<Vec<Figure>> {
    let root = tmp.join("repo");
    let home = tmp.join("home");
    fixture(b, &root, &home)?;
    let profiles = home.join(".local/state/nix/profiles");
    fs::create_dir_all(&profiles)?;
    let system = crate::nix::current_system();
    let attr = format!("{}#{}", root.display(), home::home_attr(USER, &system));
    let work = tmp.join("work");
    fs::create_dir_all(&work)?;

    // The floor: what `home-manager switch` does, with nothing around it.
    let script = format!(
        "set -e\n\
         nix --extra-experimental-features 'nix-command flakes' build --out-link '{w}/generation' '{attr}'\n\
         gen=$(readlink '{w}/generation')\n\
         nix-env --profile '{p}/home-manager' --set \"$gen\"\n\
         HOME_MANAGER_BACKUP_EXT=bak \"$gen/activate\" --driver-version 1 > /dev/null\n",
        w = work.display(),
        p = profiles.display(),
    );
    let env = |cmd: &mut Command| {
        cmd.current_dir(&root)
            .env("HOME", &home)
            .env("USER", USER)
            .env("NIX_CONFIG", super::NIX_CONFIG)
            .env_remove("XDG_STATE_HOME");
    };
    let floor_run = || {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        env(&mut cmd);
        Bencher::run(&mut cmd)
    };
    let ours_run = || {
        let mut cmd = b.xtask(&root);
        cmd.arg("switch");
        env(&mut cmd);
        Bencher::run(&mut cmd)
    };
    // Alternating runs: the machine is shared, and a load spike during one side's block of
    // runs would otherwise decide the ratio.
    floor_run()?;
    ours_run()?;
    let (mut floor, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..b.runs.max(1) {
        let t = Instant::now();
        floor_run()?;
        floor.push(t.elapsed());
        let t = Instant::now();
        ours_run()?;
        ours.push(t.elapsed());
    }
    let (floor, ours) = (median(floor), median(ours));

    let (new, identical, compared) = preflight_figures(b, tmp)?;
    Ok(vec![
        Figure {
            name: format!("switch, home of {FILES} files"),
            ours,
            baseline: Some((
                "sh: nix build + nix-env --profile --set + activate".into(),
                floor,
            )),
            bound: format!(
                "{:.2}x the floor (issue: <= 1.10x)",
                ours.as_secs_f64() / floor.as_secs_f64()
            ),
        },
        Figure {
            name: format!("pre-flight, {PREFLIGHT_FILES} files, empty HOME"),
            ours: new,
            baseline: None,
            bound: "issue: <= 100 ms".into(),
        },
        Figure {
            name: format!("pre-flight, {PREFLIGHT_FILES} files, all present, -b bak"),
            ours: identical,
            baseline: None,
            bound: "issue: <= 100 ms".into(),
        },
        Figure {
            name: format!("pre-flight, {PREFLIGHT_FILES} files, all identical, no ext"),
            ours: compared,
            baseline: None,
            bound: "issue: <= 100 ms".into(),
        },
    ])
}

/// A git flake with one home of FILES files whose homeDirectory is `home`.
fn fixture(b: &Bencher, root: &Path, home: &Path) -> Result<()> {
    fs::create_dir_all(home)?;
    let mut module = format!(
        "{{ ... }}:\n{{\n  home.homeDirectory = \"{}\";\n",
        home.display()
    );
    for i in 0..FILES {
        module.push_str(&format!(
            "  home.file.\".config/app{}/file{i}\".text = \"content {i}\\n\";\n",
            i % 5
        ));
    }
    module.push_str("}\n");
    b.fixture_flake(root, &[(format!("homes/{USER}/default.nix"), module)])
}

/// The pre-flight on a generated `home-files/` of PREFLIGHT_FILES links in 50 directories:
/// into an empty HOME; into a HOME where every file exists, with the repo's extension
/// (each one moved to FILE.bak, its backup path checked); and the same HOME with no
/// extension (the costliest case: each file is read and compared, to keep or block).
fn preflight_figures(
    b: &Bencher,
    tmp: &Path,
) -> Result<(
    std::time::Duration,
    std::time::Duration,
    std::time::Duration,
)> {
    let files = tmp.join("pf/home-files");
    let source = tmp.join("pf/source");
    let empty = tmp.join("pf/empty-home");
    let full = tmp.join("pf/full-home");
    fs::create_dir_all(&source)?;
    fs::create_dir_all(&empty)?;
    for i in 0..PREFLIGHT_FILES {
        let rel = PathBuf::from(format!(".config/dir{}/file{i}", i % 50));
        let src = source.join(format!("f{i}"));
        fs::write(&src, format!("line {i}\n"))?;
        for dir in [&files, &full] {
            fs::create_dir_all(dir.join(&rel).parent().context("no parent")?)?;
        }
        std::os::unix::fs::symlink(&src, files.join(&rel))?;
        fs::write(full.join(&rel), format!("line {i}\n"))?;
    }
    // The repo's default (`bak`), as a plain switch uses it, and no extension (`-b ""`).
    let bak = Backup::new(&crate::repo::Defaults::default(), None, None, false);
    let none = Backup::new(&crate::repo::Defaults::default(), Some(""), None, false);
    let check = |home: &Path, backup: &Backup, action: Action, expect: usize| {
        let env = UserEnv::new(USER, home);
        let pf = home::preflight_files(&files, &[], &env, backup)?;
        anyhow::ensure!(
            pf.files == PREFLIGHT_FILES && pf.summary.get(&action).copied().unwrap_or(0) == expect,
            "unexpected pre-flight result"
        );
        Ok(())
    };
    let new = b.median(|| check(&empty, &bak, Action::Link, PREFLIGHT_FILES))?;
    let backed_up = b.median(|| check(&full, &bak, Action::Backup, PREFLIGHT_FILES))?;
    let compared = b.median(|| check(&full, &none, Action::Keep, PREFLIGHT_FILES))?;
    Ok((new, backed_up, compared))
}
