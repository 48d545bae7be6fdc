//! Figures of the `check` issue, on fixtures generated here (the repo's lib/ with the stub
//! builders, in a fresh git repository):
//! - the batched evaluation of 100 homes vs. a loop of one `nix eval` per home (>= 10x);
//! - `check --lint-only` on 1000 homes and 100 hosts (<= 50 ms): every `.nix` file parsed
//!   (or known unchanged from the lint cache), the imports and sources resolved against
//!   the files git tracks, meta.nix read; without the cache and with it;
//! - `check` on a clean 100-home fixture vs. the single `nix eval` it runs (<= 1.2x).

use std::{fs, process::Command};

use anyhow::Result;

use super::{Bencher, Figure, Scratch};
use crate::tasks::check::{Target, batch_expr, static_lint};

/// A fixture flake with `homes` users (each with an @global part, every tenth with a host
/// part) and `hosts` hosts with meta.nix, committed in a new git repository. Each home
/// imports a shared module and reads a shared dotfile (modules/), so the lint has imports
/// and sources to resolve.
fn fixture(b: &Bencher, tag: &str, homes: usize, hosts: usize) -> Result<Scratch> {
    let fx = Scratch::new(&format!("check-{tag}"))?;
    let mut files = Vec::new();
    for h in 0..hosts {
        files.push((
            format!("systems/h{h}/default.nix"),
            "{ ... }:\n{\n  system.stateVersion = \"26.05\";\n}\n".to_string(),
        ));
        files.push((
            format!("systems/h{h}/meta.nix"),
            "{ system = \"x86_64-linux\"; }\n".to_string(),
        ));
    }
    files.push((
        "modules/programs.nix".to_string(),
        "{ ... }:\n{\n  home.packages = [ \"git\" ];\n}\n".to_string(),
    ));
    files.push(("modules/profile".to_string(), "# profile\n".to_string()));
    for u in 0..homes {
        files.push((
            format!("homes/u{u}/default.nix"),
            format!(
                "{{ lib, ... }}:\n{{\n  imports = [ ../../modules/programs.nix ];\n  home.packages = [ \"p{u}\" ];\n  home.file.\"f{u}\".text = \"{u}\";\n  home.file.\".profile\".text = builtins.readFile ../../modules/profile;\n}}\n"
            ),
        ));
        files.push((
            format!("homes/u{u}@global/default.nix"),
            "{ home.packages = [ \"g\" ]; }\n".to_string(),
        ));
        if hosts > 0 && u % 10 == 0 {
            files.push((
                format!("homes/u{u}@h{}/default.nix", u % hosts),
                "{ home.packages = [ \"h\" ]; }\n".to_string(),
            ));
        }
    }
    b.fixture_flake(&fx.0, &files)?;
    Ok(fx)
}

pub fn run(b: &Bencher) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let system = crate::nix::current_system();

    // 1. Batched evaluation vs. one nix process per home, same fixture, same run.
    let fx = fixture(b, "eval", b.homes, 0)?;
    let targets: Vec<Target> = (0..b.homes)
        .map(|u| Target::home(&format!("u{u}"), &system))
        .collect();
    let expr = batch_expr(&fx.0, &targets);
    let batched = b.median(|| {
        Bencher::run(
            b.nix(&fx.0)
                .args(["eval", "--json", "--impure", "--expr", &expr]),
        )
    })?;
    let looped = b.median(|| {
        for t in &targets {
            let attr = format!("{}#{}.drvPath", fx.0.display(), t.attr());
            Bencher::run(b.nix(&fx.0).args(["eval", "--raw", &attr]))?;
        }
        Ok(())
    })?;
    figures.push(Figure {
        name: format!("batched eval, {} homes", b.homes),
        ours: batched,
        baseline: Some((
            format!(
                "{} x `nix eval --raw DIR#…activationPackage.drvPath`",
                b.homes
            ),
            looped,
        )),
        bound: "ratio <= 0.10 (>= 10x faster)".into(),
    });

    // 3. `check` on a clean fixture vs. the single nix eval it runs: 100 homes as the
    // issue states it, and with hosts too (their meta.nix files cost a second nix process,
    // which runs in parallel with the evaluation).
    for hosts in [0, b.hosts] {
        let fx = fixture(b, "clean", b.homes, hosts)?;
        let mut targets: Vec<Target> = (0..b.homes)
            .map(|u| Target::home(&format!("u{u}"), &system))
            .collect();
        targets.extend((0..hosts).map(|h| Target::host(&format!("h{h}"))));
        let expr = batch_expr(&fx.0, &targets);
        let single = || {
            Bencher::run(
                b.nix(&fx.0)
                    .args(["eval", "--json", "--impure", "--expr", &expr]),
            )
        };
        let check = || Bencher::run(b.xtask(&fx.0).args(["check"]));
        let times = b.alternate(&[&check, &single])?;
        let (check, single) = (times[0], times[1]);
        figures.push(Figure {
            name: format!("check, clean, {} homes + {hosts} hosts", b.homes),
            ours: check,
            baseline: Some((
                "the one batched `nix eval --impure --expr` check runs".into(),
                single,
            )),
            bound: "ratio <= 1.2".into(),
        });
    }

    // 2. Static lint at 1000 homes and 100 hosts, the whole `check --lint-only` (process
    // start included; every meta.nix here is a literal, so no nix process runs): the
    // scan, ~2200 .nix files parsed, 2000 path literals checked, a git call, 100
    // meta.nix. Measured without the lint cache (a first run: a fresh clone, CI) and
    // with it (any later run: files unchanged since are not parsed again), alternating.
    let fx = fixture(b, "lint", 1000, 100)?;
    // The figure counts only if the files were parsed and their paths resolved: a broken
    // file and a missing import must be found in this very fixture.
    fs::write(
        fx.0.join("homes/u7@global/default.nix"),
        "{ programs = ; }\n",
    )?;
    fs::write(
        fx.0.join("homes/u8/default.nix"),
        "{ imports = [ ./gone.nix ]; }\n",
    )?;
    let codes: Vec<&str> = static_lint(&fx.0)?.iter().map(|f| f.code).collect();
    anyhow::ensure!(
        codes == ["syntax-error", "missing-path"],
        "the lint did not parse the fixture: {codes:?}"
    );
    Bencher::run(
        Command::new("git")
            .args(["checkout", "-q", "--", "."])
            .current_dir(&fx.0),
    )?;
    // The cache trusts only files that settled two seconds before the run.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (cold_dir, warm_dir) = (fx.0.join(".cache-cold"), fx.0.join(".cache-warm"));
    let lint = |cache: &std::path::Path| {
        let mut cmd = b.xtask(&fx.0);
        cmd.env("XDG_CACHE_HOME", cache)
            .args(["check", "--lint-only"]);
        Bencher::run(&mut cmd)
    };
    let cold = || {
        let _ = fs::remove_dir_all(&cold_dir);
        lint(&cold_dir)
    };
    let warm = || lint(&warm_dir);
    let times = b.alternate(&[&cold, &warm])?;
    let (cold_time, warm_time) = (times[0], times[1]);
    figures.push(Figure {
        name: "check --lint-only, 1000+100, no lint cache (first run)".into(),
        ours: cold_time,
        baseline: None,
        bound: "<= 50 ms".into(),
    });
    figures.push(Figure {
        name: "check --lint-only, 1000+100, lint cache (later runs)".into(),
        ours: warm_time,
        baseline: None,
        bound: "<= 50 ms".into(),
    });
    Ok(figures)
}
