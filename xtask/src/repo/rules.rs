//! The naming rules and the repo defaults: `[workspace.metadata.xtask]` of Cargo.toml,
//! which flake.nix passes to lib/ too, compiled once per run; the names of users, hosts and
//! home directories are checked against them here, and only here.

use std::{fmt, fs, path::Path};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

/// The naming rules and supported systems, compiled from [`Defaults`] (Cargo.toml's
/// `[workspace.metadata.xtask]`, which flake.nix passes to lib/ too, so Nix and Rust
/// apply one statement of them).
#[derive(Debug)]
pub struct Rules {
    name_pattern: String,
    /// `^(?:name-pattern)$`: Nix's `builtins.match` matches the whole string.
    name_regex: regex_lite::Regex,
    /// The pattern is the built-in one, which [`builtin_name`] checks without the regex
    /// engine (a scan of a thousand homes matches thousands of names).
    builtin: bool,
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

/// The defaults [`Defaults::install`] made the rules of this run, and the repository whose
/// Cargo.toml they come from.
static INSTALLED: std::sync::OnceLock<(std::path::PathBuf, Defaults)> = std::sync::OnceLock::new();

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
            builtin: d.name_pattern == BUILTIN_NAME_PATTERN,
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

    pub(super) fn validate_pattern(&self, name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err(format!("the name is empty; {}", self.name_rule()));
        }
        let matches = if self.builtin {
            builtin_name(name)
        } else {
            self.name_regex.is_match(name)
        };
        if !matches {
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

/// [`BUILTIN_NAME_PATTERN`] as code (a test holds the two to the same answers).
fn builtin_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && matches!(b[0], b'a'..=b'z' | b'_')
        && b[1..]
            .iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

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
        // Installed for this repository at start-up: read once per run.
        if let Some((at, d)) = INSTALLED.get()
            && at == root
        {
            return Ok(d.clone());
        }
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

    /// Makes these (read from `root`'s Cargo.toml) the rules of this process ([`rules`]);
    /// `main` calls it once, before any task runs. Returns false when rules were already in
    /// use (then those stay).
    pub fn install(&self, root: &Path) -> Result<bool> {
        let rules = Rules::new(self)?;
        crate::nix::set_supported_systems(self.supported_systems.clone());
        let _ = INSTALLED.set((root.to_path_buf(), self.clone()));
        Ok(RULES.set(rules).is_ok())
    }

    pub fn rules(&self) -> Result<Rules> {
        Rules::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_pattern_and_its_code_agree() {
        let regex = regex_lite::Regex::new(&format!("^(?:{BUILTIN_NAME_PATTERN})$")).unwrap();
        let mut names: Vec<String> = [
            "", "a", "_", "-", "0", "a-", "a_1", "A", "aB", "a b", "a.b", "a/b", "a@b", "ä", "a\n",
            "_-_", "9a", "z9-_",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every one- and two-byte ASCII name.
        for a in 0u8..128 {
            names.push((a as char).to_string());
            for b in 0u8..128 {
                names.push(format!("{}{}", a as char, b as char));
            }
        }
        for name in names {
            assert_eq!(builtin_name(&name), regex.is_match(&name), "{name:?}");
        }
    }

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
        // Each mistake, and the words its error must have.
        for (toml, words) in [
            ("default-system = 'riscv'", &["riscv", "aarch64-linux"][..]),
            (
                "name-pattern = '[a-z'",
                &["name-pattern", "not a valid regular expression"],
            ),
            ("name-pattern = '.*'", &["accepts", "narrow it"]),
            (
                "host-systems = ['x86_64-windows']",
                &["x86_64-windows", "supported-systems"],
            ),
            ("max-user-length = 0", &["max-user-length", "positive"]),
            (
                "reserved-host = 'Global'",
                &["reserved-host", "name-pattern"],
            ),
        ] {
            let err = bad(toml);
            assert!(words.iter().all(|w| err.contains(w)), "{toml}: {err}");
        }
    }

    /// The compiled-in fallback is the repository's Cargo.toml, key for key: the rules are
    /// stated in Cargo.toml, and a missing key must not silently change them.
    #[test]
    fn the_builtin_defaults_are_cargo_toml() {
        let text = include_str!("../../../Cargo.toml");
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
}
