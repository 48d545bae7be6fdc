//! A nix call that failed: nix's message trimmed to what matters, and the fix for the
//! causes nix words badly (no flakes support, no network, a path it cannot use).

/// A nix call that failed: what ran and what nix said. Callers that report per file
/// (`check`, meta loading) downcast to this to get nix's own message.
#[derive(Debug)]
pub struct NixError {
    pub command: String,
    pub what: String,
    pub stderr: String,
}

impl NixError {
    /// nix's message without the `error:` prefix, the source excerpt and the trace.
    pub fn message(&self) -> String {
        trim_error(&self.stderr)
    }
}

impl std::fmt::Display for NixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nix could not evaluate {}: {}\n  tried: {}\n  fix the error at the place nix names; add --show-trace to that command for nix's full trace",
            self.what,
            self.message(),
            self.command
        )
    }
}

impl std::error::Error for NixError {}

/// Turns a failed nix call into an error that names the cause and the fix.
pub fn failure(shown: &str, what: &str, stderr: &str) -> anyhow::Error {
    if stderr.contains("unrecognised flag '--extra-experimental-features'")
        || stderr.contains("unrecognized flag '--extra-experimental-features'")
    {
        return anyhow::anyhow!(
            "this nix has no flakes support (it does not know --extra-experimental-features); Nix >= 2.4 is required, 2.8 or newer recommended\n  tried: {shown}\n  upgrade nix: {}",
            "see https://nixos.org/download (Debian/Ubuntu: apt-get install nix-bin)"
        );
    }
    if stderr.contains("experimental Nix feature") && stderr.contains("is disabled") {
        return anyhow::anyhow!(
            "nix refused the flakes feature: {}\n  tried: {shown}\n  remove `experimental-features` overrides that disable flakes from nix.conf / NIX_CONFIG",
            trim_error(stderr)
        );
    }
    if let Some(fix) = environment_fix(stderr) {
        return anyhow::anyhow!("{}\n  tried: {shown}\n  {fix}", trim_error(stderr));
    }
    NixError {
        command: shown.to_string(),
        what: what.to_string(),
        stderr: stderr.to_string(),
    }
    .into()
}

/// The fix for nix failures that are not about the repo's Nix code, when nix's message
/// alone would not make it obvious.
pub fn environment_fix(err: &str) -> Option<&'static str> {
    if err.contains("is not a valid URL") {
        // Nix 2.8 (and others) cannot put a path with a space or `#`/`?` into a flake URL.
        return Some(
            "this nix cannot use the repository's path in a flake reference (it has a space or another special character); move or clone the repository to a path without one",
        );
    }
    if cannot_run(err) {
        return Some(
            "nix could not fetch or lock the flake's inputs (no network?); run `nix --extra-experimental-features 'nix-command flakes' flake lock` where the network is reachable and commit flake.lock",
        );
    }
    None
}

/// Nix failures that say nothing about the files: no network, inputs missing offline, a
/// lock file that cannot be written, or a nix without flakes.
pub fn cannot_run(err: &str) -> bool {
    [
        "unable to download",
        "Could not resolve host",
        "Couldn't resolve host",
        "cannot write modified lock file",
        "in offline mode",
        "'--offline'",
        "no flakes support",
        "refused the flakes feature",
    ]
    .iter()
    .any(|needle| err.contains(needle))
}

/// Keeps the useful part of a nix error: the `error:` lines (the first without its prefix,
/// shown after the xtask's own `error:`) and the location they name, without the source
/// excerpt and the trace.
pub fn trim_error(stderr: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut in_error = false;
    // Nix 2.13 and later open with a bare `error:` over the trace (`… while evaluating`) and
    // name the error in a later `error:` line: the trace is skipped, that line is the first.
    let mut in_trace = false;
    for line in stderr.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("error:") {
            let rest = rest.trim_start();
            in_error = true;
            if rest.is_empty() && out.is_empty() {
                in_trace = true;
                continue;
            }
            in_trace = false;
            // The message without its first `error:`: it is shown after the xtask's own.
            out.push(if out.is_empty() { rest } else { t });
            continue;
        }
        if in_trace || !in_error || t.is_empty() || t.starts_with("(use '--show-trace'") {
            continue;
        }
        // Source excerpt lines look like `12|   foo = 1;` or `|   ^`.
        let excerpt = t.starts_with('|')
            || t.split_once('|')
                .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
        if excerpt || t.starts_with('…') {
            continue;
        }
        out.push(t);
    }
    if out.is_empty() {
        return stderr.trim().to_string();
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_nix_errors_to_the_message_and_location() {
        let stderr = "warning: Git tree '/r' is dirty\nerror: undefined variable 'pkgz'\n\n       at /nix/store/abc-source/homes/bob/default.nix:3:15:\n\n            2| {\n            3|   home.packages = [ pkgz.hello ];\n             |               ^\n(use '--show-trace' to show detailed location information)\n";
        assert_eq!(
            trim_error(stderr),
            "undefined variable 'pkgz' at /nix/store/abc-source/homes/bob/default.nix:3:15:"
        );
    }

    #[test]
    fn flakes_missing_is_named() {
        let e = failure(
            "nix eval",
            "x",
            "error: unrecognised flag '--extra-experimental-features'",
        );
        assert!(e.to_string().contains("no flakes support"), "{e}");
    }

    #[test]
    fn cannot_run_is_told_apart_from_errors_in_files() {
        assert!(cannot_run(
            "error: unable to download 'https://api.github.com/x': Couldn't resolve host name (6)"
        ));
        assert!(cannot_run(
            "error: cannot write modified lock file of flake 'x' (use '--no-write-lock-file' to ignore)"
        ));
        assert!(!cannot_run(
            "error: undefined variable 'pkgz' at /nix/store/a-source/homes/b/default.nix:3:5:"
        ));
    }

    #[test]
    fn trim_error_of_a_nix_2_13_plus_trace_names_the_error_once() {
        // Nix 2.13+ (2.18 is the recommended one) puts the trace under a bare `error:`
        // and the message in a second `error:` line.
        let stderr = "error:\n       \u{2026} while calling the 'derivationStrict' builtin\n\n         at /builtin/derivation.nix:9:12: (source not available)\n\n       \u{2026} while evaluating derivation 'home-manager-generation'\n         whose name attribute is located at /nix/store/x-source/pkgs/stdenv/generic/make-derivation.nix:353:7\n\n       (stack trace truncated; use '--show-trace' to show the full trace)\n\n       error: undefined variable 'pkgz'\n\n       at /nix/store/abc-source/homes/bob/default.nix:3:15:\n\n            2| {\n            3|   home.packages = [ pkgz.hello ];\n             |               ^\n";
        let t = trim_error(stderr);
        assert!(!t.contains("error:"), "{t:?}");
        assert_eq!(
            t,
            "undefined variable 'pkgz' at /nix/store/abc-source/homes/bob/default.nix:3:15:"
        );
    }

    #[test]
    fn nix_error_message_strips_error_once() {
        // What Nix 2.8 prints for `throw "error: disk full"` (a lib's own message).
        let e = NixError {
            command: "nix eval".into(),
            what: "x".into(),
            stderr: "error: error: disk full\n".into(),
        };
        assert_eq!(e.message(), "error: disk full");
    }
}
