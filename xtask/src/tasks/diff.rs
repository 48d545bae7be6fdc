use anyhow::{Result, bail};

use crate::{Ctx, cli::Diff};

impl Diff {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        bail!("`cargo xtask diff` is not implemented yet")
    }
}
