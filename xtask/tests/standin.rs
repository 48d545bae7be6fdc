//! The test stand-in of Home Manager's activation (tests/fixtures/activate.sh and
//! check-link-targets.sh, built by stub-builders.nix) against the contract in
//! ../shared/hm-contract.md: one test per fact of "Collisions and linking", the user
//! checks, profile migration and cleanup. Each test builds a generation with real nix
//! from a fixture home and runs its `activate` (or its check script) directly, without
//! the xtask, in a temporary `$HOME`.

mod common;

use std::{
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use common::{Fixture, Run, nix_str};

/// A fixture home, its built generation, and a private Nix state directory so profile
/// migration never looks at this machine's /nix/var/nix.
struct Stand {
    f: Fixture,
    generation: PathBuf,
    nix_state: PathBuf,
}

/// `home.file.<path>.text = <text>;`
fn text(path: &str, text: &str) -> String {
    format!("  home.file.{}.text = {};\n", nix_str(path), nix_str(text))
}

/// `home.file.<path> = { text = <text>; force = true; };`
fn forced(path: &str, text: &str) -> String {
    format!(
        "  home.file.{} = {{ text = {}; force = true; }};\n",
        nix_str(path),
        nix_str(text)
    )
}

impl Stand {
    /// A home for the fixture's user with the given module lines (see `text`, `forced`).
    fn new(body: &str) -> Stand {
        let f = Fixture::new();
        let nix_state = f.root.parent().unwrap().join("nix-state");
        fs::create_dir_all(&nix_state).unwrap();
        let mut s = Stand {
            f,
            generation: PathBuf::new(),
            nix_state,
        };
        s.rebuild(body);
        s
    }

    /// Replaces the home's module and builds its generation.
    fn rebuild(&mut self, body: &str) -> PathBuf {
        let home = nix_str(&self.f.home.display().to_string());
        self.f
            .home_module(
                &self.f.user,
                &format!("{{ ... }}:\n{{\n  home.homeDirectory = {home};\n{body}}}\n"),
            )
            .commit();
        self.generation = build(&self.f);
        self.generation.clone()
    }

    fn home(&self, rel: &str) -> PathBuf {
        self.f.home.join(rel)
    }

    /// `activate --driver-version 1` of the current generation with `vars` set and every
    /// other variable it reads unset.
    fn activate(&self, vars: &[(&str, &str)]) -> Run {
        self.activate_generation(&self.generation, vars)
    }

    fn activate_generation(&self, generation: &Path, vars: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(generation.join("activate"));
        cmd.arg("--driver-version").arg("1");
        self.env(&mut cmd, vars);
        common::run(cmd.output().unwrap())
    }

    fn env(&self, cmd: &mut Command, vars: &[(&str, &str)]) {
        common::hm_env(cmd, &self.f.home, &self.f.user, &self.nix_state);
        for (k, v) in vars {
            cmd.env(k, v);
        }
    }

    /// The generation's check script, found as a driver finds it: the token of `activate`
    /// that ends in check-link-targets.sh.
    fn check_script(&self) -> PathBuf {
        let activate = fs::read_to_string(self.generation.join("activate")).unwrap();
        let token = activate
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .find(|t| t.starts_with('/') && t.ends_with("check-link-targets.sh"))
            .expect("activate names its check-link-targets.sh");
        PathBuf::from(token)
    }

    /// Runs the check script on the given files of home-files (relative paths) only.
    fn check(&self, rels: &[&str], vars: &[(&str, &str)]) -> Run {
        let files = self.home_files();
        let mut cmd = Command::new("bash");
        cmd.arg(self.check_script()).arg(&files);
        for rel in rels {
            cmd.arg(files.join(rel));
        }
        self.env(&mut cmd, vars);
        common::run(cmd.output().unwrap())
    }

    /// The generation's `*-home-manager-files` store path.
    fn home_files(&self) -> PathBuf {
        fs::canonicalize(self.generation.join("home-files")).unwrap()
    }

    fn gc_root(&self) -> PathBuf {
        self.home(".local/state/home-manager/gcroots/current-home")
    }

    /// A file outside `$HOME` (beside it in the fixture's temporary directory).
    fn outside(&self, name: &str, content: &str) -> PathBuf {
        let p = self.f.root.parent().unwrap().join(name);
        fs::write(&p, content).unwrap();
        p
    }

    fn digest(&self) -> String {
        Fixture::tree_digest(&self.f.home)
    }
}

/// Builds `homeConfigurations.<user>.activationPackage` of the fixture with real nix.
fn build(f: &Fixture) -> PathBuf {
    let expr = format!(
        "(builtins.getFlake {}).homeConfigurations.{}.activationPackage",
        nix_str(&format!("git+file://{}", f.root.display())),
        nix_str(&f.user)
    );
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "build",
            "--impure",
            "--no-link",
            "--json",
            "--expr",
            &expr,
        ])
        .env("NIX_CONFIG", common::NIX_CONFIG)
        .env("XDG_CACHE_HOME", f.root.parent().unwrap().join("cache"))
        .output()
        .expect("nix is required for these tests");
    assert!(
        out.status.success(),
        "nix build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(v[0]["outputs"]["out"].as_str().unwrap())
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A link whose own text points into a `*-home-manager-files` store path.
fn is_hm_link(path: &Path) -> bool {
    fs::read_link(path).is_ok_and(|t| t.display().to_string().contains("-home-manager-files/"))
}

fn is_plain_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn lacks(run: &Run, needle: &str) {
    assert!(
        !run.stderr.contains(needle) && !run.stdout.contains(needle),
        "output has {needle:?}:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

fn executable(path: &Path, script: &str) {
    fs::write(path, script).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

const EXT: (&str, &str) = ("HOME_MANAGER_BACKUP_EXT", "bak");
const OVERWRITE: (&str, &str) = ("HOME_MANAGER_BACKUP_OVERWRITE", "1");
const VERBOSE: (&str, &str) = ("VERBOSE", "1");

// ---- The generation's shape -------------------------------------------------------------

#[test]
fn a_current_generation_has_gen_version_and_a_separate_check_script() {
    let s = Stand::new(&text(".x", "x\n"));
    assert!(s.generation.join("gen-version").is_file());
    assert!(s.generation.join("home-path").is_dir());
    let files = s.home_files();
    assert!(files.display().to_string().ends_with("-home-manager-files"));
    let script = s.check_script();
    assert!(script.is_file() && script.starts_with("/nix/store"));
    let activate = read(&s.generation.join("activate"));
    assert!(activate.starts_with("#!/usr/bin/env bash\n"), "{activate}");
    assert!(
        activate.contains(&format!(
            "find \"$newGenFiles\" \\( -type f -o -type l \\) -exec bash {} \"$newGenFiles\" {{}} +",
            script.display()
        )),
        "{activate}"
    );
    let check = read(&script);
    assert!(check.contains("forcedPaths=()\n"), "{check}");
    assert!(check.contains("HOME_MANAGER_BACKUP_OVERWRITE"));
    assert!(check.contains("HOME_MANAGER_BACKUP_COMMAND"));
}

#[test]
fn forced_paths_are_written_with_escape_shell_arg() {
    let s = Stand::new(&format!(
        "{}{}",
        forced(".plain", "1\n"),
        forced("it's [odd]", "2\n")
    ));
    let check = read(&s.check_script());
    assert!(
        check.contains(r#"forcedPaths=("$HOME"/.plain "$HOME"/'it'\''s [odd]')"#),
        "{check}"
    );
}

// ---- User checks ------------------------------------------------------------------------

#[test]
fn a_current_generation_checks_user_and_home_with_string_and_path_eq() {
    let s = Stand::new(&text(".x", "x\n"));
    let activate = read(&s.generation.join("activate"));
    let home = s.f.home.display().to_string();
    assert!(
        activate.contains("\ncheckStringEq USER \"$USER\" alice\n"),
        "{activate}"
    );
    assert!(
        activate.contains(&format!("\ncheckPathEq HOME \"$HOME\" {home}\n")),
        "{activate}"
    );
    assert!(!activate.contains("\ncheckUsername "), "{activate}");
}

#[test]
fn a_wrong_user_stops_activation_before_anything_changes() {
    let s = Stand::new(&text(".x", "x\n"));
    let before = s.digest();
    s.activate(&[("USER", "bob")])
        .failure(1)
        .stderr_has("USER is \"bob\", expected \"alice\"");
    assert_eq!(s.digest(), before);
}

#[test]
fn home_is_compared_as_a_directory_not_a_string() {
    let s = Stand::new(&text(".x", "x\n"));
    let link = s.f.root.parent().unwrap().join("home-link");
    symlink(&s.f.home, &link).unwrap();
    let mut cmd = Command::new(s.generation.join("activate"));
    s.env(&mut cmd, &[]);
    cmd.env("HOME", &link);
    common::run(cmd.output().unwrap()).success();
    assert!(is_hm_link(&s.home(".x")));

    let elsewhere = s.f.root.parent().unwrap().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let mut cmd = Command::new(s.generation.join("activate"));
    s.env(&mut cmd, &[]);
    cmd.env("HOME", &elsewhere);
    common::run(cmd.output().unwrap())
        .failure(1)
        .stderr_has(&format!(
            "HOME is \"{}\", expected \"{}\"",
            elsewhere.display(),
            s.f.home.display()
        ));
}

#[test]
fn a_home_directory_with_a_space_is_single_quoted() {
    let mut f = Fixture::new();
    let spaced = f.root.parent().unwrap().join("my home");
    fs::create_dir(&spaced).unwrap();
    f.home = spaced.canonicalize().unwrap();
    let nix_state = f.root.parent().unwrap().join("nix-state");
    let mut s = Stand {
        f,
        generation: PathBuf::new(),
        nix_state,
    };
    s.rebuild(&text(".x", "x\n"));
    let activate = read(&s.generation.join("activate"));
    assert!(
        activate.contains(&format!(
            "\ncheckPathEq HOME \"$HOME\" '{}'\n",
            s.f.home.display()
        )),
        "{activate}"
    );
    s.activate(&[]).success();
    assert_eq!(read(&s.home(".x")), "x\n");
}

// ---- Releases ---------------------------------------------------------------------------

#[test]
fn release_24_11_has_no_gen_version_and_checks_with_check_username() {
    let s = Stand::new(&format!(
        "{}  stub.release = \"24.11\";\n",
        text(".x", "x\n")
    ));
    assert!(!s.generation.join("gen-version").exists());
    let activate = read(&s.generation.join("activate"));
    let home = s.f.home.display().to_string();
    assert!(activate.contains("\ncheckUsername alice\n"), "{activate}");
    assert!(
        activate.contains(&format!("\ncheckHomeDirectory {home}\n")),
        "{activate}"
    );
    assert!(!activate.contains("checkStringEq"), "{activate}");
    for text in [activate, read(&s.check_script())] {
        assert!(!text.contains("HOME_MANAGER_BACKUP_OVERWRITE"), "{text}");
        assert!(!text.contains("HOME_MANAGER_BACKUP_COMMAND"), "{text}");
    }
    s.activate(&[("USER", "bob")])
        .failure(1)
        .stderr_has("USER is set to \"bob\" but we expect \"alice\"");
}

#[test]
fn old_style_is_release_24_11() {
    let s = Stand::new(&format!("{}  stub.oldStyle = true;\n", text(".x", "x\n")));
    assert!(!s.generation.join("gen-version").exists());
    assert!(!read(&s.check_script()).contains("HOME_MANAGER_BACKUP_OVERWRITE"));
    assert!(read(&s.generation.join("activate")).contains("\ncheckUsername alice\n"));
}

#[test]
fn release_25_11_has_gen_version_and_the_backup_variables_but_check_username() {
    let s = Stand::new(&format!(
        "{}  stub.release = \"25.11\";\n",
        text(".x", "x\n")
    ));
    assert!(s.generation.join("gen-version").is_file());
    let check = read(&s.check_script());
    assert!(check.contains("HOME_MANAGER_BACKUP_OVERWRITE"));
    assert!(check.contains("HOME_MANAGER_BACKUP_COMMAND"));
    assert!(read(&s.generation.join("activate")).contains("\ncheckUsername alice\n"));
}

#[test]
fn release_24_11_ignores_overwrite() {
    let s = Stand::new(&format!(
        "{}  stub.release = \"24.11\";\n",
        text(".x", "managed\n")
    ));
    fs::write(s.home(".x"), "mine\n").unwrap();
    fs::write(s.home(".x.bak"), "older\n").unwrap();
    let before = s.digest();
    let x = s.home(".x").display().to_string();
    s.activate(&[EXT, OVERWRITE])
        .failure(1)
        .stderr_has(&format!(
            "Existing file '{x}.bak' would be clobbered by backing up '{x}'"
        ));
    assert_eq!(s.digest(), before);
}

#[test]
fn release_24_11_ignores_the_backup_command() {
    let s = Stand::new(&format!(
        "{}  stub.release = \"24.11\";\n",
        text(".x", "managed\n")
    ));
    let script = s.f.root.parent().unwrap().join("save");
    executable(&script, "#!/bin/sh\nmv \"$1\" \"$1.saved\"\n");
    let script = script.display().to_string();
    fs::write(s.home(".x"), "mine\n").unwrap();
    let x = s.home(".x");
    // Without an extension the 24.11 check has nothing to fall back on: its own words.
    s.activate(&[("HOME_MANAGER_BACKUP_COMMAND", &script)])
        .failure(1)
        .stderr_has(&format!(
            "Existing file '{}' is in the way of '{}'",
            x.display(),
            s.home_files().join(".x").display()
        ));
    // With one, the file is moved to .bak and the command never runs.
    s.activate(&[("HOME_MANAGER_BACKUP_COMMAND", &script), EXT])
        .success();
    assert_eq!(read(&s.home(".x.bak")), "mine\n");
    assert!(!s.home(".x.saved").exists());
    assert!(is_hm_link(&x));
}

// ---- Check step: forced paths -----------------------------------------------------------

#[test]
fn forcing_a_path_forces_every_target_it_prefixes() {
    // Forcing `.c` forces `.config/x` too: its differing file is replaced without a check.
    let s = Stand::new(&format!(
        "{}{}",
        forced(".c", "c\n"),
        text(".config/x", "managed\n")
    ));
    fs::create_dir(s.home(".config")).unwrap();
    fs::write(s.home(".config/x"), "mine\n").unwrap();
    s.activate(&[VERBOSE]).success().stdout_has(&format!(
        "Skipping collision check for {}",
        s.home(".config/x").display()
    ));
    assert!(is_hm_link(&s.home(".config/x")));
    assert_eq!(read(&s.home(".config/x")), "managed\n");
}

#[test]
fn forced_paths_are_bash_glob_patterns() {
    // `f[1]` forced is the pattern `$HOME/f[1]*`: it matches `f1`, but not `f[1]` itself.
    let s = Stand::new(&format!("{}{}", forced("f[1]", "a\n"), text("f1", "b\n")));
    fs::write(s.home("f1"), "mine\n").unwrap();
    fs::write(s.home("f[1]"), "mine\n").unwrap();
    s.check(&["f1"], &[VERBOSE]).success().stdout_has(&format!(
        "Skipping collision check for {}",
        s.home("f1").display()
    ));
    s.check(&["f[1]"], &[]).failure(1).stderr_has(&format!(
        "Existing file '{}' would be clobbered",
        s.home("f[1]").display()
    ));
    // `*` and `?` likewise: forcing `a*` forces `ab`.
    let mut s = s;
    s.rebuild(&format!("{}{}", forced("a*", "a\n"), text("ab?", "b\n")));
    fs::write(s.home("ab?"), "mine\n").unwrap();
    s.check(&["ab?"], &[]).success();
}

// ---- Check step: symlinks ---------------------------------------------------------------

#[test]
fn a_home_manager_link_is_not_a_collision() {
    let mut s = Stand::new(&text(".x", "one\n"));
    s.activate(&[]).success();
    assert!(is_hm_link(&s.home(".x")));
    // The next generation has other content: the old link is Home Manager's all the same.
    s.rebuild(&text(".x", "two\n"));
    s.check(&[".x"], &[]).success();
    s.activate(&[]).success();
    assert_eq!(read(&s.home(".x")), "two\n");
    assert_eq!(
        fs::read_link(s.home(".x")).unwrap(),
        s.home_files().join(".x")
    );
}

#[test]
fn a_link_is_home_managers_only_by_its_own_text_under_the_store() {
    // A look-alike `*-home-manager-files` outside the store is foreign, and so is a link
    // to a Home Manager link (its own text does not match, whatever it resolves to).
    let mut s = Stand::new(&text(".x", "one\n"));
    s.activate(&[]).success();
    let fake = s.f.root.parent().unwrap().join("abc-home-manager-files");
    fs::create_dir(&fake).unwrap();
    fs::write(fake.join(".x"), "fake\n").unwrap();
    s.rebuild(&format!("{}{}", text(".x", "two\n"), text(".y", "one\n")));
    fs::remove_file(s.home(".x")).unwrap();
    symlink(fake.join(".x"), s.home(".x")).unwrap();
    s.check(&[".x"], &[]).failure(1).stderr_has(&format!(
        "Existing file '{}' would be clobbered",
        s.home(".x").display()
    ));
    // .y: a link to a link into the store whose content differs.
    let first = s.home("first");
    symlink(s.home_files().join(".x"), &first).unwrap();
    symlink(&first, s.home(".y")).unwrap();
    s.check(&[".y"], &[]).failure(1).stderr_has(&format!(
        "Existing file '{}' would be clobbered",
        s.home(".y").display()
    ));
}

#[test]
fn a_dangling_link_is_not_checked_and_is_replaced() {
    let s = Stand::new(&text(".x", "managed\n"));
    symlink("/nonexistent/target", s.home(".x")).unwrap();
    s.check(&[".x"], &[]).success();
    let run = s.activate(&[]);
    run.success();
    lacks(&run, "in the way");
    assert!(is_hm_link(&s.home(".x")));
    assert_eq!(read(&s.home(".x")), "managed\n");
}

#[test]
fn an_identical_foreign_link_is_replaced() {
    let s = Stand::new(&text(".x", "same\n"));
    let mine = s.outside("mine", "same\n");
    symlink(&mine, s.home(".x")).unwrap();
    s.activate(&[EXT])
        .success()
        .stderr_has("will be skipped since they are the same");
    assert!(is_hm_link(&s.home(".x")));
    assert!(!s.home(".x.bak").exists());
    assert_eq!(read(&mine), "same\n");
}

#[test]
fn a_differing_foreign_link_is_an_error_even_with_ext_or_command_and_nothing_changes() {
    let s = Stand::new(&format!("{}{}", text(".x", "managed\n"), text(".y", "y\n")));
    let mine = s.outside("mine", "my own\n");
    symlink(&mine, s.home(".x")).unwrap();
    let before = s.digest();
    let command = ("HOME_MANAGER_BACKUP_COMMAND", "true");
    for vars in [&[][..], &[EXT, OVERWRITE][..], &[command][..]] {
        s.activate(vars).failure(1).stderr_has(&format!(
            "Existing file '{}' would be clobbered",
            s.home(".x").display()
        ));
        assert_eq!(s.digest(), before);
    }
}

// ---- Check and link step: identical files -----------------------------------------------

#[test]
fn an_identical_file_without_ext_or_command_warns_and_stays() {
    let s = Stand::new(&text(".x", "same\n"));
    fs::write(s.home(".x"), "same\n").unwrap();
    s.activate(&[]).success().stderr_has(&format!(
        "Existing file '{}' is in the way of '{}', will be skipped since they are the same",
        s.home(".x").display(),
        s.home_files().join(".x").display()
    ));
    assert!(is_plain_file(&s.home(".x")));
    assert!(!s.home(".x.bak").exists());
}

#[test]
fn an_identical_file_with_ext_is_moved_to_bak() {
    let s = Stand::new(&text(".x", "same\n"));
    fs::write(s.home(".x"), "same\n").unwrap();
    s.activate(&[EXT])
        .success()
        .stderr_has("will be skipped since they are the same");
    assert!(is_plain_file(&s.home(".x.bak")));
    assert_eq!(read(&s.home(".x.bak")), "same\n");
    assert!(is_hm_link(&s.home(".x")));
}

#[test]
fn an_identical_file_is_moved_over_an_existing_bak() {
    // The data loss Home Manager does: the check lets an identical file pass, and the
    // link step's plain mv replaces the old backup.
    let s = Stand::new(&text(".x", "same\n"));
    fs::write(s.home(".x"), "same\n").unwrap();
    fs::write(s.home(".x.bak"), "precious\n").unwrap();
    s.activate(&[EXT]).success();
    assert_eq!(read(&s.home(".x.bak")), "same\n");
    assert!(is_hm_link(&s.home(".x")));
}

#[test]
fn a_bak_directory_receives_the_file_inside_it() {
    let s = Stand::new(&text(".x", "same\n"));
    fs::write(s.home(".x"), "same\n").unwrap();
    fs::create_dir(s.home(".x.bak")).unwrap();
    fs::write(s.home(".x.bak/kept"), "k\n").unwrap();
    s.activate(&[EXT]).success();
    assert_eq!(read(&s.home(".x.bak/.x")), "same\n");
    assert_eq!(read(&s.home(".x.bak/kept")), "k\n");
    assert!(is_hm_link(&s.home(".x")));
}

// ---- Check and link step: differing files and backups ----------------------------------

#[test]
fn a_differing_file_without_ext_or_command_is_an_error() {
    let s = Stand::new(&text(".x", "managed\n"));
    fs::write(s.home(".x"), "mine\n").unwrap();
    let before = s.digest();
    s.activate(&[]).failure(1).stderr_has(&format!(
        "Existing file '{}' would be clobbered",
        s.home(".x").display()
    ));
    assert_eq!(s.digest(), before);
}

#[test]
fn a_differing_file_with_ext_is_moved_to_bak() {
    let s = Stand::new(&text(".x", "managed\n"));
    fs::write(s.home(".x"), "mine\n").unwrap();
    let x = s.home(".x").display().to_string();
    s.activate(&[EXT]).success().stderr_has(&format!(
        "Existing file '{x}' is in the way of '{}', will be moved to '{x}.bak'",
        s.home_files().join(".x").display()
    ));
    assert_eq!(read(&s.home(".x.bak")), "mine\n");
    assert!(is_hm_link(&s.home(".x")));
}

#[test]
fn an_existing_bak_blocks_a_differing_file() {
    let s = Stand::new(&format!("{}{}", text(".x", "managed\n"), text(".y", "y\n")));
    fs::write(s.home(".x"), "mine\n").unwrap();
    fs::write(s.home(".x.bak"), "older\n").unwrap();
    let before = s.digest();
    let x = s.home(".x").display().to_string();
    s.activate(&[EXT]).failure(1).stderr_has(&format!(
        "Existing file '{x}.bak' would be clobbered by backing up '{x}'"
    ));
    assert_eq!(s.digest(), before);
}

#[test]
fn overwrite_replaces_an_existing_bak() {
    let s = Stand::new(&text(".x", "managed\n"));
    fs::write(s.home(".x"), "mine\n").unwrap();
    fs::write(s.home(".x.bak"), "older\n").unwrap();
    s.activate(&[EXT, OVERWRITE])
        .success()
        .stderr_has("Backup will be clobbered due to HOME_MANAGER_BACKUP_OVERWRITE=1");
    assert_eq!(read(&s.home(".x.bak")), "mine\n");
    assert!(is_hm_link(&s.home(".x")));
}

#[test]
fn a_dangling_bak_counts_as_absent_and_is_replaced() {
    let s = Stand::new(&text(".x", "managed\n"));
    fs::write(s.home(".x"), "mine\n").unwrap();
    symlink("/nonexistent/backup", s.home(".x.bak")).unwrap();
    s.check(&[".x"], &[EXT]).success();
    s.activate(&[EXT]).success();
    assert!(is_plain_file(&s.home(".x.bak")));
    assert_eq!(read(&s.home(".x.bak")), "mine\n");
    assert!(is_hm_link(&s.home(".x")));
}

#[test]
fn overwrite_cannot_remove_a_bak_directory_so_the_file_moves_inside() {
    let s = Stand::new(&text(".x", "managed\n"));
    fs::write(s.home(".x"), "mine\n").unwrap();
    fs::create_dir(s.home(".x.bak")).unwrap();
    s.activate(&[EXT, OVERWRITE]).success();
    assert_eq!(read(&s.home(".x.bak/.x")), "mine\n");
    assert!(is_hm_link(&s.home(".x")));
}

#[test]
fn a_backup_command_runs_on_the_target_instead_of_ext() {
    let s = Stand::new(&text(".x", "managed\n"));
    let script = s.f.root.parent().unwrap().join("save");
    executable(&script, "#!/bin/sh\nmv \"$1\" \"$1.saved\"\n");
    let script = script.display().to_string();
    fs::write(s.home(".x"), "mine\n").unwrap();
    // The command wins over the extension, and an existing .bak is not in its way.
    fs::write(s.home(".x.bak"), "older\n").unwrap();
    s.activate(&[("HOME_MANAGER_BACKUP_COMMAND", &script), EXT])
        .success();
    assert_eq!(read(&s.home(".x.saved")), "mine\n");
    assert_eq!(read(&s.home(".x.bak")), "older\n");
    assert!(is_hm_link(&s.home(".x")));
}

#[test]
fn a_backup_command_is_split_into_words() {
    let s = Stand::new(&text(".x", "managed\n"));
    fs::write(s.home(".x"), "mine\n").unwrap();
    let log = s.f.root.parent().unwrap().join("log");
    let command = format!("cp -p --backup=numbered -t {}", log.display());
    fs::create_dir(&log).unwrap();
    s.activate(&[("HOME_MANAGER_BACKUP_COMMAND", &command)])
        .success();
    assert_eq!(read(&log.join(".x")), "mine\n");
    // cp left the file in place: the link step replaces it.
    assert!(is_hm_link(&s.home(".x")));
}

// ---- Directories ------------------------------------------------------------------------

#[test]
fn a_directory_in_the_way_with_ext_is_moved_then_linked() {
    let s = Stand::new(&text(".x", "managed\n"));
    fs::create_dir(s.home(".x")).unwrap();
    fs::write(s.home(".x/inner"), "i\n").unwrap();
    s.activate(&[EXT]).success();
    assert!(is_dir(&s.home(".x.bak")));
    assert_eq!(read(&s.home(".x.bak/inner")), "i\n");
    assert!(is_hm_link(&s.home(".x")));
}

#[test]
fn a_directory_in_the_way_without_ext_is_an_error() {
    let s = Stand::new(&text(".x", "managed\n"));
    fs::create_dir(s.home(".x")).unwrap();
    let before = s.digest();
    s.activate(&[]).failure(1).stderr_has(&format!(
        "Existing file '{}' would be clobbered",
        s.home(".x").display()
    ));
    assert_eq!(s.digest(), before);
}

// ---- Forced files -----------------------------------------------------------------------

#[test]
fn a_forced_file_with_ext_is_moved_to_bak() {
    let s = Stand::new(&forced(".x", "managed\n"));
    fs::write(s.home(".x"), "mine\n").unwrap();
    fs::write(s.home(".x.bak"), "older\n").unwrap();
    // Not checked, so an existing .bak does not stop it: the plain mv replaces it.
    s.activate(&[EXT]).success();
    assert_eq!(read(&s.home(".x.bak")), "mine\n");
    assert!(is_hm_link(&s.home(".x")));
}

#[test]
fn a_forced_file_without_ext_is_replaced_and_its_content_is_gone() {
    let s = Stand::new(&forced(".x", "managed\n"));
    fs::write(s.home(".x"), "mine\n").unwrap();
    s.activate(&[]).success();
    assert!(is_hm_link(&s.home(".x")));
    assert_eq!(read(&s.home(".x")), "managed\n");
    assert_eq!(
        fs::read_dir(&s.f.home).unwrap().count(),
        2,
        "only .x and .local"
    );
}

#[test]
fn a_forced_directory_without_ext_fails_the_link_step_midway() {
    let mut s = Stand::new(&text(".old", "o\n"));
    s.activate(&[]).success();
    let first = s.generation.clone();
    s.rebuild(&forced(".d", "managed\n"));
    fs::create_dir(s.home(".d")).unwrap();
    fs::write(s.home(".d/inner"), "i\n").unwrap();
    s.activate(&[])
        .failure(1)
        .stderr_has("cannot overwrite directory");
    assert!(is_dir(&s.home(".d")));
    // Cleanup of the first generation already happened, the directory is still there, and
    // activation stopped before it recorded the new generation.
    assert!(fs::symlink_metadata(s.home(".old")).is_err());
    assert_eq!(read(&s.home(".d/inner")), "i\n");
    assert_eq!(fs::read_link(s.gc_root()).unwrap(), first);
}

// ---- Link step details ------------------------------------------------------------------

#[test]
fn a_link_already_pointing_at_the_new_source_is_left_alone() {
    let s = Stand::new(&text(".x", "x\n"));
    s.activate(&[]).success();
    let before = fs::symlink_metadata(s.home(".x"))
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.activate(&[]).success();
    let after = fs::symlink_metadata(s.home(".x"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);
}

#[test]
fn a_target_under_a_symlinked_directory_is_linked_through_it() {
    let s = Stand::new(&text(".config/app/conf", "managed\n"));
    let real = s.f.root.parent().unwrap().join("real-config");
    fs::create_dir(&real).unwrap();
    fs::create_dir(s.home(".config")).unwrap();
    symlink(&real, s.home(".config/app")).unwrap();
    s.activate(&[]).success();
    assert!(is_hm_link(&real.join("conf")));
    assert_eq!(read(&s.home(".config/app/conf")), "managed\n");
}

#[test]
fn odd_file_names_are_linked_and_backed_up_verbatim() {
    let names = [
        "it's $x.txt",
        "dir with space/f g",
        "star*",
        "br[ack]et",
        "q?",
    ];
    let body: String = names.iter().map(|n| text(n, "m\n")).collect();
    let s = Stand::new(&body);
    fs::write(s.home("it's $x.txt"), "mine\n").unwrap();
    s.activate(&[EXT]).success();
    for n in names {
        assert!(is_hm_link(&s.home(n)), "{n}");
        assert_eq!(read(&s.home(n)), "m\n");
    }
    assert_eq!(read(&s.home("it's $x.txt.bak")), "mine\n");
}

#[test]
fn an_out_of_store_source_is_linked_through_home_files_even_if_missing() {
    let target = "/nonexistent/out-of-store";
    let s = Stand::new(&format!(
        "  home.file.\".x\".source = {};\n",
        nix_str(target)
    ));
    assert_eq!(
        fs::read_link(s.home_files().join(".x")).unwrap(),
        Path::new(target)
    );
    s.activate(&[]).success();
    assert_eq!(
        fs::read_link(s.home(".x")).unwrap(),
        s.home_files().join(".x")
    );
}

#[test]
fn activation_hooks_run_after_linking() {
    let s = Stand::new(&format!(
        "{}  home.activation.copy = \"cp \\\"$HOME/.x\\\" \\\"$HOME/.copied\\\"\";\n",
        text(".x", "x\n")
    ));
    s.activate(&[]).success();
    assert_eq!(read(&s.home(".copied")), "x\n");
}

#[test]
fn dry_run_prints_and_changes_nothing() {
    let mut s = Stand::new(&text(".old", "o\n"));
    s.activate(&[]).success();
    s.rebuild(&format!("{}{}", text(".x", "x\n"), text(".y", "y\n")));
    fs::write(s.home(".x"), "mine\n").unwrap();
    let before = s.digest();
    let run = s.activate(&[EXT, ("DRY_RUN", "1")]);
    run.success()
        .stdout_has(&format!("mv -- {x} {x}.bak", x = s.home(".x").display()))
        .stdout_has("ln -");
    assert_eq!(s.digest(), before);
}

#[test]
fn the_gc_root_names_the_generation_after_activation() {
    let s = Stand::new(&text(".x", "x\n"));
    s.activate(&[]).success();
    assert_eq!(fs::read_link(s.gc_root()).unwrap(), s.generation);
}

// ---- Cleanup ----------------------------------------------------------------------------

#[test]
fn cleanup_removes_only_home_manager_links_and_then_empty_parents() {
    let mut s = Stand::new(&format!(
        "{}{}{}{}",
        text(".a/b/c", "c\n"),
        text(".k/gone", "g\n"),
        text(".user", "u\n"),
        text(".stay", "s\n")
    ));
    s.activate(&[]).success();
    // The user replaced one link with a file of their own and put a file beside another.
    fs::remove_file(s.home(".user")).unwrap();
    fs::write(s.home(".user"), "mine\n").unwrap();
    fs::write(s.home(".k/mine"), "m\n").unwrap();
    s.rebuild(&text(".stay", "s\n"));
    s.activate(&[]).success().stderr_has(&format!(
        "Path '{}' does not link into a Home Manager generation. Skipping delete.",
        s.home(".user").display()
    ));
    assert!(!s.home(".a").exists(), "empty parents go");
    assert!(fs::symlink_metadata(s.home(".k/gone")).is_err());
    assert_eq!(read(&s.home(".k/mine")), "m\n");
    assert_eq!(read(&s.home(".user")), "mine\n");
    assert!(is_hm_link(&s.home(".stay")));
}

#[test]
fn cleanup_keeps_a_link_into_a_look_alike_outside_the_store() {
    let mut s = Stand::new(&text(".x", "x\n"));
    s.activate(&[]).success();
    let fake = s.f.root.parent().unwrap().join("abc-home-manager-files");
    fs::create_dir(&fake).unwrap();
    fs::write(fake.join(".x"), "x\n").unwrap();
    fs::remove_file(s.home(".x")).unwrap();
    symlink(fake.join(".x"), s.home(".x")).unwrap();
    s.rebuild(&text(".z", "z\n"));
    s.activate(&[])
        .success()
        .stderr_has("does not link into a Home Manager generation. Skipping delete.");
    assert_eq!(fs::read_link(s.home(".x")).unwrap(), fake.join(".x"));
}

#[test]
fn cleanup_removes_any_home_manager_link_not_only_the_old_generations() {
    // The test is the link's text, not which generation it names.
    let mut s = Stand::new(&text(".x", "x\n"));
    s.activate(&[]).success();
    let other = s.rebuild(&text(".z", "z\n"));
    fs::remove_file(s.home(".x")).unwrap();
    symlink(
        fs::canonicalize(other.join("home-files"))
            .unwrap()
            .join(".z"),
        s.home(".x"),
    )
    .unwrap();
    s.activate(&[]).success();
    assert!(fs::symlink_metadata(s.home(".x")).is_err());
}

// ---- Profile migration ------------------------------------------------------------------

/// Per-user profile links of generation `n` in `dir`, as nix-env leaves them.
fn profile_links(dir: &Path, generation: &Path) {
    fs::create_dir_all(dir).unwrap();
    symlink(generation, dir.join("home-manager-1-link")).unwrap();
    symlink("home-manager-1-link", dir.join("home-manager")).unwrap();
}

#[test]
fn migrate_profile_moves_per_user_links_into_an_empty_xdg_profiles_dir() {
    let s = Stand::new(&text(".x", "x\n"));
    let per_user = s.nix_state.join("profiles/per-user").join(&s.f.user);
    profile_links(&per_user, &s.generation);
    let xdg = s.home(".local/state/nix/profiles");
    fs::create_dir_all(&xdg).unwrap();
    s.activate(&[])
        .success()
        .stdout_has("Migrating profile from");
    assert_eq!(
        fs::read_link(xdg.join("home-manager")).unwrap(),
        Path::new("home-manager-1-link")
    );
    assert_eq!(
        fs::read_link(xdg.join("home-manager-1-link")).unwrap(),
        s.generation
    );
    assert_eq!(fs::read_dir(&per_user).unwrap().count(), 0);
}

#[test]
fn migrate_profile_only_deletes_the_old_links_when_xdg_has_a_profile() {
    let s = Stand::new(&text(".x", "x\n"));
    let per_user = s.nix_state.join("profiles/per-user").join(&s.f.user);
    profile_links(&per_user, &s.generation);
    let xdg = s.home(".local/state/nix/profiles");
    fs::create_dir_all(&xdg).unwrap();
    symlink("home-manager-7-link", xdg.join("home-manager")).unwrap();
    symlink(&s.generation, xdg.join("home-manager-7-link")).unwrap();
    let run = s.activate(&[]);
    run.success();
    lacks(&run, "Migrating profile");
    assert_eq!(fs::read_dir(&per_user).unwrap().count(), 0);
    assert_eq!(fs::read_dir(&xdg).unwrap().count(), 2);
    assert_eq!(
        fs::read_link(xdg.join("home-manager")).unwrap(),
        Path::new("home-manager-7-link")
    );
}

#[test]
fn migrate_profile_needs_the_xdg_profiles_dir() {
    let s = Stand::new(&text(".x", "x\n"));
    let per_user = s.nix_state.join("profiles/per-user").join(&s.f.user);
    profile_links(&per_user, &s.generation);
    s.activate(&[]).success();
    assert!(!s.home(".local/state/nix").exists());
    assert_eq!(fs::read_dir(&per_user).unwrap().count(), 2);
}

#[test]
fn migrate_profile_also_moves_home_managers_own_old_profiles_dir() {
    let s = Stand::new(&text(".x", "x\n"));
    let old = s.home(".local/state/home-manager/profiles");
    profile_links(&old, &s.generation);
    let xdg = s.home(".local/state/nix/profiles");
    fs::create_dir_all(&xdg).unwrap();
    s.activate(&[]).success();
    assert!(xdg.join("home-manager").exists());
    assert_eq!(fs::read_dir(&old).unwrap().count(), 0);
}

#[test]
fn migrate_profile_happens_even_in_a_dry_run() {
    let s = Stand::new(&text(".x", "x\n"));
    let per_user = s.nix_state.join("profiles/per-user").join(&s.f.user);
    profile_links(&per_user, &s.generation);
    let xdg = s.home(".local/state/nix/profiles");
    fs::create_dir_all(&xdg).unwrap();
    s.activate(&[("DRY_RUN", "1")]).success();
    assert!(xdg.join("home-manager").exists());
    assert!(fs::symlink_metadata(s.home(".x")).is_err());
}

// ---- The check script on its own --------------------------------------------------------

#[test]
fn the_check_script_runs_standalone_on_a_subset_and_only_reads() {
    let s = Stand::new(&format!("{}{}", text(".a", "a\n"), text(".b", "b\n")));
    fs::write(s.home(".a"), "mine\n").unwrap();
    let before = s.digest();
    s.check(&[".b"], &[]).success();
    s.check(&[], &[]).success();
    s.check(&[".a", ".b"], &[]).failure(1).stderr_has(&format!(
        "Existing file '{}' would be clobbered",
        s.home(".a").display()
    ));
    s.check(&[".a"], &[EXT])
        .success()
        .stderr_has("will be moved to");
    assert_eq!(s.digest(), before);
}
