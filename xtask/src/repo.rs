//! The repo model: what homes/ and systems/ contain, the naming rules and what merges into
//! what. The rules themselves (name pattern, lengths, reserved host, systems) are data in
//! Cargo.toml's `[workspace.metadata.xtask]`, which lib/default.nix receives too; every task
//! asks this module instead of re-reading directories.
//!
//! Scanning never stops at the first problem: it records every one as a [`Finding`] so
//! `check` can report them all in one run, and tasks that need a sound layout call
//! [`Repo::ensure_valid`].

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::nix::Nix;

mod lint_cache;
mod syntax;
mod tree;

pub use tree::Tree;

/// How the static lint read the `.nix` files: parsed, or known unchanged from its cache.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseCount {
    pub parsed: usize,
    pub cached: usize,
}

/// The naming rules and supported systems, compiled from [`Defaults`] (Cargo.toml's
/// `[workspace.metadata.xtask]`, which flake.nix passes to lib/ too, so Nix and Rust
/// apply one statement of them).
#[derive(Debug)]
pub struct Rules {
    name_pattern: String,
    /// `^(?:name-pattern)$`: Nix's `builtins.match` matches the whole string.
    name_regex: regex_lite::Regex,
    max_user_length: usize,
    max_host_length: usize,
    pub reserved_host: String,
    pub supported_systems: Vec<String>,
    pub host_systems: Vec<String>,
}

/// The rules of this run: those of the repo's Cargo.toml once `main` has installed them
/// ([`Defaults::install`]), else the built-in ones (unit tests, a flake without Cargo.toml).
/// Process-wide so that the free functions below (`validate_name`, …) keep their simple
/// signatures for every caller.
static RULES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();

pub fn rules() -> &'static Rules {
    RULES.get_or_init(|| Rules::new(&Defaults::default()).expect("the built-in rules are valid"))
}

impl Rules {
    fn new(d: &Defaults) -> Result<Rules> {
        let name_regex = regex_lite::Regex::new(&format!("^(?:{})$", d.name_pattern))
            .map_err(|e| {
                anyhow!(
                    "name-pattern = \"{}\" is not a valid regular expression ({e}); write one like \"{}\"",
                    d.name_pattern,
                    BUILTIN_NAME_PATTERN
                )
            })?;
        // Names become directory names and flake attributes, and '@' separates a user from
        // its part: a pattern admitting these would let a name escape homes/ or split wrongly.
        for probe in ["", ".", "..", "a/b", "a@b", "a b"] {
            if name_regex.is_match(probe) {
                bail!(
                    "name-pattern = \"{}\" accepts {probe:?}, which cannot be a user or host name (names are directory names, and '@' separates user and host); narrow it, e.g. \"{}\"",
                    d.name_pattern,
                    BUILTIN_NAME_PATTERN
                );
            }
        }
        for (key, value) in [
            ("max-user-length", d.max_user_length),
            ("max-host-length", d.max_host_length),
        ] {
            if value == 0 {
                bail!("{key} = 0 allows no name at all; use a positive length such as 32");
            }
        }
        if !name_regex.is_match(&d.reserved_host) {
            bail!(
                "reserved-host = \"{}\" does not match name-pattern \"{}\"; use a name that does (\"global\")",
                d.reserved_host,
                d.name_pattern
            );
        }
        if d.supported_systems.is_empty() {
            bail!("supported-systems is empty; list at least one, e.g. [\"x86_64-linux\"]");
        }
        if let Some(bad) = d
            .host_systems
            .iter()
            .find(|s| !d.supported_systems.contains(s))
        {
            bail!(
                "host-systems lists \"{bad}\", which is not in supported-systems ({}); add it there or remove it",
                d.supported_systems.join(", ")
            );
        }
        if !d.supported_systems.contains(&d.default_system) {
            bail!(
                "default-system = \"{}\" is not supported; use one of {}",
                d.default_system,
                d.supported_systems.join(", ")
            );
        }
        Ok(Rules {
            name_pattern: d.name_pattern.clone(),
            name_regex,
            max_user_length: d.max_user_length,
            max_host_length: d.max_host_length,
            reserved_host: d.reserved_host.clone(),
            supported_systems: d.supported_systems.clone(),
            host_systems: d.host_systems.clone(),
        })
    }

    /// What messages say a name must look like.
    pub fn name_rule(&self) -> String {
        format!(
            "a name must match {} (name-pattern in Cargo.toml's [workspace.metadata.xtask])",
            self.name_pattern
        )
    }

    fn validate_pattern(&self, name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err(format!("the name is empty; {}", self.name_rule()));
        }
        if !self.name_regex.is_match(name) {
            // The name may be hostile (control characters, a whole paragraph): escaped, cut.
            let shown: String = name.escape_default().to_string().chars().take(40).collect();
            return Err(format!(
                "'{shown}' does not follow the rule: {}",
                self.name_rule()
            ));
        }
        Ok(())
    }

    pub fn is_supported(&self, system: &str) -> bool {
        self.supported_systems.iter().any(|s| s == system)
    }

    pub fn is_host_system(&self, system: &str) -> bool {
        self.host_systems.iter().any(|s| s == system)
    }
}

fn validate_len(name: &str, max: usize, what: &str) -> Result<(), String> {
    if name.len() > max {
        // The name itself may be long; its start is enough to recognise it.
        let start: String = name.chars().take(16).collect();
        return Err(format!(
            "'{start}…' is {} characters long; {what} names are at most {max}",
            name.len()
        ));
    }
    Ok(())
}

/// Checks a user name: the pattern and the user length limit (32: Linux's).
pub fn validate_name(name: &str) -> Result<(), String> {
    let r = rules();
    r.validate_pattern(name)?;
    validate_len(name, r.max_user_length, "user")
}

/// Checks a host name: the pattern, the host length limit (63), not the reserved `global`.
pub fn validate_host_name(name: &str) -> Result<(), String> {
    let r = rules();
    r.validate_pattern(name)?;
    validate_len(name, r.max_host_length, "host")?;
    if name == r.reserved_host {
        return Err(format!(
            "'{name}' is reserved: homes/<user>@{name} is the standalone-only part of a home, so no host may be called that"
        ));
    }
    Ok(())
}

/// `--system`: a supported system, or this machine's when not given or `auto`.
pub fn pick_system(flag: Option<&str>) -> Result<String> {
    crate::nix::pick_system_in(flag, &rules().supported_systems)
}

/// The superuser's home belongs to the system (NixOS configures it in systems/<host>), so a
/// Home Manager home for it is almost always a mistake; `--allow-root` says it is not.
pub const RESERVED_USER: &str = "root";

/// Checks the name of a user about to be created: the naming rule, not `global` (it would
/// read as the standalone-only part, `homes/global@global`), and not `root` unless allowed.
/// Existing directories are not held to the reserved names: lib/ accepts them.
pub fn validate_new_user_name(name: &str, allow_root: bool) -> Result<(), String> {
    validate_name(name)?;
    if name == rules().reserved_host {
        return Err(format!(
            "'{name}' is reserved: homes/<user>@{name} is the standalone-only part of a home, so no user may be called that"
        ));
    }
    if name == RESERVED_USER && !allow_root {
        return Err(format!(
            "'{RESERVED_USER}' is reserved: the superuser is configured by the NixOS host (systems/<host>), not by a Home Manager home; pass --allow-root if you really want homes/{RESERVED_USER}"
        ));
    }
    Ok(())
}

/// Which part of a user's home a `homes/` directory is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// `homes/<user>`: used everywhere.
    Base,
    /// `homes/<user>@global`: merged into the standalone home only.
    Global,
    /// `homes/<user>@<host>`: merged into that host's integrated home only.
    Host(String),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Base => f.write_str("base"),
            Part::Global => f.write_str("global"),
            Part::Host(h) => write!(f, "@{h}"),
        }
    }
}

/// Splits a `homes/` directory name into user and part, enforcing the naming rules.
pub fn parse_home_dir(dir: &str) -> Result<(String, Part), String> {
    let (user, suffix) = match dir.split_once('@') {
        None => (dir, None),
        Some((user, suffix)) => (user, Some(suffix)),
    };
    validate_name(user).map_err(|e| format!("user part: {e}"))?;
    let part = match suffix {
        None => Part::Base,
        Some(h) if h == rules().reserved_host => Part::Global,
        Some(host) if host.contains('@') => {
            return Err(format!(
                "'{dir}' has more than one '@'; use <user>, <user>@global or <user>@<host>"
            ));
        }
        Some(host) => {
            validate_host_name(host).map_err(|e| format!("host part: {e}"))?;
            Part::Host(host.to_string())
        }
    };
    Ok((user.to_string(), part))
}

/// The directory name of a user's part: the inverse of [`parse_home_dir`].
pub fn home_dir_name(user: &str, part: &Part) -> String {
    match part {
        Part::Base => user.to_string(),
        Part::Global => format!("{user}@{}", rules().reserved_host),
        Part::Host(h) => format!("{user}@{h}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in the repository, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Repo-relative path (`homes/bob@nohost`, `systems/web/meta.nix`).
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based, in characters; only with a line (the static analysis knows it, nix's
    /// messages are read for the line only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// A stable identifier (`bad-name`, `unknown-host`, …) for scripts and docs.
    pub code: &'static str,
    pub message: String,
    pub fix: String,
}

impl Finding {
    pub fn new(
        severity: Severity,
        path: impl Into<String>,
        code: &'static str,
        message: String,
        fix: String,
    ) -> Self {
        Finding {
            severity,
            path: path.into(),
            line: None,
            column: None,
            code,
            message,
            fix,
        }
    }
    pub fn error(
        path: impl Into<String>,
        code: &'static str,
        message: String,
        fix: String,
    ) -> Self {
        Finding::new(Severity::Error, path, code, message, fix)
    }
    pub fn warning(
        path: impl Into<String>,
        code: &'static str,
        message: String,
        fix: String,
    ) -> Self {
        Finding::new(Severity::Warning, path, code, message, fix)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}", self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, " ({})", self.fix)?;
        }
        Ok(())
    }
}

/// `[workspace.metadata.xtask]` of the root Cargo.toml: the repo defaults and rules, which
/// flake.nix passes to lib/ as they are. The built-in values below are only the fallback
/// for a Cargo.toml without a key (or a flake without Cargo.toml); a test keeps them equal
/// to the repository's Cargo.toml.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Defaults {
    pub backup_extension: String,
    pub default_system: String,
    pub keep_generations: u32,
    /// `home.stateVersion` of homes that set none; `system.stateVersion` of new hosts.
    pub state_version: String,
    pub name_pattern: String,
    pub max_user_length: usize,
    pub max_host_length: usize,
    pub reserved_host: String,
    pub supported_systems: Vec<String>,
    pub host_systems: Vec<String>,
}

const BUILTIN_NAME_PATTERN: &str = "[a-z_][a-z0-9_-]*";

impl Default for Defaults {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        Defaults {
            backup_extension: "bak".into(),
            default_system: "x86_64-linux".into(),
            keep_generations: 5,
            state_version: "26.05".into(),
            name_pattern: BUILTIN_NAME_PATTERN.into(),
            max_user_length: 32,
            max_host_length: 63,
            reserved_host: "global".into(),
            supported_systems: strings(&[
                "x86_64-linux",
                "aarch64-linux",
                "x86_64-darwin",
                "aarch64-darwin",
            ]),
            host_systems: strings(&["x86_64-linux", "aarch64-linux"]),
        }
    }
}

/// The keys, for the message about an unknown one.
const KEYS: &str = "backup-extension, default-system, keep-generations, state-version, name-pattern, max-user-length, max-host-length, reserved-host, supported-systems, host-systems";

impl Defaults {
    /// Reads the defaults from `<root>/Cargo.toml`; a flake without one (a fixture, a user's
    /// own flake) gets the built-in defaults, which are the same values.
    pub fn load(root: &Path) -> Result<Defaults> {
        let path = root.join("Cargo.toml");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Defaults::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text).with_context(|| {
            format!(
                "{} [workspace.metadata.xtask] is not valid; fix the key named",
                path.display()
            )
        })
    }

    /// Parses and validates (the pattern compiles, the systems agree, …), so a mistake in
    /// Cargo.toml is one clear error at start-up rather than odd verdicts later.
    pub fn parse(cargo_toml: &str) -> Result<Defaults> {
        #[derive(Deserialize)]
        struct Manifest {
            workspace: Option<Workspace>,
        }
        #[derive(Deserialize)]
        struct Workspace {
            metadata: Option<Metadata>,
        }
        #[derive(Deserialize)]
        struct Metadata {
            xtask: Option<Defaults>,
        }
        let manifest: Manifest =
            toml::from_str(cargo_toml).with_context(|| format!("the keys are {KEYS}"))?;
        let defaults = manifest
            .workspace
            .and_then(|w| w.metadata)
            .and_then(|m| m.xtask)
            .unwrap_or_default();
        Rules::new(&defaults)?;
        Ok(defaults)
    }

    /// Makes these the rules of this process ([`rules`]); `main` calls it once, before any
    /// task runs. Returns false when rules were already in use (then those stay).
    pub fn install(&self) -> Result<bool> {
        let rules = Rules::new(self)?;
        crate::nix::set_supported_systems(self.supported_systems.clone());
        Ok(RULES.set(rules).is_ok())
    }

    pub fn rules(&self) -> Result<Rules> {
        Rules::new(self)
    }
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

/// Where a target is built before it is copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildOn {
    /// On this machine, then the closure is copied (nixos-rebuild's default).
    #[default]
    Local,
    /// On the target: the derivations are copied and built there.
    Remote,
}

/// `deploy = { targetHost; buildOn; tags; sshOpts; }` of a host's, home's or droid's meta.nix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deploy {
    /// The ssh destination, `[user@]host` (`root@pi.lan`).
    pub target_host: String,
    pub build_on: BuildOn,
    /// Names for `deploy --on @tag`.
    pub tags: Vec<String>,
    /// Extra ssh options, one word each (`[ "-p" "2222" ]`); also NIX_SSHOPTS of `nix copy`.
    pub ssh_opts: Vec<String>,
}

/// What a `deploy` attribute looks like, for messages about one that does not.
pub const DEPLOY_SHAPE: &str = "deploy = { targetHost = \"root@pi.lan\"; buildOn = \"local\"; tags = [ \"rack\" ]; sshOpts = [ \"-p\" \"22\" ]; }";

impl Deploy {
    /// The ssh user: the part of targetHost before `@`, else None (ssh's default: $USER).
    pub fn ssh_user(&self) -> Option<&str> {
        self.target_host.split_once('@').map(|(u, _)| u)
    }

    /// Reads a meta.nix `deploy` value (JSON from nix); every problem is a message.
    pub fn parse(value: &serde_json::Value) -> Result<Deploy, Vec<String>> {
        use serde_json::Value;
        let Value::Object(map) = value else {
            return Err(vec![format!("deploy = {value} is not an attribute set")]);
        };
        let mut errors = Vec::new();
        let mut d = Deploy::default();
        for key in map.keys() {
            if !["targetHost", "buildOn", "tags", "sshOpts"].contains(&key.as_str()) {
                errors.push(format!(
                    "deploy.{key} is not a deploy setting (the settings are targetHost, buildOn, tags, sshOpts)"
                ));
            }
        }
        match map.get("targetHost") {
            Some(Value::String(t))
                if !t.is_empty()
                    && !t.starts_with('-')
                    && !t.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') =>
            {
                d.target_host = t.clone()
            }
            Some(other) => errors.push(format!(
                "deploy.targetHost = {other} is not an ssh destination like \"root@pi.lan\" (no spaces, no leading '-')"
            )),
            None => errors.push("deploy has no targetHost: where should it be deployed?".into()),
        }
        match map.get("buildOn") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "local" => d.build_on = BuildOn::Local,
            Some(Value::String(s)) if s == "remote" => d.build_on = BuildOn::Remote,
            Some(other) => errors.push(format!(
                "deploy.buildOn = {other} is neither \"local\" nor \"remote\""
            )),
        }
        let strings = |key: &str, errors: &mut Vec<String>| -> Vec<String> {
            match map.get(key) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect(),
                Some(other) => {
                    errors.push(format!("deploy.{key} = {other} is not a list of strings"));
                    Vec::new()
                }
            }
        };
        d.tags = strings("tags", &mut errors);
        for tag in &d.tags {
            if let Err(e) = rules().validate_pattern(tag) {
                errors.push(format!("deploy.tags: {e}"));
            }
        }
        d.ssh_opts = strings("sshOpts", &mut errors);
        if errors.is_empty() {
            Ok(d)
        } else {
            Err(errors)
        }
    }
}

/// What a host's meta.nix looks like, for messages about one that does not.
pub const HOST_META_SHAPE: &str = "{ system = \"x86_64-linux\"; users = [ \"alice\" ]; }";

/// The same for a home's meta.nix.
pub const HOME_META_SHAPE: &str = "{ system = \"x86_64-linux\"; }";

/// Borrowed names, as [`meta_expr`] takes them.
fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The same for a droid's meta.nix.
pub const DROID_META_SHAPE: &str = "{ system = \"aarch64-linux\"; }";

/// Which directory a meta.nix is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaKind {
    Home,
    Host,
    Droid,
}

impl MetaKind {
    /// The repo-relative meta.nix of `name`.
    fn meta_file(self, name: &str) -> String {
        let dir = match self {
            MetaKind::Home => "homes",
            MetaKind::Host => "systems",
            MetaKind::Droid => "droids",
        };
        format!("{dir}/{name}/meta.nix")
    }

    fn shape(self) -> &'static str {
        match self {
            MetaKind::Home => HOME_META_SHAPE,
            MetaKind::Host => HOST_META_SHAPE,
            MetaKind::Droid => DROID_META_SHAPE,
        }
    }
}

/// The homes, hosts and droids whose meta.nix computes its values: only nix can read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingMeta {
    pub homes: Vec<String>,
    pub hosts: Vec<String>,
    pub droids: Vec<String>,
}

impl PendingMeta {
    pub fn is_empty(&self) -> bool {
        self.homes.is_empty() && self.hosts.is_empty() && self.droids.is_empty()
    }

    /// The files, repo-relative.
    pub fn files(&self) -> Vec<String> {
        let of = |kind: MetaKind, names: &[String]| {
            names
                .iter()
                .map(|n| kind.meta_file(n))
                .collect::<Vec<String>>()
        };
        [
            of(MetaKind::Home, &self.homes),
            of(MetaKind::Host, &self.hosts),
            of(MetaKind::Droid, &self.droids),
        ]
        .concat()
    }

    fn of_kind(&mut self, kind: MetaKind) -> &mut Vec<String> {
        match kind {
            MetaKind::Home => &mut self.homes,
            MetaKind::Host => &mut self.hosts,
            MetaKind::Droid => &mut self.droids,
        }
    }
}

/// What meta.nix files say, read from their text or in one nix evaluation.
#[derive(Debug, Default, Deserialize)]
struct MetaEval {
    homes: BTreeMap<String, MetaFile>,
    hosts: BTreeMap<String, MetaFile>,
    #[serde(default)]
    droids: BTreeMap<String, MetaFile>,
}

impl MetaEval {
    fn of_kind(&mut self, kind: MetaKind) -> &mut BTreeMap<String, MetaFile> {
        match kind {
            MetaKind::Home => &mut self.homes,
            MetaKind::Host => &mut self.hosts,
            MetaKind::Droid => &mut self.droids,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct MetaFile {
    /// Set (to nix's `builtins.typeOf`) when the file is not an attribute set.
    #[serde(default)]
    not_attrs: Option<String>,
    system: Option<serde_json::Value>,
    #[serde(default)]
    users: serde_json::Value,
    #[serde(default)]
    deploy: serde_json::Value,
    /// Where the values are (line, column), when read from the text.
    #[serde(skip)]
    system_at: Option<(u32, u32)>,
    #[serde(skip)]
    users_at: Option<(u32, u32)>,
    /// Where `deploy` is: its value, or the first `deploy.<key> = …` of the file.
    #[serde(skip)]
    deploy_at: Option<(u32, u32)>,
    /// Where each `deploy.<key>`'s value is.
    #[serde(skip)]
    deploy_keys_at: BTreeMap<String, (u32, u32)>,
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
        let analysis = std::thread::spawn(move || syntax::Analysis::start(&at, &for_analysis));
        let repo = Repo::scan_from(root, Some(tree))?;
        // A panic there is a bug; the analysis then runs again, in nix_file_findings.
        *repo.analysis.lock().unwrap_or_else(|e| e.into_inner()) = analysis.join().ok();
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
        for name in repo.subdirs("systems")? {
            repo.add_host_dir(&name);
        }
        for name in repo.subdirs("droids")? {
            repo.add_droid_dir(&name);
        }
        for name in repo.subdirs("homes")? {
            repo.add_home_dir(&name);
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

    /// The subdirectories of a directory of the repo (`homes`), sorted.
    fn subdirs(&self, rel: &str) -> Result<Vec<String>> {
        match &self.tree {
            Some(tree) => tree
                .subdirs(rel)
                .with_context(|| format!("reading {}", self.root.join(rel).display())),
            None => list_dirs(&self.root.join(rel)),
        }
    }

    /// Whether the repo-relative `.nix` file `rel` is a file (or a link to one).
    fn is_file(&self, rel: &str) -> bool {
        match &self.tree {
            Some(tree) => tree.is_nix_file(rel),
            None => self.root.join(rel).is_file(),
        }
    }

    /// A machine's directory (`systems/<host>`, `droids/<phone>`): its name must be a host
    /// name and it needs a default.nix (`what` it configures, `create` how to make one).
    /// Returns whether default.nix and meta.nix exist, or None for a bad name.
    fn machine_dir(
        &mut self,
        rel: &str,
        name: &str,
        what: &str,
        create: &str,
    ) -> Option<(bool, bool)> {
        if let Err(e) = validate_host_name(name) {
            self.findings.push(Finding::error(
                rel,
                "bad-name",
                e,
                "rename the directory to a valid host name".into(),
            ));
            return None;
        }
        let (has_default, has_meta) = (
            self.is_file(&format!("{rel}/default.nix")),
            self.is_file(&format!("{rel}/meta.nix")),
        );
        if !has_default {
            self.findings.push(Finding::error(
                rel,
                "missing-default-nix",
                format!("{rel} has no default.nix, so the {what} has no configuration"),
                format!("create {rel}/default.nix ({create}) or remove the directory"),
            ));
        }
        Some((has_default, has_meta))
    }

    fn add_host_dir(&mut self, name: &str) {
        let rel = format!("systems/{name}");
        let Some((has_default, has_meta)) =
            self.machine_dir(&rel, name, "host", "cargo xtask new-host scaffolds one")
        else {
            return;
        };
        if !has_meta {
            self.findings.push(Finding::warning(
                &rel,
                "missing-meta-nix",
                format!(
                    "{rel} has no meta.nix, so the default system {} is used",
                    self.defaults.default_system
                ),
                format!(
                    "create {rel}/meta.nix with {{ system = \"{}\"; }}",
                    self.defaults.default_system
                ),
            ));
        }
        let host = Host {
            name: name.to_string(),
            has_default,
            has_meta,
            ..Host::default()
        };
        self.hosts.insert(name.to_string(), host);
    }

    fn add_droid_dir(&mut self, name: &str) {
        let rel = format!("droids/{name}");
        if self.hosts.contains_key(name) {
            // homes/<user>@<name> would mean both: one name, one machine.
            self.findings.push(Finding::error(
                &rel,
                "droid-host-clash",
                format!("systems/{name} and droids/{name} share a name, so homes/<user>@{name} would merge into both"),
                format!("rename droids/{name} (or the host)"),
            ));
            return;
        }
        let Some((has_default, has_meta)) =
            self.machine_dir(&rel, name, "phone", "a Nix-on-Droid module")
        else {
            return;
        };
        let droid = Droid {
            name: name.to_string(),
            has_default,
            has_meta,
            ..Droid::default()
        };
        self.droids.insert(name.to_string(), droid);
    }

    fn add_home_dir(&mut self, dir: &str) {
        let rel = format!("homes/{dir}");
        let (user, part) = match parse_home_dir(dir) {
            Ok(p) => p,
            Err(e) => {
                self.findings.push(Finding::error(
                    rel,
                    "bad-name",
                    e,
                    "rename the directory to <user>, <user>@global or <user>@<host>".into(),
                ));
                return;
            }
        };
        if !self.is_file(&format!("{rel}/default.nix")) {
            self.findings.push(Finding::error(
                &rel,
                "missing-default-nix",
                format!("{rel} has no default.nix, so there is nothing to import"),
                format!("create {rel}/default.nix (a Home Manager module) or remove the directory"),
            ));
        }
        let has_meta = part == Part::Base && self.is_file(&format!("{rel}/meta.nix"));
        let entry = self.users.entry(user.clone()).or_insert_with(|| User {
            name: user.clone(),
            ..User::default()
        });
        match part {
            Part::Base => {
                entry.base = true;
                entry.has_meta = has_meta;
            }
            Part::Global => entry.global = true,
            Part::Host(h) => entry.host_parts.push(h),
        }
    }

    /// Rules that need the whole layout: parts without a base, hosts that do not exist.
    fn cross_check(&mut self) {
        for user in self.users.values() {
            if !user.base {
                let mut parts: Vec<String> = Vec::new();
                if user.global {
                    parts.push(home_dir_name(&user.name, &Part::Global));
                }
                // A host part alone is a valid integrated-only user: only @global needs the base,
                // since a standalone home is base + global.
                if !parts.is_empty() {
                    self.findings.push(Finding::error(
                        format!("homes/{}", parts[0]),
                        "global-without-base",
                        format!(
                            "homes/{} is merged into the standalone home, but homes/{} does not exist",
                            parts[0], user.name
                        ),
                        format!("create homes/{}/default.nix (cargo xtask new-user {}) or remove homes/{}", user.name, user.name, parts[0]),
                    ));
                }
            }
            for host in &user.host_parts {
                if !self.hosts.contains_key(host) && !self.droids.contains_key(host) {
                    self.findings.push(Finding::error(
                        format!("homes/{}@{host}", user.name),
                        "unknown-host",
                        format!("host '{host}' has no systems/{host}"),
                        format!(
                            "create it with cargo xtask new-host {host}, or rename the directory"
                        ),
                    ));
                }
            }
        }
    }

    /// A phone has one user (`nix-on-droid`): two `homes/<user>@<droid>` parts would be
    /// two Home Manager configurations for it.
    fn check_droid_users(&mut self) {
        let droids: Vec<String> = self.droids.keys().cloned().collect();
        for d in droids {
            let users = self.droid_users(&d);
            if users.len() > 1 {
                self.findings.push(Finding::error(
                    format!("droids/{d}"),
                    "droid-users",
                    format!(
                        "{} all have a part for the phone {d}, but Nix-on-Droid has one user",
                        users
                            .iter()
                            .map(|u| format!("homes/{u}@{d}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    format!("keep one homes/<user>@{d} and merge the others into it"),
                ));
            }
        }
    }

    /// Reads every meta.nix (homes, hosts and droids): those whose `system`, `users` and
    /// `deploy` are literals from their text ([`Repo::load_meta_static`]), the rest in ONE
    /// `nix eval`: only nix can compute them, and one process per file would cost tens of
    /// milliseconds each. Problems become findings against the file.
    pub fn load_meta(&mut self, nix: &Nix) -> Result<()> {
        if self.meta_loaded {
            return Ok(());
        }
        let pending = self.load_meta_static();
        self.meta_loaded = true;
        if pending.is_empty() {
            return Ok(());
        }
        let (homes, hosts, droids) = (
            as_strs(&pending.homes),
            as_strs(&pending.hosts),
            as_strs(&pending.droids),
        );
        let eval: MetaEval =
            match nix.eval_expr_json(&meta_expr(&self.root, &homes, &hosts, &droids)) {
                Ok(v) => v,
                // Only a failure of the evaluation itself is a finding; nix missing or
                // without flakes is the caller's error.
                Err(e) => {
                    if e.downcast_ref::<crate::nix::NixError>().is_none() {
                        return Err(e);
                    }
                    // One broken file stops the whole evaluation and nix names only the
                    // first problem: on this failure path only, read each file alone, so
                    // every broken one is reported and the good ones still count.
                    let mut merged = MetaEval::default();
                    let files = homes
                        .iter()
                        .map(|h| (h, MetaKind::Home))
                        .chain(hosts.iter().map(|h| (h, MetaKind::Host)))
                        .chain(droids.iter().map(|h| (h, MetaKind::Droid)));
                    for (name, kind) in files {
                        let one: &[&str] = &[name];
                        let (h, s, d): (&[&str], &[&str], &[&str]) = match kind {
                            MetaKind::Home => (one, &[], &[]),
                            MetaKind::Host => (&[], one, &[]),
                            MetaKind::Droid => (&[], &[], one),
                        };
                        match nix.eval_expr_json::<MetaEval>(&meta_expr(&self.root, h, s, d)) {
                            Ok(one) => {
                                merged.homes.extend(one.homes);
                                merged.hosts.extend(one.hosts);
                                merged.droids.extend(one.droids);
                            }
                            Err(e) => match e.downcast_ref::<crate::nix::NixError>() {
                                Some(ne) => {
                                    let finding = self.meta_finding(ne);
                                    self.findings.push(finding);
                                }
                                None => return Err(e),
                            },
                        }
                    }
                    merged
                }
            };
        self.apply_meta(eval);
        Ok(())
    }

    /// The meta.nix files of the model, with their kind and name.
    fn meta_targets(&self) -> Vec<(MetaKind, String)> {
        let homes = self
            .users
            .values()
            .filter(|u| u.has_meta)
            .map(|u| (MetaKind::Home, u.name.clone()));
        let hosts = self
            .hosts
            .values()
            .filter(|h| h.has_meta)
            .map(|h| (MetaKind::Host, h.name.clone()));
        let droids = self
            .droids
            .values()
            .filter(|d| d.has_meta)
            .map(|d| (MetaKind::Droid, d.name.clone()));
        homes.chain(hosts).chain(droids).collect()
    }

    /// Reads the meta.nix files whose `system`, `users` and `deploy` are literals (nearly
    /// all: they are data) from their syntax, without nix and offline, and reports one that
    /// does not parse, with line and column. Returns the homes, hosts and droids whose
    /// meta.nix computes those values: only an evaluation can read them
    /// ([`Repo::load_meta`]).
    pub fn load_meta_static(&mut self) -> PendingMeta {
        if let Some(pending) = &self.meta_pending {
            return pending.clone();
        }
        let mut read = MetaEval::default();
        let mut pending = PendingMeta::default();
        for (kind, name) in self.meta_targets() {
            let rel = kind.meta_file(&name);
            // Unreadable: nix says why.
            let text = match &self.tree {
                Some(tree) => tree.text(&rel).map(str::to_string),
                None => fs::read_to_string(self.root.join(&rel)).ok(),
            };
            let read_one = text.map_or(syntax::MetaRead::Computed, |t| syntax::read_meta(&t));
            match read_one {
                syntax::MetaRead::Literal(meta) => {
                    read.of_kind(kind).insert(name, meta);
                }
                syntax::MetaRead::Computed => pending.of_kind(kind).push(name),
                syntax::MetaRead::Syntax {
                    line,
                    column,
                    message,
                } => self.findings.push(Finding {
                    line: Some(line),
                    column: Some(column),
                    ..Finding::error(
                        rel,
                        "bad-meta",
                        format!("cannot read meta.nix: syntax error, {message}"),
                        format!(
                            "fix the file so that it is an attribute set like {}",
                            kind.shape()
                        ),
                    )
                }),
            }
        }
        self.apply_meta(read);
        self.meta_pending = Some(pending.clone());
        pending
    }

    /// The meta.nix files the model reads (repo-relative), whose problems
    /// [`Repo::load_meta_static`] and [`Repo::load_meta`] report.
    pub fn meta_files(&self) -> BTreeSet<String> {
        self.meta_targets()
            .into_iter()
            .map(|(kind, name)| kind.meta_file(&name))
            .collect()
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

    /// Checks what meta.nix files say and puts it into the model: the shape, `system`
    /// (any supported system for a home; a host or phone runs Linux: the host systems),
    /// `deploy`, and a host's `users`.
    fn apply_meta(&mut self, read: MetaEval) {
        let files = read
            .homes
            .into_iter()
            .map(|(n, m)| (MetaKind::Home, n, m))
            .chain(
                read.droids
                    .into_iter()
                    .map(|(n, m)| (MetaKind::Droid, n, m)),
            )
            .chain(read.hosts.into_iter().map(|(n, m)| (MetaKind::Host, n, m)));
        for (kind, name, meta) in files {
            let rel = kind.meta_file(&name);
            if self.check_shape(&rel, &meta, kind.shape()) {
                continue;
            }
            let systems = match kind {
                MetaKind::Home => &rules().supported_systems,
                MetaKind::Host | MetaKind::Droid => &rules().host_systems,
            };
            let before = self.findings.len();
            let system = self.check_system(&rel, meta.system.clone(), systems);
            self.locate_since(before, meta.system_at);
            let users = (kind == MetaKind::Host).then(|| {
                let before = self.findings.len();
                let users = self.check_users(&rel, meta.users.clone());
                self.locate_since(before, meta.users_at);
                for user in users.iter().filter(|u| !self.users.contains_key(*u)) {
                    // lib/ still gives the user a home on the host, made of nothing.
                    self.findings.push(Finding::warning(
                        &rel,
                        "user-without-home",
                        format!(
                            "users lists '{user}', who has no homes/{user} or homes/{user}@{name}, so their Home Manager configuration on {name} is empty"
                        ),
                        format!("create it with cargo xtask new-user {user} --host {name}, or remove the name"),
                    ));
                }
                users
            });
            let deploy = self.check_deploy(&rel, &meta);
            match kind {
                MetaKind::Home => {
                    if let Some(u) = self.users.get_mut(&name) {
                        u.system = system;
                        u.deploy = deploy;
                    }
                }
                MetaKind::Droid => {
                    if let Some(d) = self.droids.get_mut(&name) {
                        d.system = system;
                        d.deploy = deploy;
                    }
                }
                MetaKind::Host => {
                    if let Some(h) = self.hosts.get_mut(&name) {
                        h.system = system;
                        h.meta_users = users.unwrap_or_default();
                        h.deploy = deploy;
                    }
                }
            }
        }
    }

    /// A meta.nix that nix cannot read, as a finding against the file nix names.
    fn meta_finding(&self, nix_error: &crate::nix::NixError) -> Finding {
        let message = nix_error.message();
        let (path, line) = locate_nix_error(&self.root, &message);
        // The location is shown as the finding's path and line; drop it from the text.
        let message = match message.find(" at /") {
            Some(i) if path.is_some() => message[..i].to_string(),
            _ => message,
        };
        Finding {
            line,
            ..Finding::error(
                path.unwrap_or_else(|| "meta.nix".to_string()),
                "bad-meta",
                format!("cannot read meta.nix: {message}"),
                format!("fix the file so that it is an attribute set like {HOST_META_SHAPE}"),
            )
        }
    }

    /// A meta.nix that is not an attribute set (`[ ]`, a function, a string) is an error:
    /// nix's `m.system or default` would read it as "no system" and so would lib/ before it
    /// checked. True when it was one (then nothing else of it is read).
    fn check_shape(&mut self, rel: &str, meta: &MetaFile, shape: &str) -> bool {
        let Some(kind) = &meta.not_attrs else {
            return false;
        };
        self.findings.push(Finding::error(
            rel,
            "bad-meta",
            format!("meta.nix is a {kind}, not an attribute set"),
            format!("write it like {shape}"),
        ));
        true
    }

    /// Places the findings pushed since `before` at `at` (a value read from the text; nix's
    /// answer carries no position).
    fn locate_since(&mut self, before: usize, at: Option<(u32, u32)>) {
        if let Some((line, column)) = at {
            for f in &mut self.findings[before..] {
                f.line = Some(line);
                f.column = Some(column);
            }
        }
    }

    fn check_system(
        &mut self,
        rel: &str,
        system: Option<serde_json::Value>,
        allowed: &[String],
    ) -> Option<String> {
        match system {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if allowed.contains(&s) => Some(s),
            Some(other) => {
                let known = other.as_str().is_some_and(|o| rules().is_supported(o));
                let what = if known {
                    "a NixOS host's system (NixOS runs on Linux; a Mac's home goes in homes/)"
                } else {
                    "a supported system"
                };
                self.findings.push(Finding::error(
                    rel,
                    "unknown-system",
                    format!("system = {other} is not {what}"),
                    format!("use one of {}", allowed.join(", ")),
                ));
                None
            }
        }
    }

    /// Checks meta.nix's `deploy`; a finding read from the text is placed at the value it
    /// is about (`deploy.buildOn = …`), else at `deploy` itself.
    fn check_deploy(&mut self, rel: &str, meta: &MetaFile) -> Option<Deploy> {
        if meta.deploy.is_null() {
            return None;
        }
        match Deploy::parse(&meta.deploy) {
            Ok(d) => Some(d),
            Err(errors) => {
                for e in errors {
                    let at = meta
                        .deploy_keys_at
                        .iter()
                        .find(|(key, _)| {
                            e.strip_prefix("deploy.")
                                .and_then(|rest| rest.strip_prefix(key.as_str()))
                                .is_some_and(|rest| rest.starts_with([' ', ':']))
                        })
                        .map(|(_, at)| *at)
                        .or(meta.deploy_at);
                    self.findings.push(Finding {
                        line: at.map(|(l, _)| l),
                        column: at.map(|(_, c)| c),
                        ..Finding::error(
                            rel,
                            "bad-deploy",
                            e,
                            format!("write it like {DEPLOY_SHAPE}"),
                        )
                    });
                }
                None
            }
        }
    }

    fn check_users(&mut self, rel: &str, users: serde_json::Value) -> Vec<String> {
        let list = match users {
            serde_json::Value::Null => return Vec::new(),
            serde_json::Value::Array(items) => items,
            other => {
                self.findings.push(Finding::error(
                    rel,
                    "bad-meta",
                    format!("users = {other} is not a list of user names"),
                    format!("write it like {HOST_META_SHAPE}"),
                ));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in list {
            match item.as_str().map(|s| (s, validate_name(s))) {
                Some((s, Ok(()))) => out.push(s.to_string()),
                Some((_, Err(e))) => self.findings.push(Finding::error(
                    rel,
                    "bad-name",
                    format!("users: {e}"),
                    format!("rename it in meta.nix to a valid user name; the file looks like {HOST_META_SHAPE}"),
                )),
                None => self.findings.push(Finding::error(
                    rel,
                    "bad-meta",
                    format!("users: {item} is not a string"),
                    format!("write it like {HOST_META_SHAPE}"),
                )),
            }
        }
        out
    }

    /// The one expression that reads every meta.nix of the repo (also the benchmark's baseline).
    pub fn meta_expr(&self) -> String {
        let homes: Vec<&str> = self
            .users
            .values()
            .filter(|u| u.has_meta)
            .map(|u| u.name.as_str())
            .collect();
        let hosts: Vec<&str> = self
            .hosts
            .values()
            .filter(|h| h.has_meta)
            .map(|h| h.name.as_str())
            .collect();
        let droids: Vec<&str> = self
            .droids
            .values()
            .filter(|d| d.has_meta)
            .map(|d| d.name.as_str())
            .collect();
        meta_expr(&self.root, &homes, &hosts, &droids)
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

fn list_dirs(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            // Not UTF-8: cannot be a valid name; report it through the naming rule.
            Err(raw) => names.push(raw.to_string_lossy().into_owned()),
        }
    }
    names.sort();
    Ok(names)
}

/// A Nix string literal for a path (quotes and `${` escaped).
pub fn nix_string(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "\\${");
    format!("\"{escaped}\"")
}

/// The expression that reads the meta files; each is imported by absolute path so untracked
/// files are visible too (the lint reports those separately).
fn meta_expr(root: &Path, homes: &[&str], hosts: &[&str], droids: &[&str]) -> String {
    let root = root.display().to_string();
    let entry = |kind: &str, name: &str| {
        format!(
            "{} = pick (import (/. + {}));",
            nix_string(name),
            nix_string(&format!("{root}/{kind}/{name}/meta.nix"))
        )
    };
    let homes: String = homes.iter().map(|n| entry("homes", n)).collect();
    let hosts: String = hosts.iter().map(|n| entry("systems", n)).collect();
    let droids: String = droids.iter().map(|n| entry("droids", n)).collect();
    // Only the fields the xtask uses leave nix, so a meta.nix may hold anything else
    // (functions included) without breaking --json.
    format!(
        "let pick = m: if builtins.isAttrs m then {{ system = m.system or null; users = m.users or null; deploy = m.deploy or null; }} else {{ not_attrs = builtins.typeOf m; }}; in {{ homes = {{ {homes} }}; hosts = {{ {hosts} }}; droids = {{ {droids} }}; }}"
    )
}

/// Finds the repo-relative file and line a nix error message points at
/// (`at /abs/root/homes/bob/default.nix:3:5:` or `… «path»:3:5`). Flake evaluation reports
/// the flake's copy in the store instead (`/nix/store/<hash>-source/homes/bob/default.nix`);
/// other inputs (nixpkgs) are also called `<hash>-source`, so a store location counts only
/// when the same relative file exists in the repo, and homes/ and systems/ files win.
pub fn locate_nix_error(root: &Path, message: &str) -> (Option<String>, Option<u32>) {
    let found = nix_error_locations(root, message);
    // The repo's own modules say more than lib/ (which only passes the error on).
    let preferred = found
        .iter()
        .position(|(p, _)| p.starts_with("homes/") || p.starts_with("systems/"))
        .unwrap_or(0);
    match found.into_iter().nth(preferred) {
        Some((path, line)) => (Some(path), line),
        None => (None, None),
    }
}

/// Every location in a nix error message that is a file of the repo, in order: paths
/// under `root` itself (meta.nix, a `path:` flake) and under a flake's store copy
/// (`/nix/store/<hash>-source/homes/bob/default.nix:3:5`). Store sources whose path the
/// repo does not have (nixpkgs' `lib/modules.nix`, …) are not the repo's.
pub fn nix_error_locations(root: &Path, message: &str) -> Vec<(String, Option<u32>)> {
    let root_prefix = format!("{}/", root.display());
    let mut found = Vec::new();
    for (i, _) in message.match_indices('/') {
        let rest = &message[i..];
        // A path under the root is the repo's; a store source only if the repo has the file.
        let (tail, must_exist) = if let Some(tail) = rest.strip_prefix(root_prefix.as_str()) {
            (tail, false)
        } else if let Some(after) = rest.strip_prefix("/nix/store/") {
            // `<32-char hash>-source/` is the store copy of a flake's source tree.
            let Some(slash) = after.find('/') else {
                continue;
            };
            let name = &after[..slash];
            if !(name.len() > 33 && name.ends_with("-source") && name.as_bytes()[32] == b'-') {
                continue;
            }
            (&after[slash + 1..], true)
        } else {
            continue;
        };
        let (Some(path), line) = split_location(tail) else {
            continue;
        };
        let known = found.iter().any(|(p, l)| p == &path && *l == line);
        if !known && (!must_exist || root.join(&path).is_file()) {
            found.push((path, line));
        }
    }
    found
}

/// `homes/bob/default.nix:3:5: …` -> the path and the line.
fn split_location(rest: &str) -> (Option<String>, Option<u32>) {
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '»' || c == ',')
        .unwrap_or(rest.len());
    let loc = rest[..end].trim_end_matches([':', '.']);
    let mut pieces = loc.split(':');
    let path = pieces.next().filter(|p| !p.is_empty()).map(str::to_string);
    let line = pieces.next().and_then(|l| l.parse().ok());
    (path, line)
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

/// `.nix` files under homes/, systems/, droids/ and lib/ that git does not track: a flake in a git
/// repository only sees tracked files, so nix reports them as missing ("the classic module
/// not found"). One `git ls-files` call; outside a git repository (a `path:` flake sees
/// every file) or without git there is nothing to report.
pub fn untracked_nix_findings(root: &Path) -> Vec<Finding> {
    untracked_file_findings(&untracked_nix_files(root).unwrap_or_default())
}

/// The untracked `.nix` files of homes/, systems/, droids/ and lib/; None outside git.
fn untracked_nix_files(root: &Path) -> Option<Vec<String>> {
    let mut args = vec!["--others", "--exclude-standard", "--"];
    args.extend(NIX_DIRS);
    Some(
        git_ls_files(root, &args)?
            .into_iter()
            .filter(|p| p.ends_with(".nix"))
            .collect(),
    )
}

/// `git ls-files -z ARGS` in `root`, repo-relative paths; None outside a git repository
/// or without git.
fn git_ls_files(root: &Path, args: &[&str]) -> Option<Vec<String>> {
    GitLsFiles::spawn(root, args)?.wait()
}

/// A running `git ls-files -z ARGS`, so that git reads its index while the caller works.
struct GitLsFiles(std::process::Child);

impl GitLsFiles {
    /// None without git.
    fn spawn(root: &Path, args: &[&str]) -> Option<GitLsFiles> {
        std::process::Command::new("git")
            .args(["ls-files", "-z"])
            .args(args)
            .current_dir(root)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
            .map(GitLsFiles)
    }

    /// The paths; None outside a git repository.
    fn wait(self) -> Option<Vec<String>> {
        let out = self
            .0
            .wait_with_output()
            .ok()
            .filter(|o| o.status.success())?;
        Some(
            String::from_utf8_lossy(&out.stdout)
                .split('\0')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }
}

fn untracked_file_findings(files: &[String]) -> Vec<Finding> {
    files
        .iter()
        .map(|p| {
            Finding::error(
                p,
                "untracked-file",
                "git does not track this file, so the flake cannot see it (nix reports it as missing)".into(),
                format!("git add -N {p}"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["alice", "_svc", "bob-2", "a_b", "x"] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in [
            "", "Alice", "a b", "../x", "-rf", "@", "1abc", "a.b", "ä", "bob@",
        ] {
            let err = validate_name(bad).unwrap_err();
            assert!(err.contains("[a-z_][a-z0-9_-]*"), "{bad}: {err}");
        }
        assert!(
            validate_name(&"a".repeat(33))
                .unwrap_err()
                .contains("at most 32")
        );
        assert!(
            validate_name(&"a".repeat(300))
                .unwrap_err()
                .contains("at most 32")
        );
        assert_eq!(validate_host_name(&"h".repeat(63)), Ok(()));
        assert!(
            validate_host_name(&"h".repeat(64))
                .unwrap_err()
                .contains("at most 63")
        );
    }

    #[test]
    fn deploy_settings_are_read_and_checked() {
        let d = Deploy::parse(&serde_json::json!({
            "targetHost": "root@pi.lan", "buildOn": "remote", "tags": ["rack"], "sshOpts": ["-p", "22"]
        }))
        .unwrap();
        assert_eq!(d.target_host, "root@pi.lan");
        assert_eq!(d.ssh_user(), Some("root"));
        assert_eq!(d.build_on, BuildOn::Remote);
        assert_eq!(d.tags, vec!["rack".to_string()]);
        assert_eq!(d.ssh_opts, vec!["-p".to_string(), "22".to_string()]);
        let plain = Deploy::parse(&serde_json::json!({ "targetHost": "pi" })).unwrap();
        assert_eq!((plain.build_on, plain.ssh_user()), (BuildOn::Local, None));
        let errors = Deploy::parse(&serde_json::json!({
            "targetHost": "-oProxyCommand=x", "buildOn": "cloud", "tags": ["Rack"], "sshopts": []
        }))
        .unwrap_err()
        .join("\n");
        for needle in [
            "targetHost",
            "buildOn",
            "tags",
            "sshopts is not a deploy setting",
        ] {
            assert!(errors.contains(needle), "{needle}: {errors}");
        }
        assert!(Deploy::parse(&serde_json::json!({})).unwrap_err()[0].contains("no targetHost"));
        assert!(Deploy::parse(&serde_json::json!([])).is_err());
    }

    #[test]
    fn global_is_not_a_host() {
        assert!(
            validate_host_name("global")
                .unwrap_err()
                .contains("reserved")
        );
        assert_eq!(validate_host_name("workstation"), Ok(()));
    }

    #[test]
    fn new_users_avoid_reserved_names() {
        assert_eq!(validate_new_user_name("bob", false), Ok(()));
        assert!(
            validate_new_user_name("global", true)
                .unwrap_err()
                .contains("reserved")
        );
        let root = validate_new_user_name("root", false).unwrap_err();
        assert!(
            root.contains("reserved") && root.contains("--allow-root"),
            "{root}"
        );
        assert_eq!(validate_new_user_name("root", true), Ok(()));
        assert!(
            validate_new_user_name("Root", true)
                .unwrap_err()
                .contains("[a-z_][a-z0-9_-]*")
        );
    }

    #[test]
    fn home_dirs_split_into_user_and_part() {
        assert_eq!(parse_home_dir("alice"), Ok(("alice".into(), Part::Base)));
        assert_eq!(
            parse_home_dir("alice@global"),
            Ok(("alice".into(), Part::Global))
        );
        assert_eq!(
            parse_home_dir("alice@workstation"),
            Ok(("alice".into(), Part::Host("workstation".into())))
        );
        for bad in ["Alice", "a b", "@x", "bob@", "x@global@y", "x@Y", "@"] {
            assert!(parse_home_dir(bad).is_err(), "{bad}");
        }
        assert!(
            parse_home_dir("x@global@y")
                .unwrap_err()
                .contains("more than one '@'")
        );
        for (user, part) in [
            ("a", Part::Base),
            ("a", Part::Global),
            ("a", Part::Host("h".into())),
        ] {
            assert_eq!(
                parse_home_dir(&home_dir_name(user, &part)),
                Ok((user.into(), part))
            );
        }
    }

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

    #[test]
    fn defaults_parse() {
        let d = Defaults::parse(
            "[workspace]\nmembers=[]\n[workspace.metadata.xtask]\nbackup-extension = \"old\"\n",
        )
        .unwrap();
        assert_eq!(d.backup_extension, "old");
        assert_eq!(d.default_system, "x86_64-linux");
        assert_eq!(d.keep_generations, 5);
        assert_eq!(
            Defaults::parse("[package]\nname='x'\n").unwrap(),
            Defaults::default()
        );
        let unknown = format!(
            "{:#}",
            Defaults::parse("[workspace.metadata.xtask]\nbackup-extention = 'x'\n").unwrap_err()
        );
        assert!(
            unknown.contains("backup-extention") && unknown.contains("name-pattern"),
            "{unknown}"
        );
        let bad = |toml: &str| {
            format!(
                "{:#}",
                Defaults::parse(&format!("[workspace.metadata.xtask]\n{toml}\n")).unwrap_err()
            )
        };
        let err = bad("default-system = 'riscv'");
        assert!(
            err.contains("riscv") && err.contains("aarch64-linux"),
            "{err}"
        );
        let err = bad("name-pattern = '[a-z'");
        assert!(
            err.contains("name-pattern") && err.contains("not a valid regular expression"),
            "{err}"
        );
        let err = bad("name-pattern = '.*'");
        assert!(
            err.contains("accepts") && err.contains("narrow it"),
            "{err}"
        );
        let err = bad("host-systems = ['x86_64-windows']");
        assert!(
            err.contains("x86_64-windows") && err.contains("supported-systems"),
            "{err}"
        );
        let err = bad("max-user-length = 0");
        assert!(
            err.contains("max-user-length") && err.contains("positive"),
            "{err}"
        );
        let err = bad("reserved-host = 'Global'");
        assert!(
            err.contains("reserved-host") && err.contains("name-pattern"),
            "{err}"
        );
    }

    /// The compiled-in fallback is the repository's Cargo.toml, key for key: the rules are
    /// stated in Cargo.toml, and a missing key must not silently change them.
    #[test]
    fn the_builtin_defaults_are_cargo_toml() {
        let text = include_str!("../../Cargo.toml");
        let manifest: toml::Table = toml::from_str(text).unwrap();
        let table = &manifest["workspace"]["metadata"]["xtask"];
        let stated: Vec<&str> = table
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut all: Vec<&str> = KEYS.split(", ").collect();
        all.sort();
        let mut stated_sorted = stated.clone();
        stated_sorted.sort();
        assert_eq!(stated_sorted, all, "Cargo.toml must state every key");
        assert_eq!(Defaults::parse(text).unwrap(), Defaults::default());
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

    #[test]
    fn locates_nix_errors() {
        let root = Path::new("/r");
        assert_eq!(
            locate_nix_error(root, "error: syntax error, at /r/systems/ws/meta.nix:3:5"),
            (Some("systems/ws/meta.nix".into()), Some(3))
        );
        assert_eq!(
            locate_nix_error(
                root,
                "error: undefined variable 'x'\n       at «string»:1:1:"
            ),
            (None, None)
        );
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("homes/bob")).unwrap();
        fs::write(t.path().join("homes/bob/default.nix"), "{ }").unwrap();
        let store = "/nix/store/f5q8q56rqklwzgzk5p0azp9yr79h3cqr-source";
        assert_eq!(
            locate_nix_error(
                t.path(),
                &format!("error: undefined variable 'foo' at {store}/homes/bob/default.nix:1:35:")
            ),
            (Some("homes/bob/default.nix".into()), Some(1))
        );
        // A nixpkgs file (also `-source`) that the repo does not have is not the repo's.
        assert_eq!(
            locate_nix_error(
                t.path(),
                &format!("error: x at {store}/lib/modules.nix:9:1:")
            ),
            (None, None)
        );
    }
}
