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
    home::{
        self, Activation, Backup, GenerationInfo, HomeTarget, OutLinkDir, Preflight, SetProfile,
        Transition,
    },
    nix, repo, term,
};

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
        // Which home, for which system, and may this user deploy it here.
        let target = HomeTarget::resolve(
            ctx,
            self.user.clone(),
            self.system.as_deref(),
            true,
            !self.dry_run,
        )?;
        let (env, user, system) = (&target.env, &target.user, &target.system);
        let here = nix::current_system();
        if *system != here {
            bail!(
                "{user}'s home for {system} cannot be activated on this {here} machine (its programs would not run here); drop --system, or switch on a {system} machine"
            );
        }
        if !self.force_standalone {
            check_not_integrated(user)?;
        }
        let backup = Backup::new(
            &target.repo.defaults,
            self.backup_extension.as_deref(),
            self.backup_command.as_deref(),
            self.overwrite_backup,
        );

        // The build, with an out-link in a private directory, as `home-manager switch`
        // does, so a collection cannot remove the generation mid-switch.
        let work = OutLinkDir::new()?;
        let generation = target.build(ctx, &work.link())?;
        let active = match &self.specialisation {
            None => generation.clone(),
            Some(name) => home::specialisation(&generation, name)?,
        };

        // What the generation itself says: its checks, its check script, its features.
        let info = GenerationInfo::read(&active)?;
        info.refuse_unsupported(self.overwrite_backup, backup.command.is_some())?;
        info.check_user(env, user)?;

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
        if let Some((profiled, active)) = home::activation_mismatch(env, &profile) {
            term::warning(&format!(
                "the profile names {} but the last completed activation was {}: an earlier switch or rollback was killed before it finished; this switch makes them agree again",
                profiled.display(),
                active.map_or_else(
                    || "none (no gcroots/current-home)".into(),
                    |a| a.display().to_string()
                )
            ));
        }

        // The pre-flight (under the lock, which is held to the end).
        let start = Instant::now();
        let (pf, lock) =
            home::preflight_locked(&info, env, &backup, &format!("{user}'s home"), self.dry_run)?;
        if ctx.verbose {
            term::info(&format!(
                "pre-flight took {:.1} ms",
                start.elapsed().as_secs_f64() * 1000.0
            ));
        }
        if self.diff || self.ask {
            // What changes, from what $HOME has now; on stderr, beside the pre-flight.
            let old = home::active_generation(env, &profile);
            home::Comparison::between(&ctx.nix(), old.as_deref(), &active)?.print(term::info);
        }
        pf.print(env);
        let report = |commands: Vec<String>| -> Result<()> {
            if self.json {
                let report = Report {
                    user,
                    system,
                    generation: &generation,
                    profile: profile.link(),
                    dry_run: self.dry_run,
                    commands,
                    preflight: &pf,
                };
                term::out(&serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        };
        if pf.is_blocked() {
            // A script reading --json needs the blocked files most of all; nothing would run.
            report(Vec::new())?;
            term::error(&format!(
                "{} file(s) block the switch; nothing was changed. Resolve them as said above and switch again",
                pf.blocked().count()
            ));
            return Err(Reported.into());
        }

        // The contract: a generation with gen-version leaves the profile to the driver (us);
        // an old-style one (no gen-version) sets it itself from its `activate`.
        let set = if info.gen_version {
            SetProfile::Set(generation.clone())
        } else {
            SetProfile::ByActivate
        };
        let migration = env.pending_migration();
        let activation = Activation {
            script: active.join("activate"),
            backup: &backup,
            verbose: ctx.verbose,
        };
        let mut commands = Vec::new();
        if !profile.exists {
            commands.push(format!(
                "mkdir -p {}",
                home::shell_quote(&profile.dir.display().to_string())
            ));
        }
        if let Some(m) = &migration {
            commands.extend(m.shown());
        }
        if let SetProfile::Set(g) = &set {
            commands.push(format!(
                "nix-env --profile {} --set {}",
                home::shell_quote(&profile.link().display().to_string()),
                g.display()
            ));
        }
        commands.push(activation.shown());
        let Some(lock) = lock else {
            // A dry run: the exact commands, nothing changed.
            if !self.json {
                for c in &commands {
                    term::out(c);
                }
                term::info("dry run: nothing was changed");
            }
            return report(commands);
        };
        if self.ask {
            // Under the lock: the answer is about exactly the pre-flight shown above.
            match term::confirm("activate this generation?") {
                Some(true) => {}
                Some(false) => {
                    term::info("not switched: nothing was changed");
                    return Err(Reported.into());
                }
                None => bail!(
                    "--ask: no answer on stdin (closed or not a terminal); nothing was changed. Answer on a terminal, pipe `echo y |`, or switch without --ask"
                ),
            }
        }

        // From here on this run changes things: it says so in the lock.
        lock.announce()?;
        if !profile.exists {
            fs::create_dir_all(&profile.dir).with_context(|| {
                format!("creating the profile directory {}", profile.dir.display())
            })?;
        }
        // Before the profile is set: Home Manager's activation migrates a legacy profile
        // itself, but only when the new directory has no profile yet.
        if let Some(m) = &migration {
            m.run(&ctx.nix())?;
        }
        let switched = Transition {
            nix: ctx.nix(),
            env,
            profile: &profile,
            lock: &lock,
            backup: &backup,
            verbose: ctx.verbose,
        }
        .run(
            &set,
            &active,
            &pf,
            "interrupted: the switch was stopped before the new generation was active",
            "the new generation failed to activate",
        );
        if let Err(e) = switched {
            // A script reading --json gets the plan that was attempted, and exit 1.
            report(commands)?;
            return Err(e);
        }
        term::info(&format!(
            "{} {user}'s home to {} (generation {})",
            term::paint(term::Style::Green, "switched"),
            generation.display(),
            profile.current_id().map_or("?".into(), |i| i.to_string())
        ));
        report(commands)
    }

    fn run_host(&self, ctx: &Ctx, host: &str) -> Result<()> {
        if let Some(u) = &self.user {
            bail!(
                "--host {host} deploys the whole host with all its homes; drop the user name {u}"
            );
        }
        repo::validate_host_name(host).map_err(|e| crate::UsageError(format!("--host: {e}")))?;
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
        Ok(lines) => term::info(&lines),
        Err(e) => term::warning(&format!(
            "could not read the journal ({e}); run journalctl -u {unit} -n 50"
        )),
    }
}
