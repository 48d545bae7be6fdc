//! `cargo xtask update [INPUT…]`: updates all or the named inputs of the flake, then says
//! what changed — each input's old → new revision and date, read from flake.lock before
//! and after — and with `--commit` commits flake.lock with that summary as the message.
//!
//! Version note: Nix 2.8–2.18 updates named inputs with `nix flake lock --update-input
//! NAME`; from 2.19 `nix flake update NAME…` does (see `nix::Version`). `nix flake update`
//! without names updates every input on all of them. The version is asked once.

use std::{collections::BTreeMap, fs, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::{Ctx, UsageError, cli::Update, nix, term};

/// What flake.lock says about one input: its locked reference.
#[derive(Debug, Clone, PartialEq)]
struct Locked(serde_json::Value);

impl Locked {
    /// The revision (7 characters), or for inputs without one (`path:`, tarballs) the
    /// start of the content hash.
    fn revision(&self) -> String {
        let get = |k: &str| self.0.get(k).and_then(|v| v.as_str());
        if let Some(rev) = get("rev") {
            return rev.chars().take(7).collect();
        }
        match get("narHash") {
            Some(h) => format!("{}…", h.chars().take(16).collect::<String>()),
            None => "?".into(),
        }
    }

    /// `lastModified` as a UTC date, as nix's own update summary shows it.
    fn date(&self) -> Option<String> {
        let secs = self.0.get("lastModified")?.as_i64()?;
        let ts = jiff::Timestamp::from_second(secs).ok()?;
        Some(ts.strftime("%Y-%m-%d").to_string())
    }

    fn shown(&self) -> String {
        match self.date() {
            Some(d) => format!("{} ({d})", self.revision()),
            None => self.revision(),
        }
    }
}

/// Every input of a lock file by its path from the root (`nixpkgs`, `home-manager/nixpkgs`);
/// inputs that follow another (`follows`) are that other one and are skipped.
fn inputs(lock: &serde_json::Value) -> BTreeMap<String, Locked> {
    let mut out = BTreeMap::new();
    let Some(nodes) = lock.get("nodes").and_then(|n| n.as_object()) else {
        return out;
    };
    let root = lock.get("root").and_then(|r| r.as_str()).unwrap_or("root");
    let mut queue = vec![(String::new(), root.to_string())];
    while let Some((prefix, key)) = queue.pop() {
        let Some(ins) = nodes
            .get(&key)
            .and_then(|n| n.get("inputs"))
            .and_then(|i| i.as_object())
        else {
            continue;
        };
        for (name, target) in ins {
            let Some(target) = target.as_str() else {
                continue;
            };
            let label = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if out.contains_key(&label) || label.matches('/').count() > 8 {
                continue;
            }
            if let Some(locked) = nodes.get(target).and_then(|n| n.get("locked")) {
                out.insert(label.clone(), Locked(locked.clone()));
            }
            queue.push((label, target.to_string()));
        }
    }
    out
}

fn read_lock(path: &Path) -> Result<Option<serde_json::Value>> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is not valid JSON; restore it from git (`git checkout flake.lock`)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// One line per changed input: `nixpkgs: abc1234 (2024-05-01) → def5678 (2024-06-01)`.
fn changes(
    before: &BTreeMap<String, Locked>,
    after: &BTreeMap<String, Locked>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, new) in after {
        match before.get(name) {
            Some(old) if old == new => {}
            Some(old) => out.push((
                name.clone(),
                format!("{name}: {} → {}", old.shown(), new.shown()),
            )),
            None => out.push((name.clone(), format!("{name}: (new) → {}", new.shown()))),
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        out.push((name.clone(), format!("{name}: removed")));
    }
    out
}

impl Update {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let nix = ctx.nix();
        let lock_path = ctx.root.join("flake.lock");
        let before_lock = read_lock(&lock_path)?;
        let before = before_lock.as_ref().map(inputs).unwrap_or_default();
        if !self.inputs.is_empty() {
            // The names flake.nix declares (a new input is not in flake.lock yet) and those
            // flake.lock has; a name in neither is a usage error, before nix runs.
            let mut known = nix.declared_inputs(&ctx.root, Duration::from_secs(30))?;
            known.extend(before.keys().filter(|k| !k.contains('/')).cloned());
            known.sort();
            known.dedup();
            let unknown: Vec<&String> = self.inputs.iter().filter(|i| !known.contains(i)).collect();
            if !unknown.is_empty() {
                return Err(UsageError(format!(
                    "unknown input {}: flake.nix declares {}",
                    unknown
                        .iter()
                        .map(|u| format!("'{u}'"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    term::list(&known)
                ))
                .into());
            }
        }
        let version = nix.version(Duration::from_secs(30))?;
        let mut args: Vec<String> = Vec::new();
        if self.inputs.is_empty() {
            args.extend(["flake".into(), "update".into()]);
        } else if version.flake_update_takes_inputs() {
            // Nix >= 2.19: `nix flake update NAME…`.
            args.extend(["flake".into(), "update".into()]);
            args.extend(self.inputs.iter().cloned());
        } else {
            // Nix 2.8–2.18 (and Lix): `nix flake lock --update-input NAME`, once per name.
            args.extend(["flake".into(), "lock".into()]);
            for i in &self.inputs {
                args.extend(["--update-input".into(), i.clone()]);
            }
        }
        let update = nix.cmd(&args)?;
        if self.dry_run {
            term::out(&crate::nix::prepare(update).1);
            if self.commit {
                term::out("git add -- flake.lock");
                term::out(
                    "git commit -q -F - -- flake.lock   # message: the summary of the changed inputs",
                );
            }
            return Ok(());
        }
        let (mut update, shown) = crate::nix::prepare(update);
        term::command(&shown);
        // Captured: nix's own "Updated input" lines are replaced by the summary below; a
        // failure shows nix's message with the fix.
        let out = update
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running {shown}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if ctx.verbose {
            term::raw(&stderr);
        }
        if !out.status.success() {
            let msg = nix::trim_error(&stderr);
            let fix = nix::environment_fix(&stderr)
                .unwrap_or("fix what nix names (run with -v for nix's full output)");
            bail!("updating the flake's inputs failed: {msg}\n  tried: {shown}\n  {fix}");
        }
        let after = read_lock(&lock_path)?
            .as_ref()
            .map(inputs)
            .unwrap_or_default();
        let changed = changes(&before, &after);
        if changed.is_empty() {
            term::info("no input changed; flake.lock is as it was");
            if self.commit {
                term::info("nothing to commit");
            }
            return Ok(());
        }
        for (_, line) in &changed {
            term::out(line);
        }
        if self.commit {
            let names: Vec<&str> = changed.iter().map(|(n, _)| n.as_str()).collect();
            let body: Vec<&str> = changed.iter().map(|(_, l)| l.as_str()).collect();
            let message = format!(
                "flake.lock: update {}\n\n{}\n",
                names.join(", "),
                body.join("\n")
            );
            if nix::find_on_path("git").is_none() {
                bail!(
                    "--commit needs git, which is not on PATH; install git, or commit flake.lock yourself"
                );
            }
            let sh = &ctx.sh;
            nix::run_step(cmd!(sh, "git add -- flake.lock"), false)?;
            // The message on stdin: the printed command stays readable.
            let (mut commit, shown) = nix::prepare(cmd!(sh, "git commit -q -F - -- flake.lock"));
            term::command(&shown);
            let mut child = commit
                .stdin(std::process::Stdio::piped())
                .spawn()
                .with_context(|| format!("running {shown}"))?;
            // Written and closed before the wait; git's own failure (which may be why the
            // write failed) is reported first.
            let wrote = child
                .stdin
                .take()
                .map(|mut stdin| std::io::Write::write_all(&mut stdin, message.as_bytes()));
            let status = child.wait().with_context(|| format!("running {shown}"))?;
            if !status.success() {
                bail!("{shown} failed ({status})");
            }
            if let Some(wrote) = wrote {
                wrote.with_context(|| format!("giving {shown} the message"))?;
            }
            term::info(&format!(
                "committed flake.lock: update {}",
                names.join(", ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(nodes: &str) -> serde_json::Value {
        serde_json::from_str(&format!(r#"{{"nodes":{nodes},"root":"root","version":7}}"#)).unwrap()
    }

    #[test]
    fn changed_inputs_are_listed_with_revision_and_date() {
        let before = lock(
            r#"{"root":{"inputs":{"a":"a","b":"b","c":"c"}},
                "a":{"locked":{"type":"github","rev":"1111111aaaa","lastModified":1700000000},"inputs":{"x":"x","y":["a"]}},
                "x":{"locked":{"type":"path","narHash":"sha256-AAAAAAAAAAAAAAAAAAAA"}},
                "b":{"locked":{"type":"git","rev":"2222222","lastModified":1700000000}},
                "c":{"locked":{"type":"git","rev":"3333333"}}}"#,
        );
        let after = lock(
            r#"{"root":{"inputs":{"a":"a","b":"b"}},
                "a":{"locked":{"type":"github","rev":"4444444bbbb","lastModified":1710000000},"inputs":{"x":"x"}},
                "x":{"locked":{"type":"path","narHash":"sha256-BBBBBBBBBBBBBBBBBBBB"}},
                "b":{"locked":{"type":"git","rev":"2222222","lastModified":1700000000}}}"#,
        );
        let lines: Vec<String> = changes(&inputs(&before), &inputs(&after))
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        assert_eq!(
            lines,
            [
                "a: 1111111 (2023-11-14) → 4444444 (2024-03-09)",
                "a/x: sha256-AAAAAAAAA… → sha256-BBBBBBBBB…",
                "c: removed",
            ]
        );
    }
}
