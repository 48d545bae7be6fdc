//! Static analysis of the repo's `.nix` files, in process and without nix: syntax errors
//! and relative path literals the flake will not see (the literal values of meta.nix are
//! read by `meta_text`, with the helpers here).
//!
//! Nix is not needed for any of it, so it works offline, on a machine without nix (a
//! pre-commit hook), and in milliseconds for a thousand homes. The parser is rnix, not
//! nix's own: whatever it cannot decide from the text alone (a computed value, an
//! interpolated path, an import chosen at evaluation time) is left to the evaluation, so a
//! static finding is one nix would report too, only earlier and with the line and column.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::Path,
};

use rnix::{ParseError, SyntaxKind, TextRange, ast};

use super::{Finding, tree::Tree};

mod path_refs;
use path_refs::{PathRef, Use, Verdict, path_refs, resolve, verdict};

/// The first syntax error of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SyntaxError {
    line: u32,
    column: u32,
    message: String,
}

/// What one file's syntax says.
#[derive(Debug, Default)]
pub struct FileReport {
    rel: String,
    syntax: Option<SyntaxError>,
    refs: Vec<PathRef>,
}

/// What the syntax of every `.nix` file the walk found says (except the meta.nix files the
/// repo model reads itself, and those git ignores): the untracked files, the syntax errors
/// and the path literals that are missing, untracked or outside the repository. In two
/// steps: `start` needs only the walk, so it can run while the layout scan runs (which
/// says what the model reads); `finish` adds the few files the walk did not parse
/// (meta.nix files the model turns out not to read).
#[derive(Debug)]
pub struct Analysis {
    /// Per file of the walk: whether the flake sees it (tracked, or untracked and not
    /// ignored).
    visible: Vec<bool>,
    findings: Vec<Finding>,
}

impl Analysis {
    /// The untracked files, and what the files the walk parsed say.
    pub fn start(root: &Path, tree: &Tree) -> Analysis {
        let tracked = tree.tracked.as_ref();
        // Whether git tracks each file: both lists are sorted, so one pass says it.
        let in_index: Vec<bool> = match tracked {
            Some(t) => {
                let mut index = t.iter().peekable();
                tree.nix
                    .iter()
                    .map(|f| {
                        while index.next_if(|p| p.as_str() < f.rel.as_str()).is_some() {}
                        index.peek().is_some_and(|p| **p == f.rel)
                    })
                    .collect()
            }
            None => vec![true; tree.nix.len()],
        };
        // git is asked about ignore rules only for the `.nix` files outside its index,
        // which in a clean repository are none (`git ls-files --others` would read every
        // directory and its ignore rules again).
        let candidates: Vec<&str> = tree
            .nix
            .iter()
            .zip(&in_index)
            .filter(|(_, tracked)| !**tracked)
            .map(|(f, _)| f.rel.as_str())
            .collect();
        let untracked: Vec<String> = if candidates.is_empty() {
            Vec::new()
        } else {
            let mut args = vec!["--others", "--exclude-standard", "--"];
            args.extend(candidates);
            super::git_ls_files(root, &args).unwrap_or_default()
        };
        let shown: HashSet<&str> = untracked.iter().map(String::as_str).collect();
        let visible: Vec<bool> = tree
            .nix
            .iter()
            .zip(&in_index)
            .map(|(f, tracked)| *tracked || shown.contains(f.rel.as_str()))
            .collect();
        let mut findings = super::untracked_file_findings(&untracked);
        let parsed = tree
            .nix
            .iter()
            .zip(&visible)
            .filter(|(_, visible)| **visible)
            .filter_map(|(f, _)| f.report.as_ref());
        findings.extend(report_findings(root, tracked, parsed));
        Analysis { visible, findings }
    }

    /// Adds the files the walk did not parse, unless the repo model reads them (`skip`).
    pub fn finish(mut self, root: &Path, tree: &Tree, skip: &BTreeSet<String>) -> Vec<Finding> {
        let reports: Vec<FileReport> = tree
            .nix
            .iter()
            .zip(&self.visible)
            .filter(|(f, visible)| **visible && f.report.is_none() && !skip.contains(&f.rel))
            .filter_map(|(f, _)| Some(parse(&f.rel, f.text.as_deref()?)))
            .collect();
        self.findings
            .extend(report_findings(root, tree.tracked.as_ref(), reports.iter()));
        self.findings
    }
}

/// The findings of some files' reports: their syntax errors and their path literals that
/// are missing, untracked or outside the repository.
fn report_findings<'a>(
    root: &Path,
    tracked: Option<&BTreeSet<String>>,
    reports: impl Iterator<Item = &'a FileReport>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    // Many homes import the same shared module: each target is looked at once.
    let mut verdicts: HashMap<(String, Use, bool), Option<Verdict>> = HashMap::new();
    for report in reports {
        if let Some(err) = &report.syntax {
            findings.push(err.finding(&report.rel));
        }
        for r in &report.refs {
            let Some(target) = resolve(&report.rel, &r.literal) else {
                findings.push(r.finding(&report.rel, Verdict::Outside));
                continue;
            };
            let verdict = verdicts
                .entry((target, r.usage, r.guarded))
                .or_insert_with_key(|(target, usage, guarded)| {
                    verdict(root, target, *usage, *guarded, tracked)
                });
            if let Some(v) = verdict {
                findings.push(r.finding(&report.rel, v.clone()));
            }
        }
    }
    findings
}

/// The syntax of one file: its first error, and the relative path literals it uses.
pub fn parse(rel: &str, text: &str) -> FileReport {
    let mut report = FileReport {
        rel: rel.to_string(),
        ..FileReport::default()
    };
    let parse = rnix::Root::parse(text);
    let lines = LineIndex::new(text);
    // The first error only, as nix reports it: the parser resynchronises after it, and
    // what it reports next is mostly an echo (the `}` that closed what broke, the end of
    // the file). The count says there is more to look at once it is fixed.
    if let Some(err) = parse.errors().first() {
        let (offset, mut message) = describe(err, text);
        let (line, column) = lines.locate(offset);
        match parse.errors().len() - 1 {
            0 => {}
            1 => message.push_str(" (1 more error after it, perhaps caused by this one)"),
            n => message.push_str(&format!(
                " ({n} more errors after it, perhaps caused by this one)"
            )),
        }
        report.syntax = Some(SyntaxError {
            line,
            column,
            message,
        });
    }
    // Every path literal has a `/`: a file without one has none to look for.
    if memchr::memchr(b'/', text.as_bytes()).is_none() {
        return report;
    }
    let (refs, guarded) = path_refs(&parse.syntax(), text);
    report.refs = refs
        .into_iter()
        .map(|(literal, range, usage)| {
            let (line, column) = lines.locate(usize::from(range.start()));
            PathRef {
                guarded: guarded.contains(&literal),
                literal,
                line,
                column,
                usage,
            }
        })
        .collect();
    report
}

impl SyntaxError {
    fn finding(&self, rel: &str) -> Finding {
        Finding {
            line: Some(self.line),
            column: Some(self.column),
            ..Finding::error(
                rel,
                "syntax-error",
                format!("syntax error: {}", self.message),
                format!(
                    "fix the syntax there; nix-instantiate --parse {} shows how nix reads the file",
                    crate::home::shell_quote(rel)
                ),
            )
        }
    }
}

impl FileReport {
    /// The report as lines of the lint cache (`E LINE COLUMN MESSAGE`, then
    /// `R LINE COLUMN USE GUARDED LITERAL` per path literal), appended to `out`; false
    /// (and nothing appended) if some text would not survive as one line.
    pub fn write_lines(&self, out: &mut String) -> bool {
        let one_line = |t: &str| memchr::memchr2(b'\n', b'\r', t.as_bytes()).is_none();
        if !self.syntax.as_ref().is_none_or(|e| one_line(&e.message))
            || !self.refs.iter().all(|r| one_line(&r.literal))
        {
            return false;
        }
        use std::fmt::Write;
        // Into `out` directly: thousands of entries, no string of their own each.
        if let Some(e) = &self.syntax {
            let _ = writeln!(out, "E {} {} {}", e.line, e.column, e.message);
        }
        for r in &self.refs {
            let usage = match r.usage {
                Use::Import => 'I',
                Use::Source => 'S',
            };
            let guarded = u8::from(r.guarded);
            let _ = writeln!(
                out,
                "R {} {} {usage} {guarded} {}",
                r.line, r.column, r.literal
            );
        }
        true
    }

    /// The report of `rel` from the lines [`FileReport::write_lines`] wrote; None if
    /// they are damaged.
    pub fn read_lines(rel: &str, lines: &str) -> Option<FileReport> {
        let mut report = FileReport {
            rel: rel.to_string(),
            ..FileReport::default()
        };
        for line in lines.lines() {
            let (kind, rest) = line.split_once(' ')?;
            let mut fields = rest.splitn(if kind == "E" { 3 } else { 5 }, ' ');
            let mut number = || -> Option<u32> { fields.next()?.parse().ok() };
            let (line, column) = (number()?, number()?);
            match kind {
                "E" if report.syntax.is_none() => {
                    report.syntax = Some(SyntaxError {
                        line,
                        column,
                        message: fields.next()?.to_string(),
                    });
                }
                "R" => {
                    let usage = match fields.next()? {
                        "I" => Use::Import,
                        "S" => Use::Source,
                        _ => return None,
                    };
                    let guarded = match fields.next()? {
                        "0" => false,
                        "1" => true,
                        _ => return None,
                    };
                    report.refs.push(PathRef {
                        literal: fields.next()?.to_string(),
                        line,
                        column,
                        usage,
                        guarded,
                    });
                }
                _ => return None,
            }
        }
        Some(report)
    }
}

#[cfg(test)]
impl FileReport {
    /// `rel:line:column message` for the syntax error, `rel literal use` per path.
    pub fn lines_for_test(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(e) = &self.syntax {
            v.push(format!(
                "{}:{}:{} {}",
                self.rel, e.line, e.column, e.message
            ));
        }
        v.extend(
            self.refs
                .iter()
                .map(|p| format!("{} {} {:?}", self.rel, p.literal, p.usage)),
        );
        v
    }
}

/// Byte offsets to 1-based lines and columns (columns in characters, as editors count).
/// Lines are counted from the last offset asked about (or from the start, for an earlier
/// one): a file's few findings come in the order of the text, and need no table of all
/// its lines.
pub(super) struct LineIndex<'a> {
    text: &'a str,
    /// The line (0-based) and the offset of its start where the last count stopped.
    at: std::cell::Cell<(u32, usize)>,
}

impl<'a> LineIndex<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        LineIndex {
            text,
            at: std::cell::Cell::new((0, 0)),
        }
    }

    pub(super) fn locate(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let (mut line, mut start) = self.at.get();
        if offset < start {
            (line, start) = (0, 0);
        }
        // memchr: quick in the dev build.
        let bytes = self.text.as_bytes();
        while let Some(i) = memchr::memchr(b'\n', &bytes[start..offset]) {
            line += 1;
            start += i + 1;
        }
        self.at.set((line, start));
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (line + 1, column as u32 + 1)
    }
}

/// The parser's error as a sentence and the byte offset it is at.
pub(super) fn describe(err: &ParseError, text: &str) -> (usize, String) {
    let at = |r: &TextRange| usize::from(r.start());
    // Just after the last token, where nix puts it (not on the line after the last one).
    let end = text.trim_end().len();
    match err {
        ParseError::Unexpected(r) => (at(r), format!("unexpected {}", snippet(text, r))),
        ParseError::UnexpectedExtra(r) => (
            at(r),
            format!(
                "unexpected {} after the end of the expression",
                snippet(text, r)
            ),
        ),
        ParseError::UnexpectedWanted(_, r, wanted) => (
            at(r),
            format!(
                "unexpected {}, expected {}",
                snippet(text, r),
                one_of(wanted)
            ),
        ),
        ParseError::UnexpectedDoubleBind(r) => (
            at(r),
            "the arguments are bound to a name twice (an @ on both sides)".into(),
        ),
        ParseError::UnexpectedEOF => (end, "unexpected end of file".into()),
        ParseError::UnexpectedEOFWanted(wanted) => (
            end,
            format!("unexpected end of file, expected {}", one_of(wanted)),
        ),
        ParseError::DuplicatedArgs(r, name) => {
            (at(r), format!("the argument '{name}' is listed twice"))
        }
        ParseError::RecursionLimitExceeded => (0, "the file is nested too deeply".into()),
        other => (0, other.to_string()),
    }
}

/// The source text of an error's range, quoted and cut to a readable length.
fn snippet(text: &str, r: &TextRange) -> String {
    let s = text
        .get(usize::from(r.start())..usize::from(r.end()))
        .unwrap_or_default()
        .trim();
    let line = s.lines().next().unwrap_or_default();
    if line.is_empty() {
        return "text".into();
    }
    let short: String = line.chars().take(30).collect();
    if short.len() < s.len() {
        format!("'{short}…'")
    } else {
        format!("'{short}'")
    }
}

fn one_of(kinds: &[SyntaxKind]) -> String {
    // When a name and '(' would do, any expression would: say that, not its first tokens.
    let expression =
        kinds.contains(&SyntaxKind::TOKEN_IDENT) && kinds.contains(&SyntaxKind::TOKEN_L_PAREN);
    let mut names: Vec<&str> = Vec::new();
    for k in kinds {
        let name = match kind_name(*k) {
            "'('" | "'{'" | "'['" | "a name" | "a string" | "a number" | "a path" if expression => {
                "an expression"
            }
            name => name,
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    match names.as_slice() {
        [] => "something else".into(),
        [one] => one.to_string(),
        _ if names.len() > 6 => format!("one of {}, …", names[..6].join(", ")),
        _ => format!("one of {}", names.join(", ")),
    }
}

/// A token kind as a person writes it.
fn kind_name(kind: SyntaxKind) -> &'static str {
    use SyntaxKind::*;
    match kind {
        TOKEN_SEMICOLON => "';'",
        TOKEN_ASSIGN => "'='",
        TOKEN_COLON => "':'",
        TOKEN_COMMA => "','",
        TOKEN_DOT => "'.'",
        TOKEN_AT => "'@'",
        TOKEN_QUESTION => "'?'",
        TOKEN_ELLIPSIS => "'...'",
        TOKEN_L_BRACE => "'{'",
        TOKEN_R_BRACE => "'}'",
        TOKEN_L_BRACK => "'['",
        TOKEN_R_BRACK => "']'",
        TOKEN_L_PAREN => "'('",
        TOKEN_R_PAREN => "')'",
        TOKEN_INTERPOL_START => "'${'",
        TOKEN_INTERPOL_END => "'}'",
        TOKEN_IN => "'in'",
        TOKEN_THEN => "'then'",
        TOKEN_ELSE => "'else'",
        TOKEN_IDENT => "a name",
        TOKEN_STRING_START | TOKEN_STRING_END | TOKEN_STRING_CONTENT => "a string",
        TOKEN_INTEGER | TOKEN_FLOAT => "a number",
        TOKEN_PATH_ABS | TOKEN_PATH_REL | TOKEN_PATH_HOME | TOKEN_PATH_SEARCH => "a path",
        _ => "an expression",
    }
}

/// `(x)` is `x`.
pub(super) fn unparen(mut e: ast::Expr) -> ast::Expr {
    while let ast::Expr::Paren(p) = &e {
        match p.expr() {
            Some(inner) => e = inner,
            None => break,
        }
    }
    e
}

/// The static name of an attribute (`a`, `"a"`); None for `${…}`.
pub(super) fn attr_name(attr: &ast::Attr) -> Option<String> {
    match attr {
        ast::Attr::Ident(i) => i.ident_token().map(|t| t.text().to_string()),
        ast::Attr::Str(s) => literal_string(s),
        ast::Attr::Dynamic(_) => None,
    }
}

/// A string without interpolation, unescaped.
pub(super) fn literal_string(s: &ast::Str) -> Option<String> {
    let mut out = String::new();
    for part in s.normalized_parts() {
        match part {
            ast::InterpolPart::Literal(l) => out.push_str(&l),
            ast::InterpolPart::Interpolation(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax_errors(text: &str) -> Vec<(u32, u32, String)> {
        parse("f.nix", text)
            .syntax
            .into_iter()
            .map(|e| (e.line, e.column, format!("syntax error: {}", e.message)))
            .collect()
    }

    #[test]
    fn syntax_errors_have_line_column_and_the_parsers_words() {
        let errs = syntax_errors("{ lib, ... }:\n{\n  home.packages = [ ;\n}\n");
        assert_eq!(errs[0].0, 3, "{errs:?}");
        assert_eq!(errs[0].1, 21, "{errs:?}");
        assert!(
            errs[0].2.starts_with("syntax error: unexpected ';'"),
            "{errs:?}"
        );
        // `1 b` is an application, so the error is at the '=' (where nix puts it too).
        let errs = syntax_errors("{\n  a = 1\n  b = 2;\n}\n");
        assert_eq!((errs[0].0, errs[0].1), (3, 5), "{errs:?}");
        assert!(errs[0].2.contains("expected ';'"), "{errs:?}");
        let errs = syntax_errors("{\n  a = \"x\";\n");
        assert!(errs[0].2.contains("end of file"), "{errs:?}");
        // At the end of the last line, as nix says it.
        assert_eq!((errs[0].0, errs[0].1), (2, 11), "{errs:?}");
        assert!(syntax_errors("{ a = ./x.nix; b = \"${./y}\"; c = x: x.y or 1; }\n").is_empty());
        // Columns count characters, as editors do.
        let errs = syntax_errors("{ a = \"ä\"; b = ; }");
        assert_eq!(errs[0].1, 16, "{errs:?}");
    }

    #[test]
    fn lines_and_columns_of_offsets() {
        assert_eq!(
            LineIndex::new("ab\ncd\n").locate(4),
            (2, 2),
            "offset 4 is 'd'"
        );
    }
}
