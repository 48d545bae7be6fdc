use anyhow::{Result, bail};

use crate::{Ctx, cli::Check};

impl Check {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        bail!("`cargo xtask check` is not implemented yet")
    }
}
