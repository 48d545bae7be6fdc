use anyhow::{Result, bail};

use crate::{Ctx, cli::NewHost};

impl NewHost {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        bail!("`cargo xtask new-host` is not implemented yet")
    }
}
