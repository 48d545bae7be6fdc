//! Figure of the foundation issue: `xtask list` on 1000 homes and 100 hosts vs the one
//! `nix eval` that reads the meta files.

use anyhow::Result;

use super::{Bencher, Figure};

pub fn run(_b: &Bencher) -> Result<Vec<Figure>> {
    anyhow::bail!("the list benchmark is not written yet")
}
