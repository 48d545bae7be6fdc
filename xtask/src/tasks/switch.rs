//! `cargo xtask switch [USER]`: build, pre-flight, set the profile, activate; the steps
//! and variables of `home-manager switch` (../shared/hm-contract.md), with every check that
//! can fail done before anything changes. `switch --host HOST` runs nixos-rebuild instead.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use xshell::cmd;

use crate::{
    Ctx, Reported,
    cli::Switch,
    nix,
    profile::{self, Activation, Backup, Preflight, UserEnv},
    repo, term,
};

use super::build_home::{HomeTarget, OutLinkDir, build_generation};

/// Where NixOS puts the units it generates; `XTASK_SYSTEMD_UNIT_DIR` replaces it, for tests
/// only (they cannot write to /etc).
const SYSTEMD_UNIT_DIR: &str = "/etc/systemd/system";

#[derive(Debug, Serialize)]
struct Report<'a> {
    user: &'a str,
    system: &'a str,
    generation: &'a Path,
    profile: PathBuf,
    dry_run: bool,
    commands: Vec<String>,
    preflight: &'a Preflight,
}

impl Switch {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if let Some(host) = self.host.clone() {
            return self.run_host(ctx, &host);
        }
        let HomeTarget {
            env,
            user,
            repo,
            system,
        } = HomeTarget::resolve(ctx, self.user.clone(), self.system.as_deref(), true)?;
        let here = nix::current_system();
        if system != here {
            bail!(
                "{user}'s home for {system} cannot be activated on this {here} machine (its programs would not run here); drop --system, or switch on a {system} machine"
            );
        }
        if !self.force_standalone {
            check_not_integrated(&user)?;
        }
        let backup = Backup::new(
            &repo.defaults,
            self.backup_extension.as_deref(),
            self.backup_command.as_deref(),
            self.overwrite_backup,
        );

        // Built with an out-link in a private directory, as `home-manager switch` does, so a
        // collection cannot remove the generation mid-switch.
        let work = OutLinkDir::new("switch")?;
        let generation = build_generation(ctx, &user, &system, &work.link())?;
        let active = match &self.specialisation {
            None => generation.clone(),
            Some(name) => specialisation(&generation, name)?,
        };
        check_expected(&active, &env, &user)?;

        let profile = env.profile();
        if profile.exists {
            term::info(&format!("profile: {}", profile.link().display()));
        } else {
            term::info(&format!(
                "first install: no profile directory yet; {} {} (Home Manager's XDG location)",
                if self.dry_run {
                    "would create"
                } else {
                    "creating"
                },
                profile.dir.display()
            ));
        }
        if let Some((profiled, active)) = profile::activation_mismatch(&env, &profile) {
            term::warning(&format!(
                "the profile names {} but the last completed activation was {}: an earlier switch or rollback was killed before it finished; this switch makes them agree again",
                profiled.display(),
                active.map_or_else(
                    || "none (no gcroots/current-home)".into(),
                    |a| a.display().to_string()
                )
            ));
        }
        let start = Instant::now();
        // The lock is held to the end, so no other switch changes $HOME between the check
        // and the activation it vouches for. A dry run takes none.
        let (pf, _lock) = profile::preflight_and_lock(
            &env,
            &profile,
            &active,
            &backup,
            &format!("{user}'s home"),
            self.dry_run,
        )?;
        if ctx.verbose {
            term::info(&format!(
                "pre-flight took {:.1} ms",
                start.elapsed().as_secs_f64() * 1000.0
            ));
        }
        pf.print(&env);
        let report = |commands: Vec<String>| -> Result<()> {
            if self.json {
                let report = Report {
                    user: &user,
                    system: &system,
                    generation: &generation,
                    profile: profile.link(),
                    dry_run: self.dry_run,
                    commands,
                    preflight: &pf,
                };
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        };
        if !pf.blockers.is_empty() {
            // A script reading --json needs the blockers most of all; nothing would run.
            report(Vec::new())?;
            term::error(&format!(
                "{} file(s) block the switch; nothing was changed. Resolve them as said above and switch again",
                pf.blockers.len()
            ));
            return Err(Reported.into());
        }

        // The contract: a generation with gen-version leaves the profile to the driver (us);
        // an old-style one (no gen-version) sets it itself from its `activate`.
        let driver_sets_profile = generation.join("gen-version").exists();
        let set_profile = ctx.nix().tool("nix-env").map(|c| {
            c.arg("--profile")
                .arg(profile.link())
                .arg("--set")
                .arg(&generation)
        });
        let activation = Activation {
            script: active.join("activate"),
            backup: &backup,
            verbose: ctx.verbose,
        };
        let mut commands = Vec::new();
        if !profile.exists {
            commands.push(format!(
                "mkdir -p {}",
                profile::shell_quote(&profile.dir.display().to_string())
            ));
        }
        if driver_sets_profile {
            commands.push(
                set_profile
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            );
        }
        commands.push(activation.shown());

        if self.dry_run {
            if !self.json {
                for c in &commands {
                    println!("{c}");
                }
                term::info("dry run: nothing was changed");
            }
        } else {
            if !profile.exists {
                fs::create_dir_all(&profile.dir).with_context(|| {
                    format!("creating the profile directory {}", profile.dir.display())
                })?;
            }
            let previous = profile.current_id();
            let set = if driver_sets_profile {
                Some(set_profile?)
            } else {
                None
            };
            profile::set_and_activate(
                ctx,
                &profile,
                set,
                &activation,
                previous,
                "interrupted: the switch was stopped before the new generation was active",
                "the new generation failed to activate",
            )?;
            term::info(&format!(
                "{} {user}'s home to {} (generation {})",
                term::paint(term::Style::Green, "switched"),
                generation.display(),
                profile.current_id().map_or("?".into(), |i| i.to_string())
            ));
        }
        report(commands)
    }

    fn run_host(&self, ctx: &Ctx, host: &str) -> Result<()> {
        if let Some(u) = &self.user {
            bail!(
                "--host {host} deploys the whole host with all its homes; drop the user name {u}"
            );
        }
        repo::validate_host_name(host).map_err(|e| anyhow::anyhow!("--host: {e}"))?;
        let mut repo = ctx.repo()?;
        repo.load_meta(&ctx.nix())?;
        repo.ensure_valid()?;
        let Some(h) = repo.hosts.get(host) else {
            let hosts: Vec<&str> = repo.hosts.keys().map(String::as_str).collect();
            bail!(
                "there is no host {host} in {} (hosts: {}); create it with `cargo xtask new-host {host}`",
                repo.root.join("systems").display(),
                term::list(&hosts)
            );
        };
        let system = repo.host_system(h);
        let users = repo.host_users(host);
        term::info(&format!(
            "host {host}: {system}, homes: {}",
            term::list(&users)
        ));
        let here = nix::current_system();
        if system != here && self.build_host.is_none() {
            term::warning(&format!(
                "{host} is {system} but this machine is {here}: building needs --build-host <a {system} machine> or emulation (boot.binfmt.emulatedSystems)"
            ));
        }
        let flake = format!("{}#{host}", ctx.root.display());
        let sh = &ctx.sh;
        let mut rebuild = cmd!(sh, "nixos-rebuild switch --flake {flake}");
        if let Some(t) = &self.target_host {
            rebuild = rebuild.args(["--target-host", t]);
        }
        if let Some(b) = &self.build_host {
            rebuild = rebuild.args(["--build-host", b]);
        }
        if self.use_remote_sudo {
            rebuild = rebuild.arg("--use-remote-sudo");
        }
        let available = nix::find_on_path("nixos-rebuild").is_some();
        if self.dry_run {
            if !available {
                term::warning("nixos-rebuild is not on PATH here; run this on a NixOS machine");
            }
            return nix::run_step(rebuild, true);
        }
        if !available {
            bail!(
                "nixos-rebuild is not available on this machine (it comes with NixOS); run `cargo xtask switch --host {host}` on a NixOS machine, or from one with --target-host"
            );
        }
        if let Err(e) = nix::run_step(rebuild, false) {
            // nixos-rebuild only says "the following units failed"; the home's own journal
            // says why (usually a file in the way).
            if self.target_host.is_none() {
                for u in &users {
                    show_failed_home_unit(ctx, u);
                }
            }
            return Err(e.context(format!("nixos-rebuild switch of {host} failed")));
        }
        Ok(())
    }
}

/// Only the user may switch their own home: `activate` checks `$USER`, writes with the
/// caller's ownership and uses the caller's profile.
/// It also checks `user` against the naming rule, since callers build profile paths and
/// flake attributes from it (`generations ../x`).
pub fn check_runner(user: &str, env: &UserEnv) -> Result<()> {
    repo::validate_name(user).map_err(|e| {
        anyhow::anyhow!("{user} is not a user name a home can have: {e}; name a home in homes/")
    })?;
    if user == env.user {
        // `sudo -E` keeps USER and HOME but runs as root: every link and profile entry
        // would then belong to root inside the user's home. The owner of $HOME is who
        // must run it.
        let euid = profile::effective_uid();
        if let Ok(owner) = fs::metadata(&env.home).map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            && owner != euid
        {
            bail!(
                "$HOME ({}) belongs to uid {owner}, but this runs as uid {euid}{}: the files and profile links it makes would belong to the wrong user; run it as {user} itself (without sudo)",
                env.home.display(),
                if euid == 0 {
                    " (root, e.g. through sudo -E)"
                } else {
                    ""
                }
            );
        }
        return Ok(());
    }
    if env.user == "root" {
        bail!(
            "you are root, but this is {user}'s home: as root it would use root's profile and leave root-owned files in {user}'s home; run it as {user} (e.g. `sudo -u {user} -i`, then `cargo xtask switch`)"
        );
    }
    bail!(
        "you are {}, but this is {user}'s home; log in as {user} and run the command there",
        env.user
    )
}

/// A NixOS host whose Home Manager module manages `user` re-activates its own generation
/// on every nixos-rebuild, undoing a standalone switch.
fn check_not_integrated(user: &str) -> Result<()> {
    let dir = std::env::var_os("XTASK_SYSTEMD_UNIT_DIR")
        .map_or_else(|| PathBuf::from(SYSTEMD_UNIT_DIR), PathBuf::from);
    let unit = dir.join(format!("home-manager-{user}.service"));
    if fs::symlink_metadata(&unit).is_err() {
        return Ok(());
    }
    let host = fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "<host>".to_string()
    } else {
        host
    };
    bail!(
        "NixOS' Home Manager module already manages {user}'s home here ({}); the next nixos-rebuild would undo a standalone switch. Deploy it with `cargo xtask switch --host {host}`, or pass --force-standalone to switch standalone anyway",
        unit.display()
    )
}

/// `<generation>/specialisation/<name>`, or which ones exist.
fn specialisation(generation: &Path, name: &str) -> Result<PathBuf> {
    let path = generation.join("specialisation").join(name);
    if path.join("activate").is_file() {
        return Ok(path);
    }
    let mut names: Vec<String> = fs::read_dir(generation.join("specialisation"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    bail!(
        "the home has no specialisation {name} (it has: {}); define specialisation.{name}.configuration in the home, or pick one of those",
        term::list(&names)
    )
}

/// The user and home the generation was built for must be this session's, or `activate`
/// refuses (after the profile was set). Read from the generation itself: no second eval.
fn check_expected(generation: &Path, env: &UserEnv, user: &str) -> Result<()> {
    let expected = profile::expected(generation)?;
    if let Some(u) = &expected.username
        && *u != env.user
    {
        bail!(
            "the home sets home.username = \"{u}\" but $USER is {}; remove that line from homes/{user} (the default is the directory's name) or switch as {u}",
            env.user
        );
    }
    if let Some(h) = &expected.home_directory
        && !same_directory(Path::new(h), &env.home)
    {
        let mac = if cfg!(target_os = "macos") {
            format!(
                "; on macOS home directories are /Users/<name> (the repo's default for *-darwin), so if yours differs write home.homeDirectory = \"{}\"; in homes/{user}@global/default.nix (the standalone-only part: on NixOS hosts the home directory comes from users.users)",
                env.home.display()
            )
        } else {
            String::new()
        };
        bail!(
            "the home sets home.homeDirectory = \"{h}\" but $HOME is {}; set home.homeDirectory = \"{}\" in homes/{user}@global/default.nix (the standalone-only part: on NixOS hosts Home Manager takes it from users.users and a second definition conflicts), or run with the right HOME{mac}",
            env.home.display(),
            env.home.display()
        );
    }
    Ok(())
}

/// Whether `a` and `b` name the same directory, as Home Manager's `checkHomeDirectory`
/// tests it (`[[ $HOME -ef $expected ]]`: same device and inode), so a `$HOME` reached
/// through a symlink or a bind mount passes. When one side does not exist the names are
/// compared, which is all that is left to compare.
fn same_directory(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// Prints the journal of a failed `home-manager-<user>.service` of this machine.
fn show_failed_home_unit(ctx: &Ctx, user: &str) {
    let unit = format!("home-manager-{user}.service");
    let sh = &ctx.sh;
    let failed = cmd!(sh, "systemctl is-failed --quiet {unit}")
        .quiet()
        .ignore_stderr()
        .run()
        .is_ok();
    if !failed {
        return;
    }
    term::error(&format!("{unit} failed; its last journal lines:"));
    match cmd!(sh, "journalctl -u {unit} -n 50 --no-pager")
        .quiet()
        .ignore_status()
        .read()
    {
        Ok(lines) => eprintln!("{lines}"),
        Err(e) => term::warning(&format!(
            "could not read the journal ({e}); run journalctl -u {unit} -n 50"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_directory_is_by_inode_then_by_name() {
        let t = tempfile::tempdir().unwrap();
        let (real, link) = (t.path().join("real"), t.path().join("link"));
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(same_directory(&real, &link));
        assert!(!same_directory(&real, t.path()));
        let gone = t.path().join("gone");
        assert!(same_directory(&gone, &gone));
        assert!(!same_directory(&gone, &real));
    }
}
