//! The throwaway world the demo runs in: its flake (a git repository), `$HOME` and nix
//! cache, and this binary run there, one step at a time.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::Command,
    sync::atomic::Ordering,
    time::Instant,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::term;

use super::{FLAKE_FILES, NIX_CONFIG, OLD_BASHRC, StepReport, USER, World};

impl World {
    pub(super) fn setup(&mut self) -> Result<()> {
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

    /// Runs `cargo xtask ARGS` (this binary) in the throwaway world, showing the command
    /// and its output as it comes, then `check`s the result.
    pub(super) fn step(
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
    pub(super) fn edit(&mut self, rel: &str, text: &str) -> Result<()> {
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
    pub(super) fn git(&self, args: &[&str]) -> Result<String> {
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

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
