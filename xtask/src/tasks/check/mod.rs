//! `cargo xtask check`: does the repo deploy? Static lint, then one batched evaluation of
//! every home and host, then (with --full / --build) `nix flake check` and builds. Every
//! stage reports all of its findings; the exit status says whether any is an error.

mod eval;
mod report;
mod select;

use std::{collections::BTreeSet, time::Instant};

use anyhow::Result;

use crate::{
    Ctx,
    cli::{Check, CheckFormat},
    home::shell_quote,
    nix::{self, Nix},
    repo::{self, Finding, Repo, Severity},
    term::{self, Style},
};

pub use eval::{Kind, Target};
use report::{label_list, plural, print_findings};
use select::{Selection, targets};

/// The single batched evaluation expression over all `targets` (what `check` runs first),
/// for the benchmark's baseline.
pub fn batch_expr(root: &std::path::Path, targets: &[Target]) -> String {
    let all: Vec<usize> = (0..targets.len()).collect();
    eval::batch_expr(root, targets, &all)
}

/// Said when the files git does not track could not be looked for: a clean lint would
/// otherwise promise more than it checked.
fn untracked_note(count: &repo::ParseCount) -> Option<String> {
    count.untracked_unknown.then(|| {
        "git could not list the files it tracks (is git on PATH?), so files the flake cannot see (untracked ones) were not looked for; install git and run check again".to_string()
    })
}

/// `-v`'s word on the parse: how much the lint cache saved.
fn parse_note(count: crate::repo::ParseCount) -> String {
    let place = crate::cache::dir("lint").map_or_else(
        || "none: neither XDG_CACHE_HOME nor HOME is set".to_string(),
        |d| d.display().to_string(),
    );
    format!(
        "parsed {} .nix files; {} unchanged since an earlier run came from the lint cache ({place})",
        count.parsed, count.cached
    )
}

/// The static part of the lint (no nix): the layout scan, literal meta.nix files, the
/// untracked files and the parse of every `.nix` file.
pub fn static_lint(root: &std::path::Path) -> Result<Vec<Finding>> {
    let mut repo = Repo::scan_tree(root)?;
    repo.load_meta_static();
    let (mut findings, _) = repo.nix_file_findings();
    findings.extend(repo.findings.iter().cloned());
    Ok(findings)
}

impl Check {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let start = Instant::now();
        let format = if self.json {
            CheckFormat::Json
        } else {
            self.format
        };
        let nix = ctx.nix();

        // Stage 1: static lint, no nix: layout, untracked files, the syntax of every .nix
        // file and the paths it imports, meta.nix files whose values are literals.
        // The lint alone reads every directory anyway: one walk serves the layout and the
        // parse. With the evaluation, the layout is scanned first (cheaper) so that nix
        // starts at once, and the walk runs while nix evaluates.
        let mut repo = if self.lint_only {
            Repo::scan_tree(&ctx.root)?
        } else {
            ctx.repo()?
        };
        let selection = Selection::new(&repo, &self.only)?;
        let computed = repo.load_meta_static();

        let mut notes = Vec::new();
        let mut findings: Vec<Finding>;
        if self.lint_only {
            // The lint must run where nix cannot (a pre-commit hook on a fresh machine);
            // only a meta.nix that computes its values needs nix, so without nix those are
            // skipped, and said so.
            if nix::find_on_path("nix").is_some() {
                repo.load_meta(&nix)?;
            } else if !computed.is_empty() {
                let files = computed.files();
                notes.push(format!(
                    "not read, since they compute their values and nix is not on PATH: {}",
                    term::list(&files)
                ));
            }
            let count;
            (findings, count) = repo.nix_file_findings();
            notes.extend(untracked_note(&count));
            if ctx.verbose {
                notes.push(parse_note(count));
            }
            findings.extend(repo.findings.iter().cloned());
        } else {
            // Stage 2: evaluation. Reading the meta.nix files that compute their values (a
            // nix process of its own) runs while the batched evaluation runs, so `check`
            // costs little more than that one evaluation (the figure is 1.2x).
            // Targets that their findings rule out are dropped from the results afterwards.
            // The parse of every .nix file runs meanwhile too: the evaluation starts from the
            // layout's findings, and what the parse rules out is dropped afterwards (a clean
            // repository, the common case, pays for the parse with nothing).
            let systems = self.home_systems(&repo);
            let (pre_targets, _) = targets(&repo, &selection, &repo.findings, &systems);
            let root = repo.root.clone();
            let verbose = ctx.verbose;
            let (result, meta, parsed) = std::thread::scope(|s| {
                let worker = s.spawn(|| -> Result<Option<eval::Evaluation>> {
                    if pre_targets.is_empty() {
                        return Ok(None);
                    }
                    // xshell's Shell is not shared between threads: this one gets its own.
                    let sh = xshell::Shell::new()?;
                    sh.change_dir(&root);
                    eval::evaluate(&Nix::new(&sh, verbose), &root, &pre_targets).map(Some)
                });
                let parsed = repo.nix_file_findings();
                let meta = repo.load_meta(&nix);
                let result = worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the evaluation thread panicked")));
                (result, meta, parsed)
            });
            meta?;
            let count;
            (findings, count) = parsed;
            notes.extend(untracked_note(&count));
            if ctx.verbose {
                notes.push(parse_note(count));
            }
            findings.extend(repo.findings.iter().cloned());
            let (targets, skipped) = targets(&repo, &selection, &findings, &systems);
            notes.extend(skipped);
            // Nothing left to check (the lint ruled out flake.nix or lib/, or every target):
            // the evaluation's own failure would only repeat the lint's findings.
            let result = result?.filter(|_| !targets.is_empty());
            if let Some(result) = result {
                let ok = evaluate(&nix, &repo, &pre_targets, &targets, &result, &mut findings);
                // Stage 3: the documented validation and the builds.
                if self.full
                    && let Some(err) = nix.flake_check(&repo.root)?
                {
                    let (path, line) = repo::locate_nix_error(&repo.root, &err);
                    findings.push(Finding {
                        line,
                        ..Finding::error(
                            path.unwrap_or_else(|| "flake.nix".into()),
                            "flake-check",
                            format!("nix flake check fails: {err}"),
                            format!(
                                "run {} and fix what it names",
                                nix::suggest(&format!(
                                    "flake check {} --show-trace",
                                    shell_quote(&repo.root.display().to_string())
                                ))
                            ),
                        )
                    });
                }
                if self.full || self.build {
                    build(&nix, &repo, &ok, &mut findings);
                }
            }
        }

        if self.deny_warnings {
            for f in &mut findings {
                f.severity = Severity::Error;
            }
        }
        let errors = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let warnings = findings.len() - errors;
        print_findings(&findings, format)?;
        for n in &notes {
            term::info(&term::paint(Style::Dim, &format!("note: {n}")));
        }
        let (homes, hosts) = selection.counts();
        let summary = format!(
            "check: {} in {}, {} ({:.1} s)",
            [plural(errors, "error"), plural(warnings, "warning")].join(", "),
            plural(homes, "home"),
            plural(hosts, "host"),
            start.elapsed().as_secs_f64()
        );
        let style = if errors > 0 { Style::Red } else { Style::Green };
        term::info(&term::paint(style, &summary));
        if errors > 0 {
            return Err(crate::Reported.into());
        }
        Ok(())
    }

    /// The systems homes are evaluated for: this machine's (the repo default when this
    /// machine's is not a supported one), or all with --all-systems.
    fn home_systems(&self, repo: &Repo) -> Vec<String> {
        if self.all_systems {
            return repo::rules().supported_systems.clone();
        }
        let current = nix::current_system();
        if repo::rules().is_supported(&current) {
            vec![current]
        } else {
            vec![repo.defaults.default_system.clone()]
        }
    }
}

/// Runs the batched evaluation and turns failures into findings, one per distinct error
/// (a home broken on every system, or a shared file breaking several targets, is one
/// finding naming all of them). Returns the targets that evaluated.
fn evaluate(
    nix: &Nix,
    repo: &Repo,
    evaluated: &[Target],
    wanted: &[Target],
    result: &eval::Evaluation,
    findings: &mut Vec<Finding>,
) -> Vec<Target> {
    if let Some(err) = &result.flake_error {
        findings.push(Finding {
            line: err.line,
            ..Finding::error(
                err.path.clone().unwrap_or_else(|| "flake.nix".into()),
                "flake-error",
                format!(
                    "the flake does not evaluate, so no home or host could be checked: {}",
                    err.message
                ),
                if let Some(fix) = nix::environment_fix(&err.message) {
                    fix.to_string()
                } else {
                    // attrNames: reproduce the failure without printing whole configurations.
                    format!(
                        "fix the error nix names; {} reproduces it",
                        nix::suggest(&format!(
                            "eval {} --apply builtins.attrNames --show-trace",
                            shell_quote(&nix::installable(&repo.root, "nixosConfigurations"))
                        ))
                    )
                },
            )
        });
        return Vec::new();
    }
    // A set: with --all-systems a thousand homes are four thousand targets.
    let wanted: BTreeSet<&Target> = wanted.iter().collect();
    let mut ok = Vec::new();
    // Group failures by message, keeping the order of first appearance.
    let mut groups: Vec<(&eval::Failure, Vec<&Target>)> = Vec::new();
    let mut unevaluated: Vec<(&eval::Failure, Vec<&Target>)> = Vec::new();
    for (t, outcome) in evaluated.iter().zip(&result.outcomes) {
        if !wanted.contains(&t) {
            continue;
        }
        match outcome {
            eval::Outcome::Ok(_) => ok.push(t.clone()),
            eval::Outcome::Failed(fail) => match groups.iter_mut().find(|(f, _)| *f == fail) {
                Some((_, ts)) => ts.push(t),
                None => groups.push((fail, vec![t])),
            },
            eval::Outcome::NotEvaluated(fail) => {
                match unevaluated.iter_mut().find(|(f, _)| *f == fail) {
                    Some((_, ts)) => ts.push(t),
                    None => unevaluated.push((fail, vec![t])),
                }
            }
        }
    }
    for (fail, ts) in groups {
        let first = ts[0];
        // Without a file of the repo in nix's message (an error in nixpkgs, or a `throw`
        // without position), the target's own entry file is the place to start.
        let (path, line) = match &fail.path {
            Some(p) => (p.clone(), fail.line),
            None => (first.entry_file(), None),
        };
        findings.push(Finding {
            line,
            ..Finding::error(
                path,
                "eval-error",
                format!("{} does not evaluate: {}", label_list(&ts), fail.message),
                format!(
                    "fix the error nix names; {} reproduces it",
                    nix::suggest(&format!(
                        "eval {} --show-trace",
                        shell_quote(&format!(
                            "{}.drvPath",
                            nix::installable(&repo.root, &first.attr())
                        ))
                    ))
                ),
            )
        });
    }
    for (fail, ts) in unevaluated {
        findings.push(Finding {
            line: fail.line,
            ..Finding::warning(
                fail.path.clone().unwrap_or_else(|| ts[0].entry_file()),
                "not-evaluated",
                format!(
                    "{} not evaluated: the same error stopped several homes or hosts before them ({})",
                    label_list(&ts),
                    fail.message
                ),
                "fix that error and run cargo xtask check again".into(),
            )
        });
    }
    if nix.verbose {
        term::info(&format!(
            "evaluated {} targets in {} nix process(es)",
            evaluated.len(),
            result.processes
        ));
    }
    ok
}

/// Stage 3 (--build / --full): build what evaluated. One `nix build` for all (nix builds
/// in parallel); only when it fails is each target built alone, to say which one broke.
fn build(nix: &Nix, repo: &Repo, targets: &[Target], findings: &mut Vec<Finding>) {
    if targets.is_empty() {
        return;
    }
    let installables: Vec<String> = targets
        .iter()
        .map(|t| nix::installable(&repo.root, &t.attr()))
        .collect();
    if nix.build(&installables, None).is_ok() {
        return;
    }
    for (t, inst) in targets.iter().zip(&installables) {
        if let Err(e) = nix.build(std::slice::from_ref(inst), None) {
            findings.push(Finding::error(
                t.entry_file(),
                "build-failed",
                format!("{} evaluates but does not build: {e:#}", t.label()),
                format!(
                    "{} shows the full build log",
                    nix::suggest(&format!("build {} -L", shell_quote(inst)))
                ),
            ));
        }
    }
}
