//! Figures of the deploy issue (13), against "machines" of our own: one sshd per machine on
//! a loopback port, started by the deploy tests' own lab (xtask/tests/common/sshd.rs: each
//! with its own `$HOME`, `$USER` and profiles through sshd's SetEnv, sharing this
//! machine's /nix/store), stand-in activations from the test stub builders:
//! - 8 targets (4 hosts, 4 homes) with `deploy --parallel 8` vs the same 8 deployed one
//!   after another by the plain commands (`nix copy --to ssh-ng://…` + ssh running the
//!   activation); issue: ratio <= 0.5;
//! - evaluation of 50 targets: the one nix process deploy runs (and `deploy --dry-run`, the
//!   whole command) vs 50 separate `nix eval` calls; issue: >= 10x faster;
//! - one target: `deploy` vs the plain commands it stands for (`nix build` + `nix copy` +
//!   ssh activation); issue: <= 1.15x.
//!
//! Every process started here is ended before the figures are returned: the sshds (killed
//! and waited for), and whatever their sessions left running (the target side's rollback
//! timers), found by the marker in their environment and ended by pid, with bounded waits.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

use super::{Bencher, Figure, Scratch, median};
use crate::{home::shell_quote, repo::nix_string, tasks::deploy::Kind};

// The deploy tests' lab, shared rather than copied (integration tests cannot use the
// crate's modules, so the crate uses theirs).
#[path = "../../../tests/common/sshd.rs"]
mod sshd;
use sshd::{Keys, SSHD};
/// Targets of the parallel figure: hosts h0…h3 and homes u0…u3, one machine each.
const PARALLEL: usize = 8;
/// Targets of the evaluation figure.
const EVAL_TARGETS: usize = 50;

/// One "machine": an sshd on a loopback port with its own directory.
struct Machine {
    dir: PathBuf,
    port: u16,
    /// The user the sessions run as (`$USER`; a home's name), root for hosts.
    user: String,
    child: Option<Child>,
}

/// The keys and the machines; dropping it ends every process.
struct Lab {
    dir: PathBuf,
    keys: Keys,
    machines: Vec<Machine>,
}

impl Lab {
    fn new(dir: &Path) -> Result<Lab> {
        Ok(Lab {
            dir: dir.to_path_buf(),
            keys: Keys::new(dir)?,
            machines: Vec::new(),
        })
    }

    /// Starts a machine's sshd and waits (bounded) until it listens; returns its index.
    fn machine(&mut self, name: &str, user: &str) -> Result<usize> {
        let dir = self.dir.join(name);
        let (child, port) = self.keys.start(&dir, user, "", None)?;
        self.machines.push(Machine {
            dir,
            port,
            user: user.to_string(),
            child: Some(child),
        });
        Ok(self.machines.len() - 1)
    }

    /// The ssh options for machine `m`, one word each (deploy.sshOpts, NIX_SSHOPTS).
    fn ssh_opts(&self, m: &Machine) -> Vec<String> {
        self.keys.ssh_words(m.port)
    }

    /// `{ deploy = { … }; }`, a meta.nix for a target on machine `m`.
    fn meta(&self, m: &Machine) -> String {
        let opts: Vec<String> = self.ssh_opts(m).iter().map(|w| nix_string(w)).collect();
        format!(
            "{{ deploy = {{ targetHost = \"root@127.0.0.1\"; sshOpts = [ {} ]; }}; }}\n",
            opts.join(" ")
        )
    }

    /// Ends what the machines' sessions left running (processes whose environment has a
    /// machine's `STUB_STATE_DIR`, i.e. started through one of our sshds): SIGTERM by pid,
    /// a bounded wait, then SIGKILL.
    fn reap(&self) {
        let marker = format!("STUB_STATE_DIR={}/", self.dir.display());
        let ours = || -> Vec<i32> {
            let Ok(procs) = fs::read_dir("/proc") else {
                return Vec::new();
            };
            procs
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    // A zombie is gone already (its parent reaps it).
                    let zombie = stat
                        .rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
                    !zombie
                        && env
                            .split(|b| *b == 0)
                            .any(|v| v.starts_with(marker.as_bytes()))
                })
                .collect()
        };
        for signal in [rustix::process::Signal::TERM, rustix::process::Signal::KILL] {
            let pids = ours();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, signal);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while !ours().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for m in &mut self.machines {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.reap();
    }
}

pub fn run(b: &Bencher) -> Result<Vec<Figure>> {
    let names = [
        parallel_name(),
        eval_name(),
        dry_run_name(),
        one_name("host"),
        one_name("home"),
    ];
    if !Path::new(SSHD).is_file() {
        return Ok(names
            .into_iter()
            .map(|n| Figure::skipped(n, "skipped: sshd not installed"))
            .collect());
    }
    let tmp = Scratch::new("deploy")?;
    let mut lab = Lab::new(&tmp.0.join("lab"))?;
    let figures = figures(b, &tmp.0, &mut lab);
    drop(lab);
    figures
}

fn parallel_name() -> String {
    format!("{PARALLEL} targets (4 hosts, 4 homes), deploy --parallel {PARALLEL}")
}

fn eval_name() -> String {
    format!("evaluation, {EVAL_TARGETS} targets, the one nix process")
}

fn dry_run_name() -> String {
    format!("deploy --dry-run, {EVAL_TARGETS} targets (whole command)")
}

fn one_name(kind: &str) -> String {
    format!("one target ({kind}), deploy")
}

/// A target of the fixture: its kind, its name, and the machine it deploys to.
struct Target {
    kind: Kind,
    name: String,
    machine: usize,
}

fn figures(b: &Bencher, tmp: &Path, lab: &mut Lab) -> Result<Vec<Figure>> {
    let root = tmp.join("repo");
    let mut targets = Vec::new();
    for i in 0..PARALLEL / 2 {
        let m = lab.machine(&format!("h{i}"), "root")?;
        targets.push(Target {
            kind: Kind::Host,
            name: format!("h{i}"),
            machine: m,
        });
    }
    for i in 0..PARALLEL / 2 {
        let name = format!("u{i}");
        let m = lab.machine(&name, &name)?;
        targets.push(Target {
            kind: Kind::Home,
            name,
            machine: m,
        });
    }
    // The fixture: the 8 targets with deploy settings, and hosts e0… up to 50 targets in
    // all (deploy settings too, for --dry-run; never deployed for real).
    let mut files = Vec::new();
    let host_module = "{ ... }:\n{\n  system.stateVersion = \"26.05\";\n}\n".to_string();
    for t in &targets {
        let m = &lab.machines[t.machine];
        match t.kind {
            Kind::Host => {
                files.push((
                    format!("systems/{}/default.nix", t.name),
                    host_module.clone(),
                ));
                files.push((format!("systems/{}/meta.nix", t.name), lab.meta(m)));
            }
            _ => {
                let home = m.dir.join("home").display().to_string();
                files.push((
                    format!("homes/{}/default.nix", t.name),
                    format!(
                        "{{ ... }}:\n{{\n  home.homeDirectory = {};\n  home.file.\".a\".text = {};\n  home.file.\".config/app/b\".text = \"b\";\n}}\n",
                        nix_string(&home),
                        nix_string(&t.name)
                    ),
                ));
                files.push((format!("homes/{}/meta.nix", t.name), lab.meta(m)));
            }
        }
    }
    let extra: Vec<String> = (0..EVAL_TARGETS - PARALLEL)
        .map(|i| format!("e{i}"))
        .collect();
    for e in &extra {
        files.push((format!("systems/{e}/default.nix"), host_module.clone()));
        files.push((format!("systems/{e}/meta.nix"), lab.meta(&lab.machines[0])));
    }
    b.fixture_flake(&root, &files)?;
    let cache = tmp.join("cache");
    let xtask = |args: &[&str]| {
        let mut cmd = b.xtask(&root);
        cmd.args(args)
            .env("NO_COLOR", "1")
            .env("XDG_CACHE_HOME", &cache);
        cmd
    };

    // The store paths, from the very evaluation deploy runs.
    let expr =
        crate::tasks::deploy::eval_expr(&root, targets.iter().map(|t| (t.kind, t.name.as_str())));
    let out = b
        .nix(&root)
        .args(["eval", "--json", "--impure", "--expr", &expr])
        .output()?;
    ensure!(
        out.status.success(),
        "evaluating the targets: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let outs: Vec<String> = paths
        .iter()
        .map(|p| p["out"].as_str().map(str::to_string))
        .collect::<Option<_>>()
        .context("no outPath in the evaluation")?;
    let drvs: Vec<String> = paths
        .iter()
        .filter_map(|p| p["drv"].as_str().map(str::to_string))
        .collect();
    Bencher::run(
        Command::new("nix-store")
            .args(["--realise"])
            .args(&drvs)
            .env("NIX_CONFIG", super::NIX_CONFIG)
            .stdout(Stdio::null()),
    )?;

    // 1. Parallel deploy vs the plain commands, one target after another.
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let parallel = PARALLEL.to_string();
    let mut deploy_args = vec!["deploy", "--parallel", &parallel, "--confirm-timeout", "20"];
    deploy_args.extend(&names);
    let deploy_all = || Bencher::run(&mut xtask(&deploy_args));
    let plain = |t: &Target, out: &str| -> Result<()> {
        let m = &lab.machines[t.machine];
        let opts = lab.ssh_opts(m);
        let mut copy = b.nix(&root);
        copy.args([
            "copy",
            "--no-check-sigs",
            "--substitute-on-destination",
            "--to",
            "ssh-ng://root@127.0.0.1",
            out,
        ])
        .env("NIX_SSHOPTS", opts.join(" "));
        Bencher::run(&mut copy)?;
        let q = shell_quote(out);
        let activation = match t.kind {
            Kind::Host => format!(
                "nix-env --profile \"$XTASK_SYSTEM_PROFILE\" --set {q} && {q}/bin/switch-to-configuration switch"
            ),
            _ => format!(
                "nix-env --profile \"$HOME/.local/state/nix/profiles/home-manager\" --set {q} && HOME_MANAGER_BACKUP_EXT=bak {q}/activate --driver-version 1"
            ),
        };
        let mut ssh = Command::new("ssh");
        ssh.args(["-T", "-o", "BatchMode=yes"])
            .args(&opts)
            .arg("--")
            .arg("root@127.0.0.1")
            .arg(activation)
            .stdin(Stdio::null());
        Bencher::run(&mut ssh)
    };
    let sequential = || -> Result<()> {
        for (t, out) in targets.iter().zip(&outs) {
            plain(t, out)?;
        }
        Ok(())
    };
    let times = b.alternate(&[&deploy_all, &sequential])?;
    let (ours, base) = (times[0], times[1]);
    // The deployments happened: every machine runs its generation.
    for (t, out) in targets.iter().zip(&outs) {
        let m = &lab.machines[t.machine];
        let profile = match t.kind {
            Kind::Host => m.dir.join("profiles/system"),
            _ => m.dir.join("home/.local/state/nix/profiles/home-manager"),
        };
        let current = fs::canonicalize(&profile).unwrap_or_default();
        ensure!(
            current == Path::new(out),
            "{} ({}) does not run {out} after the benchmark",
            t.name,
            m.user
        );
    }
    let mut figures = vec![Figure {
        name: parallel_name(),
        ours,
        baseline: Some((
            format!("{PARALLEL} x (nix copy --to ssh-ng://… + ssh activation), one after another"),
            base,
        )),
        bound: format!(
            "{:.2}x (issue: <= 0.5 on 2 cores; {} cores here)",
            ours.as_secs_f64() / base.as_secs_f64(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
    }];

    // 2. Evaluation of 50 targets: one nix process vs one per target. The loop is long,
    // so it runs fewer times (the flake is in the store already: no warm-up needed).
    let all: Vec<(Kind, &str)> = targets
        .iter()
        .map(|t| (t.kind, t.name.as_str()))
        .chain(extra.iter().map(|e| (Kind::Host, e.as_str())))
        .collect();
    let expr = crate::tasks::deploy::eval_expr(&root, all.iter().copied());
    let batched = b.median(|| {
        Bencher::run(
            b.nix(&root)
                .args(["eval", "--json", "--impure", "--expr", &expr])
                .stdout(Stdio::null()),
        )
    })?;
    let dry_run = b.median(|| {
        let mut cmd = xtask(&["deploy", "--dry-run", "--parallel", "8"]);
        cmd.stdout(Stdio::null());
        Bencher::run(&mut cmd)
    })?;
    let mut loops = Vec::new();
    for _ in 0..b.runs.clamp(1, 3) {
        let start = Instant::now();
        for (kind, name) in &all {
            let attr = match kind {
                Kind::Host => {
                    format!("nixosConfigurations.{name}.config.system.build.toplevel.drvPath")
                }
                _ => format!("homeConfigurations.{name}.activationPackage.drvPath"),
            };
            Bencher::run(
                b.nix(&root)
                    .args(["eval", "--raw"])
                    .arg(format!("{}#{attr}", root.display()))
                    .stdout(Stdio::null()),
            )?;
        }
        loops.push(start.elapsed());
    }
    let looped = median(loops);
    let what = format!("{EVAL_TARGETS} x `nix eval --raw DIR#…drvPath`, one per target");
    figures.push(Figure {
        name: eval_name(),
        ours: batched,
        baseline: Some((what.clone(), looped)),
        bound: format!(
            "{:.1}x faster (issue: >= 10x)",
            looped.as_secs_f64() / batched.as_secs_f64()
        ),
    });
    figures.push(Figure {
        name: dry_run_name(),
        ours: dry_run,
        baseline: Some((what, looped)),
        bound: format!(
            "{:.1}x faster (issue: >= 10x)",
            looped.as_secs_f64() / dry_run.as_secs_f64()
        ),
    });

    // 3. One target: deploy vs the plain commands it stands for: `nix build` (evaluation
    // and build), `nix copy`, ssh running the activation.
    for (i, what) in [(0, "host"), (PARALLEL / 2, "home")] {
        let t = &targets[i];
        let out = &outs[i];
        let ours = || Bencher::run(&mut xtask(&["deploy", &t.name, "--confirm-timeout", "20"]));
        let attr = match t.kind {
            Kind::Host => format!(
                "nixosConfigurations.{}.config.system.build.toplevel",
                t.name
            ),
            _ => format!("homeConfigurations.{}.activationPackage", t.name),
        };
        let link = tmp.join(format!("result-{}", t.name));
        let plain_one = || -> Result<()> {
            Bencher::run(
                b.nix(&root)
                    .args(["build", "--out-link"])
                    .arg(&link)
                    .arg(format!("{}#{attr}", root.display())),
            )?;
            plain(t, out)
        };
        let times = b.alternate(&[&ours, &plain_one])?;
        let (ours, base) = (times[0], times[1]);
        let steps = breakdown(
            xtask(&["deploy", &t.name, "--confirm-timeout", "20"]),
            &t.name,
        )?;
        crate::term::info(&format!(
            "deploy {} ({what}), where the time goes: {steps}",
            t.name
        ));
        figures.push(Figure {
            name: one_name(what),
            ours,
            baseline: Some((
                "nix build DIR#… + nix copy --to ssh-ng://… + ssh activation".into(),
                base,
            )),
            bound: format!(
                "{:.2}x (issue: <= 1.15x)",
                ours.as_secs_f64() / base.as_secs_f64()
            ),
        });
    }
    Ok(figures)
}

/// One run of `cmd` (a deploy of one target), with the time from its start to each step
/// it announces on stderr (`[name] build`, `copy`, `activate`) and to its exit.
fn breakdown(mut cmd: Command, name: &str) -> Result<String> {
    use std::io::BufRead;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running deploy")?;
    let prefix = format!("[{name}] ");
    let mut marks = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().context("no stderr")?)
        .lines()
        .map_while(Result::ok)
    {
        let step = line.strip_prefix(&prefix).unwrap_or("");
        if ["build", "copy", "activate"].contains(&step) || line.starts_with("evaluating ") {
            let what = if step.is_empty() { "evaluate" } else { step };
            marks.push(format!("{what} at {} ms", start.elapsed().as_millis()));
        }
    }
    let status = child.wait()?;
    ensure!(status.success(), "deploy {name} failed");
    marks.push(format!("exit at {} ms", start.elapsed().as_millis()));
    Ok(marks.join(", "))
}
