//! This machine: nix and its version, flakes, the store (or daemon), nix's settings, free
//! space in the store, and WSL and macOS specifics.

use std::{fs, path::Path};

use crate::{
    home::UserEnv,
    nix::{self, Nix, Version},
};

use super::{Report, timeout};

/// nix on PATH and its version.
pub(super) fn check_nix(r: &mut Report, nix: &Nix<'_>) -> Option<Version> {
    let Some(path) = nix::find_on_path("nix") else {
        let mut fix = nix::INSTALL_HELP.to_string();
        if cfg!(target_os = "macos") {
            fix.push_str("\n(a macOS update can drop nix from /etc/zshrc: re-add the `nix-daemon.sh` lines the installer put there)");
        }
        r.fail("nix", "nix is not on PATH", fix);
        return None;
    };
    match nix.version(timeout()) {
        Ok(v) if !v.at_least(2, 4) => {
            r.fail(
                "nix",
                format!("{} at {}: no flakes support (Nix >= 2.8 is needed)", v.text, path.display()),
                "upgrade nix to 2.18 or newer: https://nixos.org/download (Debian/Ubuntu: apt-get install nix-bin)",
            );
            None
        }
        Ok(v) if !v.at_least(2, 8) => {
            r.warn(
                "nix",
                format!(
                    "{} at {}: older than 2.8, the oldest version the xtask is tested with",
                    v.number(),
                    path.display()
                ),
                "upgrade nix (2.18+ recommended): https://nixos.org/download",
            );
            Some(v)
        }
        Ok(v) => {
            let note = if v.at_least(2, 18) {
                ""
            } else {
                " (works; 2.18+ recommended)"
            };
            r.ok("nix", format!("{} at {}{note}", v.number(), path.display()));
            Some(v)
        }
        Err(e) => {
            r.fail(
                "nix",
                format!("{} does not run: {e:#}", path.display()),
                "reinstall nix or fix its installation (see README's Install), then open a new shell",
            );
            None
        }
    }
}

/// Flakes usable: a trivial evaluation with the feature flag every xtask call passes.
pub(super) fn check_flakes(r: &mut Report, nix: &Nix<'_>) -> bool {
    let out = match nix.bounded(["eval", "--expr", "builtins ? getFlake"], timeout()) {
        Ok(out) => out,
        Err(e) => {
            r.fail("flakes", format!("{e:#}"), "see README's Install");
            return false;
        }
    };
    if out.success() && out.stdout.trim() == "true" {
        r.ok(
            "flakes",
            "usable (the xtask passes --extra-experimental-features 'nix-command flakes')",
        );
        return true;
    }
    if out.timed_out() {
        r.fail(
            "flakes",
            format!("`{}`: {}", out.shown, out.problem()),
            "nix hangs on a trivial evaluation: check that the nix daemon runs (`systemctl status nix-daemon`) and that nix.conf has no unreachable store",
        );
        return false;
    }
    // The store (or the daemon's socket) cannot be opened: the store line below says why
    // and how to fix it.
    if out.stderr.contains("daemon-socket")
        || (out.stderr.contains("ermission denied") && out.stderr.contains("/nix/"))
    {
        r.fail(
            "flakes",
            format!(
                "nix could not evaluate a trivial expression: {}",
                nix::trim_error(&out.stderr)
            ),
            "nix cannot open its store: see the store line below for the fix",
        );
        return false;
    }
    let why = nix::failure(&out.shown, "a trivial expression", &out.stderr);
    let detail = format!("{why:#}");
    let (detail, fix) = match detail.split_once("\n  tried: ") {
        Some((d, rest)) => (
            d.to_string(),
            rest.split_once("\n  ")
                .map_or("see README's Install".to_string(), |(_, f)| f.to_string()),
        ),
        None => (detail, "see README's Install".to_string()),
    };
    r.fail("flakes", detail, fix);
    false
}

/// Store writable or daemon reachable. `nix store ping` opens the store as every command
/// does (2.4–2.18; `nix store info` from 2.19 keeps `ping` as an alias), in milliseconds.
/// Returns whether the store is a local one (no daemon).
pub(super) fn check_store(r: &mut Report, nix: &Nix<'_>) -> bool {
    let daemon_fix = if cfg!(target_os = "macos") {
        "start the nix daemon: sudo launchctl kickstart -k system/org.nixos.nix-daemon"
    } else {
        "start the nix daemon: sudo systemctl start nix-daemon (WSL without systemd: enable systemd in /etc/wsl.conf, or reinstall nix with --no-daemon)"
    };
    let out = match nix.bounded(["store", "ping"], timeout()) {
        Ok(out) => out,
        Err(e) => {
            r.fail("store", format!("{e:#}"), daemon_fix);
            return false;
        }
    };
    let text = format!("{}{}", out.stdout, out.stderr);
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Store URL:"))
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|| "?".into());
    if !out.success() {
        let problem = out.problem();
        let fix = if problem.contains("daemon") || problem.contains("socket") || out.timed_out() {
            daemon_fix.to_string()
        } else if problem.contains("ermission denied") {
            "the store is not writable for you and no daemon answers: use the multi-user install (a daemon), or run as the store's owner".to_string()
        } else {
            "fix what nix says (README's Install)".to_string()
        };
        r.fail("store", format!("`{}`: {problem}", out.shown), fix);
        return false;
    }
    let local = url == "local" || url.starts_with('/') || url.starts_with("local");
    if local && !rustix::process::geteuid().is_root() {
        let db = Path::new("/nix/var/nix/db");
        if db.exists() && rustix::fs::access(db, rustix::fs::Access::WRITE_OK).is_err() {
            r.fail(
                "store",
                format!(
                    "local store ({url}), but {} is not writable for you and no daemon is used",
                    db.display()
                ),
                format!("{daemon_fix}; or chown the single-user store to yourself"),
            );
            return local;
        }
    }
    let how = if local {
        "writable local store"
    } else {
        "daemon reachable"
    };
    r.ok("store", format!("{url} ({how})"));
    local
}

/// A setting from `nix show-config --json` (2.4–2.19: `{"name": {"value": …}}`; the same
/// shape from `nix config show --json`, 2.20+); plain values as older nix printed them.
fn setting<'a>(config: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    let v = config.get(name)?;
    Some(v.get("value").unwrap_or(v))
}

/// Trusted user and sandbox: the tests pass `sandbox = false` through NIX_CONFIG, which
/// nix honours for trusted users only.
pub(super) fn check_settings(
    r: &mut Report,
    nix: &Nix<'_>,
    version: Option<&Version>,
    local: bool,
) {
    let new = version.is_some_and(Version::has_config_show);
    let args: &[&str] = if new {
        &["config", "show", "--json"]
    } else {
        &["show-config", "--json"]
    };
    let out = match nix.bounded(args, timeout()) {
        Ok(out) => out,
        Err(e) => {
            r.warn(
                "nix settings",
                format!("{e:#}"),
                "run `nix --extra-experimental-features nix-command show-config` to see what fails",
            );
            return;
        }
    };
    let config: Option<serde_json::Value> = out
        .success()
        .then(|| serde_json::from_str(&out.stdout).ok())
        .flatten();
    let Some(config) = config else {
        r.warn(
            "nix settings",
            format!("`{}`: {}", out.shown, out.problem()),
            "run that command to see what fails",
        );
        return;
    };
    let sandbox = match setting(&config, "sandbox") {
        Some(serde_json::Value::Bool(b)) => b.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => "?".into(),
    };
    let trusted_users: Vec<String> = match setting(&config, "trusted-users") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Some(serde_json::Value::String(s)) => s.split_whitespace().map(String::from).collect(),
        _ => Vec::new(),
    };
    let me = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::geteuid().as_raw()));
    // A single-user (local) store is the user's own: every setting applies.
    let trusted = local || rustix::process::geteuid().is_root() || is_trusted(&me, &trusted_users);
    settings_verdict(r, &me, trusted, &sandbox, &trusted_users);
}

/// The verdict on the sandbox setting for a user who is (or is not) trusted.
fn settings_verdict(
    r: &mut Report,
    me: &str,
    trusted: bool,
    sandbox: &str,
    trusted_users: &[String],
) {
    let detail = format!(
        "sandbox = {sandbox}; {me} is {}trusted (trusted-users = {})",
        if trusted { "" } else { "not " },
        trusted_users.join(" ")
    );
    if !trusted && sandbox != "false" && sandbox != "relaxed" {
        r.warn(
            "nix settings",
            detail,
            "`cargo xtask test` needs the sandbox off and cannot turn it off for an untrusted user: set `sandbox = relaxed` (or false) in /etc/nix/nix.conf, or add yourself to trusted-users there, then restart the daemon",
        );
    } else {
        r.ok("nix settings", detail);
    }
}

fn is_trusted(user: &str, trusted: &[String]) -> bool {
    let groups = my_groups();
    trusted.iter().any(|t| {
        t == "*"
            || t == user
            || t.strip_prefix('@')
                .is_some_and(|g| groups.iter().any(|m| m == g))
    })
}

/// The names of the groups this process is in (from /etc/group).
fn my_groups() -> Vec<String> {
    let mut gids: Vec<u32> = rustix::process::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    gids.push(rustix::process::getegid().as_raw());
    let text = fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid: u32 = f.nth(1)?.parse().ok()?;
            gids.contains(&gid).then(|| name.to_string())
        })
        .collect()
}

/// Free space where the store lives: builds and the profile need room there.
pub(super) fn check_store_space(r: &mut Report) {
    let store = crate::nix::store_dir();
    let st = match rustix::fs::statvfs(&store) {
        Ok(st) => st,
        Err(e) => {
            r.skip("store space", &format!("{}: {e}", store.display()));
            return;
        }
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    space_verdict(r, &store, free, st.f_files > 0 && st.f_favail == 0);
}

/// The verdict on `free` bytes (and whether the inodes ran out) in the store's file system.
fn space_verdict(r: &mut Report, store: &Path, free: u64, no_inodes: bool) {
    let gib = free as f64 / (1u64 << 30) as f64;
    let detail = format!("{gib:.1} GiB free in {}", store.display());
    let gc = "free space: `cargo xtask gc` (old home generations and unreachable store paths), or `nix-collect-garbage -d`";
    if free < 256 << 20 || no_inodes {
        r.fail(
            "store space",
            format!("{detail}: too little for a build"),
            gc,
        );
    } else if free < 2 << 30 {
        r.warn(
            "store space",
            format!("{detail}: a larger build may not fit"),
            gc,
        );
    } else {
        r.ok("store space", detail);
    }
}

/// What the platform check looks at: gathered from this machine ([`Platform::here`]), or
/// given by a test.
struct Platform<'a> {
    /// /proc/sys/kernel/osrelease (WSL's names Microsoft, and WSL2 for version 2).
    release: String,
    macos: bool,
    /// systemd runs (/run/systemd/system).
    systemd: bool,
    /// A daemon install's socket directory exists.
    daemon_socket: bool,
    /// macOS: the nix daemon's launchd service is installed.
    launchd_daemon: bool,
    home: Option<&'a Path>,
    root: &'a Path,
}

impl<'a> Platform<'a> {
    fn here(env: Option<&'a UserEnv>, root: &'a Path) -> Platform<'a> {
        Platform {
            release: fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default(),
            macos: cfg!(target_os = "macos"),
            systemd: Path::new("/run/systemd/system").is_dir(),
            daemon_socket: Path::new("/nix/var/nix/daemon-socket").exists(),
            launchd_daemon: Path::new("/Library/LaunchDaemons/org.nixos.nix-daemon.plist").exists(),
            home: env.map(|e| e.home.as_path()),
            root,
        }
    }
}

/// WSL and macOS specifics.
pub(super) fn check_platform(r: &mut Report, env: Option<&UserEnv>, root: &Path) {
    platform_verdict(r, &Platform::here(env, root));
}

fn platform_verdict(r: &mut Report, p: &Platform<'_>) {
    let (release, root) = (&p.release, p.root);
    if release.to_lowercase().contains("microsoft") {
        let wsl1 = !release.to_lowercase().contains("wsl2");
        if wsl1 {
            r.warn(
                "platform",
                format!("WSL 1 ({})", release.trim()),
                "Nix works poorly on WSL 1: convert the distribution with `wsl --set-version <distro> 2`",
            );
        } else if !p.systemd && p.daemon_socket {
            r.warn(
                "platform",
                "WSL 2 without systemd, but nix is a daemon install: the daemon does not start by itself",
                "enable systemd ([boot] systemd=true in /etc/wsl.conf, then `wsl --shutdown`), or reinstall nix with --no-daemon",
            );
        } else if root.starts_with("/mnt/") {
            r.warn(
                "platform",
                format!("WSL 2; the repository is on the Windows file system ({})", root.display()),
                "clone it into the Linux file system (e.g. ~/homelab): /mnt/c is slow and loses permissions",
            );
        } else {
            r.ok("platform", format!("WSL 2 ({})", release.trim()));
        }
        return;
    }
    if p.macos {
        let daemon = p.launchd_daemon;
        let home_ok = p.home.is_none_or(|h| h.starts_with("/Users"));
        if !home_ok {
            r.warn(
                "platform",
                "macOS, but $HOME is not under /Users: homes default to /Users/<user> on Darwin",
                "set home.homeDirectory in your home, or HOME to /Users/<you>",
            );
        } else if !daemon {
            r.warn(
                "platform",
                "macOS without the nix daemon's launchd service",
                "reinstall nix with the multi-user installer: sh <(curl -L https://nixos.org/nix/install)",
            );
        } else {
            r.ok("platform", "macOS with the nix daemon (after a macOS update, re-add the nix lines to /etc/zshrc if nix disappears)");
        }
        return;
    }
    r.ok(
        "platform",
        format!("{} ({})", std::env::consts::OS, nix::current_system()),
    );
}

#[cfg(test)]
mod tests {
    use super::super::Severity;
    use super::*;

    /// The one check a verdict function pushed: (severity, detail, fix).
    fn only(r: &Report) -> (Severity, String, String) {
        assert_eq!(r.checks.len(), 1);
        let c = &r.checks[0];
        (
            c.severity,
            c.detail.clone(),
            c.fix.clone().unwrap_or_default(),
        )
    }

    #[test]
    fn store_space_fails_under_256_mib_or_without_inodes_and_warns_under_2_gib() {
        let store = Path::new("/nix/store");
        for (free, no_inodes, want) in [
            (100 << 20, false, Severity::Error),
            (10 << 30, true, Severity::Error),
            (1 << 30, false, Severity::Warning),
            (10 << 30, false, Severity::Info),
        ] {
            let mut r = Report::default();
            space_verdict(&mut r, store, free, no_inodes);
            let (severity, detail, fix) = only(&r);
            assert_eq!(severity, want, "{free} {no_inodes}: {detail}");
            assert!(detail.contains("GiB free in /nix/store"), "{detail}");
            if want != Severity::Info {
                assert!(fix.contains("cargo xtask gc"), "{fix}");
            }
        }
    }

    #[test]
    fn an_untrusted_user_with_the_sandbox_on_is_told_how_to_run_the_tests() {
        let users = ["root".to_string()];
        let mut r = Report::default();
        settings_verdict(&mut r, "alice", false, "true", &users);
        let (severity, detail, fix) = only(&r);
        assert_eq!(severity, Severity::Warning, "{detail}");
        assert!(detail.contains("alice is not trusted"), "{detail}");
        assert!(
            fix.contains("sandbox = relaxed") && fix.contains("trusted-users"),
            "{fix}"
        );
        for (trusted, sandbox) in [(true, "true"), (false, "false"), (false, "relaxed")] {
            let mut r = Report::default();
            settings_verdict(&mut r, "alice", trusted, sandbox, &users);
            assert_eq!(only(&r).0, Severity::Info, "{trusted} {sandbox}");
        }
    }

    fn platform(release: &str) -> Platform<'static> {
        Platform {
            release: release.into(),
            macos: false,
            systemd: true,
            daemon_socket: true,
            launchd_daemon: false,
            home: Some(Path::new("/home/alice")),
            root: Path::new("/home/alice/homelab"),
        }
    }

    fn verdict(p: &Platform<'_>) -> (Severity, String, String) {
        let mut r = Report::default();
        platform_verdict(&mut r, p);
        only(&r)
    }

    #[test]
    fn wsl_1_wsl_2_without_systemd_and_a_repo_on_windows_are_named_with_their_fix() {
        let (s, d, f) = verdict(&platform("4.4.0-19041-Microsoft"));
        assert_eq!(s, Severity::Warning, "{d}");
        assert!(
            d.contains("WSL 1") && f.contains("wsl --set-version"),
            "{d} {f}"
        );

        let wsl2 = "5.15.90.1-microsoft-standard-WSL2";
        let no_systemd = Platform {
            systemd: false,
            ..platform(wsl2)
        };
        let (s, d, f) = verdict(&no_systemd);
        assert_eq!(s, Severity::Warning, "{d}");
        assert!(
            d.contains("without systemd") && f.contains("systemd=true"),
            "{d} {f}"
        );

        let on_windows = Platform {
            root: Path::new("/mnt/c/homelab"),
            ..platform(wsl2)
        };
        let (s, d, f) = verdict(&on_windows);
        assert_eq!(s, Severity::Warning, "{d}");
        assert!(
            d.contains("Windows file system") && f.contains("Linux file system"),
            "{d} {f}"
        );

        assert_eq!(verdict(&platform(wsl2)).0, Severity::Info);
        assert_eq!(verdict(&platform("6.1.0-13-amd64")).0, Severity::Info);
    }

    #[test]
    fn macos_without_the_daemon_or_with_a_home_outside_users_is_named_with_its_fix() {
        let mac = Platform {
            macos: true,
            launchd_daemon: true,
            home: Some(Path::new("/Users/alice")),
            ..platform("")
        };
        assert_eq!(verdict(&mac).0, Severity::Info);
        let (s, d, f) = verdict(&Platform {
            launchd_daemon: false,
            ..mac
        });
        assert_eq!(s, Severity::Warning, "{d}");
        assert!(
            d.contains("launchd") && f.contains("multi-user installer"),
            "{d} {f}"
        );
        let (s, d, f) = verdict(&Platform {
            macos: true,
            launchd_daemon: true,
            home: Some(Path::new("/home/alice")),
            ..platform("")
        });
        assert_eq!(s, Severity::Warning, "{d}");
        assert!(
            d.contains("not under /Users") && f.contains("homeDirectory"),
            "{d} {f}"
        );
    }

    #[test]
    fn settings_of_both_shapes_are_read() {
        let new: serde_json::Value = serde_json::from_str(
            r#"{"sandbox":{"value":false},"trusted-users":{"value":["root","@wheel"]}}"#,
        )
        .unwrap();
        assert_eq!(
            setting(&new, "sandbox"),
            Some(&serde_json::Value::Bool(false))
        );
        let old: serde_json::Value = serde_json::from_str(r#"{"sandbox":"relaxed"}"#).unwrap();
        assert_eq!(setting(&old, "sandbox").unwrap(), "relaxed");
        assert!(is_trusted("x", &["*".into()]));
        assert!(!is_trusted("x", &["root".into()]));
    }
}
