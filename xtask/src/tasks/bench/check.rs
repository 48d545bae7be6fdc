//! Figures of the `check` issue, on fixtures generated here (the repo's lib/ with the stub
//! builders, in a fresh git repository):
//! - the batched evaluation of 100 homes vs. a loop of one `nix eval` per home (>= 10x);
//! - the static lint of 1000 homes and 100 hosts (<= 50 ms);
//! - `check` on a clean 100-home fixture vs. the single `nix eval` it runs (<= 1.2x).

use std::{fs, process::Command};

use anyhow::{Context, Result};

use super::{Bencher, Figure};
use crate::tasks::check::{Target, batch_expr, static_lint};

const FLAKE: &str = r#"{
  outputs =
    { self }:
    import ./lib {
      homesDir = ./homes;
      systemsDir = ./systems;
      inherit (import ./stub-builders.nix) mkHome mkSystem;
    };
}
"#;

/// A temporary fixture directory, removed on drop.
struct TempFixture(std::path::PathBuf);

impl Drop for TempFixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes a fixture flake with `homes` users (each with an @global part, every tenth with a
/// host part) and `hosts` hosts with meta.nix, committed in a new git repository.
fn fixture(b: &Bencher, tag: &str, homes: usize, hosts: usize) -> Result<TempFixture> {
    let dir = std::env::temp_dir().join(format!("xtask-bench-check-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let fx = TempFixture(dir.clone());
    let write = |rel: &str, text: &str| -> Result<()> {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap_or(&dir))?;
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write("flake.nix", FLAKE)?;
    write(
        "lib/default.nix",
        &fs::read_to_string(b.root.join("lib/default.nix"))?,
    )?;
    for f in ["stub-builders.nix", "activate.sh"] {
        write(
            f,
            &fs::read_to_string(b.root.join("xtask/tests/fixtures").join(f))?,
        )?;
    }
    for h in 0..hosts {
        write(
            &format!("systems/h{h}/default.nix"),
            "{ ... }:\n{\n  system.stateVersion = \"24.11\";\n}\n",
        )?;
        write(
            &format!("systems/h{h}/meta.nix"),
            "{ system = \"x86_64-linux\"; }\n",
        )?;
    }
    for u in 0..homes {
        write(
            &format!("homes/u{u}/default.nix"),
            &format!(
                "{{ lib, ... }}:\n{{\n  home.packages = [ \"p{u}\" ];\n  home.file.\"f{u}\".text = \"{u}\";\n}}\n"
            ),
        )?;
        write(
            &format!("homes/u{u}@global/default.nix"),
            "{ home.packages = [ \"g\" ]; }\n",
        )?;
        if hosts > 0 && u % 10 == 0 {
            write(
                &format!("homes/u{u}@h{}/default.nix", u % hosts),
                "{ home.packages = [ \"h\" ]; }\n",
            )?;
        }
    }
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.email=bench@example.org",
            "-c",
            "user.name=bench",
            "commit",
            "-q",
            "-m",
            "bench",
        ],
    ] {
        Bencher::run(Command::new("git").args(args).current_dir(&dir))?;
    }
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
        let single = b.median(|| {
            Bencher::run(
                b.nix(&fx.0)
                    .args(["eval", "--json", "--impure", "--expr", &expr]),
            )
        })?;
        let check = b.median(|| Bencher::run(b.xtask(&fx.0).args(["check"])))?;
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

    // 2. Static lint at 1000 homes and 100 hosts: in process (what the lint itself costs)
    // and the whole `check --lint-only` (process start and the one meta.nix eval included).
    let fx = fixture(b, "lint", 1000, 100)?;
    let lint = b.median(|| {
        let findings = static_lint(&fx.0)?;
        anyhow::ensure!(
            findings.is_empty(),
            "the generated fixture has findings: {:?}",
            findings.first()
        );
        Ok(())
    })?;
    figures.push(Figure {
        name: "static lint (scan + git), 1000 homes + 100 hosts".into(),
        ours: lint,
        baseline: None,
        bound: "<= 50 ms".into(),
    });
    let lint_only = b.median(|| Bencher::run(b.xtask(&fx.0).args(["check", "--lint-only"])))?;
    figures.push(Figure {
        name: "check --lint-only (incl. meta.nix eval), 1000+100".into(),
        ours: lint_only,
        baseline: None,
        bound: "(informative)".into(),
    });
    Ok(figures)
}
