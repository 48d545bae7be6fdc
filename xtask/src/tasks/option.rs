//! `cargo xtask option NAME.PATH [USER | --host H]`: one option of a home
//! (`homeConfigurations.<user>.config.<path>`) or a host
//! (`nixosConfigurations.<host>.config.<path>`) as JSON, in one nix evaluation that also
//! says, when the path does not exist, where it stops and which names exist there.

use anyhow::{Result, bail};
use serde::Deserialize;

use crate::{
    Ctx, UsageError,
    cli::EvalOption,
    home::{self, UserEnv},
    nix::{self, NixError},
    repo, term,
};

/// What stands for a function in the printed value: functions have no JSON form.
const FUNCTION: &str = "«function»";

/// How many existing names a missing option is answered with.
const NEAREST: usize = 5;

/// The evaluation's answer: the value, or where the path stops.
#[derive(Debug, Deserialize)]
struct Walk {
    found: bool,
    #[serde(default)]
    value: serde_json::Value,
    /// `builtins.typeOf` of the value, or "derivation".
    #[serde(default)]
    r#type: String,
    /// The index of the first segment that does not exist.
    #[serde(default)]
    missing_at: usize,
    /// What the deepest existing parent is (`set`, `bool`, …).
    #[serde(default)]
    parent_type: String,
    /// That parent's attribute names, when it is an attribute set.
    #[serde(default)]
    siblings: Vec<String>,
    /// That parent's length, when it is a list.
    #[serde(default)]
    length: Option<usize>,
}

impl EvalOption {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let path = parse_path(&self.name).map_err(|e| {
            UsageError(format!(
                "{:?} is not an option name: {e}; write the attribute path under config, e.g. programs.git.enable or home.file.\".bashrc\".text",
                self.name
            ))
        })?;
        let repo = ctx.repo()?;
        // `what` names the home or host in messages, `whose` selects it again in the
        // commands they suggest.
        let (output, target, what, whose) = match &self.host {
            Some(host) => {
                repo::validate_host_name(host)
                    .map_err(|e| UsageError(format!("--host {host:?}: {e}")))?;
                if !repo.hosts.contains_key(host) {
                    let hosts: Vec<&str> = repo.hosts.keys().map(String::as_str).collect();
                    bail!(
                        "there is no host {host} in {} (hosts: {}); name one of those, or create it with `cargo xtask new-host {host}`",
                        repo.root.join("systems").display(),
                        term::list(&hosts)
                    );
                }
                (
                    "nixosConfigurations",
                    host.clone(),
                    format!("host {host}"),
                    format!(" --host {}", shell_word(host)),
                )
            }
            None => {
                let user = match self.user {
                    Some(u) => u,
                    None => UserEnv::from_process()?.user,
                };
                home::standalone_user(&repo, &user)?;
                let what = format!("{user}'s home");
                let whose = format!(" {}", shell_word(&user));
                ("homeConfigurations", user, what, whose)
            }
        };
        let expr = walk_expr(&nix::flake_ref(&ctx.root), output, &target, &path);
        let shown = show_path(&path);
        let walk: Walk = match ctx.nix().eval_expr_json(&expr) {
            Ok(w) => w,
            Err(e) => {
                let Some(ne) = e.downcast_ref::<NixError>() else {
                    return Err(e);
                };
                let at = match repo::locate_nix_error(&ctx.root, &ne.stderr) {
                    (Some(file), Some(line)) => format!(" at {file}:{line}"),
                    (Some(file), None) => format!(" in {file}"),
                    _ => String::new(),
                };
                bail!(
                    "evaluating {shown} of {what} failed{at}: {}\n  fix the error at the place nix names (run with -v for the nix command; add --show-trace to it for nix's full trace)",
                    ne.message()
                );
            }
        };
        if !walk.found {
            bail!("{}", missing_message(&what, &whose, &path, &walk));
        }
        match walk.r#type.as_str() {
            "lambda" => term::info(&format!(
                "{shown} is a function, which has no JSON form: {FUNCTION} stands for it"
            )),
            "derivation" => term::info(&format!(
                "{shown} is a derivation: shown is its output path (`nix build` makes it)"
            )),
            _ if holds_function(&walk.value) => term::info(&format!(
                "{shown} holds functions, which have no JSON form: {FUNCTION} stands for each"
            )),
            _ => {}
        }
        term::out(&serde_json::to_string_pretty(&walk.value)?);
        Ok(())
    }
}

/// The one evaluation: walks `path` from `<output>.<target>.config` and returns
/// `{ found = true; value; type; }` with a value JSON can hold (functions as a marker,
/// derivations as their output path, paths as strings, so nothing is copied to the
/// store), or `{ found = false; missing_at; parent_type; siblings; }`.
fn walk_expr(flake_ref: &str, output: &str, target: &str, path: &[String]) -> String {
    let segments: Vec<String> = path.iter().map(|s| repo::nix_string(s)).collect();
    format!(
        r#"let
  root = (builtins.getFlake {flake}).{output}.{target}.config;
  path = [ {segments} ];
  n = builtins.length path;
  isDrv = v: builtins.isAttrs v && (v.type or null) == "derivation";
  typeOf = v: if isDrv v then "derivation" else builtins.typeOf v;
  json = v:
    if builtins.isFunction v then {function}
    else if isDrv v then v.outPath
    else if builtins.isAttrs v then builtins.mapAttrs (_: json) v
    else if builtins.isList v then map json v
    else if builtins.isPath v then toString v
    else v;
  index = s: if builtins.match "0|[1-9][0-9]*" s != null then builtins.fromJSON s else null;
  walk = v: i:
    if i == n then {{ found = true; value = json v; type = typeOf v; }}
    else
      let s = builtins.elemAt path i; k = index s; in
      if builtins.isAttrs v && builtins.hasAttr s v then walk (builtins.getAttr s v) (i + 1)
      else if builtins.isList v && k != null && k < builtins.length v then walk (builtins.elemAt v k) (i + 1)
      else {{
        found = false;
        missing_at = i;
        parent_type = typeOf v;
        siblings = if builtins.isAttrs v then builtins.attrNames v else [ ];
        length = if builtins.isList v then builtins.length v else null;
      }};
in walk root 0"#,
        flake = repo::nix_string(flake_ref),
        output = output,
        target = repo::nix_string(target),
        segments = segments.join(" "),
        function = repo::nix_string(FUNCTION),
    )
}

/// What to say about a path that does not exist: where it stops and the nearest names.
fn missing_message(what: &str, whose: &str, path: &[String], walk: &Walk) -> String {
    let at = walk.missing_at.min(path.len().saturating_sub(1));
    let parent = &path[..at];
    let missing = &path[at];
    let full = show_path(path);
    let parent_shown = if parent.is_empty() {
        "config".to_string()
    } else {
        show_path(parent)
    };
    let print_parent = format!(
        "print {parent_shown} itself with `cargo xtask option {}{whose}`",
        shell_word(&parent_shown)
    );
    match (walk.parent_type.as_str(), walk.length) {
        // A derivation is an attribute set too: its names are ranked below.
        ("set" | "derivation", _) => {}
        ("list", Some(n)) if n > 0 => {
            return format!(
                "{what} has no option {full}: {parent_shown} is a list of {n}, whose elements are {parent_shown}.0 to {parent_shown}.{}; {print_parent}",
                n - 1
            );
        }
        ("list", _) => {
            return format!(
                "{what} has no option {full}: {parent_shown} is an empty list; {print_parent}"
            );
        }
        (t, _) => {
            return format!(
                "{what} has no option {full}: {parent_shown} is a {t}, with no attribute {}; {print_parent}",
                show_segment(missing)
            );
        }
    }
    let near = nearest(missing, &walk.siblings, NEAREST);
    let near: Vec<String> = near
        .iter()
        .map(|s| {
            let mut p = parent.to_vec();
            p.push((*s).to_string());
            show_path(&p)
        })
        .collect();
    // The whole parent is worth printing when it is a set of options, not the top of
    // config (the whole configuration) or a derivation (printed as its output path).
    let all = if parent.is_empty() || walk.parent_type != "set" {
        String::new()
    } else {
        format!(
            "; `cargo xtask option {}{whose}` prints all {} of them",
            shell_word(&parent_shown),
            walk.siblings.len()
        )
    };
    if near.is_empty() {
        return format!(
            "{what} has no option {full}: {parent_shown} is an empty attribute set; define the option in the home or host first"
        );
    }
    format!(
        "{what} has no option {full}: {parent_shown} has no {}; the nearest existing: {}{all}",
        show_segment(missing),
        near.join(", ")
    )
}

/// The `count` names of `names` closest to `wanted` by edit distance (ties by name).
fn nearest<'a>(wanted: &str, names: &'a [String], count: usize) -> Vec<&'a str> {
    let mut ranked: Vec<(usize, &str)> = names
        .iter()
        .map(|n| {
            (
                edit_distance(&wanted.to_lowercase(), &n.to_lowercase()),
                n.as_str(),
            )
        })
        .collect();
    ranked.sort();
    ranked.into_iter().take(count).map(|(_, n)| n).collect()
}

/// Edit distance over characters, a swap of two neighbours counting as one edit (optimal
/// string alignment), so `gti` is next to `git`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Whether a value holds the function marker anywhere.
fn holds_function(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s == FUNCTION,
        serde_json::Value::Array(items) => items.iter().any(holds_function),
        serde_json::Value::Object(map) => map.values().any(holds_function),
        _ => false,
    }
}

/// A bare Nix attribute name (`home-manager`, `enable`).
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_'-".contains(c))
}

/// `programs.git.enable`, `home.file.".bashrc".text`, `home.packages.0` → the segments.
/// A segment is a bare Nix attribute name, a list index, or a double-quoted string.
fn parse_path(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    let mut segments = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let segment = if chars.peek() == Some(&'"') {
            chars.next();
            let mut seg = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => seg.push(c),
                        None => return Err("a quoted name is not closed".into()),
                    },
                    Some(c) => seg.push(c),
                    None => return Err("a quoted name is not closed".into()),
                }
            }
            seg
        } else {
            let mut seg = String::new();
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                seg.push(c);
                chars.next();
            }
            if seg.is_empty() {
                return Err("it has an empty name between dots".into());
            }
            if !is_identifier(&seg) && !seg.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "{seg:?} is neither a Nix attribute name nor a list index (quote it: \"{seg}\")"
                ));
            }
            seg
        };
        segments.push(segment);
        match chars.next() {
            None => return Ok(segments),
            Some('.') if chars.peek().is_some() => {}
            Some('.') => return Err("it ends with a dot".into()),
            Some(c) => return Err(format!("{c:?} after a quoted name (expected a dot)")),
        }
    }
}

/// One segment as it is written: bare when it can be, else quoted.
fn show_segment(s: &str) -> String {
    if is_identifier(s) || (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())) {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// A path as it is written on the command line.
fn show_path(path: &[String]) -> String {
    path.iter()
        .map(|s| show_segment(s))
        .collect::<Vec<_>>()
        .join(".")
}

/// A path quoted for a POSIX shell when it needs it (quoted segments).
fn shell_word(s: &str) -> String {
    home::shell_quote(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<String> {
        parse_path(s).unwrap()
    }

    #[test]
    fn option_names_parse_into_segments() {
        assert_eq!(ok("programs.git.enable"), ["programs", "git", "enable"]);
        assert_eq!(ok("home-manager.users"), ["home-manager", "users"]);
        assert_eq!(
            ok("home.file.\".bashrc\".text"),
            ["home", "file", ".bashrc", "text"]
        );
        assert_eq!(ok("a.\"x\\\"y\""), ["a", "x\"y"]);
        assert_eq!(ok("home.packages.0"), ["home", "packages", "0"]);
        for bad in [
            "", ".a", "a.", "a..b", "a b", "a.\"x", "a.\"x\"y", "-a", "a.$b",
        ] {
            assert!(parse_path(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn paths_are_shown_as_written() {
        let p = ok("home.file.\".bashrc\".text");
        assert_eq!(show_path(&p), "home.file.\".bashrc\".text");
    }

    #[test]
    fn nearest_names_by_edit_distance() {
        let names: Vec<String> = ["git", "gh", "bash", "zsh", "gpg", "htop", "vim"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(nearest("gti", &names, 3), ["git", "gh", "gpg"]);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn function_markers_are_found_anywhere() {
        assert!(holds_function(&serde_json::json!({"a": [1, FUNCTION]})));
        assert!(!holds_function(&serde_json::json!({"a": [1, "f"]})));
    }
}
