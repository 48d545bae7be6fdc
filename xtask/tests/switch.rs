//! `switch`, `build-home`, `generations`, `rollback` against real nix and real profiles in a
//! temporary `$HOME` (fixture flakes with the stub activation of ../shared/hm-contract.md).

mod common;

use std::{
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use common::{Fixture, nix_str, other_system};

fn fixture(files: &[(&str, &str)]) -> Fixture {
    Fixture::with_home_files(files)
}

fn profiles(f: &Fixture) -> PathBuf {
    f.profiles()
}

fn current_link(f: &Fixture) -> String {
    fs::read_link(profiles(f).join("home-manager"))
        .unwrap()
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_hm_link(path: &Path) -> bool {
    fs::read_link(path).is_ok_and(|t| t.display().to_string().contains("-home-manager-files/"))
}

#[test]
fn first_install_into_an_empty_home_creates_the_xdg_profile() {
    let mut f = Fixture::new();
    // A name no other test (or machine user) has, so /nix/var/nix/profiles/per-user/<it>
    // cannot exist and the first-install path is taken.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    f.user = format!("fresh{}x{nanos}", std::process::id());
    f.home_with_files(
        &f.user,
        &[(".bashrc", "echo hi\n"), (".config/app/conf", "x = 1\n")],
    )
    .commit();
    assert_eq!(fs::read_dir(&f.home).unwrap().count(), 0);

    let run = f.xtask(&["switch"]);
    run.success()
        .stderr_has("first install")
        .stderr_has(".local/state/nix/profiles");
    assert!(
        !Path::new("/nix/var/nix/profiles/per-user")
            .join(&f.user)
            .exists()
    );
    assert_eq!(current_link(&f), "home-manager-1-link");
    let generation = fs::read_link(profiles(&f).join("home-manager-1-link")).unwrap();
    assert!(
        generation
            .display()
            .to_string()
            .ends_with("-home-manager-generation"),
        "{}",
        generation.display()
    );
    assert!(is_hm_link(&f.home.join(".bashrc")));
    assert_eq!(read(&f.home.join(".bashrc")), "echo hi\n");
    assert_eq!(read(&f.home.join(".config/app/conf")), "x = 1\n");
    // Home Manager's GC root of the active generation.
    let root = f
        .home
        .join(".local/state/home-manager/gcroots/current-home");
    assert_eq!(fs::read_link(root).unwrap(), generation);
}

#[test]
fn second_switch_after_a_change_links_new_files_and_removes_stale_ones() {
    let f = fixture(&[(".bashrc", "one\n"), (".profile", "p\n")]);
    f.xtask(&["switch"]).success();
    f.home_with_files(&f.user, &[(".bashrc", "two\n"), (".config/new", "n\n")])
        .commit();
    f.xtask(&["switch"]).success();
    assert_eq!(current_link(&f), "home-manager-2-link");
    assert!(profiles(&f).join("home-manager-1-link").exists());
    assert_eq!(read(&f.home.join(".bashrc")), "two\n");
    assert_eq!(read(&f.home.join(".config/new")), "n\n");
    assert!(
        fs::symlink_metadata(f.home.join(".profile")).is_err(),
        ".profile of generation 1 should be gone"
    );
}

#[test]
fn existing_bashrc_is_backed_up_byte_for_byte() {
    let f = fixture(&[(".bashrc", "managed\n")]);
    // Not UTF-8, no final newline: the backup must be the same bytes.
    let original: &[u8] = b"# mine\n\xff\xfe alias ll='ls -l'";
    fs::write(f.home.join(".bashrc"), original).unwrap();
    f.xtask(&["switch"])
        .success()
        .stderr_has("backup   ~/.bashrc → ~/.bashrc.bak");
    assert_eq!(fs::read(f.home.join(".bashrc.bak")).unwrap(), original);
    assert!(is_hm_link(&f.home.join(".bashrc")));
    assert_eq!(read(&f.home.join(".bashrc")), "managed\n");
}

#[test]
fn an_existing_backup_blocks_and_nothing_changes() {
    let f = fixture(&[(".bashrc", "managed\n"), (".other", "o\n")]);
    fs::write(f.home.join(".bashrc"), "mine\n").unwrap();
    fs::write(f.home.join(".bashrc.bak"), "older backup\n").unwrap();
    let before = Fixture::tree_digest(&f.home);
    f.xtask(&["switch"])
        .failure(1)
        .stderr_has("blocked: ~/.bashrc: its backup ~/.bashrc.bak exists")
        .stderr_has("--overwrite-backup")
        .stderr_has("nothing was changed");
    assert_eq!(Fixture::tree_digest(&f.home), before);

    // --json: the plan on stdout, still exit 1, still nothing changed.
    let run = f.xtask(&["switch", "--json"]);
    run.failure(1);
    let v = run.json();
    let plan = v["preflight"]["plan"].as_array().unwrap();
    let blocked: Vec<_> = plan.iter().filter(|s| s["action"] == "block").collect();
    assert_eq!(blocked.len(), 1, "{v}");
    assert_eq!(
        blocked[0]["path"],
        f.home.join(".bashrc").display().to_string()
    );
    assert!(
        blocked[0]["reason"]
            .as_str()
            .unwrap()
            .contains("~/.bashrc.bak exists")
    );
    let other = plan.iter().find(|s| s["action"] == "link").unwrap();
    assert_eq!(other["path"], f.home.join(".other").display().to_string());
    assert_eq!(v["commands"], serde_json::json!([]));
    assert_eq!(Fixture::tree_digest(&f.home), before);

    // The flag the message names resolves it: the old backup is replaced.
    f.xtask(&["switch", "--overwrite-backup"]).success();
    assert_eq!(read(&f.home.join(".bashrc.bak")), "mine\n");
    assert_eq!(read(&f.home.join(".bashrc")), "managed\n");
}

#[test]
fn a_foreign_symlink_blocks_and_nothing_changes() {
    let f = fixture(&[(".bashrc", "managed\n")]);
    let dotfiles = f.root.parent().unwrap().join("dotfiles-bashrc");
    fs::write(&dotfiles, "my own\n").unwrap();
    symlink(&dotfiles, f.home.join(".bashrc")).unwrap();
    let before = Fixture::tree_digest(&f.home);
    f.xtask(&["switch"])
        .failure(1)
        .stderr_has("blocked: ~/.bashrc: a symlink to")
        .stderr_has("Home Manager did not make");
    assert_eq!(Fixture::tree_digest(&f.home), before);
    assert!(
        fs::symlink_metadata(profiles(&f).join("home-manager")).is_err(),
        "the profile must not be set"
    );
}

#[test]
fn a_directory_where_a_file_goes_is_backed_up_or_blocks_without_an_extension() {
    let f = fixture(&[(".bashrc", "managed\n")]);
    fs::create_dir(f.home.join(".bashrc")).unwrap();
    fs::write(f.home.join(".bashrc/inside"), "mine\n").unwrap();
    // Without a backup extension Home Manager's check refuses it.
    let before = Fixture::tree_digest(&f.home);
    f.xtask(&["switch", "-b", ""])
        .failure(1)
        .stderr_has("blocked: ~/.bashrc: it exists (a directory) and would be clobbered")
        .stderr_has("-b EXT");
    assert_eq!(Fixture::tree_digest(&f.home), before);
    // With one, the directory is moved aside whole, as Home Manager does.
    f.xtask(&["switch"])
        .success()
        .stderr_has("backup   ~/.bashrc → ~/.bashrc.bak");
    assert_eq!(read(&f.home.join(".bashrc.bak/inside")), "mine\n");
    assert!(is_hm_link(&f.home.join(".bashrc")));
}

#[test]
fn an_identical_file_is_kept_without_an_extension_and_backed_up_with_one() {
    let f = fixture(&[(".bashrc", "same\n"), (".other", "o\n")]);
    fs::write(f.home.join(".bashrc"), "same\n").unwrap();
    // No extension, no command: left in place (Home Manager only warns).
    let v = f
        .xtask(&["switch", "--json", "-b", ""])
        .success()
        .stderr_has("keep     ~/.bashrc (identical, left in place)")
        .json();
    let step = |v: &serde_json::Value, name: &str| {
        v["preflight"]["plan"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["path"] == f.home.join(name).display().to_string())
            .cloned()
            .unwrap()
    };
    assert_eq!(step(&v, ".bashrc")["action"], "keep");
    assert_eq!(v["dry_run"], false);
    let meta = fs::symlink_metadata(f.home.join(".bashrc")).unwrap();
    assert!(meta.is_file(), "the identical file must stay a plain file");
    assert!(!f.home.join(".bashrc.bak").exists());
    assert!(is_hm_link(&f.home.join(".other")));

    // With the repo's extension Home Manager moves even an identical file aside.
    let g = fixture(&[(".bashrc", "same\n")]);
    fs::write(g.home.join(".bashrc"), "same\n").unwrap();
    g.xtask(&["switch"])
        .success()
        .stderr_has("backup   ~/.bashrc → ~/.bashrc.bak");
    assert_eq!(read(&g.home.join(".bashrc.bak")), "same\n");
    assert!(is_hm_link(&g.home.join(".bashrc")));
}

#[test]
fn a_concurrent_switch_is_refused_naming_the_holder() {
    let f = fixture(&[(".bashrc", "managed\n")]);
    let state = f.home.join(".local/state/home-manager");
    fs::create_dir_all(&state).unwrap();
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(state.join("switch.lock"))
        .unwrap();
    lock.write_all(b"pid 4242: cargo xtask switch").unwrap();
    lock.try_lock().unwrap();
    f.xtask(&["switch"])
        .failure(1)
        .stderr_has("another switch, rollback or gc of alice's home is running")
        .stderr_has("pid 4242");
    assert!(!f.home.join(".bashrc").exists());
    assert!(fs::symlink_metadata(profiles(&f).join("home-manager")).is_err());
    drop(lock);
    f.xtask(&["switch"]).success();
    assert!(is_hm_link(&f.home.join(".bashrc")));
}

#[test]
fn rollback_restores_the_previous_files_and_profile() {
    let f = fixture(&[(".bashrc", "one\n"), (".old", "o\n")]);
    f.xtask(&["rollback"])
        .failure(1)
        .stderr_has("nothing to roll back to");
    f.xtask(&["switch"]).success();
    f.xtask(&["rollback"])
        .failure(1)
        .stderr_has("nothing to roll back to: generation 1 is the oldest");
    f.home_with_files(&f.user, &[(".bashrc", "two\n"), (".new", "n\n")])
        .commit();
    f.xtask(&["switch"]).success();

    let dry = f.xtask(&["rollback", "--dry-run"]);
    // An explicit id, never `--rollback` ("whatever is previous when nix-env runs").
    dry.success()
        .stdout_has("--switch-generation 1")
        .stdout_has("activate --driver-version 1");
    assert_eq!(current_link(&f), "home-manager-2-link");

    f.xtask(&["rollback"]).success();
    assert_eq!(current_link(&f), "home-manager-1-link");
    assert_eq!(read(&f.home.join(".bashrc")), "one\n");
    assert_eq!(read(&f.home.join(".old")), "o\n");
    assert!(fs::symlink_metadata(f.home.join(".new")).is_err());

    f.xtask(&["rollback", "--to", "9"])
        .failure(1)
        .stderr_has("there is no generation 9");
    f.xtask(&["rollback", "--to", "2"]).success();
    assert_eq!(current_link(&f), "home-manager-2-link");
    assert_eq!(read(&f.home.join(".bashrc")), "two\n");
}

#[test]
fn generations_json_lists_ids_newest_first_with_the_current_marker() {
    let f = fixture(&[(".bashrc", "one\n")]);
    f.xtask(&["switch"]).success();
    f.home_with_files(&f.user, &[(".bashrc", "two\n")]).commit();
    f.xtask(&["switch"]).success();

    let gens = f.xtask(&["generations", "--json"]).success().json();
    let gens = gens.as_array().unwrap();
    let ids: Vec<u64> = gens.iter().map(|g| g["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [2, 1]);
    let current: Vec<bool> = gens
        .iter()
        .map(|g| g["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current, [true, false]);
    for g in gens {
        let id = g["id"].as_u64().unwrap();
        let link = fs::read_link(profiles(&f).join(format!("home-manager-{id}-link"))).unwrap();
        assert_eq!(g["path"].as_str().unwrap(), link.display().to_string());
        assert!(g["closure_size"].as_u64().unwrap() > 0, "{g}");
        let date = g["date"].as_str().unwrap();
        assert_eq!(date.len(), "2026-01-01 12:00".len(), "{date}");
        assert_eq!(&date[4..5], "-");
        assert_eq!(&date[10..11], " ");
    }
    let human = f.xtask(&["generations"]).success().stdout.clone();
    assert!(
        human
            .lines()
            .next()
            .unwrap()
            .contains(": id 2 -> /nix/store/"),
        "{human}"
    );
    assert!(
        human.lines().next().unwrap().ends_with("(current)"),
        "{human}"
    );

    f.xtask(&["rollback"]).success();
    let gens = f.xtask(&["generations", "--json"]).success().json();
    assert_eq!(gens[1]["current"], true);
    assert_eq!(gens[0]["current"], false);
}

#[test]
fn a_wrong_architecture_gets_a_clear_error() {
    let f = fixture(&[(".bashrc", "managed\n")]);
    let sys = other_system();
    f.xtask(&["switch", "--system", sys])
        .failure(1)
        .stderr_has(&format!("for {sys} cannot be activated on this"))
        .stderr_has("drop --system");
    assert!(!f.home.join(".bashrc").exists());
    // build-home may build for another system, but says what it needs when it cannot.
    f.xtask(&["build-home", "--system", sys])
        .failure(1)
        .stderr_has("drop --system to build for this machine");
    // One the repo does not support at all is a usage error.
    f.xtask(&["switch", "--system", "sparc-plan9"])
        .failure(2)
        .stderr_has("is not supported");
}

#[test]
fn build_home_prints_the_generation_and_keeps_a_gc_root() {
    let f = fixture(&[(".bashrc", "managed\n")]);
    let run = f.xtask(&["build-home", "--json"]);
    let v = run.success().stderr_has("(detected").json();
    assert_eq!(v["user"], "alice");
    let path = v["path"].as_str().unwrap();
    assert!(Path::new(path).join("activate").is_file());
    assert!(Path::new(path).join("gen-version").is_file());
    assert_eq!(
        fs::read_link(f.root.join("result-home-alice")).unwrap(),
        Path::new(path)
    );
    assert!(
        !f.home.join(".bashrc").exists(),
        "build-home must not activate"
    );
}

#[test]
fn integrated_names_are_sent_to_switch_host() {
    let f = fixture(&[(".bashrc", "managed\n")]);
    f.host("ws", None)
        .home_module("carol@ws", "{ ... }: { }\n")
        .home_module("alice@ws", "{ ... }: { }\n")
        .commit();
    f.xtask(&["switch", "alice@ws"])
        .failure(1)
        .stderr_has("integrated homes deploy with `cargo xtask switch --host ws`");
    let mut carol = f.command(&["switch", "carol"]);
    carol.env("USER", "carol");
    let run = common::run(carol.output().unwrap());
    run.failure(1)
        .stderr_has("carol has no standalone home")
        .stderr_has("switch --host ws");
    f.xtask(&["build-home", "alice@ws"])
        .failure(1)
        .stderr_has("switch --host ws");
    f.xtask(&["switch", "nobody"])
        .failure(1)
        .stderr_has("there is no home for nobody");
}

#[test]
fn dry_run_prints_the_commands_and_changes_nothing() {
    let f = fixture(&[(".bashrc", "managed\n")]);
    fs::write(f.home.join(".bashrc"), "mine\n").unwrap();
    let before = Fixture::tree_digest(&f.home);
    let run = f.xtask(&["switch", "--dry-run"]);
    run.success()
        .stdout_has("nix-env --profile ")
        .stdout_has("home-manager --set /nix/store/")
        .stdout_has("HOME_MANAGER_BACKUP_EXT=bak /nix/store/")
        .stdout_has("activate --driver-version 1")
        .stderr_has("backup   ~/.bashrc → ~/.bashrc.bak");
    assert_eq!(Fixture::tree_digest(&f.home), before);

    let v = f
        .xtask(&[
            "switch",
            "--dry-run",
            "--json",
            "-b",
            "old",
            "--overwrite-backup",
        ])
        .success()
        .json();
    assert_eq!(v["dry_run"], true);
    let cmds = v["commands"].as_array().unwrap();
    assert!(
        cmds.last()
            .unwrap()
            .as_str()
            .unwrap()
            .starts_with("HOME_MANAGER_BACKUP_EXT=old HOME_MANAGER_BACKUP_OVERWRITE=1 "),
        "{v}"
    );
    assert_eq!(Fixture::tree_digest(&f.home), before);
}

#[test]
fn a_failed_activation_leaves_the_previous_generation_active() {
    let f = fixture(&[(".bashrc", "one\n")]);
    f.xtask(&["switch"]).success();
    let home = nix_str(&f.home.display().to_string());
    f.home_module(
        &f.user,
        &format!("{{ ... }}: {{\n  home.homeDirectory = {home};\n  home.file.\".bashrc\".text = \"two\\n\";\n  home.activation.boom = \"echo boom >&2; exit 3\";\n}}\n"),
    )
    .commit();
    f.xtask(&["switch"])
        .failure(1)
        .stderr_has("boom")
        .stderr_has("restored generation 1: it is active again");
    assert_eq!(current_link(&f), "home-manager-1-link");
    assert_eq!(read(&f.home.join(".bashrc")), "one\n");
    // The next switch works (the lock was released, the state is consistent).
    f.home_with_files(&f.user, &[(".bashrc", "three\n")])
        .commit();
    f.xtask(&["switch"]).success();
    assert_eq!(read(&f.home.join(".bashrc")), "three\n");
}

#[test]
fn a_nixos_integrated_home_needs_force_standalone() {
    let mut f = fixture(&[(".bashrc", "managed\n")]);
    let units = f.root.parent().unwrap().join("units");
    fs::create_dir_all(&units).unwrap();
    fs::write(units.join("home-manager-alice.service"), "[Service]\n").unwrap();
    f.extra_env
        .insert("XTASK_SYSTEMD_UNIT_DIR".into(), units.display().to_string());
    f.xtask(&["switch"])
        .failure(1)
        .stderr_has("would undo a standalone switch")
        .stderr_has("--force-standalone");
    assert!(!f.home.join(".bashrc").exists());
    f.xtask(&["switch", "--force-standalone"]).success();
    assert!(is_hm_link(&f.home.join(".bashrc")));
}

#[test]
fn mismatched_user_or_home_is_caught_before_anything_changes() {
    let f = fixture(&[]);
    f.home_module(
        "alice",
        "{ ... }: { home.homeDirectory = \"/home/elsewhere\"; home.file.\".x\".text = \"x\"; }\n",
    )
    .commit();
    f.xtask(&["switch"])
        .failure(1)
        .stderr_has("home.homeDirectory = \"/home/elsewhere\" but $HOME is")
        .stderr_has("homes/alice@global/default.nix");
    assert!(fs::symlink_metadata(profiles(&f).join("home-manager")).is_err());

    let mut as_root = f.command(&["switch", "alice"]);
    as_root.env("USER", "root");
    common::run(as_root.output().unwrap())
        .failure(1)
        .stderr_has("you are root, but this is alice's home");
}

#[test]
fn specialisations_activate_as_home_manager_does() {
    let f = fixture(&[]);
    let home = nix_str(&f.home.display().to_string());
    f.home_module(
        "alice",
        &format!(
            "{{ ... }}: {{\n  home.homeDirectory = {home};\n  home.file.\".bashrc\".text = \"base\\n\";\n  specialisation.work.configuration.home.file.\".bashrc\".text = \"work\\n\";\n}}\n"
        ),
    )
    .commit();
    f.xtask(&["switch", "--specialisation", "play"])
        .failure(1)
        .stderr_has("no specialisation play (it has: work)");
    f.xtask(&["switch", "--specialisation", "work"]).success();
    assert_eq!(read(&f.home.join(".bashrc")), "work\n");
    // The profile holds the whole generation, as with home-manager.
    let generation = fs::read_link(profiles(&f).join("home-manager-1-link")).unwrap();
    assert!(generation.join("specialisation/work/activate").is_file());
    // diff compares with what $HOME has (the specialisation), so it sees that a plain
    // switch would change .bashrc back.
    let run = f.xtask(&["diff", "--json"]);
    run.success();
    let changed = run.json()["changed"].clone();
    assert_eq!(changed[0]["path"], ".bashrc", "{changed}");
    assert!(
        changed[0]["diff"]
            .as_str()
            .unwrap()
            .contains("-work\n+base\n"),
        "{changed}"
    );
}

#[test]
fn switch_host_builds_the_nixos_rebuild_command() {
    let f = fixture(&[]);
    f.host("ws", Some("{ system = \"aarch64-linux\"; }\n"))
        .commit();
    let run = f.xtask(&[
        "switch",
        "--host",
        "ws",
        "--target-host",
        "root@ws",
        "--build-host",
        "b",
        "--use-remote-sudo",
        "--dry-run",
    ]);
    let expected = format!(
        "nixos-rebuild switch --flake '{}#ws' --target-host root@ws --build-host b --use-remote-sudo",
        f.root.display()
    );
    run.success()
        .stdout_has(&expected)
        .stderr_has("host ws: aarch64-linux");
    // Standalone-only flags are usage errors with --host, not silently ignored.
    for flag in [
        &["-b", "old"][..],
        &["--json"],
        &["--system", "x86_64-linux"],
    ] {
        let mut args = vec!["switch", "--host", "ws", "--dry-run"];
        args.extend_from_slice(flag);
        f.xtask(&args).failure(2).stderr_has("cannot be used with");
    }
    f.xtask(&["switch", "--host", "nope", "--dry-run"])
        .failure(1)
        .stderr_has("there is no host nope");
    if common_has_no_nixos_rebuild() {
        f.xtask(&["switch", "--host", "ws"])
            .failure(1)
            .stderr_has("nixos-rebuild is not available");
    }
}

fn common_has_no_nixos_rebuild() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).all(|d| !d.join("nixos-rebuild").exists()))
}

#[test]
fn a_backup_command_replaces_the_extension() {
    let f = fixture(&[(".bashrc", "managed\n")]);
    fs::write(f.home.join(".bashrc"), "mine\n").unwrap();
    // With a backup command an existing FILE.bak is not in the way: the command decides.
    fs::write(f.home.join(".bashrc.bak"), "older\n").unwrap();
    let script = f.root.parent().unwrap().join("save");
    fs::write(&script, "#!/bin/sh\nmv \"$1\" \"$1.saved\"\n").unwrap();
    let mut perms = fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&script, perms).unwrap();
    let script = script.display().to_string();
    f.xtask(&["switch", "--backup-command", &script])
        .success()
        .stderr_has("command  ~/.bashrc (the backup command runs on it)");
    assert_eq!(read(&f.home.join(".bashrc.saved")), "mine\n");
    assert_eq!(read(&f.home.join(".bashrc.bak")), "older\n");
    assert!(is_hm_link(&f.home.join(".bashrc")));
}

/// The fixture's home with `.bashrc` = `bashrc` and an activation hook that writes
/// `marker` and then sleeps, so a test can stop the switch in the middle of activation.
fn slow_home(f: &Fixture, bashrc: &str, marker: &Path) {
    let home = nix_str(&f.home.display().to_string());
    let hook = nix_str(&format!("touch '{}'; sleep 60", marker.display()));
    f.home_module(
        &f.user,
        &format!(
            "{{ ... }}: {{\n  home.homeDirectory = {home};\n  home.file.\".bashrc\".text = {};\n  home.activation.slow = {hook};\n}}\n",
            nix_str(bashrc)
        ),
    )
    .commit();
}

/// Runs `switch` in its own process group (as a shell runs a job in the terminal), waits
/// until the slow hook runs, and sends `signal` to the whole group, as Ctrl-C (INT) does.
fn switch_stopped_by(f: &Fixture, signal: &str, marker: &Path) -> common::Run {
    use std::os::unix::process::CommandExt;
    let mut cmd = f.command(&["switch"]);
    cmd.process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the activation hook never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args([signal, "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} failed");
    common::run(child.wait_with_output().unwrap())
}

#[test]
fn an_interrupted_switch_restores_the_previous_generation() {
    let f = fixture(&[(".bashrc", "one\n")]);
    f.xtask(&["switch"]).success();
    let marker = f.root.parent().unwrap().join("hook-started");
    slow_home(&f, "two\n", &marker);

    switch_stopped_by(&f, "-INT", &marker)
        .failure(1)
        .stderr_has("interrupted:")
        .stderr_has("restored generation 1");
    assert_eq!(current_link(&f), "home-manager-1-link");
    assert_eq!(read(&f.home.join(".bashrc")), "one\n");
    assert!(is_hm_link(&f.home.join(".bashrc")));
    let root = f
        .home
        .join(".local/state/home-manager/gcroots/current-home");
    assert_eq!(
        fs::read_link(root).unwrap(),
        fs::read_link(profiles(&f).join("home-manager-1-link")).unwrap()
    );

    // The next switch works, and no warning about an unfinished one.
    f.home_with_files(&f.user, &[(".bashrc", "three\n")])
        .commit();
    let run = f.xtask(&["switch"]);
    run.success();
    assert!(!run.stderr.contains("killed before"), "{}", run.stderr);
    assert_eq!(read(&f.home.join(".bashrc")), "three\n");
}

#[test]
fn an_interrupted_first_switch_removes_its_profile_links() {
    let f = fixture(&[]);
    let marker = f.root.parent().unwrap().join("hook-started");
    slow_home(&f, "one\n", &marker);

    switch_stopped_by(&f, "-INT", &marker)
        .failure(1)
        .stderr_has("interrupted:")
        .stderr_has("its profile links and the links it made were removed");
    assert!(fs::symlink_metadata(profiles(&f).join("home-manager")).is_err());
    // Exact restore: the link the stopped activation made is gone too.
    assert!(fs::symlink_metadata(f.home.join(".bashrc")).is_err());
    assert!(fs::symlink_metadata(profiles(&f).join("home-manager-1-link")).is_err());

    f.home_with_files(&f.user, &[(".bashrc", "two\n")]).commit();
    f.xtask(&["switch"]).success();
    assert_eq!(current_link(&f), "home-manager-1-link");
    assert_eq!(read(&f.home.join(".bashrc")), "two\n");
}

#[test]
fn a_killed_switch_is_noticed_and_repaired_by_the_next() {
    let f = fixture(&[(".bashrc", "one\n")]);
    f.xtask(&["switch"]).success();
    let marker = f.root.parent().unwrap().join("hook-started");
    slow_home(&f, "two\n", &marker);
    // SIGKILL cannot be caught: the profile is left at generation 2, activation unfinished.
    switch_stopped_by(&f, "-KILL", &marker);
    assert_eq!(current_link(&f), "home-manager-2-link");

    f.home_with_files(&f.user, &[(".bashrc", "three\n")])
        .commit();
    f.xtask(&["switch"])
        .success()
        .stderr_has("killed before it finished");
    assert_eq!(current_link(&f), "home-manager-3-link");
    assert_eq!(read(&f.home.join(".bashrc")), "three\n");
}

#[test]
fn a_home_reached_through_a_symlink_is_the_same_home() {
    let f = fixture(&[(".bashrc", "managed\n")]);
    // $HOME names a link to the directory home.homeDirectory names: the same directory,
    // which is what Home Manager's own check (`-ef`) accepts.
    let link = f.root.parent().unwrap().join("home-link");
    symlink(&f.home, &link).unwrap();
    let mut cmd = f.command(&["switch"]);
    cmd.env("HOME", &link);
    common::run(cmd.output().unwrap()).success();
    assert!(is_hm_link(&f.home.join(".bashrc")));
    assert_eq!(read(&f.home.join(".bashrc")), "managed\n");
}

#[test]
fn a_failed_rollback_reactivates_the_current_generation() {
    let f = fixture(&[]);
    // Generation 1's activation fails once `refuse` exists, after it linked its files:
    // the rollback must put $HOME back to generation 2, not only the profile.
    let refuse = f.root.parent().unwrap().join("refuse");
    let home = nix_str(&f.home.display().to_string());
    let hook = nix_str(&format!(
        "if [ -e '{}' ]; then echo 'hook refuses' >&2; exit 1; fi",
        refuse.display()
    ));
    f.home_module(
        &f.user,
        &format!(
            "{{ ... }}: {{\n  home.homeDirectory = {home};\n  home.file.\".bashrc\".text = \"one\\n\";\n  home.activation.refuse = {hook};\n}}\n"
        ),
    )
    .commit();
    f.xtask(&["switch"]).success();
    f.home_with_files(&f.user, &[(".bashrc", "two\n")]).commit();
    f.xtask(&["switch"]).success();
    fs::write(&refuse, "").unwrap();

    f.xtask(&["rollback"])
        .failure(1)
        .stderr_has("hook refuses")
        .stderr_has("generation 1 failed to activate; restored generation 2");
    assert_eq!(current_link(&f), "home-manager-2-link");
    assert_eq!(read(&f.home.join(".bashrc")), "two\n");
}

/// `home.file.<path>.force = true`: Home Manager replaces the target without a check or a
/// backup, so the pre-flight must not block it (it reads the generation's
/// check-link-targets script, as activation does).
#[test]
fn forced_files_are_backed_up_replaced_or_blocked_as_home_manager_would() {
    let f = fixture(&[]);
    f.home_module(
        &f.user,
        &format!(
            "{{ ... }}:\n{{\n  home.homeDirectory = {};\n  home.file.\".x\" = {{ text = \"managed\\n\"; force = true; }};\n}}\n",
            nix_str(&f.home.display().to_string())
        ),
    )
    .commit();
    fs::write(f.home.join(".x"), "mine\n").unwrap();
    fs::write(f.home.join(".x.bak"), "an old backup\n").unwrap();
    // Forcing skips Home Manager's check, but its link step would still move .x over
    // .x.bak: that loses the old backup, so the pre-flight blocks.
    let before = Fixture::tree_digest(&f.home);
    f.xtask(&["switch"])
        .failure(1)
        .stderr_has("blocked: ~/.x: its backup ~/.x.bak exists")
        .stderr_has("even for identical and forced files");
    assert_eq!(Fixture::tree_digest(&f.home), before);

    // Without an extension a forced file is deleted: allowed, and said loudly.
    f.xtask(&["switch", "-b", ""])
        .success()
        .stderr_has("replace ~/.x is DELETED and replaced");
    assert!(is_hm_link(&f.home.join(".x")));
    assert_eq!(read(&f.home.join(".x")), "managed\n");
    assert_eq!(read(&f.home.join(".x.bak")), "an old backup\n");

    // With an extension and no old backup, the forced file is moved aside (Home Manager
    // backs up forced files too).
    let g = fixture(&[]);
    g.home_module(
        &g.user,
        &format!(
            "{{ ... }}:\n{{\n  home.homeDirectory = {};\n  home.file.\".x\" = {{ text = \"managed\\n\"; force = true; }};\n}}\n",
            nix_str(&g.home.display().to_string())
        ),
    )
    .commit();
    fs::write(g.home.join(".x"), "mine\n").unwrap();
    g.xtask(&["switch"])
        .success()
        .stderr_has("backup   ~/.x → ~/.x.bak");
    assert_eq!(read(&g.home.join(".x.bak")), "mine\n");
}

/// homes/<user>/meta.nix names the standalone home's system; building on another machine
/// uses that machine's variant and says so.
#[test]
fn a_meta_system_other_than_this_machine_is_said() {
    let f = fixture(&[(".x", "x\n")]);
    let other = other_system();
    f.write(
        "homes/alice/meta.nix",
        &format!("{{ system = \"{other}\"; }}\n"),
    )
    .commit();
    f.xtask(&["build-home"])
        .success()
        .stderr_has(&format!(
            "homes/alice/meta.nix says {other}, but this machine is"
        ))
        .stderr_has(&format!("--system {other}"));
    // An explicit --system is taken as given: no warning.
    let run = f.xtask(&["build-home", "--system", other, "--json"]);
    assert!(!run.stderr.contains("meta.nix says"), "{}", run.stderr);
}

/// `sudo -E cargo xtask switch`: USER and HOME are the user's, the process is root's; the
/// links and profile entries would belong to root. The owner of $HOME must run it.
#[test]
fn a_home_owned_by_someone_else_is_refused() {
    let f = fixture(&[(".x", "x\n")]);
    if profile_uid() != 0 {
        return; // only root can give the home away to test this
    }
    std::os::unix::fs::chown(&f.home, Some(12345), None).unwrap();
    let before = Fixture::tree_digest(&f.home);
    f.xtask(&["switch"])
        .failure(1)
        .stderr_has("belongs to uid 12345, but this runs as uid 0 (root, e.g. through sudo -E)")
        .stderr_has("without sudo");
    assert_eq!(Fixture::tree_digest(&f.home), before);
}

fn profile_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of a file this process just created is its effective uid.
    let t = tempfile::tempfile().unwrap();
    t.metadata().unwrap().uid()
}

/// File names with spaces, quotes and `$` are linked as they are named.
#[test]
fn odd_file_names_are_linked_verbatim() {
    let f = fixture(&[("it's $x.txt", "1\n"), ("dir with space/f g", "2\n")]);
    fs::write(f.home.join("it's $x.txt"), "mine\n").unwrap();
    f.xtask(&["switch"])
        .success()
        .stderr_has("backup   ~/it's $x.txt → ~/it's $x.txt.bak");
    assert_eq!(read(&f.home.join("it's $x.txt")), "1\n");
    assert_eq!(read(&f.home.join("it's $x.txt.bak")), "mine\n");
    assert_eq!(read(&f.home.join("dir with space/f g")), "2\n");
}

/// nixos-rebuild cannot run here, so stand-ins answer as on a NixOS machine whose Home
/// Manager unit failed: the unit's journal is shown, not only "the following units failed".
#[test]
fn a_failed_home_unit_after_nixos_rebuild_shows_its_journal() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(&[]);
    f.host(
        "ws",
        Some("{ system = \"x86_64-linux\"; users = [ \"alice\" ]; }\n"),
    )
    .commit();
    let bin = common::path_with_git_only();
    let nix = common::which("nix");
    symlink(&nix, bin.path().join("nix")).unwrap();
    for (tool, script) in [
        (
            "nixos-rebuild",
            "echo 'warning: the following units failed: home-manager-alice.service' >&2; exit 4",
        ),
        ("systemctl", "[ \"$3\" = home-manager-alice.service ]"),
        (
            "journalctl",
            "echo \"hm-activate-alice: Existing file '/home/alice/.bashrc' would be clobbered\"",
        ),
    ] {
        let path = bin.path().join(tool);
        fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = f.command(&["switch", "--host", "ws"]);
    cmd.env("PATH", bin.path());
    common::run(cmd.output().unwrap())
        .failure(1)
        .stderr_has("home-manager-alice.service failed; its last journal lines:")
        .stderr_has("Existing file '/home/alice/.bashrc' would be clobbered")
        .stderr_has("nixos-rebuild switch of ws failed");
}

/// A generation without gen-version manages the profile itself (the contract): the switch
/// only activates it and never runs nix-env --set.
#[test]
fn an_old_style_generation_is_activated_without_setting_the_profile() {
    let f = fixture(&[]);
    f.home_module(
        &f.user,
        &format!(
            "{{ ... }}: {{\n  home.homeDirectory = {};\n  home.file.\".x\".text = \"x\\n\";\n  stub.oldStyle = true;\n}}\n",
            nix_str(&f.home.display().to_string())
        ),
    )
    .commit();
    let dry = f.xtask(&["switch", "--dry-run"]);
    dry.success().stdout_has("activate --driver-version 1");
    assert!(!dry.stdout.contains("nix-env"), "{}", dry.stdout);
    f.xtask(&["switch"]).success();
    assert_eq!(read(&f.home.join(".x")), "x\n");
    assert!(fs::symlink_metadata(profiles(&f).join("home-manager")).is_err());
}

/// The repository in a path with a space (which this nix cannot use in a flake reference):
/// the error says what to do, not only nix's "not a valid URL".
#[test]
fn a_repository_path_with_a_space_says_what_to_do() {
    let f = common::Fixture::named("my repo");
    fs::create_dir_all(f.profiles()).unwrap();
    f.home_with_files(&f.user, &[(".x", "x\n")]).commit();
    let run = f.xtask(&["switch"]);
    if run.code == 0 {
        return; // a nix that handles such paths
    }
    run.failure(1)
        .stderr_has("move or clone the repository to a path without one");
}

/// A switch killed outright leaves its out-link directory; the next one removes it, so the
/// generation it pinned can be collected.
#[test]
fn out_links_of_killed_runs_are_removed() {
    let f = fixture(&[(".x", "x\n")]);
    // A run killed outright leaves its directory with an unlocked `alive` file (the lock
    // died with the process); a live run's directory keeps its lock and stays.
    let stale = tempfile::Builder::new()
        .prefix("xtask-out-")
        .tempdir()
        .unwrap()
        .keep();
    fs::write(stale.join("alive"), "").unwrap();
    symlink(
        "/nix/store/nonexistent-generation",
        stale.join("generation"),
    )
    .unwrap();
    let live = tempfile::Builder::new()
        .prefix("xtask-out-")
        .tempdir()
        .unwrap();
    let held = fs::File::create(live.path().join("alive")).unwrap();
    held.lock().unwrap();
    f.xtask(&["switch"]).success();
    assert!(!stale.exists(), "{} was left", stale.display());
    assert!(live.path().exists(), "a live run's directory was removed");
}

/// Exact restore (issue 9): after a failed activation the previous generation is active
/// again *as it was*: the links only the failed generation had are gone, the files it
/// moved to their backups are back, and a specialisation that was active is active again.
#[test]
fn a_failed_activation_is_undone_exactly() {
    let f = fixture(&[]);
    let home = nix_str(&f.home.display().to_string());
    f.home_module(
        &f.user,
        &format!(
            "{{ ... }}: {{\n  home.homeDirectory = {home};\n  home.file.\".a\".text = \"one\\n\";\n  specialisation.work.configuration.home.file.\".a\".text = \"work\\n\";\n}}\n"
        ),
    )
    .commit();
    f.xtask(&["switch", "--specialisation", "work"]).success();
    let state = f
        .home
        .join(".local/state/home-manager/gcroots/current-home");
    let active_before = fs::read_link(&state).unwrap();
    assert!(active_before.ends_with("specialisation/work") || active_before.exists());
    assert_eq!(read(&f.home.join(".a")), "work\n");

    // The next generation adds .b and .config/new/c, backs up the user's .d, then fails.
    fs::write(f.home.join(".d"), "the user's own\n").unwrap();
    f.home_module(
        &f.user,
        &format!(
            "{{ ... }}: {{\n  home.homeDirectory = {home};\n  home.file.\".a\".text = \"two\\n\";\n  home.file.\".b\".text = \"b\\n\";\n  home.file.\".config/new/c\".text = \"c\\n\";\n  home.file.\".d\".text = \"d\\n\";\n  home.activation.boom = \"echo boom >&2; exit 3\";\n}}\n"
        ),
    )
    .commit();
    f.xtask(&["switch"])
        .failure(1)
        .stderr_has("backup   ~/.d → ~/.d.bak")
        .stderr_has("restored generation 1");
    assert_eq!(current_link(&f), "home-manager-1-link");
    // What was active (the specialisation) is active again.
    assert_eq!(
        fs::canonicalize(&state).unwrap(),
        fs::canonicalize(&active_before).unwrap()
    );
    assert_eq!(read(&f.home.join(".a")), "work\n");
    // The failed generation's own links and the directories made for them are gone.
    assert!(fs::symlink_metadata(f.home.join(".b")).is_err());
    assert!(fs::symlink_metadata(f.home.join(".config/new")).is_err());
    // The user's file is back where it was, byte for byte, and no backup is left.
    let d = fs::symlink_metadata(f.home.join(".d")).unwrap();
    assert!(d.is_file());
    assert_eq!(read(&f.home.join(".d")), "the user's own\n");
    assert!(fs::symlink_metadata(f.home.join(".d.bak")).is_err());
}

/// A user coming from the legacy per-user profile keeps their generations: the xtask
/// migrates them (as Home Manager's `migrateProfile` does) before it sets the profile, so
/// activation's own migration finds nothing to throw away.
#[test]
fn a_legacy_per_user_profile_is_migrated_with_its_history() {
    let mut f = fixture(&[]);
    // A user name of its own: the per-user directory is the machine's real one.
    f.user = format!("mig{}", std::process::id());
    f.home_with_files(&f.user.clone(), &[(".a", "one\n")])
        .commit();
    let per_user = PathBuf::from("/nix/var/nix/profiles/per-user").join(&f.user);
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(per_user.clone());
    fs::create_dir_all(&per_user).unwrap();
    // No XDG profile directory: the per-user one is used, as Home Manager does.
    fs::remove_dir_all(profiles(&f)).unwrap();
    f.xtask(&["switch"]).success();
    assert!(fs::symlink_metadata(per_user.join("home-manager-1-link")).is_ok());
    let gen1 = fs::read_link(per_user.join("home-manager-1-link")).unwrap();

    // Once ~/.local/state/nix/profiles exists, the next switch moves the history there.
    fs::create_dir_all(profiles(&f)).unwrap();
    f.home_with_files(&f.user.clone(), &[(".a", "two\n")])
        .commit();
    let dry = f.xtask(&["switch", "--dry-run"]);
    dry.success().stdout_has("--add-root");
    assert!(fs::symlink_metadata(per_user.join("home-manager")).is_ok());
    // doctor sees the pending migration and names the switch that does it.
    f.xtask(&["doctor"])
        .stderr_has("is pending migration to")
        .stderr_has("run `cargo xtask switch`: it moves the generations first");
    f.xtask(&["switch"])
        .success()
        .stderr_has("migrating the Home Manager profile");
    assert_eq!(
        fs::read_link(profiles(&f).join("home-manager-1-link")).unwrap(),
        gen1
    );
    assert_eq!(current_link(&f), "home-manager-2-link");
    assert!(fs::symlink_metadata(per_user.join("home-manager")).is_err());
    assert!(fs::symlink_metadata(per_user.join("home-manager-1-link")).is_err());
    let ids: Vec<u64> = f
        .xtask(&["generations", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 1]);
    assert_eq!(read(&f.home.join(".a")), "two\n");
}

/// Offline, build-home, switch and diff say what `check` says: the inputs cannot be
/// fetched, so lock them where the network is reachable (issue 11).
#[test]
fn unfetchable_inputs_name_the_fix_for_every_building_task() {
    let f = fixture(&[(".x", "x\n")]);
    // An input nix cannot download (nothing listens on port 9): like nixpkgs offline.
    f.write(
        "flake.nix",
        &fs::read_to_string(common::fixtures_dir().join("flake.nix"))
            .unwrap()
            .replace(
                "{\n  outputs",
                "{\n  inputs.unreachable.url = \"http://127.0.0.1:9/x.tar.gz\";\n  outputs",
            )
            .replace("{ self }", "{ self, ... }"),
    )
    .commit();
    let before = Fixture::tree_digest(&f.home);
    for task in ["build-home", "switch", "diff"] {
        let out = f
            .command(&[task])
            .env(
                "NIX_CONFIG",
                format!("{}download-attempts = 1\n", common::NIX_CONFIG),
            )
            .output()
            .unwrap();
        common::run(out)
            .failure(1)
            .stderr_has("nix build failed")
            .stderr_has("flake lock` where the network is reachable");
    }
    assert_eq!(Fixture::tree_digest(&f.home), before);
}
