//! `cargo xtask check`: does the repo deploy? Static lint, then one batched evaluation of
//! every home and host, then (with --full / --build) `nix flake check` and builds. Every
//! stage reports all of its findings; the exit status says whether any is an error.

mod eval;

use std::{collections::BTreeSet, time::Instant};

use anyhow::Result;

use crate::{
    Ctx,
    cli::{Check, CheckFormat},
    nix::{self, Nix},
    repo::{self, Finding, Repo, Severity},
    term::{self, Style},
};

pub use eval::{Kind, Target};

/// The single batched evaluation expression over all `targets` (what `check` runs first),
/// for the benchmark's baseline.
pub fn batch_expr(root: &std::path::Path, targets: &[Target]) -> String {
    let all: Vec<usize> = (0..targets.len()).collect();
    eval::batch_expr(root, targets, &all)
}

/// The static part of the lint (no nix): the layout scan, literal meta.nix files, the
/// untracked files and the parse of every `.nix` file.
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
                                "run nix flake check {} --show-trace and fix what it names",
                                repo.root.display()
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

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// What `--only` selects: home users and hosts (everything without --only).
struct Selection {
    homes: BTreeSet<String>,
    hosts: BTreeSet<String>,
    droids: BTreeSet<String>,
}

impl Selection {
    fn new(repo: &Repo, only: &[String]) -> Result<Selection> {
        if only.is_empty() {
            return Ok(Selection {
                homes: repo.standalone_users().map(|u| u.name.clone()).collect(),
                hosts: repo.hosts.keys().cloned().collect(),
                droids: repo.droids.keys().cloned().collect(),
            });
        }
        let mut sel = Selection {
            homes: BTreeSet::new(),
            hosts: BTreeSet::new(),
            droids: BTreeSet::new(),
        };
        let items: Vec<&str> = only
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .collect();
        if items.is_empty() {
            // `--only ""` (an empty CI matrix variable) would otherwise check nothing and pass.
            return Err(crate::UsageError(
                "--only names nothing; pass home or host names (--only alice,workstation), or leave --only out to check everything".into(),
            )
            .into());
        }
        let mut unknown = Vec::new();
        for item in items {
            // `homes/pi` or `systems/pi` picks one of a home and a host with the same name
            // (a CI matrix job per target); a bare name means both.
            let (name, homes, hosts) =
                match (item.strip_prefix("homes/"), item.strip_prefix("systems/")) {
                    (Some(n), _) => (n.trim_end_matches('/'), true, false),
                    (_, Some(n)) => (n.trim_end_matches('/'), false, true),
                    _ => (item.strip_prefix("droids/").unwrap_or(item), true, true),
                };
            if hosts && repo.droids.contains_key(name) {
                sel.droids.insert(name.to_string());
                continue;
            }
            let mut found = false;
            if let Some(u) = repo.users.get(name).filter(|_| homes) {
                found = true;
                if u.base {
                    sel.homes.insert(name.to_string());
                } else {
                    // An integrated-only user has no standalone home: check the hosts it is on.
                    sel.hosts.extend(repo.user_hosts(name));
                }
            }
            if hosts && repo.hosts.contains_key(name) {
                found = true;
                sel.hosts.insert(name.to_string());
            }
            if !found {
                unknown.push(item.to_string());
            }
        }
        if !unknown.is_empty() {
            let known: Vec<String> = repo
                .users
                .keys()
                .map(|u| format!("homes/{u}"))
                .chain(repo.hosts.keys().map(|h| format!("systems/{h}")))
                .chain(repo.droids.keys().map(|d| format!("droids/{d}")))
                .collect();
            // A flag value naming nothing is a usage error (exit 2), like a bad flag.
            return Err(crate::UsageError(format!(
                "--only: {} {} neither a home (homes/<name>) nor a host (systems/<name>); known names: {} (cargo xtask list shows them)",
                unknown.join(", "),
                if unknown.len() == 1 { "is" } else { "are" },
                term::list(&known)
            ))
            .into());
        }
        Ok(sel)
    }

    fn counts(&self) -> (usize, usize) {
        (self.homes.len(), self.hosts.len() + self.droids.len())
    }
}

/// True when an error finding is about `dir` (the directory or a file in it).
fn has_error_in(findings: &[Finding], dir: &str) -> bool {
    findings.iter().any(|f| {
        f.severity == Severity::Error
            && (f.path == dir || f.path.strip_prefix(dir).is_some_and(|r| r.starts_with('/')))
    })
}

/// The targets to evaluate, and notes about what is skipped and why. A target whose own
/// directories already have a lint error is not evaluated: its evaluation would only fail
/// again with nix's less helpful words for the same problem (a missing default.nix, an
/// untracked file). An invalid directory name makes the flake's discovery refuse the whole
/// homes/ (or systems/) directory, so then nothing under it is evaluated.
fn targets(
    repo: &Repo,
    sel: &Selection,
    findings: &[Finding],
    systems: &[String],
) -> (Vec<Target>, Vec<String>) {
    let bad_dir_name = |top: &str| {
        findings.iter().any(|f| {
            f.code == "bad-name"
                && f.path
                    .strip_prefix(top)
                    .is_some_and(|r| r.starts_with('/') && !r[1..].contains('/'))
        })
    };
    // flake.nix or lib/ that does not parse, or imports what the flake cannot see, fails
    // every evaluation with one error the lint has already reported, with its place.
    let flake_broken = findings.iter().any(|f| {
        f.severity == Severity::Error
            && matches!(f.code, "syntax-error" | "missing-path" | "untracked-path")
            && (f.path == "flake.nix" || f.path.starts_with("lib/"))
    });
    let mut notes = Vec::new();
    let mut targets = Vec::new();
    let homes_blocked = flake_broken || bad_dir_name("homes");
    let hosts_blocked = homes_blocked || bad_dir_name("systems");
    let anything = !(sel.homes.is_empty() && sel.hosts.is_empty());
    if flake_broken && anything {
        notes.push("nothing was evaluated: flake.nix or lib/ has the errors above, and every home and host goes through them; fix those first".into());
    } else if homes_blocked && anything {
        notes.push("nothing was evaluated: an invalid name under homes/ stops the flake's discovery of every home and host; fix the names first".into());
    } else if hosts_blocked && !sel.hosts.is_empty() {
        notes.push("hosts were not evaluated: an invalid name under systems/ stops the flake's discovery of every host; fix the names first".into());
    }
    let mut skipped = Vec::new();
    if !homes_blocked {
        // Home by home, its systems together, so one home's failures are reported together.
        for name in &sel.homes {
            let Some(user) = repo.users.get(name) else {
                continue;
            };
            let dirs: Vec<String> = user
                .standalone_parts()
                .iter()
                .map(|p| format!("homes/{}", repo::home_dir_name(name, p)))
                .collect();
            if dirs.iter().any(|d| has_error_in(findings, d)) {
                skipped.push(format!("home '{name}'"));
                continue;
            }
            targets.extend(systems.iter().map(|system| Target::home(name, system)));
        }
    }
    if !hosts_blocked {
        for host in &sel.hosts {
            let mut dirs = vec![format!("systems/{host}")];
            for user in repo.host_users(host) {
                if let Some(u) = repo.users.get(&user) {
                    dirs.extend(
                        u.host_parts_for(host)
                            .iter()
                            .map(|p| format!("homes/{}", repo::home_dir_name(&user, p))),
                    );
                }
            }
            if dirs.iter().any(|d| has_error_in(findings, d)) {
                skipped.push(format!("host '{host}'"));
                continue;
            }
            targets.push(Target::host(host));
        }
        for droid in &sel.droids {
            let mut dirs = vec![format!("droids/{droid}")];
            for user in repo.droid_users(droid) {
                if let Some(u) = repo.users.get(&user) {
                    dirs.extend(
                        u.host_parts_for(droid)
                            .iter()
                            .map(|p| format!("homes/{}", repo::home_dir_name(&user, p))),
                    );
                }
            }
            if dirs.iter().any(|d| has_error_in(findings, d)) {
                skipped.push(format!("droid '{droid}'"));
                continue;
            }
            targets.push(Target::droid(droid));
        }
    }
    if !skipped.is_empty() {
        notes.push(format!(
            "not evaluated because of the errors above: {}",
            skipped.join(", ")
        ));
    }
    (targets, notes)
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
                        "fix the error nix names; nix eval {} --apply builtins.attrNames --show-trace reproduces it",
                        nix::installable(&repo.root, "nixosConfigurations")
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
                    "fix the error nix names; nix eval {}.drvPath --show-trace reproduces it",
                    nix::installable(&repo.root, &first.attr())
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

/// `home 'bob' (x86_64-linux, aarch64-linux) and host 'web'`.
fn label_list(ts: &[&Target]) -> String {
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
                format!("nix build {inst} -L shows the full build log"),
            ));
        }
    }
}

fn print_findings(findings: &[Finding], format: CheckFormat) -> Result<()> {
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
