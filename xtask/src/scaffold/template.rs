//! The text of a scaffold's files: templates with `@key@` placeholders, and the pieces of
//! Nix the tasks put into them.

use crate::repo;

/// Fills `@key@` placeholders (nixpkgs' substituteAll style). A `@` that does not open a
/// known key is kept, so `homes/@user@@global` renders as `homes/bob@global`; values are
/// inserted verbatim and never re-scanned, so a value containing `@` cannot inject a key.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let value = after.find('@').and_then(|end| {
            let key = &after[..end];
            vars.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v, end))
        });
        match value {
            Some((v, end)) => {
                out.push_str(v);
                rest = &after[end + 1..];
            }
            None => {
                out.push('@');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces the template line that starts with `marker` (after its indentation) by
/// `replacement` at the same indentation, or removes it with `None`. Used where a value
/// cannot be a placeholder because the template must stay a Nix file that parses: the
/// template shows the default (`users = [ ];`, a commented example) and this swaps it.
pub fn replace_line(text: &str, marker: &str, replacement: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_start();
        if !body.starts_with(marker) {
            out.push_str(line);
            continue;
        }
        if let Some(new) = replacement {
            out.push_str(&line[..line.len() - body.len()]);
            out.push_str(new);
            out.push('\n');
        }
    }
    out
}

/// A Nix list of strings in the repo's (nixfmt) style: `[ ]`, `[ "a" ]`, or one item a line.
pub fn nix_string_list(items: &[String], indent: &str) -> String {
    match items {
        [] => "[ ]".to_string(),
        [one] => format!("[ {} ]", repo::nix_string(one)),
        many => {
            let lines: String = many
                .iter()
                .map(|i| format!("{indent}  {}\n", repo::nix_string(i)))
                .collect();
            format!("[\n{lines}{indent}]")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_known_keys_only() {
        let vars = [("user", "bob"), ("host", "ws")];
        assert_eq!(render("homes/@user@@global", &vars), "homes/bob@global");
        assert_eq!(
            render("homes/<user>@@host@ x@y.org @", &vars),
            "homes/<user>@ws x@y.org @"
        );
        // A value is not re-scanned: "@host@" inside it stays literal.
        assert_eq!(
            render("@user@", &[("user", "@host@"), ("host", "no")]),
            "@host@"
        );
    }

    #[test]
    fn lines_are_replaced_at_their_indentation() {
        let t = "{\n  # a = 1;\n  # note\n  b = 2;\n}\n";
        assert_eq!(
            replace_line(t, "# a = ", Some("a = \"x\";")),
            "{\n  a = \"x\";\n  # note\n  b = 2;\n}\n"
        );
        assert_eq!(
            replace_line(t, "# note", None),
            "{\n  # a = 1;\n  b = 2;\n}\n"
        );
    }

    #[test]
    fn string_lists_are_formatted_like_nixfmt() {
        assert_eq!(nix_string_list(&[], "  "), "[ ]");
        assert_eq!(nix_string_list(&["bob".into()], "  "), "[ \"bob\" ]");
        assert_eq!(
            nix_string_list(&["a".into(), "b".into()], "  "),
            "[\n    \"a\"\n    \"b\"\n  ]"
        );
    }
}
