//! A meta.nix read from its text, without nix: its shape, `system`, `users` and `deploy`
//! with where each is, when they are literals (what nix would read too); anything computed
//! is left to the one `nix eval` of the repo model.

use std::collections::BTreeMap;

use rnix::ast::{self, HasEntry};
use rowan::ast::AstNode;

use super::{
    meta::MetaFile,
    syntax::{LineIndex, attr_name, describe, literal_string, unparen},
};

/// What a meta.nix says, as far as its text tells.
#[derive(Debug, Clone)]
pub enum MetaRead {
    /// Every value the xtask reads is a literal: this is what nix would read too.
    Literal(MetaFile),
    /// The file does not parse.
    Syntax {
        line: u32,
        column: u32,
        message: String,
    },
    /// Only an evaluation can tell (`import ./common.nix // { … }`, `system = sys;`).
    Computed,
}

/// Reads a meta.nix statically: its shape, `system`, `users` and `deploy`, when they are
/// literals.
pub fn read_meta(text: &str) -> MetaRead {
    let parse = rnix::Root::parse(text);
    if let Some(err) = parse.errors().first() {
        let (offset, message) = describe(err, text);
        let (line, column) = LineIndex::new(text).locate(offset);
        return MetaRead::Syntax {
            line,
            column,
            message,
        };
    }
    let Some(expr) = parse.tree().expr() else {
        return MetaRead::Computed;
    };
    // nix's builtins.typeOf names, as the evaluated check reports them.
    let kind = match unparen(expr) {
        ast::Expr::AttrSet(set) => return meta_attrs(&set, &LineIndex::new(text)),
        ast::Expr::List(_) => "list",
        ast::Expr::Lambda(_) => "lambda",
        ast::Expr::Str(_) => "string",
        ast::Expr::Literal(l) => match l.kind() {
            ast::LiteralKind::Integer(_) => "int",
            ast::LiteralKind::Float(_) => "float",
            ast::LiteralKind::Uri(_) => "string",
        },
        ast::Expr::PathAbs(_)
        | ast::Expr::PathRel(_)
        | ast::Expr::PathHome(_)
        | ast::Expr::PathSearch(_) => "path",
        ast::Expr::Ident(i) => match i.ident_token().as_ref().map(|t| t.text()) {
            Some("true" | "false") => "bool",
            Some("null") => "null",
            _ => return MetaRead::Computed,
        },
        _ => return MetaRead::Computed,
    };
    MetaRead::Literal(MetaFile {
        not_attrs: Some(kind.to_string()),
        system: None,
        ..MetaFile::default()
    })
}

/// `system`, `users` and `deploy` of a literal attribute set; Computed as soon as one is
/// not a literal, is set twice or through a deeper path, or may come from `inherit` or
/// `${…}`. `deploy` may be one set (`deploy = { targetHost = …; }`) or its keys
/// (`deploy.targetHost = …;`), not both: how nix merges them is nix's to say.
fn meta_attrs(set: &ast::AttrSet, lines: &LineIndex) -> MetaRead {
    let rec = set.rec_token().is_some();
    let mut system = None;
    let mut users = None;
    let mut deploy = DeployRead::default();
    for entry in set.entries() {
        match entry {
            ast::Entry::Inherit(inherit) => {
                for a in inherit.attrs() {
                    match attr_name(&a).as_deref() {
                        Some("system" | "users" | "deploy") | None => return MetaRead::Computed,
                        _ => {}
                    }
                }
            }
            ast::Entry::AttrpathValue(av) => {
                let Some(path) = av.attrpath() else {
                    return MetaRead::Computed;
                };
                let mut attrs = path.attrs();
                let Some(first) = attrs.next().and_then(|a| attr_name(&a)) else {
                    return MetaRead::Computed;
                };
                let slot = match first.as_str() {
                    "system" => &mut system,
                    "users" => &mut users,
                    "deploy" => {
                        let Some(value) = av.value() else {
                            return MetaRead::Computed;
                        };
                        let key = match attrs.next() {
                            None => None,
                            Some(a) => match (attr_name(&a), attrs.next()) {
                                (Some(k), None) => Some(k),
                                _ => return MetaRead::Computed,
                            },
                        };
                        if deploy.add(key, value, rec, lines).is_none() {
                            return MetaRead::Computed;
                        }
                        continue;
                    }
                    _ => continue,
                };
                let Some(value) = av.value() else {
                    return MetaRead::Computed;
                };
                let at = lines.locate(usize::from(value.syntax().text_range().start()));
                match (slot.is_some(), attrs.next(), literal_value(value, rec)) {
                    (false, None, Some(v)) => *slot = Some((v, at)),
                    _ => return MetaRead::Computed,
                }
            }
        }
    }
    MetaRead::Literal(MetaFile {
        not_attrs: None,
        system_at: system.as_ref().map(|(_, at)| *at),
        users_at: users.as_ref().map(|(_, at)| *at),
        system: system.map(|(v, _)| v),
        users: users.map_or(serde_json::Value::Null, |(v, _)| v),
        deploy: deploy.value.unwrap_or_default(),
        deploy_at: deploy.at,
        deploy_keys_at: deploy.keys_at,
    })
}

/// A meta.nix's `deploy`, as far as read.
#[derive(Default)]
struct DeployRead {
    value: Option<serde_json::Value>,
    at: Option<(u32, u32)>,
    keys_at: BTreeMap<String, (u32, u32)>,
    /// Set by `deploy.<key> = …` entries (else by one `deploy = …`).
    by_keys: bool,
}

impl DeployRead {
    /// Adds `deploy = value` (`key` None) or `deploy.<key> = value`; None when only nix can
    /// tell the result.
    fn add(
        &mut self,
        key: Option<String>,
        value: ast::Expr,
        rec: bool,
        lines: &LineIndex,
    ) -> Option<()> {
        let at = lines.locate(usize::from(value.syntax().text_range().start()));
        match key {
            None => {
                if self.value.is_some() {
                    return None;
                }
                self.at = Some(at);
                self.value = Some(match unparen(value) {
                    // A set's values are read one by one; anything else (a string, a
                    // list) is read whole and the check says it is not a set.
                    ast::Expr::AttrSet(inner) => {
                        let rec = rec || inner.rec_token().is_some();
                        let mut map = serde_json::Map::new();
                        for entry in inner.entries() {
                            let ast::Entry::AttrpathValue(av) = entry else {
                                return None;
                            };
                            let mut attrs = av.attrpath()?.attrs();
                            let key = attrs.next().and_then(|a| attr_name(&a))?;
                            let value = av.value()?;
                            if attrs.next().is_some() || map.contains_key(&key) {
                                return None;
                            }
                            let at = lines.locate(usize::from(value.syntax().text_range().start()));
                            map.insert(key.clone(), literal_value(value, rec)?);
                            self.keys_at.insert(key, at);
                        }
                        serde_json::Value::Object(map)
                    }
                    other => literal_value(other, rec)?,
                });
            }
            Some(key) => {
                if self.value.is_some() && !self.by_keys {
                    return None;
                }
                self.by_keys = true;
                let map = self
                    .value
                    .get_or_insert_with(|| serde_json::Value::Object(Default::default()));
                let serde_json::Value::Object(map) = map else {
                    return None;
                };
                if map.contains_key(&key) {
                    return None;
                }
                map.insert(key.clone(), literal_value(value, rec)?);
                self.at.get_or_insert(at);
                self.keys_at.insert(key, at);
            }
        }
        Some(())
    }
}

/// A literal value as JSON: strings, numbers, booleans, null and lists of them. In a
/// `rec` set a name may be one of its attributes, so names count as computed there.
fn literal_value(e: ast::Expr, rec: bool) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match unparen(e) {
        ast::Expr::Str(s) => Value::String(literal_string(&s)?),
        ast::Expr::Literal(l) => match l.kind() {
            ast::LiteralKind::Integer(i) => Value::from(i.value().ok()?),
            ast::LiteralKind::Float(f) => Value::from(f.value().ok()?),
            ast::LiteralKind::Uri(u) => Value::String(u.to_string()),
        },
        ast::Expr::Ident(i) if !rec => match i.ident_token()?.text() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ => return None,
        },
        ast::Expr::List(list) => Value::Array(
            list.items()
                .map(|i| literal_value(i, rec))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(text: &str) -> MetaRead {
        read_meta(text)
    }

    #[test]
    fn literal_meta_is_read_and_computed_meta_is_left_to_nix() {
        let MetaRead::Literal(m) = meta(
            "{\n  system = \"aarch64-linux\"; # pi\n  users = [ \"bob\" \"Bad\" 3 ];\n  other.x = y;\n}\n",
        ) else {
            panic!()
        };
        assert_eq!(m.system, Some(serde_json::json!("aarch64-linux")));
        assert_eq!(m.users, serde_json::json!(["bob", "Bad", 3]));
        assert_eq!((m.system_at, m.users_at), (Some((2, 12)), Some((3, 11))));
        assert!(m.not_attrs.is_none());
        for (text, kind) in [
            ("[ ]", "list"),
            ("x: x", "lambda"),
            ("{ ... }: { }", "lambda"),
            ("\"x86_64-linux\"", "string"),
            ("(3)", "int"),
            ("null", "null"),
            ("./meta.json", "path"),
        ] {
            let MetaRead::Literal(m) = meta(text) else {
                panic!("{text}")
            };
            assert_eq!(m.not_attrs.as_deref(), Some(kind), "{text}");
        }
        for computed in [
            "import ./common.nix",
            "{ system = sys; }",
            "{ users = [ \"a\" ] ++ [ \"b\" ]; }",
            "{ system = \"x86_64-${os}\"; }",
            "{ inherit system; }",
            "{ ${k} = 1; }",
            "{ system = \"a\"; system = \"b\"; }",
            "{ system.x = 1; }",
            "rec { users = [ null ]; }",
            "let s = \"x\"; in { system = s; }",
        ] {
            assert!(
                matches!(meta(computed), MetaRead::Computed),
                "{computed}: {:?}",
                meta(computed)
            );
        }
        let MetaRead::Syntax { line, column, .. } = meta("{\n  system = ;\n}\n") else {
            panic!()
        };
        assert_eq!((line, column), (2, 12));
        let MetaRead::Literal(m) = meta("{ }") else {
            panic!()
        };
        assert_eq!((m.system, m.users), (None, serde_json::Value::Null));
    }

    #[test]
    fn literal_deploy_is_read_as_a_set_or_by_keys_with_positions() {
        let MetaRead::Literal(m) = meta(
            "{\n  deploy = {\n    targetHost = \"root@pi\";\n    tags = [ \"rack\" ];\n  };\n}\n",
        ) else {
            panic!()
        };
        assert_eq!(
            m.deploy,
            serde_json::json!({ "targetHost": "root@pi", "tags": ["rack"] })
        );
        assert_eq!(m.deploy_at, Some((2, 12)));
        assert_eq!(m.deploy_keys_at["tags"], (4, 12));
        let MetaRead::Literal(m) = meta(
            "{\n  system = \"x86_64-linux\";\n  deploy.targetHost = \"pi\";\n  deploy.buildOn = 3;\n}\n",
        ) else {
            panic!()
        };
        assert_eq!(
            m.deploy,
            serde_json::json!({ "targetHost": "pi", "buildOn": 3 })
        );
        assert_eq!(m.deploy_at, Some((3, 23)));
        assert_eq!(m.deploy_keys_at["buildOn"], (4, 20));
        // Not a set: read whole, and the check says what it is.
        let MetaRead::Literal(m) = meta("{ deploy = \"pi\"; }") else {
            panic!()
        };
        assert_eq!(m.deploy, serde_json::json!("pi"));
        let MetaRead::Literal(m) = meta("{ system = \"x86_64-linux\"; }") else {
            panic!()
        };
        assert!(m.deploy.is_null());
        for computed in [
            "{ deploy.targetHost = host; }",
            "{ deploy = { targetHost = \"root@${h}\"; }; }",
            "{ deploy = { inherit targetHost; }; }",
            "{ deploy = { targetHost = \"a\"; }; deploy.tags = [ ]; }",
            "{ deploy.tags = [ ]; deploy = { targetHost = \"a\"; }; }",
            "{ deploy.tags = [ ]; deploy.tags = [ ]; }",
            "{ deploy.ssh.opts = [ ]; }",
            "{ deploy = { ssh.opts = [ ]; }; }",
            "{ deploy = { sshOpts = { }; }; }",
            "{ deploy = rec { targetHost = \"a\"; tags = [ true ]; }; }",
            "{ inherit deploy; }",
            "{ deploy = import ./deploy.nix; }",
        ] {
            assert!(
                matches!(meta(computed), MetaRead::Computed),
                "{computed}: {:?}",
                meta(computed)
            );
        }
    }
}
