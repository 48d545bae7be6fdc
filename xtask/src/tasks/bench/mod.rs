//! `cargo xtask bench`: the figures the issues name, each measured as a ratio against the
//! plain nix commands run in the same benchmark on the same generated fixture. Median of
//! `--runs` runs; results on stdout as a table (or pass a filter to run some).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{Ctx, cli::Bench};

mod check;
mod deploy;
mod diff;
mod gc;
mod list;
mod switch;

/// One benchmark: a name, and a function that measures it.
type BenchFn = fn(&Bencher) -> Result<Vec<Figure>>;

const BENCHES: &[(&str, BenchFn)] = &[
    ("list", list::run),
    ("check", check::run),
    ("switch", switch::run),
    ("diff", diff::run),
    ("deploy", deploy::run),
    ("gc", gc::run),
];

/// One reported figure: our time, the baseline's, and the bound the issue sets.
pub struct Figure {
    pub name: String,
    pub ours: Duration,
    pub baseline: Option<(String, Duration)>,
    pub bound: String,
}

impl Figure {
    /// A figure that could not be measured here, with the reason in its bound column.
    pub fn skipped(name: String, why: &str) -> Figure {
        Figure {
            name,
            ours: Duration::ZERO,
            baseline: None,
            bound: why.to_string(),
        }
    }
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

/// Offline nix for the fixtures, as in the tests (xtask/tests/common): no substituters,
/// and no build sandbox, since the stub builders use the host's /bin/sh and coreutils.
pub const NIX_CONFIG: &str = "substituters =\nwarn-dirty = false\nsandbox = false\n";

/// A scratch directory under the system temp dir, removed when dropped (the xtask has no
/// tempfile dependency outside tests).
/// A benchmark's private directory (a tempfile directory: an unpredictable name, removed
/// when the benchmark ends).
pub struct Scratch(
    pub PathBuf,
    // Held only for its Drop, which removes the directory.
    #[allow(dead_code)] tempfile::TempDir,
);

impl Scratch {
    pub fn new(tag: &str) -> Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("xtask-bench-{tag}-"))
            .tempdir()
            .context("creating a temporary directory for the benchmark")?;
        Ok(Scratch(dir.path().to_path_buf(), dir))
    }
}

/// The median of measured times.
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
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
        Ok(median(times))
    }

    /// Medians of `runs` rounds of the measurements `fs`, one of each per round, after a
    /// warm-up round: a load spike on this shared machine then hits all of them, not the
    /// one that happened to run at that moment, so their ratios hold.
    pub fn alternate(&self, fs: &[&dyn Fn() -> Result<()>]) -> Result<Vec<Duration>> {
        for f in fs {
            f()?;
        }
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); fs.len()];
        for _ in 0..self.runs.max(1) {
            for (f, t) in fs.iter().zip(times.iter_mut()) {
                let start = Instant::now();
                f()?;
                t.push(start.elapsed());
            }
        }
        Ok(times.into_iter().map(median).collect())
    }

    /// Writes the fixture flake of the integration tests (xtask/tests/fixtures: the repo's
    /// lib/ with the stub builders, so benchmarks measure what the tests check) at `root`,
    /// plus `files`
    /// (relative path, text), and commits it in a new git repository: flakes only see
    /// tracked files.
    pub fn fixture_flake(&self, root: &Path, files: &[(String, String)]) -> Result<()> {
        let fixtures = self.root.join("xtask/tests/fixtures");
        let copies = [
            ("lib/default.nix", self.root.join("lib/default.nix")),
            // The rules and defaults the fixture flake passes to lib/.
            ("Cargo.toml", self.root.join("Cargo.toml")),
            ("stub-builders.nix", fixtures.join("stub-builders.nix")),
            ("activate.sh", fixtures.join("activate.sh")),
            (
                "check-link-targets.sh",
                fixtures.join("check-link-targets.sh"),
            ),
            ("flake.nix", fixtures.join("flake.nix")),
        ];
        let mut all = Vec::new();
        for (rel, src) in copies {
            let text =
                fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
            all.push((rel.to_string(), text));
        }
        for (rel, text) in all.iter().chain(files) {
            let path = root.join(rel);
            fs::create_dir_all(path.parent().unwrap_or(root))?;
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "-A"],
            &[
                "-c",
                "user.email=bench@example.org",
                "-c",
                "user.name=bench",
                "commit",
                "-q",
                "-m",
                "bench fixture",
            ],
        ] {
            Bencher::run(Command::new("git").args(args).current_dir(root))?;
        }
        Ok(())
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
        cmd.current_dir(dir).env("NIX_CONFIG", NIX_CONFIG);
        cmd
    }

    /// Plain nix with flakes enabled, as the baselines run it.
    pub fn nix(&self, dir: &Path) -> Command {
        let mut cmd = Command::new("nix");
        cmd.current_dir(dir)
            .env("NIX_CONFIG", NIX_CONFIG)
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
        crate::term::out(&format!(
            "{:<48} {:>10} {:>10} {:>7}  bound (issue)",
            "figure", "xtask", "baseline", "ratio"
        ));
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
                let ours = if fig.ours.is_zero() && fig.baseline.is_none() {
                    "-".to_string()
                } else {
                    ms(fig.ours)
                };
                crate::term::out(&format!(
                    "{:<48} {:>10} {:>10} {:>7}  {}",
                    fig.name, ours, base, ratio, fig.bound
                ));
                if let Some((what, _)) = &fig.baseline {
                    crate::term::out(&format!("    baseline: {what}"));
                }
            }
        }
        Ok(())
    }
}
