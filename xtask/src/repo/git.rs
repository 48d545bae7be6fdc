//! What git tracks: a flake in a git repository sees only tracked files (and `git add -N`
//! ones), so a `.nix` file git does not track is one nix reports as missing.

use std::path::Path;

use super::{Finding, NIX_DIRS};

/// `.nix` files under homes/, systems/, droids/ and lib/ that git does not track: a flake in a git
/// repository only sees tracked files, so nix reports them as missing ("the classic module
/// not found"). One `git ls-files` call; outside a git repository (a `path:` flake sees
/// every file) or without git there is nothing to report.
pub fn untracked_nix_findings(root: &Path) -> Vec<Finding> {
    untracked_file_findings(&untracked_nix_files(root).unwrap_or_default())
}

/// The untracked `.nix` files of homes/, systems/, droids/ and lib/; None outside git.
fn untracked_nix_files(root: &Path) -> Option<Vec<String>> {
    let mut args = vec!["--others", "--exclude-standard", "--"];
    args.extend(NIX_DIRS);
    Some(
        git_ls_files(root, &args)?
            .into_iter()
            .filter(|p| p.ends_with(".nix"))
            .collect(),
    )
}

/// `git ls-files -z ARGS` in `root`, repo-relative paths; None outside a git repository
/// or without git. (The lint runs it on a thread of its own, beside its walk.)
pub(super) fn git_ls_files(root: &Path, args: &[&str]) -> Option<Vec<String>> {
    let out = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .args(args)
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

pub(super) fn untracked_file_findings(files: &[String]) -> Vec<Finding> {
    files
        .iter()
        .map(|p| {
            Finding::error(
                p,
                "untracked-file",
                "git does not track this file, so the flake cannot see it (nix reports it as missing)".into(),
                format!("git add -N {p}"),
            )
        })
        .collect()
}
