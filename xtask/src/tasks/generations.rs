//! `cargo xtask generations [USER]`: the home's generations, newest first, as
//! `home-manager generations` lists them, plus closure sizes (one nix call for all).

use anyhow::Result;
use serde::Serialize;

use crate::{
    Ctx,
    cli::Generations,
    home::{Generation, UserEnv},
    term::{self, human_size},
};

#[derive(Debug, Serialize)]
struct Entry<'a> {
    #[serde(flatten)]
    generation: &'a Generation,
    closure_size: Option<u64>,
}

impl Generations {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let (env, user) = UserEnv::own(self.user, false)?;
        let profile = env.profile();
        let gens = profile.generations()?;
        if gens.is_empty() {
            term::info(&format!(
                "{user} has no home generations yet (looked in {}); create the first with `cargo xtask switch`",
                profile.dir.display()
            ));
        }
        let paths: Vec<_> = gens.iter().map(|g| g.path.clone()).collect();
        let sizes = ctx.nix().closure_sizes(&paths)?;
        let entries: Vec<Entry<'_>> = gens
            .iter()
            .map(|g| Entry {
                generation: g,
                closure_size: sizes.get(&g.path).copied(),
            })
            .collect();
        if self.json {
            term::out(&serde_json::to_string_pretty(&entries)?);
            return Ok(());
        }
        for e in &entries {
            let g = e.generation;
            let size = e
                .closure_size
                .map_or_else(String::new, |s| format!(" ({})", human_size(s)));
            let current = if g.current { " (current)" } else { "" };
            term::out(&format!(
                "{} : id {} -> {}{size}{current}",
                g.date,
                g.id,
                g.path.display()
            ));
        }
        Ok(())
    }
}
