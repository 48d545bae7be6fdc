use anyhow::{Result, bail};

use crate::{Ctx, cli::Switch};

impl Switch {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        bail!("`cargo xtask switch` is not implemented yet")
    }
}
