use anyhow::{Result, bail};

use crate::{Ctx, cli::BuildHome};

impl BuildHome {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        bail!("`cargo xtask build-home` is not implemented yet")
    }
}
