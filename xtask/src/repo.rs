//! The repo model: what homes/ and systems/ contain, the naming rules and what merges into
//! what. The rules themselves (name pattern, lengths, reserved host, systems) are data in
//! Cargo.toml's `[workspace.metadata.xtask]`, which lib/default.nix receives too; every task
//! asks this module instead of re-reading directories.
//!
//! Scanning never stops at the first problem: it records every one as a [`Finding`] so
//! `check` can report them all in one run, and tasks that need a sound layout call
//! [`Repo::ensure_valid`].
//!
//! Here: the model and the scan's entry points. By concern, beside it: `layout` (the
//! directories checked against the rules), `rules` (names and the Cargo.toml defaults),
//! `finding` (problems and where nix's errors point), `meta` (the meta.nix files), `git`
//! (what the flake can see), and the static lint's `tree` (the walk), `syntax` (the parse)
//! and `lint_cache`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result, bail};

mod finding;
mod git;
mod layout;
mod lint_cache;
mod meta;
mod meta_text;
mod rules;
mod syntax;
mod tree;

pub use finding::{Finding, Severity, locate_nix_error, nix_error_locations};
pub use git::untracked_nix_findings;
use git::{git_ls_files, untracked_file_findings};
pub use layout::ModelDir;
pub use meta::{BuildOn, DEPLOY_SHAPE, Deploy, PendingMeta};
pub use rules::{
    Defaults, Part, RESERVED_USER, home_dir_name, parse_home_dir, pick_system, rules,
    validate_host_name, validate_name, validate_new_user_name,
};
pub use tree::Tree;

/// How the static lint read the `.nix` files: parsed, or known unchanged from its cache.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseCount {
    pub parsed: usize,
    pub cached: usize,
    /// A git repository whose tracked files git could not list (git not on PATH): the
    /// files the flake cannot see were not looked for.
    pub untracked_unknown: bool,
}

/// A user: the union of its `homes/` directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// `homes/<user>` exists (without it there is no standalone home).
    pub base: bool,
    pub global: bool,
    /// Hosts with a `homes/<user>@<host>` directory.
    pub host_parts: Vec<String>,
    /// `homes/<user>/meta.nix` exists; its `system` is read by [`Repo::load_meta`].
    pub has_meta: bool,
    /// From meta.nix, once loaded.
    pub system: Option<String>,
    /// `deploy = { … }` from meta.nix, once loaded: where `cargo xtask deploy` sends the home.
    pub deploy: Option<Deploy>,
}

impl User {
    /// The directories merged into the standalone home, in merge order.
    pub fn standalone_parts(&self) -> Vec<Part> {
        let mut parts = vec![Part::Base];
        if self.global {
            parts.push(Part::Global);
        }
        parts
    }

    /// The directories merged into this user's integrated home on `host`, in merge order:
    /// the base when it exists (a user may live on a host only), then `@<host>`.
    pub fn host_parts_for(&self, host: &str) -> Vec<Part> {
        let mut parts = Vec::new();
        if self.base {
            parts.push(Part::Base);
        }
        if self.host_parts.iter().any(|h| h == host) {
            parts.push(Part::Host(host.to_string()));
        }
        parts
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub has_default: bool,
    pub has_meta: bool,
    /// From meta.nix once loaded; None means the repo default applies.
    pub system: Option<String>,
    /// `users = [ … ]` from meta.nix, once loaded.
    pub meta_users: Vec<String>,
    /// `deploy = { … }` from meta.nix, once loaded.
    pub deploy: Option<Deploy>,
}

/// A Nix-on-Droid phone: `droids/<name>/` (default.nix + meta.nix); the `homes/<user>@<name>`
/// parts (with their base) become its Home Manager configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Droid {
    pub name: String,
    pub has_default: bool,
    pub has_meta: bool,
    /// From meta.nix once loaded; None means the repo default applies.
    pub system: Option<String>,
    /// `deploy = { … }` from meta.nix, once loaded.
    pub deploy: Option<Deploy>,
}

#[derive(Debug)]
pub struct Repo {
    pub root: PathBuf,
    pub defaults: Defaults,
    pub users: BTreeMap<String, User>,
    pub hosts: BTreeMap<String, Host>,
    pub droids: BTreeMap<String, Droid>,
    /// Every layout problem found while scanning (and loading meta files).
    pub findings: Vec<Finding>,
    meta_loaded: bool,
    /// After [`Repo::load_meta_static`]: the meta.nix files that need nix.
    meta_pending: Option<PendingMeta>,
    /// [`Repo::scan_tree`]'s walk: the layout and the meta.nix files are read from it, and
    /// the syntax analysis uses it instead of walking again.
    tree: Option<Arc<Tree>>,
    /// The part of that analysis that ran beside the layout scan, taken by
    /// [`Repo::nix_file_findings`].
    analysis: Mutex<Option<syntax::Analysis>>,
}

impl Repo {
    /// Finds the repo root: `--flake DIR`, else the nearest ancestor of `cwd` with flake.nix.
    pub fn find_root(flake: Option<&Path>, cwd: &Path) -> Result<PathBuf> {
        if let Some(dir) = flake {
            let dir = cwd.join(dir);
            if !dir.join("flake.nix").is_file() {
                bail!(
                    "--flake {}: there is no flake.nix in that directory",
                    dir.display()
                );
            }
            return dir
                .canonicalize()
                .with_context(|| format!("resolving {}", dir.display()));
        }
        cwd.ancestors()
            .find(|d| d.join("flake.nix").is_file())
            .map(Path::to_path_buf)
            .with_context(|| {
                format!(
                    "no flake.nix in {} or any parent directory; run cargo xtask inside the homelab repository or pass --flake DIR",
                    cwd.display()
                )
            })
    }

    /// Reads homes/ and systems/ (directory listings only: no nix, milliseconds).
    pub fn scan(root: &Path) -> Result<Repo> {
        Repo::scan_from(root, None)
    }

    /// [`Repo::scan`] from one walk of every directory the flake reads, which the syntax
    /// analysis ([`Repo::nix_file_findings`]) then uses too: for the static lint, which
    /// reads all of them anyway. (A task that needs the layout only is quicker with `scan`:
    /// a look at two names per directory costs less than reading the directory.)
    pub fn scan_tree(root: &Path) -> Result<Repo> {
        let tree = Arc::new(Tree::walk(root, Tree::all_cores()));
        // The analysis of the parsed files needs only the walk: it runs on the other core
        // while this one scans the layout.
        let (for_analysis, at) = (Arc::clone(&tree), root.to_path_buf());
        let analysis = std::thread::Builder::new()
            .spawn(move || syntax::Analysis::start(&at, &for_analysis))
            .ok();
        let repo = Repo::scan_from(root, Some(tree))?;
        // Without its thread (a process limit), or after a panic there (a bug), the analysis
        // runs in nix_file_findings.
        *repo.analysis.lock().unwrap_or_else(|e| e.into_inner()) =
            analysis.and_then(|a| a.join().ok());
        Ok(repo)
    }

    fn scan_from(root: &Path, tree: Option<Arc<Tree>>) -> Result<Repo> {
        let defaults = Defaults::load(root)?;
        let mut repo = Repo {
            root: root.to_path_buf(),
            defaults,
            users: BTreeMap::new(),
            hosts: BTreeMap::new(),
            droids: BTreeMap::new(),
            findings: Vec::new(),
            meta_loaded: false,
            meta_pending: None,
            tree,
            analysis: Mutex::new(None),
        };
        for dir in repo.model_dirs("systems")? {
            repo.add_host_dir(&dir);
        }
        for dir in repo.model_dirs("droids")? {
            repo.add_droid_dir(&dir);
        }
        for dir in repo.model_dirs("homes")? {
            repo.add_home_dir(&dir);
        }
        repo.cross_check();
        repo.check_droid_users();
        for tmp in leftover_scaffolds(root) {
            // What it moved into place may look like a half home; say where it came from.
            repo.findings.push(Finding::warning(
                &tmp,
                "interrupted-scaffold",
                format!("{tmp} is left by an interrupted new-user or new-host (or one still running); directories it lists in its xtask-scaffold-set may be half in place"),
                "run the new-user or new-host command again: it removes what the interrupted run left, then writes the whole set".into(),
            ));
        }
        Ok(repo)
    }

    /// The static analysis of every `.nix` file (no nix): the ones git does not track,
    /// syntax errors, and relative paths used as imports or sources that are missing,
    /// untracked or outside the repo. Syntax errors of the meta.nix files the model reads
    /// are left to [`Repo::load_meta_static`], which reports them as such.
    /// Also says how many files were parsed and how many the lint cache knew unchanged.
    pub fn nix_file_findings(&self) -> (Vec<Finding>, ParseCount) {
        let skip = self.meta_files();
        let walked;
        let tree = match &self.tree {
            Some(tree) => tree.as_ref(),
            // Without the scan's walk, `check` asks for this while nix evaluates: one
            // core is nix's, so the walk takes one.
            None => {
                walked = Tree::walk(&self.root, 1);
                &walked
            }
        };
        let count = ParseCount {
            parsed: tree.parsed,
            cached: tree.cached,
            untracked_unknown: tree.tracked.is_none() && self.root.join(".git").exists(),
        };
        let started = self
            .analysis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|_| self.tree.is_some())
            .unwrap_or_else(|| syntax::Analysis::start(&self.root, tree));
        (started.finish(&self.root, tree, &skip), count)
    }

    /// Fails with every error finding when the layout is broken (warnings are printed by
    /// the caller if it wants); tasks that deploy or list call this.
    pub fn ensure_valid(&self) -> Result<()> {
        let errors: Vec<String> = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.to_string())
            .collect();
        if !errors.is_empty() {
            bail!(
                "the repository layout is invalid:\n  {}\n(run cargo xtask check for the full report)",
                errors.join("\n  ")
            );
        }
        Ok(())
    }

    /// The system of a user's standalone home: its meta.nix, else the repo default.
    pub fn home_system(&self, user: &User) -> String {
        user.system
            .clone()
            .unwrap_or_else(|| self.defaults.default_system.clone())
    }

    /// The system of a host: its meta.nix, else the repo default.
    pub fn host_system(&self, host: &Host) -> String {
        host.system
            .clone()
            .unwrap_or_else(|| self.defaults.default_system.clone())
    }

    /// Users of a host: those with a `homes/<user>@<host>` part plus meta.nix's `users`.
    pub fn host_users(&self, host: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .users
            .values()
            .filter(|u| u.host_parts.iter().any(|h| h == host))
            .map(|u| u.name.clone())
            .collect();
        if let Some(h) = self.hosts.get(host) {
            users.extend(h.meta_users.iter().cloned());
        }
        users.sort();
        users.dedup();
        users
    }

    /// Hosts whose integrated home includes `user`: the inverse of [`Repo::host_users`],
    /// O(hosts) so that listing every user stays linear.
    pub fn user_hosts(&self, user: &str) -> Vec<String> {
        let parts = self
            .users
            .get(user)
            .map(|u| u.host_parts.as_slice())
            .unwrap_or_default();
        self.hosts
            .values()
            .filter(|h| parts.contains(&h.name) || h.meta_users.iter().any(|u| u == user))
            .map(|h| h.name.clone())
            .collect()
    }

    /// The system of a droid: its meta.nix, else the repo default.
    pub fn droid_system(&self, droid: &Droid) -> String {
        droid
            .system
            .clone()
            .unwrap_or_else(|| self.defaults.default_system.clone())
    }

    /// The one user whose `homes/<user>@<droid>` part makes the phone's Home Manager
    /// configuration (a phone has one user), if any.
    pub fn droid_users(&self, droid: &str) -> Vec<String> {
        self.users
            .values()
            .filter(|u| u.host_parts.iter().any(|h| h == droid))
            .map(|u| u.name.clone())
            .collect()
    }

    /// Users that have a standalone home (`homeConfigurations.<user>`).
    pub fn standalone_users(&self) -> impl Iterator<Item = &User> {
        self.users.values().filter(|u| u.base)
    }
}

/// A Nix string literal for a path (quotes and `${` escaped).
pub fn nix_string(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "\\${");
    format!("\"{escaped}\"")
}

/// The prefix of a scaffold's temporary directory in the repo root (tasks::scaffold).
pub const SCAFFOLD_TEMP_PREFIX: &str = ".xtask-new-";

/// Temporary directories of `new-user` / `new-host` runs in the repo root (a killed run's,
/// or a running one's), by name. They are never homes or hosts: the scan ignores them.
pub fn leftover_scaffolds(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(SCAFFOLD_TEMP_PREFIX))
        .collect();
    names.sort();
    names
}

/// The directories whose `.nix` files the flake reads.
pub const NIX_DIRS: [&str; 4] = ["homes", "systems", "droids", "lib"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_rules() {
        let u = User {
            name: "alice".into(),
            base: true,
            global: true,
            host_parts: vec!["ws".into()],
            ..User::default()
        };
        assert_eq!(u.standalone_parts(), vec![Part::Base, Part::Global]);
        assert_eq!(
            u.host_parts_for("ws"),
            vec![Part::Base, Part::Host("ws".into())]
        );
        assert_eq!(u.host_parts_for("other"), vec![Part::Base]);
        let integrated_only = User {
            name: "carol".into(),
            host_parts: vec!["ws".into()],
            ..User::default()
        };
        assert_eq!(
            integrated_only.host_parts_for("ws"),
            vec![Part::Host("ws".into())]
        );
        assert!(integrated_only.host_parts_for("other").is_empty());
        let plain = User {
            name: "bob".into(),
            base: true,
            ..User::default()
        };
        assert_eq!(plain.standalone_parts(), vec![Part::Base]);
    }

    fn tree(dirs: &[&str], files: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for d in dirs {
            fs::create_dir_all(t.path().join(d)).unwrap();
        }
        for f in files {
            fs::write(t.path().join(f), "{ }\n").unwrap();
        }
        t
    }

    /// The layout scan has two sources (a look at two names per directory, or the lint's
    /// walk): the same repository gives the same model and findings from both.
    #[test]
    fn scan_and_scan_tree_agree() {
        use std::os::unix::ffi::OsStrExt;
        let t = tree(
            &[
                "config/homes/alice",
                "config/homes/alice@ws",
                "config/homes/Dave",
                "config/homes/nodef",
                "config/homes/linked-target",
                "systems/ws",
                "systems/bare",
                "droids/phone",
            ],
            &[
                "config/homes/alice/default.nix",
                "config/homes/alice@ws/default.nix",
                "config/homes/linked-target/default.nix",
                "systems/ws/default.nix",
                "systems/ws/meta.nix",
                "systems/bare/default.nix",
                "droids/phone/default.nix",
            ],
        );
        let homes = t.path().join("config/homes");
        // homes/ is a link; a name that is not UTF-8; a linked home directory (not
        // followed by either); a default.nix that is a link to a file.
        std::os::unix::fs::symlink("config/homes", t.path().join("homes")).unwrap();
        fs::create_dir(homes.join(std::ffi::OsStr::from_bytes(b"b\xffb"))).unwrap();
        std::os::unix::fs::symlink("linked-target", homes.join("linked")).unwrap();
        fs::create_dir(homes.join("carol")).unwrap();
        std::os::unix::fs::symlink("../alice/default.nix", homes.join("carol/default.nix"))
            .unwrap();
        let model = |r: &Repo| {
            let mut findings: Vec<String> = r
                .findings
                .iter()
                .map(|f| format!("{} {} {}", f.path, f.code, f.message))
                .collect();
            findings.sort();
            (
                format!("{:?}", r.users),
                format!("{:?}", r.hosts),
                format!("{:?}", r.droids),
                findings,
            )
        };
        let by_names = Repo::scan(t.path()).unwrap();
        let by_walk = Repo::scan_tree(t.path()).unwrap();
        assert_eq!(model(&by_walk), model(&by_names));
        assert!(by_names.users.contains_key("carol"));
        assert!(
            by_names
                .findings
                .iter()
                .any(|f| f.code == "bad-name" && f.path.contains('\u{fffd}'))
        );
        // homes/ as a file: both say so.
        fs::remove_file(t.path().join("homes")).unwrap();
        fs::write(t.path().join("homes"), "x").unwrap();
        assert!(Repo::scan(t.path()).is_err());
        assert!(Repo::scan_tree(t.path()).is_err());
    }

    #[test]
    fn scan_builds_the_model_and_reports_every_problem() {
        let t = tree(
            &[
                "homes/alice",
                "homes/alice@global",
                "homes/alice@ws",
                "homes/bob@nohost",
                "homes/carol@global",
                "homes/Dave",
                "homes/x@global@y",
                "homes/nodef",
                "systems/ws",
                "systems/global",
                "systems/bare",
            ],
            &[
                "homes/alice/default.nix",
                "homes/alice@global/default.nix",
                "homes/alice@ws/default.nix",
                "homes/bob@nohost/default.nix",
                "homes/carol@global/default.nix",
                "systems/ws/default.nix",
                "systems/ws/meta.nix",
                "systems/bare/default.nix",
            ],
        );
        let repo = Repo::scan(t.path()).unwrap();
        let alice = &repo.users["alice"];
        assert!(alice.base && alice.global);
        assert_eq!(alice.host_parts, vec!["ws".to_string()]);
        assert_eq!(repo.host_users("ws"), vec!["alice".to_string()]);
        assert_eq!(repo.user_hosts("alice"), vec!["ws".to_string()]);
        assert!(repo.user_hosts("nobody").is_empty());
        assert!(repo.hosts.contains_key("ws") && !repo.hosts.contains_key("global"));
        let codes: Vec<(&str, &str)> = repo
            .findings
            .iter()
            .map(|f| (f.path.as_str(), f.code))
            .collect();
        for expected in [
            ("homes/Dave", "bad-name"),
            ("homes/x@global@y", "bad-name"),
            ("homes/nodef", "missing-default-nix"),
            ("homes/bob@nohost", "unknown-host"),
            ("homes/carol@global", "global-without-base"),
            ("systems/global", "bad-name"),
            ("systems/bare", "missing-meta-nix"),
        ] {
            assert!(
                codes.contains(&expected),
                "{expected:?} missing from {codes:?}"
            );
        }
        let bare = repo
            .findings
            .iter()
            .find(|f| f.path == "systems/bare")
            .unwrap();
        assert_eq!(bare.severity, Severity::Warning);
        let err = repo.ensure_valid().unwrap_err().to_string();
        assert!(
            err.contains("homes/Dave") && err.contains("homes/bob@nohost"),
            "{err}"
        );
        // bob has only an integrated part: no standalone home.
        assert!(repo.standalone_users().all(|u| u.name != "bob"));
    }
}
