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
            term::command(&step.to_string());
            step.quiet().run().with_context(|| match what {
                "formatting" => "the code is not formatted; run `cargo fmt` and commit the result".to_string(),
                _ => "clippy found problems (listed above); fix them or explain an allow with a comment".to_string(),
            })?;
        }
        if self.lint_only {
            return Ok(());
        }
        let test = cmd!(sh, "cargo test --workspace");
        term::command(&test.to_string());
        test.quiet()
            .run()
            .context("tests failed (see the output above)")?;
        Ok(())
    }
}
