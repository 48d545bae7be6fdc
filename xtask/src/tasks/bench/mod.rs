//! `cargo xtask bench`: the figures the issues name, each measured as a ratio against the
//! plain nix commands run in the same benchmark on the same generated fixture. Median of
//! `--runs` runs; results on stdout as a table (or pass a filter to run some).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{Ctx, cli::Bench};

mod check;
mod list;
mod switch;

/// One benchmark: a name, and a function that measures it.
type BenchFn = fn(&Bencher) -> Result<Vec<Figure>>;

const BENCHES: &[(&str, BenchFn)] = &[
    ("list", list::run),
    ("check", check::run),
    ("switch", switch::run),
];

/// One reported figure: our time, the baseline's, and the bound the issue sets.
pub struct Figure {
    pub name: String,
    pub ours: Duration,
    pub baseline: Option<(String, Duration)>,
    pub bound: String,
}

pub struct Bencher {
    pub runs: usize,
    pub homes: usize,
    pub hosts: usize,
    /// The built xtask binary (the one running now).
    pub xtask: PathBuf,
    /// The repository (for lib/ and the stub builders).
    pub root: PathBuf,
}

impl Bencher {
    /// Median wall time of `runs` runs of `f` (after one warm-up run).
    pub fn median(&self, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
        f()?;
        let mut times = Vec::with_capacity(self.runs);
        for _ in 0..self.runs.max(1) {
            let start = Instant::now();
            f()?;
            times.push(start.elapsed());
        }
        times.sort();
        Ok(times[times.len() / 2])
    }

    /// Runs a command to completion, failing on a non-zero exit.
    pub fn run(cmd: &mut Command) -> Result<()> {
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        if !out.status.success() {
            bail!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// The xtask binary, run in `dir` with offline nix settings.
    pub fn xtask(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.xtask);
        cmd.current_dir(dir)
            .env("NIX_CONFIG", "substituters =\nwarn-dirty = false\n");
        cmd
    }

    /// Plain nix with flakes enabled, as the baselines run it.
    pub fn nix(&self, dir: &Path) -> Command {
        let mut cmd = Command::new("nix");
        cmd.current_dir(dir)
            .env("NIX_CONFIG", "substituters =\nwarn-dirty = false\n")
            .args(["--extra-experimental-features", crate::nix::FEATURES]);
        cmd
    }
}

impl Bench {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let bencher = Bencher {
            runs: self.runs,
            homes: self.homes,
            hosts: self.hosts,
            xtask: std::env::current_exe().context("locating the xtask binary")?,
            root: ctx.root.clone(),
        };
        println!(
            "{:<48} {:>10} {:>10} {:>7}  bound (issue)",
            "figure", "xtask", "baseline", "ratio"
        );
        for (name, f) in BENCHES {
            if self
                .filter
                .as_deref()
                .is_some_and(|flt| !name.contains(flt))
            {
                continue;
            }
            for fig in f(&bencher)? {
                let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1000.0);
                let (base, ratio) = match &fig.baseline {
                    Some((_, b)) => (
                        ms(*b),
                        format!("{:.2}", fig.ours.as_secs_f64() / b.as_secs_f64()),
                    ),
                    None => ("-".into(), "-".into()),
                };
                println!(
                    "{:<48} {:>10} {:>10} {:>7}  {}",
                    fig.name,
                    ms(fig.ours),
                    base,
                    ratio,
                    fig.bound
                );
                if let Some((what, _)) = &fig.baseline {
                    println!("    baseline: {what}");
                }
            }
        }
        Ok(())
    }
}
