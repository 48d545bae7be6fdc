//! What a generation says about itself. Everything that depends on the Home Manager
//! release is read from the generation, never assumed: whether the driver sets the
//! profile (`gen-version`), the user and home its `activate` checks (both forms), its
//! check-link-targets script and the forced paths in it, and whether that script honours
//! HOME_MANAGER_BACKUP_OVERWRITE and HOME_MANAGER_BACKUP_COMMAND (release-25.11 and later).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::term;

#[derive(Debug, Default)]
pub struct GenerationInfo {
    /// The generation (or specialisation) whose `activate` runs.
    pub path: PathBuf,
    /// `gen-version` exists: the driver sets the profile; without it the old-style
    /// `activate` manages the profile itself.
    pub gen_version: bool,
    pub username: Option<String>,
    pub home_directory: Option<String>,
    pub uid: Option<u32>,
    /// The store path of the check-link-targets script `activate` runs, if found.
    pub check_script: Option<PathBuf>,
    /// `home.file.<p>.force = true` targets, as written in the script: `$HOME/<p>` with
    /// `$HOME` unexpanded (it is expanded when matched, as bash does).
    pub forced: Vec<String>,
    pub honours_overwrite: bool,
    pub honours_command: bool,
}

impl GenerationInfo {
    /// Reads `activate` (and the check script it names) of `path`.
    pub fn read(path: &Path) -> Result<GenerationInfo> {
        let script = path.join("activate");
        let text =
            fs::read_to_string(&script).with_context(|| format!("reading {}", script.display()))?;
        let mut info = parse_activate(&text);
        info.path = path.to_path_buf();
        // A specialisation shares the driver's view of its parent; gen-version is per
        // generation, and a specialisation has its own copy in current releases.
        info.gen_version = path.join("gen-version").exists();
        if let Some(check) = &info.check_script
            && let Ok(check_text) = fs::read_to_string(check)
        {
            info.forced = forced_paths(&check_text);
            info.honours_overwrite = check_text.contains("HOME_MANAGER_BACKUP_OVERWRITE");
            info.honours_command = check_text.contains("HOME_MANAGER_BACKUP_COMMAND");
        }
        Ok(info)
    }

    /// `--overwrite-backup` and `--backup-command` only mean something to a generation
    /// that reads them; for an older one they are refused (usage error), not ignored.
    pub fn refuse_unsupported(&self, overwrite: bool, command: bool) -> Result<()> {
        let release = "Home Manager release-25.11 or later";
        if overwrite && !self.honours_overwrite {
            return Err(crate::UsageError(format!(
                "--overwrite-backup: this generation's activation ignores HOME_MANAGER_BACKUP_OVERWRITE (it needs {release}); move the old backups away instead, or update the home-manager input"
            ))
            .into());
        }
        if command && !self.honours_command {
            return Err(crate::UsageError(format!(
                "--backup-command: this generation's activation ignores HOME_MANAGER_BACKUP_COMMAND (it needs {release}); use -b EXT instead, or update the home-manager input"
            ))
            .into());
        }
        Ok(())
    }

    /// The user and home the generation was built for must be this session's, or
    /// `activate` refuses (after the profile was set).
    pub fn check_user(&self, env: &super::UserEnv, home_name: &str) -> Result<()> {
        if let Some(u) = &self.username
            && *u != env.user
        {
            bail!(
                "the home sets home.username = \"{u}\" but $USER is {}; remove that line from homes/{home_name} (the default is the directory's name) or switch as {u}",
                env.user
            );
        }
        if let Some(h) = &self.home_directory
            && !same_directory(Path::new(h), &env.home)
        {
            let mac = if cfg!(target_os = "macos") {
                format!(
                    "; on macOS home directories are /Users/<name> (the repo's default for *-darwin), so if yours differs write home.homeDirectory = \"{}\"; in homes/{home_name}@global/default.nix",
                    env.home.display()
                )
            } else {
                String::new()
            };
            bail!(
                "the home sets home.homeDirectory = \"{h}\" but $HOME is {}; set home.homeDirectory = \"{}\" in homes/{home_name}@global/default.nix (the standalone-only part: on NixOS hosts Home Manager takes it from users.users and a second definition conflicts), or run with the right HOME{mac}",
                env.home.display(),
                env.home.display()
            );
        }
        if let Some(uid) = self.uid {
            let me = rustix::process::getuid().as_raw();
            if uid != me {
                bail!(
                    "the home sets home.uid = {uid} but this runs as uid {me}; switch as the user with uid {uid}, or fix home.uid in homes/{home_name}"
                );
            }
        }
        Ok(())
    }
}

/// Whether `a` and `b` name the same directory, as `checkPathEq` / `checkHomeDirectory`
/// test it (`[[ $HOME -ef $expected ]]`: same device and inode), so a `$HOME` reached
/// through a symlink or a bind mount passes. When one side does not exist the names are
/// compared, which is all that is left to compare.
pub fn same_directory(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// The facts of an `activate` script's text.
fn parse_activate(script: &str) -> GenerationInfo {
    let mut e = GenerationInfo::default();
    for line in script.lines() {
        let line = line.trim();
        let words = || shell_words(line);
        if let Some(arg) = line.strip_prefix("checkUsername ") {
            // Home Manager before 2025: `checkUsername NAME`.
            e.username = e.username.or_else(|| shell_words(arg).into_iter().next());
        } else if let Some(arg) = line.strip_prefix("checkHomeDirectory ") {
            e.home_directory = e
                .home_directory
                .or_else(|| shell_words(arg).into_iter().next());
        } else if line.starts_with("checkStringEq ") || line.starts_with("checkPathEq ") {
            // Current: `checkStringEq USER "$USER" NAME`, `checkPathEq HOME "$HOME" DIR`,
            // `checkStringEq UID "$(id -u)" N`.
            let w = words();
            match (w.get(1).map(String::as_str), w.get(3)) {
                (Some("USER"), Some(v)) => e.username = e.username.or(Some(v.clone())),
                (Some("HOME"), Some(v)) => e.home_directory = e.home_directory.or(Some(v.clone())),
                (Some("UID"), Some(v)) => e.uid = e.uid.or(v.parse().ok()),
                _ => {}
            }
        }
        if e.check_script.is_none() {
            e.check_script = line
                .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '=' | ';'))
                .find(|t| t.starts_with('/') && t.ends_with("check-link-targets.sh"))
                .map(PathBuf::from);
        }
    }
    e
}

/// The `forcedPaths=("$HOME"/'<path>' …)` line of a check-link-targets script, as the
/// words bash would assign (quotes removed, `$HOME` left for the matcher to expand).
fn forced_paths(check_script: &str) -> Vec<String> {
    check_script
        .lines()
        .find_map(|l| l.trim().strip_prefix("forcedPaths=("))
        .map(|list| {
            shell_words(list.trim_end().trim_end_matches(')'))
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Splits a bash word list as Nix's `escapeShellArg` writes it (`'…'` with `'\''` for a
/// quote, or a bare word) and `"$HOME"`: quotes removed, nothing expanded.
pub fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '"'));
            }
            '\\' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.next());
            }
            '#' if word.is_none() => break,
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// `<generation>/specialisation/<name>`, or which ones exist.
pub fn specialisation(generation: &Path, name: &str) -> Result<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_forms_of_the_user_check() {
        let old = parse_activate("x\ncheckUsername 'alice'\ncheckHomeDirectory '/home/o'\\''b'\n");
        assert_eq!(old.username.as_deref(), Some("alice"));
        assert_eq!(old.home_directory.as_deref(), Some("/home/o'b"));
        let new = parse_activate(
            "  checkStringEq USER \"$USER\" alice\n  checkPathEq HOME \"$HOME\" '/home/a b'\n  checkStringEq UID \"$(id -u)\" 1000\n",
        );
        assert_eq!(new.username.as_deref(), Some("alice"));
        assert_eq!(new.home_directory.as_deref(), Some("/home/a b"));
        assert_eq!(new.uid, Some(1000));
        let none = parse_activate("echo hi");
        assert_eq!(none.username, None);
        assert_eq!(none.home_directory, None);
    }

    #[test]
    fn finds_the_check_script_and_its_forced_paths() {
        let info = parse_activate(
            "find \"$newGenFiles\" \\( -type f -or -type l \\) -exec bash /nix/store/abc-check-link-targets.sh \"$newGenFiles\" {} +\n",
        );
        assert_eq!(
            info.check_script.as_deref(),
            Some(Path::new("/nix/store/abc-check-link-targets.sh"))
        );
        assert_eq!(
            forced_paths(
                "x\nforcedPaths=(\"$HOME\"/'.config/a b' \"$HOME\"/'it'\\''s' \"$HOME\"/.x)\n"
            ),
            vec!["$HOME/.config/a b", "$HOME/it's", "$HOME/.x"]
        );
        assert!(forced_paths("forcedPaths=()\n").is_empty());
    }

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
