use anyhow::{Result, bail};

use crate::{Ctx, cli::Gc};

impl Gc {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        bail!("`cargo xtask gc` is not implemented yet")
    }
}
