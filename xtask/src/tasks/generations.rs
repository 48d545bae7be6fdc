use anyhow::{Result, bail};

use crate::{Ctx, cli::Generations};

impl Generations {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        bail!("`cargo xtask generations` is not implemented yet")
    }
}
