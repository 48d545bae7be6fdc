use anyhow::{Result, bail};

use crate::{Ctx, cli::Bench};

impl Bench {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        bail!("`cargo xtask bench` is not implemented yet")
    }
}
