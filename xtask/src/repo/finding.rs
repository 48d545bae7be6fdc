//! A problem in the repository, with where it is and how to fix it, and where in the
//! repository a nix error message points.

use std::{fmt, path::Path};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in the repository, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Repo-relative path (`homes/bob@nohost`, `systems/web/meta.nix`).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based, in characters; only with a line (the static analysis knows it, nix's
    /// messages are read for the line only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// A stable identifier (`bad-name`, `unknown-host`, …) for scripts and docs.
    pub code: &'static str,
    pub message: String,
    pub fix: String,
}

impl Finding {
    pub fn new(
        severity: Severity,
        path: impl Into<String>,
        code: &'static str,
        message: String,
        fix: String,
    ) -> Self {
        Finding {
            severity,
            path: path.into(),
            line: None,
            column: None,
            code,
            message,
            fix,
        }
    }
    pub fn error(
        path: impl Into<String>,
        code: &'static str,
        message: String,
        fix: String,
    ) -> Self {
        Finding::new(Severity::Error, path, code, message, fix)
    }
    pub fn warning(
        path: impl Into<String>,
        code: &'static str,
        message: String,
        fix: String,
    ) -> Self {
        Finding::new(Severity::Warning, path, code, message, fix)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, " ({})", self.fix)?;
        }
        Ok(())
    }
}

/// Finds the repo-relative file and line a nix error message points at
/// (`at /abs/root/homes/bob/default.nix:3:5:` or `… «path»:3:5`). Flake evaluation reports
/// the flake's copy in the store instead (`/nix/store/<hash>-source/homes/bob/default.nix`);
/// other inputs (nixpkgs) are also called `<hash>-source`, so a store location counts only
/// when the same relative file exists in the repo, and homes/ and systems/ files win.
pub fn locate_nix_error(root: &Path, message: &str) -> (Option<String>, Option<u32>) {
    let found = nix_error_locations(root, message);
    // The repo's own modules say more than lib/ (which only passes the error on).
    let preferred = found
        .iter()
        .position(|(p, _)| p.starts_with("homes/") || p.starts_with("systems/"))
        .unwrap_or(0);
    match found.into_iter().nth(preferred) {
        Some((path, line)) => (Some(path), line),
        None => (None, None),
    }
}

/// Every location in a nix error message that is a file of the repo, in order: paths
/// under `root` itself (meta.nix, a `path:` flake) and under a flake's store copy
/// (`/nix/store/<hash>-source/homes/bob/default.nix:3:5`). Store sources whose path the
/// repo does not have (nixpkgs' `lib/modules.nix`, …) are not the repo's.
pub fn nix_error_locations(root: &Path, message: &str) -> Vec<(String, Option<u32>)> {
    let root_prefix = format!("{}/", root.display());
    let mut found = Vec::new();
    for (i, _) in message.match_indices('/') {
        let rest = &message[i..];
        // A path under the root is the repo's; a store source only if the repo has the file.
        let (tail, must_exist) = if let Some(tail) = rest.strip_prefix(root_prefix.as_str()) {
            (tail, false)
        } else if let Some(after) = rest.strip_prefix("/nix/store/") {
            // `<32-char hash>-source/` is the store copy of a flake's source tree.
            let Some(slash) = after.find('/') else {
                continue;
            };
            let name = &after[..slash];
            if !(name.len() > 33 && name.ends_with("-source") && name.as_bytes()[32] == b'-') {
                continue;
            }
            (&after[slash + 1..], true)
        } else {
            continue;
        };
        let (Some(path), line) = split_location(tail) else {
            continue;
        };
        let known = found.iter().any(|(p, l)| p == &path && *l == line);
        if !known && (!must_exist || root.join(&path).is_file()) {
            found.push((path, line));
        }
    }
    found
}

/// `homes/bob/default.nix:3:5: …` -> the path and the line.
fn split_location(rest: &str) -> (Option<String>, Option<u32>) {
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '»' || c == ',')
        .unwrap_or(rest.len());
    let loc = rest[..end].trim_end_matches([':', '.']);
    let mut pieces = loc.split(':');
    let path = pieces.next().filter(|p| !p.is_empty()).map(str::to_string);
    let line = pieces.next().and_then(|l| l.parse().ok());
    (path, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn locates_nix_errors() {
        let root = Path::new("/r");
        assert_eq!(
            locate_nix_error(root, "error: syntax error, at /r/systems/ws/meta.nix:3:5"),
            (Some("systems/ws/meta.nix".into()), Some(3))
        );
        assert_eq!(
            locate_nix_error(
                root,
                "error: undefined variable 'x'\n       at «string»:1:1:"
            ),
            (None, None)
        );
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("homes/bob")).unwrap();
        fs::write(t.path().join("homes/bob/default.nix"), "{ }").unwrap();
        let store = "/nix/store/f5q8q56rqklwzgzk5p0azp9yr79h3cqr-source";
        assert_eq!(
            locate_nix_error(
                t.path(),
                &format!("error: undefined variable 'foo' at {store}/homes/bob/default.nix:1:35:")
            ),
            (Some("homes/bob/default.nix".into()), Some(1))
        );
        // A nixpkgs file (also `-source`) that the repo does not have is not the repo's.
        assert_eq!(
            locate_nix_error(
                t.path(),
                &format!("error: x at {store}/lib/modules.nix:9:1:")
            ),
            (None, None)
        );
    }
}
