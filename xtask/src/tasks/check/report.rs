//! How `check` shows its findings: for people, as JSON, or as GitHub annotations; and the
//! words of its summaries.

use anyhow::Result;

use super::{Kind, Target};
use crate::{
    cli::CheckFormat,
    repo::{Finding, Severity},
    term::{self, Style},
};

pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `home 'bob' (x86_64-linux, aarch64-linux) and host 'web'`.
pub(super) fn label_list(ts: &[&Target]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ts.len() {
        let t = ts[i];
        let mut systems: Vec<&str> = t.system.iter().map(String::as_str).collect();
        let mut j = i + 1;
        while j < ts.len() && ts[j].kind == t.kind && ts[j].name == t.name {
            systems.extend(ts[j].system.as_deref());
            j += 1;
        }
        parts.push(match t.kind {
            Kind::Home if !systems.is_empty() => {
                format!("home '{}' ({})", t.name, systems.join(", "))
            }
            _ => t.label(),
        });
        i = j;
    }
    parts.join(", ")
}

pub(super) fn print_findings(findings: &[Finding], format: CheckFormat) -> Result<()> {
    match format {
        CheckFormat::Human => {
            for f in findings {
                let text = f.to_string();
                let (sev, style) = match f.severity {
                    Severity::Error => ("error:", Style::Red),
                    Severity::Warning => ("warning:", Style::Yellow),
                };
                let rest = text.strip_prefix(sev).unwrap_or(&text);
                term::info(&format!("{}{rest}", term::paint(style, sev)));
            }
        }
        CheckFormat::Json => term::out(&serde_json::to_string_pretty(findings)?),
        CheckFormat::Github => {
            for f in findings {
                term::out(&github_annotation(f));
            }
        }
    }
    Ok(())
}

/// A GitHub Actions workflow command. Data escapes `%`, CR and LF; property values also
/// `:` and `,` (the runner's own escaping rules).
fn github_annotation(f: &Finding) -> String {
    let data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let prop = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    let level = match f.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut props = format!("file={}", prop(&f.path));
    if let Some(line) = f.line {
        props.push_str(&format!(",line={line}"));
        if let Some(col) = f.column {
            props.push_str(&format!(",col={col}"));
        }
    }
    props.push_str(&format!(",title={}", prop(f.code)));
    let mut msg = f.message.clone();
    if !f.fix.is_empty() {
        msg.push_str(&format!(" ({})", f.fix));
    }
    format!("::{level} {props}::{}", data(&msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_annotations_escape_their_fields() {
        let mut f = Finding::error(
            "homes/bob/default.nix",
            "eval-error",
            "a: b, 100%\nnext".into(),
            "fix it".into(),
        );
        f.line = Some(3);
        assert_eq!(
            github_annotation(&f),
            "::error file=homes/bob/default.nix,line=3,title=eval-error::a: b, 100%25%0Anext (fix it)"
        );
    }

    #[test]
    fn labels_group_systems_of_one_home() {
        let a = Target::home("bob", "x86_64-linux");
        let b = Target::home("bob", "aarch64-linux");
        let h = Target::host("web");
        assert_eq!(
            label_list(&[&a, &b, &h]),
            "home 'bob' (x86_64-linux, aarch64-linux), host 'web'"
        );
        assert_eq!(plural(1, "error"), "1 error");
        assert_eq!(plural(0, "warning"), "0 warnings");
    }
}
