//! Figures of issue 12's `diff`: two generations of 2000 store paths with 200 differences
//! (100 version changes, 50 added and 50 removed packages), compared
//! - by `diff`'s package part (`closure::PackageDiff`, `nix-store --query --graphml` per side not
//!   in the closure cache, at once, and the grouping here), in process, with nothing
//!   cached, with the old side cached (a diff after a build) and with both;
//! - by the whole `cargo xtask diff OLD NEW --json` command, the old side cached;
//!
//! each against `nix store diff-closures OLD NEW` on the same pair in the same run (issue:
//! ours faster). The generations are built from `builtins.toFile` packages named
//! `pkgN-1.0`, so nothing but the two roots needs a builder.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, ensure};

use super::{Bencher, Figure, Scratch};
use crate::{closure::PackageDiff, nix::Nix};

const PATHS: usize = 2000;

/// `gen "a"`: pkg0-1.0 … pkg1999-1.0; `gen "b"`: pkg1800…1899 at 2.0, pkg1900…1949 gone,
/// new0…new49 added.
const GENERATIONS: &str = r#"
let
  pkgs = variant:
    if variant == "a" then
      builtins.genList (i: "pkg${toString i}-1.0") 2000
    else
      builtins.genList (i: "pkg${toString i}-1.0") 1800
      ++ builtins.genList (i: "pkg${toString (i + 1800)}-2.0") 100
      ++ builtins.genList (i: "pkg${toString (i + 1950)}-1.0") 50
      ++ builtins.genList (i: "new${toString i}-1.0") 50;
  gen = variant: derivation {
    name = "bench-generation";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    refs = builtins.concatStringsSep "\n" (map (n: builtins.toFile n "${n}\n") (pkgs variant));
    # Two thousand paths are longer than one environment variable may be.
    passAsFile = [ "refs" ];
    PATH = "/usr/bin:/bin";
    args = [ "-c" "mkdir -p $out/home-files && while read -r p; do echo \"$p\"; done < \"$refsPath\" > $out/refs" ];
  };
in
{ a = gen "a"; b = gen "b"; }
"#;

pub fn run(b: &Bencher) -> Result<Vec<Figure>> {
    let tmp = Scratch::new("diff")?;
    let (old, new) = generations(b, &tmp.0)?;
    let sh = xshell::Shell::new()?;
    let nix = Nix::new(&sh, false);
    // The closure cache (`closure::Summary::of_all`) decides how much nix runs: the
    // figures are taken with nothing cached, with the old side cached (a diff after a
    // build: the active generation was summarised by the last diff or switch) and with
    // both (the same diff again). This process's cache entries for the two paths are
    // removed as each case needs; the command gets a cache directory of its own.
    let entry = |p: &Path| -> Result<PathBuf> {
        let name = p.file_name().context("a store path without a name")?;
        Ok(crate::cache::dir("closures")
            .context("no cache directory (HOME is not set)")?
            .join(name))
    };
    let (old_entry, new_entry) = (entry(&old)?, entry(&new)?);
    let forget = |paths: &[&PathBuf]| {
        for p in paths {
            let _ = fs::remove_file(p);
        }
    };
    let packages = || -> Result<()> {
        let d = PackageDiff::between(&nix, Some(&old), &new)?;
        ensure!(
            (d.changed.len(), d.added.len(), d.removed.len()) == (100, 50, 50),
            "the package diff found {} changed, {} added, {} removed; expected 100, 50, 50",
            d.changed.len(),
            d.added.len(),
            d.removed.len()
        );
        Ok(())
    };
    let cold = || {
        forget(&[&old_entry, &new_entry]);
        packages()
    };
    let after_build = || {
        forget(&[&new_entry]);
        packages()
    };
    let again = || packages();
    let cache = tmp.0.join("cache");
    let command = || {
        let _ = fs::remove_file(
            cache
                .join("homelab-xtask/closures")
                .join(new_entry.file_name().unwrap_or_default()),
        );
        let mut cmd = b.xtask(&tmp.0);
        cmd.env("XDG_CACHE_HOME", &cache);
        // Any flake will do: two paths need no home.
        cmd.arg("--flake").arg(&b.root);
        cmd.arg("diff").arg(&old).arg(&new).arg("--json");
        Bencher::run(&mut cmd)
    };
    let baseline = || {
        let mut cmd = b.nix(&tmp.0);
        cmd.args(["store", "diff-closures"]).arg(&old).arg(&new);
        Bencher::run(&mut cmd)
    };
    // Alternating runs, as in the switch figure: a load spike must not decide the ratio.
    let times = b.alternate(&[&cold, &after_build, &again, &command, &baseline])?;
    forget(&[&old_entry, &new_entry]);
    let base = times[4];
    let what = "nix store diff-closures OLD NEW".to_string();
    let figure = |name: &str, ours: Duration| Figure {
        name: name.into(),
        ours,
        baseline: Some((what.clone(), base)),
        bound: format!(
            "{:.2}x diff-closures (issue: faster)",
            ours.as_secs_f64() / base.as_secs_f64()
        ),
    };
    Ok(vec![
        figure(
            &format!("diff packages, {PATHS} paths, 200 changes, nothing cached"),
            times[0],
        ),
        figure(
            "diff packages, the same, old side cached (after a build)",
            times[1],
        ),
        figure(
            "diff packages, the same, both sides cached (again)",
            times[2],
        ),
        figure(
            "`diff OLD NEW --json`, whole command, old side cached",
            times[3],
        ),
    ])
}

/// Builds the two generations (out-links in `dir`, so they survive a collection while
/// the benchmark runs) and returns their store paths.
fn generations(b: &Bencher, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let file = dir.join("generations.nix");
    fs::write(&file, GENERATIONS)?;
    let mut paths = Vec::new();
    for variant in ["a", "b"] {
        let link = dir.join(format!("gen-{variant}"));
        let mut cmd: Command = b.nix(dir);
        cmd.args(["build", "--impure", "--out-link"])
            .arg(&link)
            .arg("--file")
            .arg(&file)
            .arg(variant);
        Bencher::run(&mut cmd)?;
        paths.push(fs::canonicalize(&link).with_context(|| format!("reading {}", link.display()))?);
    }
    let new = paths.pop().context("no generation b")?;
    let old = paths.pop().context("no generation a")?;
    Ok((old, new))
}
