//! `cargo xtask new-user`: a new person's home in one command, from the templates in
//! xtask/templates/ (plain files, so they can be read and changed like any module).

use anyhow::{Result, bail};

use crate::scaffold::{Evaluation, Scaffold, ensure_sound, prepare, render, replace_line};
use crate::{
    Ctx, UsageError,
    cli::NewUser,
    repo::{self, Part, home_dir_name, nix_string, validate_host_name, validate_new_user_name},
    term,
};

const HOME: &str = include_str!("../../templates/home.nix");
const HOME_GLOBAL: &str = include_str!("../../templates/home-global.nix");
const HOME_HOST: &str = include_str!("../../templates/home-host.nix");
const HOME_META: &str = include_str!("../../templates/home-meta.nix");

impl NewUser {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let name = self.name.as_str();
        // A name no home can have is a usage error (exit 2), like any bad argument.
        validate_new_user_name(name, self.allow_root)
            .map_err(|e| UsageError(format!("{e}; nothing was written")))?;
        let _lock = prepare(ctx, self.dry_run)?;
        let mut repo = ctx.repo()?;
        let mut hosts: Vec<&str> = Vec::new();
        for host in &self.hosts {
            check_host(&repo, host)?;
            if !hosts.contains(&host.as_str()) {
                hosts.push(host);
            }
        }
        ensure_sound(ctx, &mut repo)?;
        let system = self
            .system
            .as_deref()
            .map(|s| repo::pick_system(Some(s)))
            .transpose()?;
        let home = with_git_identity(
            &render(HOME, &[("user", name)]),
            self.full_name.as_deref(),
            self.email.as_deref(),
        )?;

        let mut files = Scaffold::default();
        let dir = |part: &Part| format!("homes/{}", home_dir_name(name, part));
        let base = dir(&Part::Base);
        files.file(format!("{base}/default.nix"), home);
        if let Some(system) = &system {
            files.file(
                format!("{base}/meta.nix"),
                render(HOME_META, &[("user", name), ("system", system)]),
            );
        }
        if self.global {
            files.file(
                format!("{}/default.nix", dir(&Part::Global)),
                render(HOME_GLOBAL, &[("user", name)]),
            );
        }
        for host in &hosts {
            files.file(
                format!("{}/default.nix", dir(&Part::Host(host.to_string()))),
                render(HOME_HOST, &[("user", name), ("host", host)]),
            );
        }

        // The standalone home and every host whose integrated home gains a part.
        let mut attrs = vec![format!(
            "homeConfigurations.{}.activationPackage.drvPath",
            nix_string(name)
        )];
        attrs.extend(hosts.iter().map(|h| {
            format!(
                "nixosConfigurations.{}.config.system.build.toplevel.drvPath",
                nix_string(h)
            )
        }));
        let mut only = vec![name];
        only.extend(&hosts);
        let later = format!("cargo xtask check --only {}", only.join(","));
        files.apply(ctx, self.dry_run, &Evaluation { attrs, later })?;
        if self.dry_run {
            return Ok(());
        }

        term::info("next steps (and commit the new files):");
        let mut steps = vec![(
            format!("cargo xtask switch {name}"),
            format!("deploy the standalone home, as {name}"),
        )];
        steps.extend(hosts.iter().map(|h| {
            (
                format!("cargo xtask switch --host {h}"),
                format!("deploy {h} with {name}'s integrated home"),
            )
        }));
        let width = steps.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
        for (command, what) in steps {
            term::info(&format!("  {command:<width$}   {what}"));
        }
        Ok(())
    }
}

/// `--host` must name an existing host; `global` has its own flag.
fn check_host(repo: &repo::Repo, host: &str) -> Result<()> {
    if host == repo::rules().reserved_host {
        return Err(UsageError(
            "--host global: use --global for homes/<user>@global (the standalone-only part); nothing was written".into(),
        )
        .into());
    }
    validate_host_name(host)
        .map_err(|e| UsageError(format!("--host {host}: {e}; nothing was written")))?;
    match repo.hosts.get(host) {
        None => bail!(
            "--host {host}: there is no host '{host}' (systems/{host} does not exist); create it first with `cargo xtask new-host {host}`, then run this again; nothing was written"
        ),
        // The new part could not evaluate: the host itself has no configuration.
        Some(h) if !h.has_default => bail!(
            "--host {host}: systems/{host} has no default.nix, so the host has no configuration; move systems/{host} away and run `cargo xtask new-host {host}`, or write the file; nothing was written"
        ),
        Some(_) => Ok(()),
    }
}

/// The home template with the git identity filled in: its commented `userName` and
/// `userEmail` examples become settings (escaped Nix strings) for what was given.
fn with_git_identity(home: &str, full_name: Option<&str>, email: Option<&str>) -> Result<String> {
    let mut home = home.to_string();
    for (flag, option, value) in [
        ("--full-name", "userName", full_name),
        ("--email", "userEmail", email),
    ] {
        let Some(v) = value else { continue };
        if v.trim().is_empty() {
            bail!("{flag} is empty; leave it out to fill it in later; nothing was written");
        }
        // Nix strings could hold them escaped, but in a name they are a paste accident.
        if v.chars().any(char::is_control) {
            bail!(
                "{flag} contains a control character (a newline or tab?); pass the value on one line; nothing was written"
            );
        }
        let setting = format!("{option} = {};", nix_string(v));
        home = replace_line(&home, &format!("# {option} = "), Some(&setting));
    }
    if full_name.is_some() && email.is_some() {
        home = replace_line(&home, IDENTITY_HINT, None);
    }
    Ok(home)
}

/// The comment above the identity examples in home.nix, dropped once both are filled in.
const IDENTITY_HINT: &str = "# Your identity in commits;";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_escaped_or_commented() {
        let home = render(HOME, &[("user", "eve")]);
        let both = with_git_identity(&home, Some("Eve \"${x}\" \\"), Some("e@x.org")).unwrap();
        assert!(
            both.contains("    userName = \"Eve \\\"\\${x}\\\" \\\\\";\n"),
            "{both}"
        );
        assert!(both.contains("    userEmail = \"e@x.org\";\n"), "{both}");
        assert!(
            !both.contains(IDENTITY_HINT) && !both.contains("# user"),
            "{both}"
        );
        let one = with_git_identity(&home, None, Some("e@x.org")).unwrap();
        assert!(
            one.contains(IDENTITY_HINT) && one.contains("    # userName = \"Your Name\";"),
            "{one}"
        );
        assert_eq!(with_git_identity(&home, None, None).unwrap(), home);
        assert!(with_git_identity(&home, Some("a\nb"), None).is_err());
        assert!(with_git_identity(&home, None, Some(" ")).is_err());
    }

    #[test]
    fn templates_have_no_unfilled_keys() {
        let vars = [("user", "bob"), ("host", "ws"), ("system", "x86_64-linux")];
        for t in [HOME, HOME_GLOBAL, HOME_HOST, HOME_META] {
            let out = render(t, &vars);
            for key in ["@user@", "@host@", "@system@"] {
                assert!(!out.contains(key), "{key} left in:\n{out}");
            }
        }
    }
}
