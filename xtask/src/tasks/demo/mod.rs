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
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicBool},
    time::Instant,
};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::{Ctx, cli::Demo, repo::nix_string, term};

mod expect;
mod world;

use expect::{expect, expect_file, expect_generations, expect_managed, expect_old_bashrc};

/// The throwaway flake: where each file comes from in this repository.
const FLAKE_FILES: &[(&str, &str)] = &[
    (
        "flake.nix",
        include_str!("../../../tests/fixtures/flake.nix"),
    ),
    (
        "stub-builders.nix",
        include_str!("../../../tests/fixtures/stub-builders.nix"),
    ),
    (
        "activate.sh",
        include_str!("../../../tests/fixtures/activate.sh"),
    ),
    (
        "check-link-targets.sh",
        include_str!("../../../tests/fixtures/check-link-targets.sh"),
    ),
    (
        "lib/default.nix",
        include_str!("../../../../lib/default.nix"),
    ),
    // The rules and defaults (backup-extension = "bak", …) the flake passes to lib/.
    ("Cargo.toml", include_str!("../../../../Cargo.toml")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_module_is_nix_with_the_files() {
        let m = home_module(Path::new("/tmp/x/home"), BASHRC_2, true);
        assert!(m.contains("home.homeDirectory = \"/tmp/x/home\";"), "{m}");
        assert!(m.contains("    alias ll='ls -l'\n  '';"), "{m}");
        assert!(m.contains(&format!("home.file.\"{HELLO}\"")), "{m}");
    }
}
