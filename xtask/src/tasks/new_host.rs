//! `cargo xtask new-host`: a new machine's systems/<host> in one command, from the
//! templates in xtask/templates/.

use anyhow::Result;

use crate::scaffold::{
    Evaluation, Scaffold, ensure_sound, nix_string_list, prepare, render, replace_line,
};
use crate::{
    Ctx, UsageError,
    cli::NewHost,
    repo::{self, nix_string, validate_host_name, validate_new_user_name},
    term,
};

const HOST: &str = include_str!("../../templates/host.nix");
const HOST_META: &str = include_str!("../../templates/host-meta.nix");

impl NewHost {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let host = self.name.as_str();
        // A name no host can have is a usage error (exit 2), like any bad argument.
        validate_host_name(host).map_err(|e| UsageError(format!("{e}; nothing was written")))?;
        let mut users: Vec<String> = Vec::new();
        for user in &self.users {
            // lib/ makes every user of a host a normal user, which root cannot be.
            validate_new_user_name(user, false)
                .map_err(|e| UsageError(format!("--user {user}: {e}; nothing was written")))?;
            if !users.contains(user) {
                users.push(user.clone());
            }
        }
        let system = repo::pick_system(Some(&self.system))?;
        if !repo::rules().is_host_system(&system) {
            anyhow::bail!(
                "a NixOS host runs Linux, so its system is one of {}, not {system} (a Mac's home goes in homes/ with cargo xtask new-user)",
                repo::rules().host_systems.join(", ")
            );
        }
        let _lock = prepare(ctx, self.dry_run)?;
        let mut repo = ctx.repo()?;
        ensure_sound(ctx, &mut repo)?;

        let mut files = Scaffold::default();
        files.file(
            format!("systems/{host}/default.nix"),
            render(
                HOST,
                &[
                    ("host", host),
                    ("stateVersion", &repo.defaults.state_version),
                ],
            ),
        );
        let mut meta = render(HOST_META, &[("host", host), ("system", &system)]);
        if !users.is_empty() {
            let list = format!("users = {};", nix_string_list(&users, "  "));
            meta = replace_line(&meta, "users = [ ];", Some(&list));
        }
        files.file(format!("systems/{host}/meta.nix"), meta);
        let eval = Evaluation {
            attrs: vec![format!(
                "nixosConfigurations.{}.config.system.build.toplevel.drvPath",
                nix_string(host)
            )],
            later: format!("cargo xtask check --only {host}"),
        };
        files.apply(ctx, self.dry_run, &eval)?;
        if self.dry_run {
            return Ok(());
        }

        term::info(&format!(
            "{host} is a {system} host. Next steps (and commit the new files):"
        ));
        term::info(&format!(
            "  on the machine: nixos-generate-config --show-hardware-config > systems/{host}/hardware-configuration.nix, then import it in systems/{host}/default.nix"
        ));
        let mut steps: Vec<(String, String)> = users
            .iter()
            .filter(|u| !repo.users.contains_key(u.as_str()))
            .map(|u| {
                (
                    format!("cargo xtask new-user {u}"),
                    format!("{u} has no homes/{u} yet"),
                )
            })
            .collect();
        steps.push((
            format!("cargo xtask new-user <user> --host {host}"),
            "a home part for this host only".into(),
        ));
        steps.push((
            format!("cargo xtask switch --host {host}"),
            "deploy it".into(),
        ));
        let width = steps.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
        for (command, what) in steps {
            term::info(&format!("  {command:<width$}   {what}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_template_has_the_users_line() {
        let users = ["a".to_string(), "b".to_string()];
        let list = format!("users = {};", nix_string_list(&users, "  "));
        let meta = replace_line(HOST_META, "users = [ ];", Some(&list));
        assert!(
            meta.contains("  users = [\n    \"a\"\n    \"b\"\n  ];\n"),
            "{meta}"
        );
    }
}
