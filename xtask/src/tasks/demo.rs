//! `cargo xtask demo`: the main job end to end on an example that needs no network.
//!
//! A throwaway flake is assembled in a temporary directory from this repository's own
//! `lib/` and `Cargo.toml` and the stand-in builders of the integration tests
//! (`xtask/tests/fixtures/`: a generation that follows ../shared/hm-contract.md, built with
//! the machine's `/bin/sh`), all embedded at compile time, so the demo works from any
//! checkout. Then this very binary runs the real tasks as a child, with `HOME`, `USER` and
//! the state directories inside the temporary directory: `new-user`, `check`, `build-home`,
//! `switch` over an existing `~/.bashrc`, an edit, `diff`, `switch`, `generations`,
//! `rollback`, `gc`. Each step is printed as the command a user would type, then its
//! output, then what the demo verified in the throwaway `$HOME`; the first step that did
//! not do what it should ends the demo with exit 1, naming the step and what was expected.
//!
//! Nothing outside the temporary directory changes, apart from what any nix build adds:
//! store paths (garbage once the directory is gone) and nix's indirect GC roots to the
//! throwaway profile and out-link (nix drops them once their targets are gone). That is
//! also why `gc` runs with `--no-store-gc`: a store-wide `nix-store --gc` would delete the
//! garbage of everything else on this machine, not only the demo's.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::{Ctx, cli::Demo, repo::nix_string, term};

/// The throwaway flake: where each file comes from in this repository.
const FLAKE_FILES: &[(&str, &str)] = &[
    ("flake.nix", include_str!("../../tests/fixtures/flake.nix")),
    (
        "stub-builders.nix",
        include_str!("../../tests/fixtures/stub-builders.nix"),
    ),
    (
        "activate.sh",
        include_str!("../../tests/fixtures/activate.sh"),
    ),
    (
        "check-link-targets.sh",
        include_str!("../../tests/fixtures/check-link-targets.sh"),
    ),
    ("lib/default.nix", include_str!("../../../lib/default.nix")),
    // The rules and defaults (backup-extension = "bak", …) the flake passes to lib/.
    ("Cargo.toml", include_str!("../../../Cargo.toml")),
    (".gitignore", "result-*\n/.xtask-new-*/\n"),
];

/// The demo's user: its home is `homes/demo`, its `$USER` in every child.
const USER: &str = "demo";

/// The dotfile that exists before the first switch and must end up in `~/.bashrc.bak`.
const OLD_BASHRC: &str =
    "# my own ~/.bashrc, from before Home Manager\nexport PS1='\\u@\\h \\w $ '\n";
/// `~/.bashrc` as the first generation manages it.
const BASHRC_1: &str = "# managed by Home Manager (cargo xtask demo)\nexport EDITOR=vi\n";
/// `~/.bashrc` after the edit.
const BASHRC_2: &str =
    "# managed by Home Manager (cargo xtask demo)\nexport EDITOR=vi\nalias ll='ls -l'\n";
/// A file only the second generation has.
const HELLO: &str = ".config/demo/hello.txt";
const HELLO_TEXT: &str = "hello from generation 2\n";

/// Offline nix for the stand-in builders, as in the tests: no substituters, and no build
/// sandbox (the builders use the host's /bin/sh and coreutils; honoured for root and
/// trusted users).
const NIX_CONFIG: &str = "substituters =\nwarn-dirty = false\nsandbox = false\n";

#[derive(Debug, Serialize)]
struct StepReport {
    command: String,
    ok: bool,
    seconds: f64,
    /// What the demo verified, or what it expected and did not find.
    checked: String,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    ok: bool,
    seconds: f64,
    steps: &'a [StepReport],
    /// The throwaway directory, when `--keep` kept it.
    kept: Option<&'a Path>,
}

/// The throwaway world: the flake (a git repository), `$HOME`, and nix's cache.
struct World {
    repo: PathBuf,
    home: PathBuf,
    cache: PathBuf,
    units: PathBuf,
    exe: PathBuf,
    verbose: bool,
    steps: Vec<StepReport>,
    /// Ctrl-C, SIGTERM or SIGHUP arrived: the running child handles it (a switch restores
    /// the previous generation), and the demo stops after it, removing its directory.
    interrupted: Arc<AtomicBool>,
}

impl Demo {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let start = Instant::now();
        let tmp = tempfile::Builder::new()
            .prefix("xtask-demo-")
            .tempdir()
            .context("creating the demo's temporary directory")?;
        let dir = fs::canonicalize(tmp.path())?;
        if dir.to_string_lossy().contains(' ') {
            bail!(
                "the temporary directory {} has a space in its path, and Nix 2.8 cannot read a git+file flake there; run it with TMPDIR=/tmp",
                dir.display()
            );
        }
        let interrupted = Arc::new(AtomicBool::new(false));
        for sig in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            signal_hook::flag::register(sig, Arc::clone(&interrupted))
                .context("installing the demo's signal handlers")?;
        }
        let mut world = World {
            repo: dir.join("repo"),
            home: dir.join("home"),
            cache: dir.join("cache"),
            units: dir.join("systemd-units"),
            exe: std::env::current_exe().context("finding the xtask binary")?,
            verbose: ctx.verbose,
            steps: Vec::new(),
            interrupted,
        };
        term::info(&format!(
            "{} a throwaway flake, $HOME and state directory in {} (user {USER}); your own home, profile and repository are not touched",
            term::paint(term::Style::Bold, "cargo xtask demo:"),
            dir.display()
        ));
        let result = world.setup().and_then(|()| world.steps());
        let ok = result.is_ok();
        let seconds = start.elapsed().as_secs_f64();
        let kept = if self.keep {
            let path = tmp.keep();
            term::info(&format!("kept the throwaway directory: {}", path.display()));
            Some(path)
        } else {
            drop(tmp);
            None
        };
        if self.json {
            term::out(&serde_json::to_string_pretty(&Summary {
                ok,
                seconds,
                steps: &world.steps,
                kept: kept.as_deref(),
            })?);
        }
        match result {
            Ok(()) => {
                term::info(&format!(
                    "{} every step did what it should ({} steps, {seconds:.1} s); the real thing: `cargo xtask switch` in this repository",
                    term::paint(term::Style::Green, "demo passed:"),
                    world.steps.len()
                ));
                Ok(())
            }
            Err(e) => {
                let hint = if self.keep {
                    String::new()
                } else {
                    "; run `cargo xtask demo --keep` to inspect the throwaway directory".into()
                };
                Err(e.context(format!("the demo failed{hint}")))
            }
        }
    }
}

impl World {
    fn setup(&mut self) -> Result<()> {
        // Home Manager's activation migrates a legacy per-user profile of $USER into the
        // XDG profile directory, which would move the links of a real user called `demo`
        // into the throwaway $HOME.
        let per_user = std::env::var_os("NIX_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/nix/var/nix"), PathBuf::from)
            .join("profiles/per-user")
            .join(USER);
        if let Ok(entries) = fs::read_dir(&per_user)
            && entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("home-manager"))
        {
            bail!(
                "{} holds Home Manager profiles of a user called {USER}; the demo's activation would migrate them into its throwaway $HOME, so it does not run here",
                per_user.display()
            );
        }
        for (rel, text) in FLAKE_FILES {
            let path = self.repo.join(rel);
            fs::create_dir_all(path.parent().unwrap_or(&self.repo))?;
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        for d in [
            self.repo.join("homes"),
            self.repo.join("systems"),
            // The state directory: Home Manager's XDG profile directory.
            self.home.join(".local/state/nix/profiles"),
            self.cache.clone(),
            self.units.clone(),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        self.git(&["init", "-q", "-b", "main"])?;
        self.git(&["add", "-A"])?;
        self.git(&[
            "commit",
            "-q",
            "-m",
            "the demo flake: lib/ with stand-in builders",
        ])?;
        fs::write(self.home.join(".bashrc"), OLD_BASHRC)?;
        term::info(&format!(
            "the throwaway $HOME already has a ~/.bashrc (it will be backed up, not lost):\n{}",
            indent(OLD_BASHRC).trim_end()
        ));
        Ok(())
    }

    fn steps(&mut self) -> Result<()> {
        let user = USER;
        let global = format!("homes/{user}@global/default.nix");

        self.step(&["new-user", user, "--global"], |w, _| {
            for rel in [format!("homes/{user}/default.nix"), global.clone()] {
                expect(w.repo.join(&rel).is_file(), || format!("{rel} was written"))?;
            }
            let staged = w.git(&["ls-files", "homes"])?;
            expect(staged.contains(&global), || {
                format!("git knows {global} (intent-to-add), so the flake sees it; git ls-files: {staged:?}")
            })?;
            Ok(format!("homes/{user} and homes/{user}@global written and staged"))
        })?;

        self.edit(&global, &home_module(&self.home, BASHRC_1, false))?;

        self.step(&["check"], |w, _| {
            expect_old_bashrc(w)?;
            Ok("the flake evaluates; $HOME is unchanged".into())
        })?;

        self.step(&["build-home", user], |w, _| {
            let link = w.repo.join(format!("result-home-{user}"));
            let generation = fs::canonicalize(&link)
                .map_err(|e| anyhow!("{} links to the generation ({e})", link.display()))?;
            for part in ["activate", "home-files/.bashrc"] {
                expect(generation.join(part).exists(), || {
                    format!("the generation {} has {part}", generation.display())
                })?;
            }
            expect_old_bashrc(w)?;
            Ok(format!(
                "{} has activate and home-files/.bashrc; $HOME is unchanged",
                generation.display()
            ))
        })?;

        self.step(&["switch", user], |w, _| {
            expect_managed(w, ".bashrc", BASHRC_1)?;
            expect_file(w, ".bashrc.bak", OLD_BASHRC)?;
            expect_generations(w, &[1], 1)?;
            Ok("~/.bashrc links into generation 1, the old one is ~/.bashrc.bak, generation 1 is current".into())
        })?;

        self.edit(&global, &home_module(&self.home, BASHRC_2, true))?;

        self.step(&["diff", user], |w, out| {
            for needle in ["~ .bashrc", "+alias ll='ls -l'", &format!("+ {HELLO}")] {
                expect(out.contains(needle), || {
                    format!("the diff shows `{needle}` (the .bashrc hunk and the new file)")
                })?;
            }
            expect_managed(w, ".bashrc", BASHRC_1)?;
            expect(!w.home.join(HELLO).exists(), || {
                format!("~/{HELLO} does not exist yet")
            })?;
            expect_generations(w, &[1], 1)?;
            Ok(
                "the .bashrc hunk and the new file are shown; $HOME and the profile are unchanged"
                    .into(),
            )
        })?;

        self.step(&["switch", user], |w, _| {
            expect_managed(w, ".bashrc", BASHRC_2)?;
            expect_managed(w, HELLO, HELLO_TEXT)?;
            expect_file(w, ".bashrc.bak", OLD_BASHRC)?;
            expect_generations(w, &[1, 2], 2)?;
            Ok(format!(
                "~/.bashrc has the alias, ~/{HELLO} is linked, ~/.bashrc.bak is still the original, generation 2 is current"
            ))
        })?;

        self.step(&["generations", user], |_, out| {
            let line = |id: u32| out.lines().find(|l| l.contains(&format!(": id {id} -> ")));
            expect(line(2).is_some_and(|l| l.ends_with("(current)")), || {
                "generation 2 is listed as (current)".into()
            })?;
            expect(line(1).is_some_and(|l| !l.ends_with("(current)")), || {
                "generation 1 is listed, not current".into()
            })?;
            Ok("generations 2 (current) and 1 are listed".into())
        })?;

        self.step(&["rollback", user], |w, _| {
            expect_managed(w, ".bashrc", BASHRC_1)?;
            expect(!w.home.join(HELLO).exists(), || {
                format!("~/{HELLO}, which only generation 2 has, is removed")
            })?;
            expect_file(w, ".bashrc.bak", OLD_BASHRC)?;
            expect_generations(w, &[1, 2], 1)?;
            Ok(format!(
                "generation 1 is current again: ~/.bashrc without the alias, ~/{HELLO} removed"
            ))
        })?;

        // Without --no-store-gc, `nix-store --gc` would collect the garbage of the whole
        // store, not only the demo's.
        self.step(&["gc", user, "--keep", "1", "--no-store-gc"], |w, _| {
            expect_generations(w, &[1, 2], 1)?;
            expect_managed(w, ".bashrc", BASHRC_1)?;
            Ok("generation 2 (the newest: --keep 1) and generation 1 (current since the rollback) are both kept; --no-store-gc leaves the rest of this machine's store alone".into())
        })?;
        Ok(())
    }

    /// Runs `cargo xtask ARGS` (this binary) in the throwaway world, showing the command
    /// and its output as it comes, then `check`s the result.
    fn step(
        &mut self,
        args: &[&str],
        check: impl FnOnce(&World, &str) -> Result<String>,
    ) -> Result<()> {
        let shown = format!("cargo xtask {}", args.join(" "));
        let n = self.steps.len() + 1;
        term::info("");
        term::info(&term::paint(term::Style::Bold, &format!("[{n}] $ {shown}")));
        let start = Instant::now();
        let (code, output) = self.xtask(args)?;
        let interrupted = self.interrupted.load(Ordering::SeqCst);
        let verdict = if interrupted {
            Err(anyhow!("no interruption"))
        } else if code == 0 {
            check(self, &output)
        } else if output.contains("builder for ") {
            // The stand-in builders use the host's /bin/sh, which a build sandbox hides.
            Err(anyhow!(
                "exit status 0, got {code}: a build failed; the demo's stand-in builders need the build sandbox off, which nix allows root and trusted users through NIX_CONFIG; otherwise set `sandbox = false` (or `relaxed`) in /etc/nix/nix.conf"
            ))
        } else {
            Err(anyhow!("exit status 0, got {code}"))
        };
        let seconds = start.elapsed().as_secs_f64();
        let (ok, checked) = match &verdict {
            Ok(what) => (true, what.clone()),
            Err(e) => (false, format!("{e:#}")),
        };
        self.steps.push(StepReport {
            command: shown.clone(),
            ok,
            seconds,
            checked: checked.clone(),
        });
        if ok {
            term::info(&format!(
                "  {} {checked} ({seconds:.1} s)",
                term::paint(term::Style::Green, "ok:")
            ));
            Ok(())
        } else if interrupted {
            Err(anyhow!(
                "interrupted during step {n} `{shown}` (it ran to its end; no later step ran)"
            ))
        } else {
            Err(anyhow!("step {n} `{shown}`: expected {checked}"))
        }
    }

    /// Writes a home file as a user would with an editor, showing what changed.
    fn edit(&mut self, rel: &str, text: &str) -> Result<()> {
        let path = self.repo.join(rel);
        let old = fs::read_to_string(&path).unwrap_or_default();
        term::info("");
        term::info(&term::paint(
            term::Style::Bold,
            &format!("$ $EDITOR {rel}    # the demo edits the home"),
        ));
        let diff = similar::TextDiff::from_lines(&old, text)
            .unified_diff()
            .context_radius(2)
            .header(&format!("a/{rel}"), &format!("b/{rel}"))
            .to_string();
        term::raw(&indent(&diff));
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The child xtask with the throwaway environment: (exit code, stdout and stderr
    /// interleaved as they came).
    fn xtask(&self, args: &[&str]) -> Result<(i32, String)> {
        let (reader, writer) = std::io::pipe().context("creating a pipe")?;
        let mut cmd = Command::new(&self.exe);
        if self.verbose {
            cmd.arg("-v");
        }
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer);
        self.isolate(&mut cmd);
        cmd.env("USER", USER)
            .env("LOGNAME", USER)
            .env("NIX_CONFIG", nix_config())
            .env("XTASK_SYSTEMD_UNIT_DIR", &self.units);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {}", self.exe.display()))?;
        // The pipe ends when the child (and anything it left running) closes its copies.
        drop(cmd);
        let mut output = String::new();
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            term::raw(&format!("  {}", text.trim_end_matches('\n')));
            term::raw("\n");
            output.push_str(&text);
        }
        let status = child.wait()?;
        Ok((status.code().unwrap_or(-1), output))
    }

    /// git in the throwaway repository, with the throwaway `$HOME` (no personal config such
    /// as commit signing).
    fn git(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("git");
        cmd.args(["-c", "user.name=demo", "-c", "user.email=demo@example.org"])
            .args(args);
        self.isolate(&mut cmd);
        let out = cmd
            .output()
            .context("running git (the demo's flake is a git repository: install git)")?;
        if !out.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What every child shares: the throwaway repository as working directory, the
    /// throwaway `$HOME`, and nothing that points at the user's own state.
    fn isolate(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            // GIT_DIR & co. (set inside git hooks) would point git at the real repository.
            if k.starts_with("GIT_") || k.starts_with("HOME_MANAGER_") {
                cmd.env_remove(&*k);
            }
        }
        cmd.current_dir(&self.repo)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("XDG_CACHE_HOME", &self.cache)
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XTASK_TEST_ABORT_AT");
    }
}

/// The user's own nix settings, then the demo's offline ones (later lines win).
fn nix_config() -> String {
    match std::env::var("NIX_CONFIG") {
        Ok(own) if !own.trim().is_empty() => format!("{own}\n{NIX_CONFIG}"),
        _ => NIX_CONFIG.to_string(),
    }
}

/// `homes/demo@global/default.nix` as the demo writes it: the throwaway `$HOME` as the
/// home directory, a managed `~/.bashrc`, and (`hello`) one more file.
fn home_module(home: &Path, bashrc: &str, hello: bool) -> String {
    let mut files = text_file(".bashrc", bashrc);
    if hello {
        files.push_str(&text_file(HELLO, HELLO_TEXT));
    }
    format!(
        "# {USER}'s standalone-only part, edited by `cargo xtask demo`.\n{{ ... }}:\n{{\n  # The demo's throwaway $HOME instead of /home/{USER}.\n  home.homeDirectory = {};\n{files}}}\n",
        nix_string(&home.display().to_string())
    )
}

/// `home.file."PATH".text = '' … '';` (the demo's texts hold no `''` or `${`).
fn text_file(path: &str, text: &str) -> String {
    let body: String = text.lines().map(|l| format!("    {l}\n")).collect();
    format!("  home.file.{}.text = ''\n{body}  '';\n", nix_string(path))
}

fn expect(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond { Ok(()) } else { Err(anyhow!(what())) }
}

/// `~/rel` is Home Manager's link (into a `*-home-manager-files` store path) with `text`.
fn expect_managed(w: &World, rel: &str, text: &str) -> Result<()> {
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
fn expect_file(w: &World, rel: &str, text: &str) -> Result<()> {
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
fn expect_old_bashrc(w: &World) -> Result<()> {
    expect_file(w, ".bashrc", OLD_BASHRC)?;
    expect(!w.home.join(".bashrc.bak").exists(), || {
        "no ~/.bashrc.bak yet".into()
    })
}

/// The profile has exactly the generations `ids`, and `current` is the current one.
fn expect_generations(w: &World, ids: &[u32], current: u32) -> Result<()> {
    let dir = w.home.join(".local/state/nix/profiles");
    let mut found: Vec<u32> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| generation_id(&e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    found.sort_unstable();
    let active = fs::read_link(dir.join("home-manager"))
        .ok()
        .and_then(|t| generation_id(&t.to_string_lossy()));
    expect(found == ids && active == Some(current), || {
        format!(
            "profile generations {ids:?} with {current} current in {}; found {found:?} with {} current",
            dir.display(),
            active.map_or("none".into(), |a| a.to_string())
        )
    })
}

/// `home-manager-7-link` → 7.
fn generation_id(name: &str) -> Option<u32> {
    name.strip_prefix("home-manager-")?
        .strip_suffix("-link")?
        .parse()
        .ok()
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

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_ids() {
        assert_eq!(generation_id("home-manager-12-link"), Some(12));
        assert_eq!(generation_id("home-manager"), None);
    }

    #[test]
    fn home_module_is_nix_with_the_files() {
        let m = home_module(Path::new("/tmp/x/home"), BASHRC_2, true);
        assert!(m.contains("home.homeDirectory = \"/tmp/x/home\";"), "{m}");
        assert!(m.contains("    alias ll='ls -l'\n  '';"), "{m}");
        assert!(m.contains(&format!("home.file.\"{HELLO}\"")), "{m}");
    }
}
