//! `cargo xtask doctor`: is this machine (and this checkout) ready for `cargo xtask switch`?
//! One line per check, each failing one with its fix; `--json` for scripts. Exit 1 when
//! something would block a switch (an error), 0 otherwise (warnings allowed).
//!
//! Nothing here changes anything, and nothing may hang: every nix call runs under a time
//! limit (`XTASK_DOCTOR_TIMEOUT` seconds, default 15; fetching an input gets twice that),
//! and a check whose call ran out of time says so instead of waiting.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

mod checkout;
mod machine;
mod profile;

use checkout::{MetaBy, check_git, check_inputs, check_layout, check_repo};
use machine::{
    check_flakes, check_nix, check_platform, check_settings, check_store, check_store_space,
};
use profile::{check_lock, check_profile};

use crate::{
    Ctx, Reported,
    cli::Doctor,
    home::UserEnv,
    term::{self, Style},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Severity {
    /// Passed, or not applicable (then `ok` is false and the detail says why it was skipped).
    Info,
    /// Worth fixing; a switch still works.
    Warning,
    /// A switch would be blocked.
    Error,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    ok: bool,
    severity: Severity,
    detail: String,
    fix: Option<String>,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn push(
        &mut self,
        check: &str,
        ok: bool,
        severity: Severity,
        detail: String,
        fix: Option<String>,
    ) {
        self.checks.push(Check {
            check: check.to_string(),
            ok,
            severity,
            detail,
            fix,
        });
    }
    fn ok(&mut self, check: &str, detail: impl Into<String>) {
        self.push(check, true, Severity::Info, detail.into(), None);
    }
    fn warn(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(
            check,
            false,
            Severity::Warning,
            detail.into(),
            Some(fix.into()),
        );
    }
    fn fail(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(
            check,
            false,
            Severity::Error,
            detail.into(),
            Some(fix.into()),
        );
    }
    fn skip(&mut self, check: &str, why: &str) {
        self.push(
            check,
            false,
            Severity::Info,
            format!("skipped: {why}"),
            None,
        );
    }
}

/// The time limit of one quick nix call.
fn timeout() -> Duration {
    let secs = std::env::var("XTASK_DOCTOR_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(15);
    Duration::from_secs(secs)
}

impl Doctor {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let mut r = Report::default();
        let nix = ctx.nix();
        let version = check_nix(&mut r, &nix);
        const NO_NIX: &str = "nix cannot run (see above)";
        let nix_ok = if version.is_some() {
            check_flakes(&mut r, &nix)
        } else {
            r.skip("flakes", NO_NIX);
            false
        };
        // The store is looked at whenever nix runs: a store that cannot be opened is also
        // why the flakes check fails, and this line names its fix.
        if version.is_some() {
            let local = check_store(&mut r, &nix);
            if nix_ok {
                check_settings(&mut r, &nix, version.as_ref(), local);
            } else {
                r.skip("nix settings", "nix cannot evaluate (see flakes above)");
            }
        } else {
            r.skip("store", NO_NIX);
            r.skip("nix settings", NO_NIX);
        }
        let env = match UserEnv::from_process() {
            Ok(env) => {
                match env.check_home(true) {
                    Ok(()) => r.ok("$HOME", env.home.display().to_string()),
                    Err(e) => r.fail(
                        "$HOME",
                        format!("{e:#}"),
                        "fix $HOME as said, then run doctor again",
                    ),
                }
                Some(env)
            }
            Err(e) => {
                r.fail("$USER", format!("{e:#}"), "export USER=<your login name>");
                None
            }
        };
        match &env {
            Some(env) => {
                check_profile(&mut r, env);
                check_lock(&mut r, env);
            }
            None => {
                r.skip("profile", "$USER is not usable");
                r.skip("lock", "$USER is not usable");
            }
        }
        match (ctx.repo(), &env) {
            (Ok(mut repo), Some(env)) => {
                // Without nix, meta.nix files are read from their text (literals); the
                // ones that compute their values are named.
                let how = if nix_ok {
                    MetaBy::Nix(&nix)
                } else {
                    MetaBy::Text(repo.load_meta_static())
                };
                check_repo(&mut r, &repo, env, how)
            }
            (Ok(repo), None) => {
                check_layout(&mut r, &repo);
                r.skip("home", "$USER is not usable");
            }
            (Err(e), _) => r.fail(
                "repository",
                format!("{e:#}"),
                "fix the repository as said (cargo xtask check --lint-only shows every problem)",
            ),
        }
        check_git(&mut r, &ctx.root);
        if nix_ok {
            check_inputs(&mut r, &nix, &ctx.root);
        } else {
            r.skip("flake.lock", NO_NIX);
        }
        check_store_space(&mut r);
        check_platform(&mut r, env.as_ref(), &ctx.root);
        print(&r, self.json)
    }
}

fn print(r: &Report, json: bool) -> Result<()> {
    let errors = r
        .checks
        .iter()
        .filter(|c| c.severity == Severity::Error)
        .count();
    let warnings = r
        .checks
        .iter()
        .filter(|c| c.severity == Severity::Warning)
        .count();
    if json {
        term::out(&serde_json::to_string_pretty(&r.checks)?);
    } else {
        for c in &r.checks {
            let mark = match (c.ok, c.severity) {
                (true, _) => term::paint(Style::Green, "✓"),
                (false, Severity::Error) => term::paint(Style::Red, "✗"),
                (false, Severity::Warning) => term::paint(Style::Yellow, "!"),
                (false, Severity::Info) => term::paint(Style::Dim, "-"),
            };
            term::info(&format!(
                "{mark} {}: {}",
                term::paint(Style::Bold, &c.check),
                c.detail
            ));
            if let Some(fix) = &c.fix {
                let fix = fix.replace('\n', "\n      ");
                term::info(&format!("    fix: {fix}"));
            }
        }
        let verdict = if errors > 0 {
            "a switch would be blocked"
        } else {
            "ready to switch"
        };
        term::info(&format!(
            "doctor: {} checks, {errors} errors, {warnings} warnings: {verdict}",
            r.checks.len()
        ));
    }
    if errors > 0 {
        return Err(Reported.into());
    }
    Ok(())
}
