use anyhow::{Result, bail};

use crate::{Ctx, cli::Rollback};

impl Rollback {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        bail!("`cargo xtask rollback` is not implemented yet")
    }
}
