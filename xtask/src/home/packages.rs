//! What a generation's `home-path` holds: Home Manager builds it with `buildEnv` from
//! `home.packages`, so the store paths it refers to are the packages, each named
//! `name-version` the way nvd and dix read store path names (`closure::split_name_version`,
//! as `diff` reads them).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{closure, nix::Nix};

/// One package of a `home-path`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Package {
    pub name: String,
    /// None for a store path whose name has no version (`hm-session-vars.sh`).
    pub version: Option<String>,
    pub path: PathBuf,
}

/// The packages of `generation`'s `home-path`, sorted by name and version: one
/// `nix-store -q --references` of the `home-path` store path. A package with several
/// outputs in the env (`foo-1.2`, `foo-1.2-man`) is listed once.
pub fn packages(nix: &Nix<'_>, generation: &Path) -> Result<(PathBuf, Vec<Package>)> {
    let link = generation.join("home-path");
    // `home-path` is a link to the buildEnv's own store path; nix-store would answer for
    // the generation that holds the link, so it is resolved first.
    let home_path = fs::canonicalize(&link).with_context(|| {
        format!(
            "{} has no home-path (the packages of a Home Manager generation); is it a Home Manager generation? `cargo xtask generations` lists the home's generations",
            generation.display()
        )
    })?;
    let refs = nix.references(&home_path, "the references of home-path")?;
    let mut out: Vec<Package> = refs
        .into_iter()
        .filter_map(|path| {
            let (name, version) = closure::split_name_version(closure::strip_store_hash(
                path.file_name()?.to_str()?,
            )?);
            Some(Package {
                name: name.to_string(),
                version: version.map(str::to_string),
                path,
            })
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.name == b.name && a.version == b.version);
    Ok((home_path, out))
}
