//! The nix runner: the one place that builds nix command lines. It adds the flags every
//! call needs (flakes enabled without touching the user's nix.conf), lets nix's own log
//! stream to the terminal during builds, and turns failures into errors that name the
//! command and what to do.
//!
//! Version notes: the forms used here work from Nix 2.8 (Debian 12) to 2.3x.
//! `nix build --print-out-paths` only exists from 2.13, so builds use `--json`;
//! `--extra-experimental-features` exists from 2.4 (older nix has no flakes at all).

use std::{
    env,
    ffi::OsStr,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, de::DeserializeOwned};
use xshell::{Cmd, Shell, cmd};

use crate::term;

mod probe;
pub use probe::{Bounded, Version, run_bounded};

pub const FEATURES: &str = "nix-command flakes";

pub const INSTALL_HELP: &str = "nix is required; install it with:\n  \
    NixOS:               it is already there; check that nix is on PATH\n  \
    Debian/Ubuntu:       sudo apt-get install nix-bin   (Nix >= 2.8; single-user root needs `sandbox = false`)\n  \
    other Linux and WSL: sh <(curl -L https://nixos.org/nix/install) --daemon   (WSL without systemd: --no-daemon)\n  \
    macOS:               sh <(curl -L https://nixos.org/nix/install)\n\
    then open a new shell so that nix is on PATH";

pub struct Nix<'a> {
    sh: &'a Shell,
    pub verbose: bool,
}

/// One built output, as `nix build --json` reports it.
#[derive(Debug, Deserialize)]
struct BuildResult {
    outputs: std::collections::BTreeMap<String, PathBuf>,
}

/// `cmd` as a process to run, and as a line a user can paste into a shell (what `-v`
/// prints and what errors show as "tried:"). xshell's own Display of a command is not shell
/// syntax (it writes Rust escapes), so commands are shown from the process they become.
pub fn prepare(cmd: Cmd<'_>) -> (std::process::Command, String) {
    let command = std::process::Command::from(cmd);
    let shown = shell_line(&command);
    (command, shown)
}

/// A process's program and arguments as a shell line, each quoted where the shell would
/// read it otherwise.
pub fn shell_line(c: &std::process::Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| crate::home::shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A nix command to suggest to the user (`nix flake lock`), runnable as printed on a stock
/// nix.conf, where flakes are experimental: with the feature flag the xtask passes too.
pub fn suggest(args: &str) -> String {
    format!("nix --extra-experimental-features 'nix-command flakes' {args}")
}

impl<'a> Nix<'a> {
    pub fn new(sh: &'a Shell, verbose: bool) -> Nix<'a> {
        Nix { sh, verbose }
    }

    /// `nix <args>` with flakes enabled. Fails early, with install instructions, when nix is
    /// not on PATH.
    pub fn cmd<I, A>(&self, args: I) -> Result<Cmd<'a>>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        ensure_on_path("nix")?;
        Ok(cmd!(self.sh, "nix --extra-experimental-features {FEATURES}").args(args))
    }

    /// A companion nix tool (`nix-env`, `nix-store`): same install check, no feature flag.
    pub fn tool(&self, tool: &str) -> Result<Cmd<'a>> {
        ensure_on_path(tool)?;
        Ok(self.sh.cmd(tool))
    }

    /// Evaluates a Nix expression (`nix eval --json --expr`) and decodes the result.
    pub fn eval_expr_json<T: DeserializeOwned>(&self, expr: &str) -> Result<T> {
        self.json(self.eval_expr_cmd(expr)?, "the expression")
    }

    /// The command [`Nix::eval_expr_json`] runs, for tasks that print it (`--dry-run`).
    pub fn eval_expr_cmd(&self, expr: &str) -> Result<Cmd<'a>> {
        self.cmd(["eval", "--json", "--impure", "--expr", expr])
    }

    /// Evaluates `installable` (e.g. `/repo#homeConfigurations`), optionally through
    /// `--apply FN`, and decodes the JSON.
    pub fn eval_json<T: DeserializeOwned>(
        &self,
        installable: &str,
        apply: Option<&str>,
    ) -> Result<T> {
        let mut args = vec!["eval", "--json", installable];
        if let Some(f) = apply {
            args.extend(["--apply", f]);
        }
        self.json(self.cmd(args)?, installable)
    }

    /// Runs `nix eval --json --impure --expr EXPR` and returns the raw outcome, success or
    /// not: `check` reads the `trace:` lines and the error of a failed evaluation itself
    /// instead of turning it into one error. `--impure` because `builtins.getFlake` of an
    /// unlocked local flake (a working tree) is refused in pure mode.
    pub fn eval_expr_output(
        &self,
        expr: &str,
        on_stderr_line: impl FnMut(&str),
    ) -> Result<EvalOutput> {
        let (cmd, shown) = prepare(self.eval_expr_cmd(expr)?);
        if self.verbose {
            term::command(&shown);
        }
        // Streamed: check reads its trace marks as they come, for its progress.
        let (status, stdout, stderr) = stream(cmd, &shown, on_stderr_line)?;
        if !status.success() {
            // A nix that cannot run flakes at all is not a finding about the repo.
            if stderr.contains("--extra-experimental-features")
                || (stderr.contains("experimental Nix feature") && stderr.contains("is disabled"))
            {
                return Err(failure(&shown, "the flake", &stderr));
            }
        }
        Ok(EvalOutput {
            success: status.success(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr,
            shown,
        })
    }

    /// `nix flake check ROOT`, the documented validation of a flake's outputs; returns the
    /// trimmed error when it fails. nix's progress is captured, not streamed, because the
    /// caller reports the failure as a finding.
    pub fn flake_check(&self, root: &Path) -> Result<Option<String>> {
        let cmd = self.cmd([OsStr::new("flake"), OsStr::new("check"), root.as_os_str()])?;
        let (out, _) = self.capture(cmd, true)?;
        if out.status.success() {
            return Ok(None);
        }
        Ok(Some(trim_error(&String::from_utf8_lossy(&out.stderr))))
    }

    /// Runs `cmd` to completion with both streams captured, whatever its exit status;
    /// `announce` shows the command line first. Returns the output and that line.
    fn capture(&self, cmd: Cmd<'_>, announce: bool) -> Result<(std::process::Output, String)> {
        let (mut cmd, shown) = prepare(cmd);
        if announce {
            term::command(&shown);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {shown}"))?;
        Ok((out, shown))
    }

    fn json<T: DeserializeOwned>(&self, cmd: Cmd<'_>, what: &str) -> Result<T> {
        let (out, shown) = self.capture(cmd, self.verbose)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(failure(&shown, what, &stderr));
        }
        if self.verbose && !stderr.trim().is_empty() {
            term::raw(&stderr);
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("nix printed JSON the xtask did not expect (tried: {shown})"))
    }

    /// Builds installables, streaming nix's log to the terminal, and returns the `out`
    /// paths in order. With `out_link` the first result gets that GC root (`out_link`,
    /// `out_link-1`, … for more), so a collection cannot remove it mid-way.
    pub fn build(&self, installables: &[String], out_link: Option<&Path>) -> Result<Vec<PathBuf>> {
        let mut args: Vec<String> = vec!["build".into(), "--json".into()];
        match out_link {
            Some(link) => args.extend(["--out-link".into(), link.display().to_string()]),
            None => args.push("--no-link".into()),
        }
        if self.verbose {
            args.push("--print-build-logs".into());
        }
        args.extend(installables.iter().cloned());
        let (cmd, shown) = prepare(self.cmd(&args)?);
        term::command(&shown);
        // stdout is the JSON; nix's log (stderr) is passed through line by line as it
        // comes, so a failure can be explained like `check` explains it.
        let (status, stdout, log) = stream(cmd, &shown, |line| term::raw(&format!("{line}\n")))?;
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        if !status.success() {
            // nix's message is above; the causes it words badly get their fix here: no
            // network or no flake.lock (as `check` says it), a path it cannot put into a URL.
            let fix = environment_fix(&log)
                .or_else(|| {
                    installables
                        .iter()
                        .any(|i| i.contains(char::is_whitespace))
                        .then(|| environment_fix("is not a valid URL"))
                        .flatten()
                })
                .unwrap_or("fix the error nix names, or run with -v for the full build log");
            bail!(
                "nix build failed for {} (see nix's message above)\n  tried: {shown}\n  {fix}",
                installables.join(" ")
            );
        }
        let results: Vec<BuildResult> = serde_json::from_str(&stdout).with_context(|| {
            format!("nix build printed JSON the xtask did not expect (tried: {shown})")
        })?;
        results
            .into_iter()
            .map(|r| {
                r.outputs
                    .get("out")
                    .or_else(|| r.outputs.values().next())
                    .cloned()
                    .context("nix build reported a result without outputs")
            })
            .collect()
    }
}

impl<'a> Nix<'a> {
    /// `nix copy` of `paths` to another store (`ssh-ng://…`): nix's own transfer, with
    /// substitution on the destination (it fetches what a cache has itself) and without
    /// signature checks (the paths were built here, by us). `derivation`: copy the .drv
    /// files (for a build on the destination) instead of outputs.
    pub fn copy_cmd(&self, to: &str, paths: &[String], derivation: bool) -> Result<Cmd<'a>> {
        let mut args: Vec<&str> = vec![
            "copy",
            "--no-check-sigs",
            "--substitute-on-destination",
            "--to",
            to,
        ];
        if derivation {
            args.push("--derivation");
        }
        args.extend(paths.iter().map(String::as_str));
        self.cmd(args)
    }

    /// `nix-store --realise DRV…`: builds derivations already in the store (the one
    /// evaluation instantiated them) without evaluating again; prints the outputs.
    pub fn realise_cmd(&self, drvs: &[String]) -> Result<Cmd<'a>> {
        Ok(self.tool("nix-store")?.arg("--realise").args(drvs))
    }
}

impl Nix<'_> {
    /// The closure size (bytes) of each path, in one `nix path-info -S --json` call. Nix
    /// up to 2.18 prints a list of `{path, closureSize}`, later ones an object keyed by path.
    pub fn closure_sizes(
        &self,
        paths: &[PathBuf],
    ) -> Result<std::collections::BTreeMap<PathBuf, u64>> {
        self.path_sizes(paths, "closureSize", "the generations' closure sizes")
    }

    /// The size (bytes, the NAR size: what deleting that one path frees) of each path.
    /// One `nix path-info --json` per 2000 paths, so any number fits the argument limit.
    pub fn nar_sizes(&self, paths: &[PathBuf]) -> Result<std::collections::BTreeMap<PathBuf, u64>> {
        let mut out = std::collections::BTreeMap::new();
        for chunk in paths.chunks(2000) {
            out.extend(self.path_sizes(chunk, "narSize", "the sizes of store paths")?);
        }
        Ok(out)
    }

    fn path_sizes(
        &self,
        paths: &[PathBuf],
        field: &str,
        what: &str,
    ) -> Result<std::collections::BTreeMap<PathBuf, u64>> {
        let mut out = std::collections::BTreeMap::new();
        if paths.is_empty() {
            return Ok(out);
        }
        let mut args: Vec<std::ffi::OsString> = vec!["path-info".into()];
        if field == "closureSize" {
            args.push("-S".into());
        }
        args.push("--json".into());
        args.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
        let value: serde_json::Value = self.json(self.cmd(args)?, what)?;
        let size = |v: &serde_json::Value| v.get(field).and_then(serde_json::Value::as_u64);
        match value {
            serde_json::Value::Array(items) => {
                for item in &items {
                    if let (Some(p), Some(s)) =
                        (item.get("path").and_then(|p| p.as_str()), size(item))
                    {
                        out.insert(PathBuf::from(p), s);
                    }
                }
            }
            serde_json::Value::Object(map) => {
                for (p, item) in &map {
                    if let Some(s) = size(item) {
                        out.insert(PathBuf::from(p), s);
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// Runs a read-only `nix-store` query and returns its stdout lines.
    fn store_lines(&self, cmd: Cmd<'_>, what: &str) -> Result<Vec<String>> {
        let (out, shown) = self.capture(cmd, self.verbose)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "nix could not list {what}: {}\n  tried: {shown}",
                trim_error(&stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// The store paths no GC root keeps alive now: what `nix-store --gc` would delete.
    /// `--print-dead` exists from Nix 2.0 to 2.3x (`nix store gc --dry-run` from 2.4 only
    /// prints the same list). Like every gc, nix drops stale links from
    /// `/nix/var/nix/gcroots/auto` on the way; nothing else changes.
    pub fn dead_paths(&self) -> Result<Vec<PathBuf>> {
        let cmd = self.tool("nix-store")?.args(["--gc", "--print-dead"]);
        Ok(self
            .store_lines(cmd, "the dead store paths")?
            .into_iter()
            .filter(|l| l.starts_with('/'))
            .map(PathBuf::from)
            .collect())
    }

    /// Every GC root as `(root, store path)`: `nix-store --gc --print-roots`, whose lines
    /// are `ROOT -> STORE-PATH` (runtime roots show `{memory:…}`, `/proc/…` or
    /// `{censored}` as ROOT; they are kept, nothing is compared with them).
    pub fn roots(&self) -> Result<Vec<(String, PathBuf)>> {
        let cmd = self.tool("nix-store")?.args(["--gc", "--print-roots"]);
        Ok(self
            .store_lines(cmd, "the GC roots")?
            .into_iter()
            .filter_map(|l| {
                let (root, path) = l.rsplit_once(" -> ")?;
                Some((root.to_string(), PathBuf::from(path)))
            })
            .collect())
    }

    /// The closure of `paths` (`nix-store --query --requisites`), 2000 paths per call.
    pub fn requisites(&self, paths: &[PathBuf]) -> Result<std::collections::BTreeSet<PathBuf>> {
        let mut out = std::collections::BTreeSet::new();
        for chunk in paths.chunks(2000) {
            let cmd = self
                .tool("nix-store")?
                .args(["--query", "--requisites"])
                .args(chunk);
            out.extend(
                self.store_lines(cmd, "the closure")?
                    .into_iter()
                    .map(PathBuf::from),
            );
        }
        Ok(out)
    }
}

/// What `nix-store --gc` says it did, from its last line: `N store paths deleted, X MiB
/// freed` (Nix 2.8 to 2.3x; the size in B, KiB, MiB, GiB or TiB, two decimals).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GcSummary {
    pub paths: u64,
    pub bytes: u64,
}

impl GcSummary {
    /// The summary in nix's whole output, if there is one.
    pub fn parse(text: &str) -> Option<GcSummary> {
        text.lines().rev().find_map(|line| {
            let (count, rest) = line.trim().split_once(" store paths deleted, ")?;
            let size = rest.strip_suffix(" freed")?;
            let (number, unit) = size.split_once(' ')?;
            let factor = match unit {
                "B" | "bytes" => 1.0,
                "KiB" => 1024.0,
                "MiB" => 1024.0 * 1024.0,
                "GiB" => 1024.0 * 1024.0 * 1024.0,
                "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
                _ => return None,
            };
            let number: f64 = number.parse().ok()?;
            Some(GcSummary {
                paths: count.parse().ok()?,
                bytes: (number * factor).round() as u64,
            })
        })
    }
}

impl Nix<'_> {
    /// The store paths `path` refers to directly (`nix-store -q --references`), without
    /// `path` itself. `path` must be a store path, not a path inside one: nix answers for
    /// the store path that contains it, without following a final symlink.
    pub fn references(&self, path: &Path, what: &str) -> Result<Vec<PathBuf>> {
        let cmd = self
            .tool("nix-store")?
            .args(["-q", "--references"])
            .arg(path);
        let (out, shown) = self.capture(cmd, self.verbose)?;
        if !out.status.success() {
            return Err(failure(&shown, what, &String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .filter(|p| p != path)
            .collect())
    }
}

impl Nix<'_> {
    /// The closure of each root, every path with its NAR size, passed through `then` with
    /// the root's index:
    /// `nix-store --query --graphml ROOT` per root, all running side by side, each read
    /// (and given to `then`) by a thread of its own as soon as its nix is done. The store
    /// query is what costs the time, so two of them at once cost about one. Of the
    /// commands that list a closure with its sizes, this one costs least (2000 paths,
    /// measured on Nix 2.8: 48 ms against 55 for `nix path-info -rs`, which flushes each
    /// line, and 55 for `--json`), and its text is read without an XML or JSON parse
    /// ([`parse_graphml`]). Paths are base names (`<hash>-<name>`), unique within one
    /// store.
    pub fn closures<T: Send>(
        &self,
        roots: &[PathBuf],
        then: impl Fn(usize, &[(&str, u64)]) -> T + Sync,
    ) -> Result<Vec<T>> {
        // Each nix writes its listing into an unnamed temporary file, read once it exits:
        // through a pipe, two nix processes and their readers take turns on the cores
        // at every pipeful (measured: about 10 ms more for two closures of 2000 paths).
        let mut children = Vec::new();
        for root in roots {
            let (mut cmd, shown) = prepare(
                self.tool("nix-store")?
                    .args(["--query", "--graphml"])
                    .arg(root),
            );
            if self.verbose {
                term::command(&shown);
            }
            let started = tempfile::tempfile()
                .and_then(|listing| Ok((listing.try_clone()?, listing)))
                .context("creating a temporary file")
                .and_then(|(out, listing)| {
                    let child = cmd
                        .stdin(Stdio::null())
                        .stdout(out)
                        .stderr(Stdio::piped())
                        .spawn()
                        .with_context(|| format!("running {shown}"))?;
                    Ok((child, listing))
                });
            match started {
                Ok((child, listing)) => children.push((child, listing, shown)),
                Err(e) => {
                    // The ones already started are ended, not left behind.
                    for (child, _, _) in &mut children {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return Err(e);
                }
            }
        }
        let read = |i: usize,
                    child: std::process::Child,
                    mut listing: std::fs::File,
                    shown: String|
         -> Result<T> {
            use std::io::{Read, Seek};
            let out = child
                .wait_with_output()
                .with_context(|| format!("running {shown}"))?;
            if !out.status.success() {
                return Err(failure(
                    &shown,
                    "the closure",
                    &String::from_utf8_lossy(&out.stderr),
                ));
            }
            let mut text = Vec::new();
            listing
                .rewind()
                .and_then(|()| listing.read_to_end(&mut text))
                .with_context(|| format!("reading what {shown} printed"))?;
            let closure = parse_graphml(&text).with_context(|| {
                format!("nix printed a closure the xtask did not expect (tried: {shown})")
            })?;
            Ok(then(i, &closure))
        };
        std::thread::scope(|s| {
            let readers: Vec<_> = children
                .into_iter()
                .enumerate()
                .map(|(i, (child, listing, shown))| s.spawn(move || read(i, child, listing, shown)))
                .collect();
            readers
                .into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("reading nix's output failed")))
                })
                .collect()
        })
    }
}

/// The store directory: `NIX_STORE_DIR`, else /nix/store.
pub fn store_dir() -> PathBuf {
    std::env::var_os("NIX_STORE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/nix/store"), PathBuf::from)
}

/// The paths of the graph `nix-store --query --graphml` prints, as (base name, NAR size).
/// Its format is the same from Nix 2.0 to 2.3x (and Lix): per path a `<node id="PATH">`
/// element (the base name since Nix 2.4, the whole path before) holding
/// `<data key="narSize">N</data>`; the edges after it are not needed here. Hundreds of
/// kilobytes for a large closure: searched with memchr, which is quick even in the dev
/// build the xtask runs as.
pub fn parse_graphml(text: &[u8]) -> Result<Vec<(&str, u64)>> {
    const NODE: &str = "<node id=\"";
    const SIZE: &str = "<data key=\"narSize\">";
    let text = std::str::from_utf8(text).context("the graph is not UTF-8")?;
    let bytes = text.as_bytes();
    let (node, size) = (
        memchr::memmem::Finder::new(NODE),
        memchr::memmem::Finder::new(SIZE),
    );
    let mut out = Vec::new();
    let mut next = node.find(bytes);
    while let Some(at) = next {
        let id_start = at + NODE.len();
        let id_end = memchr::memchr(b'"', &bytes[id_start..])
            .map(|n| id_start + n)
            .context("a node's id does not end")?;
        let id = &text[id_start..id_end];
        next = node.find(&bytes[id_end..]).map(|n| id_end + n);
        // The size in this node, not in the next one.
        let block = &bytes[id_end..next.unwrap_or(bytes.len())];
        let size_start = size
            .find(block)
            .map(|n| id_end + n + SIZE.len())
            .with_context(|| format!("no narSize for {id}"))?;
        let size_end = memchr::memchr(b'<', &bytes[size_start..])
            .map(|n| size_start + n)
            .with_context(|| format!("the narSize of {id} does not end"))?;
        let nar_size = text[size_start..size_end]
            .trim()
            .parse()
            .with_context(|| format!("the narSize of {id} is not a number"))?;
        let base = memchr::memrchr(b'/', id.as_bytes()).map_or(id, |i| &id[i + 1..]);
        out.push((base, nar_size));
    }
    // nix ends the graph only once every path is in it.
    anyhow::ensure!(
        text.trim_end().ends_with("</graphml>"),
        "the graph does not end with </graphml>"
    );
    Ok(out)
}

/// Runs `cmd` with nix's stderr read line by line as it comes (`on_line` sees each one:
/// progress, trace marks) and stdout drained on its own thread, so a large result cannot
/// block nix on a full pipe. Returns the exit status, stdout and the whole stderr.
fn stream(
    mut cmd: std::process::Command,
    shown: &str,
    mut on_line: impl FnMut(&str),
) -> Result<(std::process::ExitStatus, Vec<u8>, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {shown}"))?;
    let mut stdout_pipe = child.stdout.take().context("nix's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout_pipe.read_to_end(&mut buf).map(|_| buf)
    });
    let mut stderr = String::new();
    let stderr_pipe = child.stderr.take().context("nix's stderr")?;
    for line in BufReader::new(stderr_pipe).lines() {
        let line = line.with_context(|| format!("reading the output of {shown}"))?;
        on_line(&line);
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let status = child.wait().with_context(|| format!("running {shown}"))?;
    let stdout = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reading the output of {shown} failed"))?
        .with_context(|| format!("reading the output of {shown}"))?;
    Ok((status, stdout, stderr))
}

/// What a `nix eval` printed, whether or not it succeeded.
#[derive(Debug)]
pub struct EvalOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    pub shown: String,
}

/// Runs a command that changes something, or only prints it with `dry_run`
/// (nh's command builder pattern: the printed line is exactly what would run).
pub fn run_step(cmd: Cmd<'_>, dry_run: bool) -> Result<()> {
    let (mut cmd, shown) = prepare(cmd);
    if dry_run {
        term::out(&shown);
        return Ok(());
    }
    term::command(&shown);
    // No stdin, as xshell gave its commands: an ssh inside (nixos-rebuild --target-host)
    // must not eat a caller's piped input; prompts read the terminal itself.
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// A nix call that failed: what ran and what nix said. Callers that report per file
/// (`check`, meta loading) downcast to this to get nix's own message.
#[derive(Debug)]
pub struct NixError {
    pub command: String,
    pub what: String,
    pub stderr: String,
}

impl NixError {
    /// nix's message without the `error:` prefix, the source excerpt and the trace.
    pub fn message(&self) -> String {
        trim_error(&self.stderr)
    }
}

impl std::fmt::Display for NixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nix could not evaluate {}: {}\n  tried: {}\n  fix the error at the place nix names; add --show-trace to that command for nix's full trace",
            self.what,
            self.message(),
            self.command
        )
    }
}

impl std::error::Error for NixError {}

/// Turns a failed nix call into an error that names the cause and the fix.
pub fn failure(shown: &str, what: &str, stderr: &str) -> anyhow::Error {
    if stderr.contains("unrecognised flag '--extra-experimental-features'")
        || stderr.contains("unrecognized flag '--extra-experimental-features'")
    {
        return anyhow::anyhow!(
            "this nix has no flakes support (it does not know --extra-experimental-features); Nix >= 2.4 is required, 2.8 or newer recommended\n  tried: {shown}\n  upgrade nix: {}",
            "see https://nixos.org/download (Debian/Ubuntu: apt-get install nix-bin)"
        );
    }
    if stderr.contains("experimental Nix feature") && stderr.contains("is disabled") {
        return anyhow::anyhow!(
            "nix refused the flakes feature: {}\n  tried: {shown}\n  remove `experimental-features` overrides that disable flakes from nix.conf / NIX_CONFIG",
            trim_error(stderr)
        );
    }
    if let Some(fix) = environment_fix(stderr) {
        return anyhow::anyhow!("{}\n  tried: {shown}\n  {fix}", trim_error(stderr));
    }
    NixError {
        command: shown.to_string(),
        what: what.to_string(),
        stderr: stderr.to_string(),
    }
    .into()
}

/// The fix for nix failures that are not about the repo's Nix code, when nix's message
/// alone would not make it obvious.
pub fn environment_fix(err: &str) -> Option<&'static str> {
    if err.contains("is not a valid URL") {
        // Nix 2.8 (and others) cannot put a path with a space or `#`/`?` into a flake URL.
        return Some(
            "this nix cannot use the repository's path in a flake reference (it has a space or another special character); move or clone the repository to a path without one",
        );
    }
    if cannot_run(err) {
        return Some(
            "nix could not fetch or lock the flake's inputs (no network?); run `nix --extra-experimental-features 'nix-command flakes' flake lock` where the network is reachable and commit flake.lock",
        );
    }
    None
}

/// Nix failures that say nothing about the files: no network, inputs missing offline, a
/// lock file that cannot be written, or a nix without flakes.
pub fn cannot_run(err: &str) -> bool {
    [
        "unable to download",
        "Could not resolve host",
        "Couldn't resolve host",
        "cannot write modified lock file",
        "in offline mode",
        "'--offline'",
        "no flakes support",
        "refused the flakes feature",
    ]
    .iter()
    .any(|needle| err.contains(needle))
}

/// Keeps the useful part of a nix error: the `error:` lines (the first without its prefix,
/// shown after the xtask's own `error:`) and the location they name, without the source
/// excerpt and the trace.
pub fn trim_error(stderr: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut in_error = false;
    // Nix 2.13 and later open with a bare `error:` over the trace (`… while evaluating`) and
    // name the error in a later `error:` line: the trace is skipped, that line is the first.
    let mut in_trace = false;
    for line in stderr.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("error:") {
            let rest = rest.trim_start();
            in_error = true;
            if rest.is_empty() && out.is_empty() {
                in_trace = true;
                continue;
            }
            in_trace = false;
            // The message without its first `error:`: it is shown after the xtask's own.
            out.push(if out.is_empty() { rest } else { t });
            continue;
        }
        if in_trace || !in_error || t.is_empty() || t.starts_with("(use '--show-trace'") {
            continue;
        }
        // Source excerpt lines look like `12|   foo = 1;` or `|   ^`.
        let excerpt = t.starts_with('|')
            || t.split_once('|')
                .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
        if excerpt || t.starts_with('…') {
            continue;
        }
        out.push(t);
    }
    if out.is_empty() {
        return stderr.trim().to_string();
    }
    out.join(" ")
}

/// Looks for `tool` on PATH; the error says how to install nix.
pub fn ensure_on_path(tool: &str) -> Result<()> {
    if find_on_path(tool).is_some() {
        return Ok(());
    }
    bail!("`{tool}` was not found on PATH.\n{INSTALL_HELP}")
}

pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// This machine's Nix system double (`x86_64-linux`, `aarch64-darwin`, …), from the
/// architecture and OS the xtask was compiled for: no nix call is needed.
pub fn current_system() -> String {
    // Rust's arch names are Nix's for every supported system (x86_64, aarch64).
    let arch = env::consts::ARCH;
    let os = match env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{arch}-{os}")
}

/// The systems [`pick_system`] accepts: the repo's `supported-systems`, handed down by the
/// repo layer at start-up (`repo::Defaults::install`) so that this layer needs no repo.
static SUPPORTED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

pub fn set_supported_systems(systems: Vec<String>) {
    // The first call wins: rules are installed once per process.
    let _ = SUPPORTED.set(systems);
}

/// `--system` checked against the systems installed by [`set_supported_systems`]; before
/// that (unit tests) against this machine's only. New code calls `repo::pick_system`.
pub fn pick_system(flag: Option<&str>) -> Result<String> {
    let fallback = [current_system()];
    let supported = SUPPORTED.get().map_or(&fallback[..], Vec::as_slice);
    pick_system_in(flag, supported)
}

/// `--system`: one of `supported`, or this machine's when not given or `auto` (then said,
/// so a user on another architecture sees which home variant is used).
pub fn pick_system_in(flag: Option<&str>, supported: &[String]) -> Result<String> {
    let system = match flag {
        Some(s) if s != "auto" => s.to_string(),
        _ => {
            let s = current_system();
            term::info(&format!("system: {s} (detected; --system overrides)"));
            s
        }
    };
    if !supported.contains(&system) {
        let list = supported.join(", ");
        // A --system the repo does not support is a usage error; this machine's own system
        // (detected) is not the command line's fault, and "auto" is what just failed.
        if flag.is_some_and(|s| s != "auto") {
            return Err(crate::UsageError(format!(
                "system '{system}' is not supported; use one of {list} (or auto for this machine's; supported-systems in Cargo.toml lists them)"
            ))
            .into());
        }
        bail!(
            "this machine's system, {system}, is not supported by the repository ({list}); add it to supported-systems in Cargo.toml, or pass --system with one of those"
        );
    }
    Ok(system)
}

/// The flake reference of an attribute of the repo: `/abs/root#attr`.
pub fn installable(root: &Path, attr: &str) -> String {
    format!("{}#{attr}", root.display())
}

/// The flake reference `builtins.getFlake` needs to see exactly what `nix eval ROOT#attr`
/// sees. Version note: Nix 2.8 reads `getFlake "/abs/path"` as a `path:` flake, which
/// includes files git does not track, while the command line (all versions) and newer
/// `getFlake` use `git+file:` for a directory inside a git work tree. Spelling out
/// `git+file://TOP?dir=SUB` gives the command line's view on every version from 2.4 on.
pub fn flake_ref(root: &Path) -> String {
    let top = root.ancestors().find(|d| d.join(".git").exists());
    match top {
        Some(top) => {
            let sub = root.strip_prefix(top).unwrap_or(Path::new(""));
            let mut r = format!("git+file://{}", top.display());
            if !sub.as_os_str().is_empty() {
                r.push_str(&format!("?dir={}", sub.display()));
            }
            r
        }
        None => format!("path:{}", root.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_store_gc_summary_in_nix_s_own_words() {
        // The tail of a real `nix-store --gc` run (Nix 2.8), and the forms of other sizes.
        let out = "finding garbage collector roots...\nremoving stale link from '/nix/var/nix/gcroots/auto/abc' to '/tmp/x/generation'\ndeleting garbage...\ndeleting '/nix/store/0g7k-hm-file'\ndeleting unused links...\nnote: currently hard linking saves 0.00 MiB\n12 store paths deleted, 1.50 MiB freed\n";
        assert_eq!(
            GcSummary::parse(out),
            Some(GcSummary {
                paths: 12,
                bytes: 1_572_864
            })
        );
        assert_eq!(
            GcSummary::parse("0 store paths deleted, 0.00 MiB freed\n"),
            Some(GcSummary { paths: 0, bytes: 0 })
        );
        assert_eq!(
            GcSummary::parse("3 store paths deleted, 2.00 GiB freed"),
            Some(GcSummary {
                paths: 3,
                bytes: 2 << 30
            })
        );
        assert_eq!(GcSummary::parse("deleting garbage...\n"), None);
        assert_eq!(GcSummary::parse("x store paths deleted, 1 MiB freed"), None);
    }

    #[test]
    fn trims_nix_errors_to_the_message_and_location() {
        let stderr = "warning: Git tree '/r' is dirty\nerror: undefined variable 'pkgz'\n\n       at /nix/store/abc-source/homes/bob/default.nix:3:15:\n\n            2| {\n            3|   home.packages = [ pkgz.hello ];\n             |               ^\n(use '--show-trace' to show detailed location information)\n";
        assert_eq!(
            trim_error(stderr),
            "undefined variable 'pkgz' at /nix/store/abc-source/homes/bob/default.nix:3:15:"
        );
    }

    #[test]
    fn flakes_missing_is_named() {
        let e = failure(
            "nix eval",
            "x",
            "error: unrecognised flag '--extra-experimental-features'",
        );
        assert!(e.to_string().contains("no flakes support"), "{e}");
    }

    #[test]
    fn system_is_detected() {
        let s = current_system();
        assert!(
            s.ends_with("-linux")
                || s.ends_with("-darwin")
                || cfg!(not(any(target_os = "linux", target_os = "macos")))
        );
    }

    #[test]
    fn cannot_run_is_told_apart_from_errors_in_files() {
        assert!(cannot_run(
            "error: unable to download 'https://api.github.com/x': Couldn't resolve host name (6)"
        ));
        assert!(cannot_run(
            "error: cannot write modified lock file of flake 'x' (use '--no-write-lock-file' to ignore)"
        ));
        assert!(!cannot_run(
            "error: undefined variable 'pkgz' at /nix/store/a-source/homes/b/default.nix:3:5:"
        ));
    }

    #[test]
    fn trim_error_of_a_nix_2_13_plus_trace_names_the_error_once() {
        // Nix 2.13+ (2.18 is the recommended one) puts the trace under a bare `error:`
        // and the message in a second `error:` line.
        let stderr = "error:\n       \u{2026} while calling the 'derivationStrict' builtin\n\n         at /builtin/derivation.nix:9:12: (source not available)\n\n       \u{2026} while evaluating derivation 'home-manager-generation'\n         whose name attribute is located at /nix/store/x-source/pkgs/stdenv/generic/make-derivation.nix:353:7\n\n       (stack trace truncated; use '--show-trace' to show the full trace)\n\n       error: undefined variable 'pkgz'\n\n       at /nix/store/abc-source/homes/bob/default.nix:3:15:\n\n            2| {\n            3|   home.packages = [ pkgz.hello ];\n             |               ^\n";
        let t = trim_error(stderr);
        assert!(!t.contains("error:"), "{t:?}");
        assert_eq!(
            t,
            "undefined variable 'pkgz' at /nix/store/abc-source/homes/bob/default.nix:3:15:"
        );
    }

    #[test]
    fn shown_commands_are_shell_lines_that_run_as_printed() {
        let args = [
            "%s|",
            "a b",
            "it's",
            "$HOME",
            "x\ny",
            "«function»",
            "${id}",
            "",
        ];
        let mut cmd = std::process::Command::new("printf");
        cmd.args(args);
        let line = shell_line(&cmd);
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}");
        let expected: String = args[1..].iter().map(|a| format!("{a}|")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{line}");
    }

    #[test]
    fn closures_of_the_graphml_nix_store_prints() {
        // What Nix 2.8 prints (the edges are skipped), and Nix 2.3's whole-path ids.
        let out = br#"<?xml version='1.0' encoding='utf-8'?>
<graphml xmlns='http://graphml.graphdrawing.org/xmlns'>
<key id='narSize' for='node' attr.name='narSize' attr.type='int'/><graph id='G' edgedefault='directed'>
  <node id="bbb-gen">
    <data key="narSize">4096</data>
    <data key="name">gen</data>
    <data key="type">output-path</data>
  </node>
  <edge source="bbb-gen" target="aaa-pkg-1.0"/>
  <node id="/nix/store/aaa-pkg-1.0">
    <data key="narSize">128</data>
  </node>
</graph>
</graphml>
"#;
        assert_eq!(
            parse_graphml(out).unwrap(),
            vec![("bbb-gen", 4096), ("aaa-pkg-1.0", 128)]
        );
        let text = String::from_utf8_lossy(out);
        // A node without its size (the next node's is not taken for it), a size that is
        // not a number, a graph cut short.
        let no_size = text.replacen("<data key=\"narSize\">4096</data>", "", 1);
        let err = parse_graphml(no_size.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no narSize for bbb-gen"), "{err}");
        let bad = text.replacen(">128<", ">12x<", 1);
        assert!(parse_graphml(bad.as_bytes()).is_err());
        let cut = &text[..text.find("</graph>").unwrap()];
        assert!(parse_graphml(cut.as_bytes()).is_err());
    }

    #[test]
    fn an_unsupported_machine_without_system_is_not_a_usage_error() {
        // No --system given (or `auto`): the machine is the problem, not the command line,
        // and "auto" is the one thing not to suggest.
        let supported = ["riscv64-plan9".to_string()];
        for flag in [None, Some("auto")] {
            let err = pick_system_in(flag, &supported).unwrap_err();
            assert!(err.downcast_ref::<crate::UsageError>().is_none(), "{err}");
            assert!(!err.to_string().contains("or auto"), "{err}");
        }
    }

    #[test]
    fn nix_error_message_strips_error_once() {
        // What Nix 2.8 prints for `throw "error: disk full"` (a lib's own message).
        let e = NixError {
            command: "nix eval".into(),
            what: "x".into(),
            stderr: "error: error: disk full\n".into(),
        };
        assert_eq!(e.message(), "error: disk full");
    }

    #[test]
    fn systems_are_picked_and_checked() {
        let supported = ["aarch64-linux".to_string(), current_system()];
        let pick = |flag| pick_system_in(flag, &supported);
        assert_eq!(pick(Some("aarch64-linux")).unwrap(), "aarch64-linux");
        assert_eq!(pick(Some("auto")).unwrap(), current_system());
        assert_eq!(pick(None).unwrap(), current_system());
        let err = pick(Some("riscv64-linux")).unwrap_err().to_string();
        assert!(
            err.contains("riscv64-linux") && err.contains("aarch64-linux"),
            "{err}"
        );
    }
}
