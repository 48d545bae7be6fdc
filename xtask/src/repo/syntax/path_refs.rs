//! The relative path literals a file uses as imports or sources (`./hypr.nix`,
//! `../modules`), found from its parse, and what is wrong with their targets: missing,
//! untracked (the flake cannot see them), or outside the repository.

use std::{
    collections::{BTreeSet, HashSet},
    fs,
    path::Path,
};

use rnix::{SyntaxKind, TextRange, ast};
// rnix's nodes get `cast` and `syntax` from rowan's trait (rnix re-exports only its alias).
use rowan::ast::AstNode;

use super::{attr_name, unparen};
use crate::repo::Finding;

/// How a path literal is used, which decides what must exist behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Use {
    /// `imports = [ ./x ]`, `import ./x`, `callPackage ./x`: a file, or a directory with a
    /// default.nix.
    Import,
    /// `source = ./x`, `src = ./x`, `readFile ./x`: a file or a directory.
    Source,
}

/// A relative path literal in a context where it must exist.
#[derive(Debug)]
pub(super) struct PathRef {
    pub(super) literal: String,
    pub(super) line: u32,
    pub(super) column: u32,
    pub(super) usage: Use,
    /// The same literal is also tested with `pathExists` in the file, so its absence is
    /// expected (`if pathExists ./local.nix then import ./local.nix else { }`).
    pub(super) guarded: bool,
}

/// The name a function is called by: `import`, `builtins.import`, `pkgs.callPackage`.
fn function_name(f: ast::Expr) -> Option<String> {
    match unparen(f) {
        ast::Expr::Ident(i) => i.ident_token().map(|t| t.text().to_string()),
        ast::Expr::Select(s) if s.default_expr().is_none() => {
            attr_name(&s.attrpath()?.attrs().last()?)
        }
        _ => None,
    }
}

/// The relative path literals used as imports or sources, and those tested with
/// `pathExists`. Only these contexts are checked: elsewhere a path may well name something
/// that is optional (`lib.optional (pathExists ./x) ./x`) or produced at evaluation.
type Refs = Vec<(String, TextRange, Use)>;

/// Found from the literals up, in the order of the text: every relative path literal has a
/// `/` after a path character (`./x`, `a/b`), which memchr finds at once, and only those
/// few tokens and their parents are looked at, not every node of the file (thousands of
/// files are parsed on each first run of the lint).
pub(super) fn path_refs(root: &rnix::SyntaxNode, text: &str) -> (Refs, HashSet<String>) {
    let mut refs = Vec::new();
    let mut guarded = HashSet::new();
    let bytes = text.as_bytes();
    // Slashes before this are in a token already looked at.
    let mut seen = 0;
    for slash in memchr::memchr_iter(b'/', bytes) {
        // A URL's ("https://") or a division's ("a / b") slash follows no path character.
        if slash < seen || slash == 0 || !is_path_byte(bytes[slash - 1]) {
            continue;
        }
        let Some(token) = root
            .token_at_offset(rnix::TextSize::from(slash as u32))
            .right_biased()
        else {
            continue;
        };
        seen = usize::from(token.text_range().end());
        if token.kind() != SyntaxKind::TOKEN_PATH_REL {
            continue;
        }
        // Without interpolation (`./${name}.nix` is the evaluation's business).
        let Some(path) = token
            .parent()
            .filter(|p| p.kind() == SyntaxKind::NODE_PATH_REL && p.first_child().is_none())
        else {
            continue;
        };
        let range = path.text_range();
        let lit = text[usize::from(range.start())..usize::from(range.end())].to_string();
        // What the literal is, `(./x)` being `./x`: an argument, a value, a list's item.
        let mut expr = path;
        while let Some(paren) = expr.parent().filter(|p| p.kind() == SyntaxKind::NODE_PAREN) {
            expr = paren;
        }
        let Some(parent) = expr.parent() else {
            continue;
        };
        let usage = if let Some(apply) = ast::Apply::cast(parent.clone()) {
            if apply.argument().is_none_or(|a| *a.syntax() != expr) {
                continue;
            }
            match apply.lambda().and_then(function_name).as_deref() {
                Some("import" | "callPackage" | "scopedImport") => Use::Import,
                Some("readFile" | "readDir" | "fileContents") => Use::Source,
                Some("pathExists") => {
                    guarded.insert(lit);
                    continue;
                }
                _ => continue,
            }
        } else if parent.kind() == SyntaxKind::NODE_LIST {
            if value_name(&parent).as_deref() != Some("imports") {
                continue;
            }
            Use::Import
        } else if let Some("source" | "src") = value_of(&expr).as_deref() {
            Use::Source
        } else {
            continue;
        };
        refs.push((lit, range, usage));
    }
    (refs, guarded)
}

/// The characters of a path literal, as nix's lexer has them.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+')
}

/// The attribute whose value `expr` is (`imports` of `imports = …`), if it is one.
fn value_of(expr: &rnix::SyntaxNode) -> Option<String> {
    let av = ast::AttrpathValue::cast(expr.parent()?)?;
    if *av.value()?.syntax() != *expr {
        return None;
    }
    attr_name(&av.attrpath()?.attrs().last()?)
}

/// The attribute whose value `list` is part of, through parentheses and `++`
/// (`imports = [ … ] ++ [ … ]`); anything computed (`lib.optional …`, a `map`) is the
/// evaluation's business.
fn value_name(list: &rnix::SyntaxNode) -> Option<String> {
    let mut expr = list.clone();
    loop {
        let parent = expr.parent()?;
        match parent.kind() {
            SyntaxKind::NODE_PAREN => {}
            SyntaxKind::NODE_BIN_OP => {
                let op = ast::BinOp::cast(parent.clone())?;
                if op.operator() != Some(ast::BinOpKind::Concat) {
                    return None;
                }
            }
            _ => return value_of(&expr),
        }
        expr = parent;
    }
}

/// Resolves `literal` against the directory of `file` (both repo-relative) as nix does:
/// lexically, `..` removing a component. None when it leaves the repository.
pub(super) fn resolve(file: &str, literal: &str) -> Option<String> {
    // Built in one string, not a list of parts: thousands of literals on a first run.
    let mut out = String::with_capacity(file.len() + literal.len());
    out.push_str(file.rsplit_once('/').map_or("", |(dir, _)| dir));
    for c in literal.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.is_empty() {
                    return None;
                }
                out.truncate(out.rfind('/').unwrap_or(0));
            }
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    Some(out)
}

fn is_tracked(tracked: &BTreeSet<String>, path: &str, dir: bool) -> bool {
    if !dir {
        return tracked.contains(path);
    }
    // A directory is in the flake when some file under it is.
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    tracked
        .range(prefix.clone()..)
        .next()
        .is_some_and(|p| p.starts_with(&prefix))
}

/// What is wrong with the target of a path literal.
#[derive(Debug, Clone)]
pub(super) enum Verdict {
    /// It leaves the repository.
    Outside,
    /// `shown` (repo-relative, `.` for the root) does not exist.
    Missing { shown: String },
    /// An imported directory without default.nix.
    NoDefault { default: String },
    /// git does not track `shown`.
    Untracked { shown: String },
}

/// What is wrong with `target` (repo-relative) used as `usage`, if anything.
pub(super) fn verdict(
    root: &Path,
    target: &str,
    usage: Use,
    guarded: bool,
    tracked: Option<&BTreeSet<String>>,
) -> Option<Verdict> {
    let shown = |p: &str| {
        if p.is_empty() {
            ".".to_string()
        } else {
            p.to_string()
        }
    };
    let Ok(meta) = fs::metadata(root.join(target)) else {
        // `pathExists` tested it: its absence is allowed for.
        return (!guarded).then(|| Verdict::Missing {
            shown: shown(target),
        });
    };
    // An imported directory is its default.nix.
    let (needed, dir) = if meta.is_dir() && usage == Use::Import {
        let default = if target.is_empty() {
            "default.nix".to_string()
        } else {
            format!("{target}/default.nix")
        };
        if !root.join(&default).is_file() {
            return (!guarded).then_some(Verdict::NoDefault { default });
        }
        (default, false)
    } else {
        (target.to_string(), meta.is_dir())
    };
    if is_tracked(tracked?, &needed, dir) {
        return None;
    }
    Some(Verdict::Untracked {
        shown: shown(&needed),
    })
}

impl PathRef {
    /// The finding about this path literal of `file`.
    pub(super) fn finding(&self, file: &str, verdict: Verdict) -> Finding {
        let lit = &self.literal;
        let what = match self.usage {
            Use::Import => format!("imports {lit}"),
            Use::Source => format!("uses {lit} as a source"),
        };
        let f = match verdict {
            Verdict::Outside => Finding::warning(
                file,
                "path-outside-repo",
                format!(
                    "{what}, which is outside the repository: the flake is copied to the store without it, so nix cannot read it"
                ),
                "move it into the repository and git add it, or make it a flake input".into(),
            ),
            Verdict::Missing { shown } => Finding::error(
                file,
                "missing-path",
                format!("{what}, but {shown} does not exist"),
                format!("create {shown} and git add it, or correct the path"),
            ),
            Verdict::NoDefault { default } => Finding::error(
                file,
                "missing-path",
                format!(
                    "{what}, but {default} does not exist (importing a directory reads its default.nix)"
                ),
                format!("create {default} and git add it, or import a file of the directory"),
            ),
            // Guarded by pathExists, the configuration silently goes without it: a warning.
            Verdict::Untracked { shown } if self.guarded => Finding::warning(
                file,
                "untracked-path",
                format!(
                    "{what}, but git does not track {shown}, so the flake cannot see it and pathExists is false there"
                ),
                format!("git add -N {shown}"),
            ),
            Verdict::Untracked { shown } => Finding::error(
                file,
                "untracked-path",
                format!(
                    "{what}, but git does not track {shown}, so the flake cannot see it and nix will say it does not exist"
                ),
                format!("git add -N {shown}"),
            ),
        };
        Finding {
            line: Some(self.line),
            column: Some(self.column),
            ..f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::syntax::parse;

    fn refs(text: &str) -> Vec<(String, Use, bool)> {
        parse("f.nix", text)
            .refs
            .into_iter()
            .map(|r| (r.literal, r.usage, r.guarded))
            .collect()
    }

    #[test]
    fn only_paths_used_as_imports_or_sources_are_checked() {
        let found = refs(
            "{ pkgs, lib, ... }:\n{\n  imports = [ ./a.nix (./b.nix) \"./c.nix\" /abs.nix ] ++ [ ../d ] ++ lib.optional true ./e.nix;\n  home.file.x.source = ./dot;\n  xdg.configFile.\"y\".source = ./${\"n\"};\n  p = pkgs.callPackage ./pkg.nix { };\n  q = import ../q.nix;\n  r = builtins.readFile ./r.txt;\n  s = ./not-checked;\n  t = if builtins.pathExists ./local.nix then import ./local.nix else { };\n}\n",
        );
        let lits: Vec<&str> = found.iter().map(|(l, _, _)| l.as_str()).collect();
        assert_eq!(
            lits,
            vec![
                "./a.nix",
                "./b.nix",
                "../d",
                "./dot",
                "./pkg.nix",
                "../q.nix",
                "./r.txt",
                "./local.nix"
            ]
        );
        assert_eq!(found[3].1, Use::Source);
        assert_eq!(found[4].1, Use::Import);
        assert!(found[7].2, "pathExists guards ./local.nix");
        assert!(!found[0].2);
    }

    #[test]
    fn path_literals_come_in_the_order_of_the_text() {
        let lits: Vec<String> = refs("{ imports = [ ./a.nix (import ./b.nix) ./c.nix ]; }\n")
            .into_iter()
            .map(|(l, _, _)| l)
            .collect();
        assert_eq!(lits, ["./a.nix", "./b.nix", "./c.nix"]);
    }

    #[test]
    fn paths_resolve_lexically_and_may_leave_the_repo() {
        assert_eq!(
            resolve("homes/bob/default.nix", "./hypr.nix").as_deref(),
            Some("homes/bob/hypr.nix")
        );
        assert_eq!(
            resolve("homes/bob/default.nix", "../../lib/x.nix").as_deref(),
            Some("lib/x.nix")
        );
        assert_eq!(resolve("flake.nix", "./.").as_deref(), Some(""));
        assert_eq!(resolve("homes/bob/default.nix", "../../../x"), None);
    }

    #[test]
    fn tracked_directories_are_those_with_a_tracked_file() {
        let tracked: BTreeSet<String> = ["homes/bob/default.nix", "homes/bobby/x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(is_tracked(&tracked, "homes/bob", true));
        assert!(!is_tracked(&tracked, "homes/bo", true));
        assert!(!is_tracked(&tracked, "homes/carol", true));
        assert!(is_tracked(&tracked, "", true));
        assert!(is_tracked(&tracked, "homes/bob/default.nix", false));
    }
}
