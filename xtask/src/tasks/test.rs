//! `cargo xtask test`: what CI runs, in the order that fails fastest.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::{Ctx, cli::Test, term};

impl Test {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let sh = &ctx.sh;
        let steps: [(&str, xshell::Cmd<'_>); 2] = [
            ("formatting", cmd!(sh, "cargo fmt --all --check")),
            (
                "clippy",
                cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings"),
            ),
        ];
        for (what, step) in steps {
            run(step).with_context(|| match what {
                "formatting" => "the code is not formatted; run `cargo fmt` and commit the result".to_string(),
                _ => "clippy found problems (listed above); fix them or explain an allow with a comment".to_string(),
            })?;
        }
        if self.lint_only {
            return Ok(());
        }
        run(cmd!(sh, "cargo test --workspace")).context("tests failed (see the output above)")?;
        Ok(())
    }
}

/// Shows the step as a shell line and runs it, its output on the terminal.
fn run(step: xshell::Cmd<'_>) -> Result<()> {
    let (mut step, shown) = crate::nix::prepare(step);
    term::command(&shown);
    let status = step
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {shown}"))?;
    anyhow::ensure!(status.success(), "{shown} failed ({status})");
    Ok(())
}
