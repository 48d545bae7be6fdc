//! Stage 2 of `check`: every selected home and host evaluated to its derivation path in ONE
//! nix process, each failure caught separately so one broken home does not hide the others.
//!
//! What `builtins.tryEval` catches (measured on Nix 2.8, and unchanged in later 2.x): only
//! `throw` and `assert` failures. An undefined variable, a missing attribute (`pkgs.hello`
//! on the stub `pkgs`), a syntax error in an imported file, a type error (`1 + "a"`), a
//! missing imported file and `abort` all stop the whole evaluation, tryEval or not. Real
//! module-system errors (unknown option, failed `assertions`, type mismatch of an option)
//! are `throw`s, so they are the caught kind; typos in Nix code are the uncaught kind.
//!
//! So the evaluation works like this:
//! 1. One `nix eval --impure --expr` over all targets. Each target is wrapped in
//!    `trace "xtask-check:start:<i>"`, then `tryEval (deepSeq …)`, then
//!    `trace "xtask-check:ok|failed:<i>"`: the trace lines tell which targets finished
//!    even when the process dies.
//! 2. If an uncaught error stops the process, the one target that started but did not
//!    finish is the culprit and nix's message on stderr is its error. The targets that did
//!    not start yet are evaluated again by the next process (one process per uncaught
//!    error, no more).
//! 3. tryEval gives no message for the targets it caught, so each of those (and only those)
//!    is evaluated once more on its own, without tryEval, to get nix's message.
//!
//! The expression reads the flake with `builtins.getFlake` because a single installable
//! (`nix eval ROOT#attr --apply`) reaches only one output, and homes live under
//! `legacyPackages` while hosts live under `nixosConfigurations`. Only the flake's output
//! names are used (see design.md), never lib/ internals.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result, bail};

use crate::{
    nix::{self, Nix},
    repo::{self, nix_string},
    term,
};

const MARK: &str = "xtask-check:";

/// After this many different homes/hosts in a row are stopped by the very same uncaught
/// error, the error is taken to be shared (in lib/ or a file many targets import) and the
/// remaining targets are left unevaluated, and reported as such, instead of costing one
/// nix process each (minutes with nixpkgs at hundreds of homes). They are not reported as
/// broken: some of them may not import the shared file at all. The systems of one home
/// count once, so one home broken everywhere with --all-systems does not trigger this.
const SAME_ERROR_LIMIT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Home,
    Host,
    /// A Nix-on-Droid phone (`nixOnDroidConfigurations.<name>`).
    Droid,
}

/// One thing to evaluate: a standalone home on one system, or a host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub kind: Kind,
    pub name: String,
    /// For homes: the `legacyPackages.<system>` to evaluate. Hosts carry their own system.
    pub system: Option<String>,
}

impl Target {
    pub fn home(name: &str, system: &str) -> Target {
        Target {
            kind: Kind::Home,
            name: name.into(),
            system: Some(system.into()),
        }
    }

    pub fn host(name: &str) -> Target {
        Target {
            kind: Kind::Host,
            name: name.into(),
            system: None,
        }
    }

    pub fn droid(name: &str) -> Target {
        Target {
            kind: Kind::Droid,
            name: name.into(),
            system: None,
        }
    }

    /// The flake attribute that builds this target.
    pub fn attr(&self) -> String {
        match (self.kind, &self.system) {
            (Kind::Home, Some(sys)) => {
                format!(
                    "legacyPackages.{sys}.homeConfigurations.{}.activationPackage",
                    self.name
                )
            }
            (Kind::Home, None) => format!("homeConfigurations.{}.activationPackage", self.name),
            (Kind::Host, _) => format!(
                "nixosConfigurations.{}.config.system.build.toplevel",
                self.name
            ),
            (Kind::Droid, _) => format!("nixOnDroidConfigurations.{}.activationPackage", self.name),
        }
    }

    /// `home 'bob' (x86_64-linux)` / `host 'web'`.
    pub fn label(&self) -> String {
        match (self.kind, &self.system) {
            (Kind::Home, Some(sys)) => format!("home '{}' ({sys})", self.name),
            (Kind::Home, None) => format!("home '{}'", self.name),
            (Kind::Host, _) => format!("host '{}'", self.name),
            (Kind::Droid, _) => format!("droid '{}'", self.name),
        }
    }

    /// The file a failure is reported against when nix names no file of the repo.
    pub fn entry_file(&self) -> String {
        match self.kind {
            Kind::Home => format!("homes/{}/default.nix", self.name),
            Kind::Host => format!("systems/{}/default.nix", self.name),
            Kind::Droid => format!("droids/{}/default.nix", self.name),
        }
    }

    /// The Nix expression for this target's derivation path, given `flake`.
    fn expr(&self) -> String {
        let name = nix_string(&self.name);
        match (self.kind, &self.system) {
            (Kind::Home, Some(sys)) => format!(
                "flake.legacyPackages.${{{}}}.homeConfigurations.${{{name}}}.activationPackage.drvPath",
                nix_string(sys)
            ),
            (Kind::Home, None) => {
                format!("flake.homeConfigurations.${{{name}}}.activationPackage.drvPath")
            }
            (Kind::Host, _) => {
                format!(
                    "flake.nixosConfigurations.${{{name}}}.config.system.build.toplevel.drvPath"
                )
            }
            (Kind::Droid, _) => {
                format!("flake.nixOnDroidConfigurations.${{{name}}}.activationPackage.drvPath")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub path: Option<String>,
    pub line: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Evaluated; the derivation path when the batch printed it.
    Ok(Option<String>),
    /// nix's trimmed message (store paths of the flake's source shortened to repo paths)
    /// and the repo file and line it names, if any.
    Failed(Failure),
    /// Not evaluated: the same uncaught error stopped several targets before it (the
    /// failure names that error).
    NotEvaluated(Failure),
}

/// The result of evaluating all targets.
#[derive(Debug)]
pub struct Evaluation {
    /// One per target, in order.
    pub outcomes: Vec<Outcome>,
    /// The flake itself does not evaluate (flake.nix broken): nothing could be checked.
    pub flake_error: Option<Failure>,
    /// How many nix processes ran (1 when nothing stops the batch).
    pub processes: usize,
}

/// What the trace lines of one run said about each target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Started,
    Ok,
    Caught,
}

fn parse_marks(stderr: &str) -> (BTreeMap<usize, Mark>, Option<String>) {
    let mut marks = BTreeMap::new();
    let mut source = None;
    for line in stderr.lines() {
        let Some(rest) = line
            .trim_start()
            .strip_prefix("trace: ")
            .and_then(|l| l.strip_prefix(MARK))
        else {
            continue;
        };
        let Some((what, arg)) = rest.split_once(':') else {
            continue;
        };
        if what == "source" {
            source = Some(arg.trim().to_string());
            continue;
        }
        let Ok(i) = arg.trim().parse::<usize>() else {
            continue;
        };
        let mark = match what {
            "start" => Mark::Started,
            "ok" => Mark::Ok,
            "failed" => Mark::Caught,
            _ => continue,
        };
        marks.insert(i, mark);
    }
    (marks, source)
}

fn prelude(root: &Path) -> String {
    format!(
        "flake = builtins.getFlake {};",
        nix_string(&nix::flake_ref(root))
    )
}

/// The batch expression over `pending` (indices into `targets`).
pub(super) fn batch_expr(root: &Path, targets: &[Target], pending: &[usize]) -> String {
    let items: String = pending
        .iter()
        .map(|&i| format!(" (check \"{i}\" ({}))", targets[i].expr()))
        .collect();
    format!(
        "let {prelude} \
         check = id: value: builtins.trace \"{MARK}start:${{id}}\" (let r = builtins.tryEval (builtins.deepSeq value value); \
         in builtins.trace \"{MARK}${{if r.success then \"ok\" else \"failed\"}}:${{id}}\" (if r.success then r.value else null)); \
         in builtins.trace \"{MARK}source:${{flake.outPath}}\" [{items} ]",
        prelude = prelude(root)
    )
}

/// Nix's message without the store prefix of the flake's own source, so it names
/// `homes/bob/default.nix:3:5` as the user knows it.
fn clean(stderr: &str, source: Option<&str>) -> String {
    let msg = nix::trim_error(stderr);
    let msg = msg.trim_end_matches(':');
    match source {
        Some(src) => msg.replace(&format!("{src}/"), ""),
        None => msg.to_string(),
    }
}

/// The failure of one target: the cleaned message and the repo file it names (located
/// before cleaning, while the store path still marks it as the flake's own file).
fn failure(root: &Path, stderr: &str, source: Option<&str>) -> Failure {
    let raw = nix::trim_error(stderr);
    let located = match source {
        Some(src) => raw.find(&format!("{src}/")).map(|at| {
            let rel = raw[at + src.len()..].replacen('/', &format!("{}/", root.display()), 1);
            repo::locate_nix_error(root, &rel)
        }),
        None => None,
    };
    let (path, line) = located.unwrap_or_else(|| repo::locate_nix_error(root, &raw));
    let path = path.filter(|p| root.join(p).is_file());
    Failure {
        message: clean(stderr, source),
        path,
        line,
    }
}

pub fn evaluate(nix: &Nix, root: &Path, targets: &[Target]) -> Result<Evaluation> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; targets.len()];
    let mut caught: Vec<usize> = Vec::new();
    let mut pending: Vec<usize> = (0..targets.len()).collect();
    let mut processes = 0;
    let mut source: Option<String> = None;
    let mut flake_error = None;
    // (message, count) of the uncaught errors in a row.
    let mut streak: (String, Vec<&str>) = (String::new(), Vec::new());

    term::info(&format!(
        "evaluating {} target(s) in one nix process",
        targets.len()
    ));
    let mut done = 0;
    while !pending.is_empty() {
        // nix's trace marks arrive as it goes: the count of finished targets is the progress.
        let out = nix.eval_expr_output(&batch_expr(root, targets, &pending), |line| {
            if line.contains(&format!("{MARK}ok:")) || line.contains(&format!("{MARK}failed:")) {
                done += 1;
                term::progress(&format!("evaluated {done}/{}", targets.len()));
            }
        });
        term::progress_done();
        let out = out?;
        processes += 1;
        let (marks, src) = parse_marks(&out.stderr);
        if src.is_some() {
            source = src;
        }
        if out.success {
            let values: Vec<Option<String>> =
                serde_json::from_str(&out.stdout).with_context(|| {
                    format!(
                        "nix printed JSON the xtask did not expect (tried: {})",
                        out.shown
                    )
                })?;
            if values.len() != pending.len() {
                bail!(
                    "nix returned {} results for {} targets (tried: {})",
                    values.len(),
                    pending.len(),
                    out.shown
                );
            }
            for (&i, v) in pending.iter().zip(values) {
                match v {
                    Some(path) => outcomes[i] = Some(Outcome::Ok(Some(path))),
                    None => caught.push(i),
                }
            }
            break;
        }
        let stopped: Vec<usize> = pending
            .iter()
            .copied()
            .filter(|i| marks.get(i) == Some(&Mark::Started))
            .collect();
        let fail = failure(root, &out.stderr, source.as_deref());
        let [culprit] = stopped[..] else {
            // No target was being evaluated: the flake itself (flake.nix, or what every
            // output needs) does not evaluate, so no target can be checked.
            flake_error = Some(fail);
            break;
        };
        outcomes[culprit] = Some(Outcome::Failed(fail.clone()));
        for &i in &pending {
            match marks.get(&i) {
                Some(Mark::Ok) => outcomes[i] = Some(Outcome::Ok(None)),
                Some(Mark::Caught) => caught.push(i),
                _ => {}
            }
        }
        pending.retain(|i| !marks.contains_key(i));
        if streak.0 != fail.message {
            streak = (fail.message.clone(), Vec::new());
        }
        let name = targets[culprit].name.as_str();
        if !streak.1.contains(&name) {
            streak.1.push(name);
        }
        if streak.1.len() >= SAME_ERROR_LIMIT {
            for &i in &pending {
                outcomes[i] = Some(Outcome::NotEvaluated(fail.clone()));
            }
            pending.clear();
        }
    }

    // tryEval does not say why: evaluate each caught target alone to get nix's message.
    if !caught.is_empty() {
        term::info(&format!(
            "evaluating the {} failed target(s) alone for nix's messages",
            caught.len()
        ));
    }
    for i in caught {
        let expr = format!("let {} in {}", prelude(root), targets[i].expr());
        let out = nix.eval_expr_output(&expr, |_| {})?;
        processes += 1;
        outcomes[i] = Some(if out.success {
            // Failed inside the batch but not alone: report it rather than hide it.
            Outcome::Failed(Failure {
                message: format!(
                    "evaluation failed with the other targets but succeeds alone (tried: {})",
                    out.shown
                ),
                path: None,
                line: None,
            })
        } else {
            Outcome::Failed(failure(root, &out.stderr, source.as_deref()))
        });
    }

    // Targets left without an outcome were stopped by a flake-level error.
    let outcomes = outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Outcome::Failed(Failure {
                    message: "not evaluated: the flake does not evaluate".into(),
                    path: None,
                    line: None,
                })
            })
        })
        .collect();
    Ok(Evaluation {
        outcomes,
        flake_error,
        processes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_read_from_trace_lines() {
        let stderr = "trace: xtask-check:source:/nix/store/abc-source\ntrace: xtask-check:start:0\ntrace: xtask-check:ok:0\ntrace: user trace\ntrace: xtask-check:start:2\ntrace: xtask-check:failed:2\ntrace: xtask-check:start:5\nerror: undefined variable 'foo'\n\n       at /nix/store/abc-source/homes/bob/default.nix:1:35:\n";
        let (marks, source) = parse_marks(stderr);
        assert_eq!(source.as_deref(), Some("/nix/store/abc-source"));
        assert_eq!(marks.get(&0), Some(&Mark::Ok));
        assert_eq!(marks.get(&2), Some(&Mark::Caught));
        assert_eq!(marks.get(&5), Some(&Mark::Started));
        assert_eq!(marks.len(), 3);
        assert_eq!(
            clean(stderr, source.as_deref()),
            "undefined variable 'foo' at homes/bob/default.nix:1:35"
        );
    }

    #[test]
    fn target_attributes_follow_the_flake_outputs() {
        let h = Target::home("bob", "aarch64-linux");
        assert_eq!(
            h.attr(),
            "legacyPackages.aarch64-linux.homeConfigurations.bob.activationPackage"
        );
        assert_eq!(h.entry_file(), "homes/bob/default.nix");
        assert_eq!(
            Target::host("web").attr(),
            "nixosConfigurations.web.config.system.build.toplevel"
        );
        let e = batch_expr(
            Path::new("/nonexistent/r"),
            &[h, Target::host("web")],
            &[0, 1],
        );
        assert!(
            e.contains("(check \"1\" (flake.nixosConfigurations.${\"web\"}"),
            "{e}"
        );
        assert!(e.contains("getFlake \"path:/nonexistent/r\""), "{e}");
    }
}
