use anyhow::{Result, bail};

use crate::{Ctx, cli::NewUser};

impl NewUser {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        bail!("`cargo xtask new-user` is not implemented yet")
    }
}
