//! What a generation's `home-path` holds: Home Manager builds it with `buildEnv` from
//! `home.packages`, so the store paths it refers to are the packages, each named
//! `name-version` the way nvd and dix read store path names.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::nix::Nix;

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
            let (name, version) = parse_store_name(path.file_name()?.to_str()?)?;
            Some(Package {
                name,
                version,
                path,
            })
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.name == b.name && a.version == b.version);
    Ok((home_path, out))
}

/// The outputs a multi-output package's store path name may end in (`foo-1.2-man`).
const OUTPUTS: [&str; 7] = ["bin", "dev", "doc", "info", "lib", "man", "out"];

/// `/nix/store/<hash>-name-version`'s file name → (name, version): the version starts at
/// the first `-` followed by a digit (nvd's rule), without an output suffix. None for a
/// name that is not a store path's.
pub fn parse_store_name(file_name: &str) -> Option<(String, Option<String>)> {
    let (hash, rest) = file_name.split_once('-')?;
    if hash.len() != 32 || rest.is_empty() {
        return None;
    }
    Some(split_name_version(rest))
}

/// `name-version` → (name, version), as [`parse_store_name`] reads it.
pub fn split_name_version(s: &str) -> (String, Option<String>) {
    let bytes = s.as_bytes();
    let at = (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'-' && bytes[i + 1].is_ascii_digit());
    let Some(at) = at else {
        return (s.to_string(), None);
    };
    let mut version = &s[at + 1..];
    if let Some((v, output)) = version.rsplit_once('-')
        && OUTPUTS.contains(&output)
        && !v.is_empty()
    {
        version = v;
    }
    (s[..at].to_string(), Some(version.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> (String, Option<String>) {
        split_name_version(s)
    }

    #[test]
    fn versions_start_at_the_first_dash_before_a_digit() {
        assert_eq!(split("hello-2.12"), ("hello".into(), Some("2.12".into())));
        assert_eq!(
            split("python3-3.12.4-env"),
            ("python3".into(), Some("3.12.4-env".into()))
        );
        assert_eq!(
            split("gnome-shell-extension-x-42"),
            ("gnome-shell-extension-x".into(), Some("42".into()))
        );
        assert_eq!(
            split("hm-session-vars.sh"),
            ("hm-session-vars.sh".into(), None)
        );
        assert_eq!(split("tool-"), ("tool-".into(), None));
        assert_eq!(
            split("man-db-2.12.1-man"),
            ("man-db".into(), Some("2.12.1".into()))
        );
    }

    #[test]
    fn store_names_lose_their_hash() {
        assert_eq!(
            parse_store_name("vm11q0lydahxn16bcbwf391cmsfn9k9k-jq-1.7.1"),
            Some(("jq".into(), Some("1.7.1".into())))
        );
        assert_eq!(parse_store_name("short-jq-1.7"), None);
        assert_eq!(parse_store_name("nohash"), None);
    }
}
