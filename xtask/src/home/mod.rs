//! The home: everything about deploying a standalone Home Manager home on this machine,
//! exactly as ../shared/hm-contract.md and the `home-manager` script define it, so a
//! machine switched with the xtask and one switched with `home-manager` stay
//! interchangeable. One module per concern:
//!
//! - `env`: whose home (`$USER`, `$HOME`, state directories) and who may deploy it;
//! - `build`: which home a name means, and its one build with an out-link;
//! - `profile`: where the profile lives, its generations, the legacy-profile migration;
//! - `generation`: what a generation says about itself (checks, check script, features);
//! - `packages`: the packages of a generation's `home-path`, by name and version;
//! - `plan` (+ `glob`): the pre-flight, Home Manager's collision rules;
//! - `lock`: one switch, rollback or gc of a profile at a time, activation included;
//! - `activate`: the critical section, activation and restore;
//! - `compare`: what changes from one generation to another (files and packages);
//! - `uninstall`: what `uninstall` removes from `$HOME` and the profile, and what stays.
//!
//! Tasks use this module; it uses `repo`, `nix`, `closure` and `term`, never a task.

mod activate;
mod build;
mod compare;
mod env;
mod generation;
mod glob;
mod lock;
mod packages;
mod plan;
mod profile;
mod uninstall;

pub use activate::{Activation, SetProfile, Transition, activation_mismatch, is_or_specialises};
pub use build::{HomeTarget, OutLinkDir, gc_root, home_attr, stale_roots, standalone_user};
pub use compare::{Comparison, FileDiff, active_generation};
pub use env::UserEnv;
pub use generation::{GenerationInfo, specialisation};
pub use lock::{Lock, lock_path};
pub use packages::{Package, packages};
pub use plan::{Action, Backup, Preflight, preflight, preflight_files, preflight_locked};
pub use profile::{Generation, Profile, expired};
pub use uninstall::Uninstall;

/// Whether `text` matches the bash glob `pattern` (None for extglob forms it cannot judge).
pub fn glob_matches(pattern: &str, text: &str) -> Option<bool> {
    match glob::matches(pattern, text) {
        glob::Match::Yes => Some(true),
        glob::Match::No => Some(false),
        glob::Match::Unsure => None,
    }
}

/// Single-quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    // `#` is quoted too (`'/repo#homes'`): a comment at the start of a word in sh, a glob
    // operator in zsh with extendedglob.
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting() {
        use super::shell_quote;
        assert_eq!(shell_quote("bak"), "bak");
        assert_eq!(shell_quote("mv -n"), "'mv -n'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("/repo#homes.bob"), "'/repo#homes.bob'");
    }
}
