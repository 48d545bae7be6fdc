//! Faults and hostile input (issue 10): each row of the table as a test — an
//! orphaned activation racing a second switch, gc after a killed switch, SIGHUP
//! mid-activation, stderr closed mid-switch, rollback racing a switch, symlinked backups
//! and parents — and bad input to every home task, with the repository and `$HOME` hashed
//! before and after. Real nix, real profiles, fixture flakes with the stub activation.
//!
//! Slow activations are gated, not slept: a hook (or a `find` wrapper, for a kill before
//! anything is linked) writes a marker and waits for a release file, at most 60 s; every
//! wait of the tests is bounded as well.

mod common;

use std::{
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader},
    os::unix::{fs::symlink, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{RwLock, RwLockReadGuard},
    thread::sleep,
    time::{Duration, Instant},
};

use common::{Fixture, Run, nix_str};
use rustix::process::{Pid, Signal};

/// The longest any wait of these tests may take.
const WAIT: Duration = Duration::from_secs(60);

/// A store gc (`gc` without --no-store-gc) collects every unreferenced store path; the other
/// tests of this file take this for reading, the gc test for writing, so no build of this
/// file is between two nix calls while it runs.
static STORE: RwLock<()> = RwLock::new(());

fn store_shared() -> RwLockReadGuard<'static, ()> {
    STORE.read().unwrap_or_else(|e| e.into_inner())
}

#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit, at most [`WAIT`]; kills its process group if it does not.
#[track_caller]
fn wait_child(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = rustix::process::kill_process_group(pid(child), Signal::KILL);
            let _ = child.wait();
            panic!("the xtask did not exit within {WAIT:?}");
        }
        sleep(Duration::from_millis(20));
    }
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32).unwrap()
}

/// A point in an activation where it stops until the test releases it: `marker` is
/// created when it is reached, `release` lets it go on (after 60 s it goes on anyway).
struct Gate {
    marker: PathBuf,
    release: PathBuf,
}

impl Gate {
    fn new(f: &Fixture, name: &str) -> Gate {
        let dir = f.root.parent().unwrap();
        Gate {
            marker: dir.join(format!("{name}-reached")),
            release: dir.join(format!("{name}-release")),
        }
    }

    /// Shell code that stops here.
    fn shell(&self) -> String {
        format!(
            "touch '{}'; i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
            self.marker.display(),
            self.release.display()
        )
    }

    #[track_caller]
    fn wait_reached(&self, child: &mut Child) {
        wait_until("the activation to reach the gate", || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the xtask exited ({status}) before the gate was reached");
            }
            self.marker.exists()
        });
    }

    fn open(&self) {
        fs::write(&self.release, "").unwrap();
    }
}

/// The fixture's home with these files and, when given, a `home.activation` hook (run by
/// the stub's `activate` after linking, before `gcroots/current-home` is updated).
fn home(f: &Fixture, files: &[(&str, &str)], hook: Option<&str>) {
    let mut body = format!(
        "  home.homeDirectory = {};\n",
        nix_str(&f.home.display().to_string())
    );
    for (path, text) in files {
        body.push_str(&format!(
            "  home.file.{}.text = {};\n",
            nix_str(path),
            nix_str(text)
        ));
    }
    if let Some(hook) = hook {
        body.push_str(&format!("  home.activation.gate = {};\n", nix_str(hook)));
    }
    f.home_module(&f.user, &format!("{{ ... }}:\n{{\n{body}}}\n"))
        .commit();
}

/// `switch` (or any task) in its own process group, as a shell runs a job, with its
/// stdout and stderr in `log` (a file: no pipe to break when a test stops reading).
fn spawn(f: &Fixture, args: &[&str], log: &Path) -> Child {
    let out = File::create(log).unwrap();
    let mut cmd = f.command(args);
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    cmd.spawn().unwrap()
}

fn profiles(f: &Fixture) -> PathBuf {
    f.profiles()
}

/// The generation id the profile names.
fn profile_id(f: &Fixture) -> u64 {
    let link = fs::read_link(profiles(f).join("home-manager")).unwrap();
    let name = link.display().to_string();
    name.strip_prefix("home-manager-")
        .and_then(|s| s.strip_suffix("-link"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("odd profile link {name}"))
}

fn generation_path(f: &Fixture, id: u64) -> PathBuf {
    fs::read_link(profiles(f).join(format!("home-manager-{id}-link"))).unwrap()
}

fn generation_ids(f: &Fixture) -> Vec<u64> {
    let mut ids: Vec<u64> = fs::read_dir(profiles(f))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            name.strip_prefix("home-manager-")?
                .strip_suffix("-link")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort();
    ids
}

fn current_home_root(f: &Fixture) -> PathBuf {
    f.home
        .join(".local/state/home-manager/gcroots/current-home")
}

/// The profile and `gcroots/current-home` name the same generation: its id.
#[track_caller]
fn assert_agree(f: &Fixture) -> u64 {
    let id = profile_id(f);
    let active = fs::read_link(current_home_root(f)).expect("no gcroots/current-home");
    assert_eq!(
        active,
        generation_path(f, id),
        "the profile names generation {id} but $HOME has another"
    );
    id
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_hm_link(path: &Path) -> bool {
    fs::read_link(path).is_ok_and(|t| t.display().to_string().contains("-home-manager-files/"))
}

fn lock_file(f: &Fixture) -> PathBuf {
    f.home.join(".local/state/home-manager/switch.lock")
}

/// Whether nothing holds the switch lock (the test takes and drops it).
fn lock_free(f: &Fixture) -> bool {
    let Ok(file) = OpenOptions::new().read(true).open(lock_file(f)) else {
        return true;
    };
    file.try_lock().is_ok()
}

/// The repository (files and git's view of them) and `$HOME`, to compare before/after.
fn digests(f: &Fixture) -> (String, String, String) {
    (
        Fixture::tree_digest(&f.root),
        f.git(&["status", "--porcelain"]),
        Fixture::tree_digest(&f.home),
    )
}

#[track_caller]
fn assert_unchanged(f: &Fixture, before: &(String, String, String), what: &str) {
    let now = digests(f);
    assert_eq!(now.0, before.0, "{what}: the repository changed");
    assert_eq!(now.1, before.1, "{what}: git status changed");
    assert_eq!(now.2, before.2, "{what}: $HOME changed");
}

fn log_text(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default()
}

/// Row 1: the xtask is SIGKILLed while its `activate` child runs on. The orphaned
/// activation keeps the lock, so a second switch (and a gc, and a rollback) is refused
/// naming the lock and changes nothing; once the orphan ends, profile and `$HOME` agree and
/// the next switch works, with no user file lost.
#[test]
fn an_orphaned_activation_keeps_the_lock_until_it_ends() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".bashrc", "one\n")]);
    f.xtask(&["switch"]).success();
    // A user file the next generation takes over: it must survive as its backup.
    fs::write(f.home.join(".profile"), "mine\n").unwrap();
    let gate = Gate::new(&f, "hook");
    home(
        &f,
        &[(".bashrc", "two\n"), (".profile", "managed\n")],
        Some(&gate.shell()),
    );
    let log = f.root.parent().unwrap().join("switch.log");
    let mut first = spawn(&f, &["switch"], &log);
    gate.wait_reached(&mut first);
    // Only the xtask: its activation goes on as an orphan.
    rustix::process::kill_process(pid(&first), Signal::KILL).unwrap();
    first.wait().unwrap();
    assert_eq!(profile_id(&f), 2, "{}", log_text(&log));
    assert!(!lock_free(&f), "the orphaned activation must hold the lock");

    home(
        &f,
        &[(".bashrc", "three\n"), (".profile", "managed\n")],
        None,
    );
    let before = digests(&f);
    for args in [
        &["switch"][..],
        &["gc", "--keep", "1", "--no-store-gc"],
        &["rollback"],
    ] {
        f.xtask(args)
            .failure(1)
            .stderr_has("an activation it started is still running")
            .stderr_has(&lock_file(&f).display().to_string());
        assert_unchanged(&f, &before, &args.join(" "));
        assert_eq!(profile_id(&f), 2);
        assert_eq!(generation_ids(&f), [1, 2]);
    }

    gate.open();
    wait_until("the orphaned activation to end", || lock_free(&f));
    assert_eq!(assert_agree(&f), 2);
    assert_eq!(read(&f.home.join(".bashrc")), "two\n");
    assert_eq!(read(&f.home.join(".profile.bak")), "mine\n");

    let run = f.xtask(&["switch"]);
    run.success();
    assert!(!run.stderr.contains("killed before"), "{}", run.stderr);
    assert_eq!(assert_agree(&f), 3);
    assert_eq!(read(&f.home.join(".bashrc")), "three\n");
    assert!(is_hm_link(&f.home.join(".profile")));
    let bak = f.home.join(".profile.bak");
    assert!(fs::symlink_metadata(&bak).unwrap().is_file());
    assert_eq!(read(&bak), "mine\n");
}

/// A directory with a `find` that stops at `gate` while `armed` exists, then runs the real
/// one: the stub's `activate` runs `find` first (the collision check), so a kill there
/// comes after `nix-env --set` and before anything in `$HOME` changed.
fn find_wrapper(f: &Fixture, gate: &Gate, armed: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = f.root.parent().unwrap().join("gated-bin");
    fs::create_dir_all(&bin).unwrap();
    let find = bin.join("find");
    fs::write(
        &find,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then {}; fi\nexec '{}' \"$@\"\n",
            armed.display(),
            gate.shell(),
            common::which("find").display()
        ),
    )
    .unwrap();
    fs::set_permissions(&find, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Row 2: a switch killed (xtask and activation, `kill -9` of the job) after the profile
/// moved to generation 3 but before activation linked anything: `$HOME` still has
/// generation 2, which `gc --keep 1` must keep (it only deletes generation 1), so that
/// after the store gc the files under ~/.config still resolve.
#[test]
fn gc_after_a_killed_switch_keeps_the_generation_home_uses() {
    let _store = STORE.write().unwrap_or_else(|e| e.into_inner());
    let mut f = Fixture::with_home_files(&[(".config/app/conf", "v1\n")]);
    f.xtask(&["switch"]).success();
    home(
        &f,
        &[(".config/app/conf", "v2\n"), (".config/app/extra", "e2\n")],
        None,
    );
    f.xtask(&["switch"]).success();
    let gen2 = generation_path(&f, 2);
    assert_eq!(assert_agree(&f), 2);

    let gate = Gate::new(&f, "find");
    let armed = f.root.parent().unwrap().join("find-armed");
    let bin = find_wrapper(&f, &gate, &armed);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(&path));
    f.extra_env.insert(
        "PATH".into(),
        std::env::join_paths(dirs).unwrap().into_string().unwrap(),
    );
    home(&f, &[(".config/app/conf", "v3\n")], None);
    fs::write(&armed, "").unwrap();
    let log = f.root.parent().unwrap().join("switch.log");
    let mut switch = spawn(&f, &["switch"], &log);
    gate.wait_reached(&mut switch);
    rustix::process::kill_process_group(pid(&switch), Signal::KILL).unwrap();
    switch.wait().unwrap();
    fs::remove_file(&armed).unwrap();
    gate.open();
    assert_eq!(profile_id(&f), 3, "{}", log_text(&log));
    assert_eq!(fs::read_link(current_home_root(&f)).unwrap(), gen2);
    assert_eq!(read(&f.home.join(".config/app/conf")), "v2\n");

    f.xtask(&["gc", "--keep", "1", "--no-store-gc"]).success();
    assert_eq!(
        generation_ids(&f),
        [2, 3],
        "gc must delete generation 1 only: 2 is the one $HOME has, 3 the profile's"
    );
    assert_eq!(generation_path(&f, 2), gen2);

    f.xtask(&["gc", "--keep", "1"]).success();
    assert!(
        gen2.join("activate").is_file(),
        "generation 2 was collected"
    );
    for file in ["conf", "extra"] {
        let p = f.home.join(".config/app").join(file);
        assert!(
            fs::metadata(&p).is_ok(),
            "{} no longer resolves after the store gc",
            p.display()
        );
    }
    assert_eq!(read(&f.home.join(".config/app/conf")), "v2\n");

    // The next switch repairs the difference.
    f.extra_env.remove("PATH");
    f.xtask(&["switch"])
        .success()
        .stderr_has("killed before it finished");
    // The same generation 3 (nix-env --set to the current path adds none), now active.
    assert_eq!(assert_agree(&f), 3);
    assert_eq!(read(&f.home.join(".config/app/conf")), "v3\n");
    assert!(fs::symlink_metadata(f.home.join(".config/app/extra")).is_err());
}

/// Row 2, killed later: during a hook, after generation 3's links are in `$HOME` but
/// before `gcroots/current-home` names it. gc keeps both 2 (`current-home`) and 3 (the
/// profile's, whose files `$HOME` has), and the next switch repairs.
#[test]
fn gc_after_a_switch_killed_in_a_hook_keeps_both_generations() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".config/app/conf", "v1\n")]);
    f.xtask(&["switch"]).success();
    home(&f, &[(".config/app/conf", "v2\n")], None);
    f.xtask(&["switch"]).success();
    let gen2 = generation_path(&f, 2);
    let gate = Gate::new(&f, "hook");
    home(&f, &[(".config/app/conf", "v3\n")], Some(&gate.shell()));
    let log = f.root.parent().unwrap().join("switch.log");
    let mut switch = spawn(&f, &["switch"], &log);
    gate.wait_reached(&mut switch);
    rustix::process::kill_process_group(pid(&switch), Signal::KILL).unwrap();
    switch.wait().unwrap();
    gate.open();
    wait_until("the killed activation to release the lock", || {
        lock_free(&f)
    });
    assert_eq!(profile_id(&f), 3, "{}", log_text(&log));
    assert_eq!(fs::read_link(current_home_root(&f)).unwrap(), gen2);
    assert_eq!(read(&f.home.join(".config/app/conf")), "v3\n");

    f.xtask(&["gc", "--keep", "1", "--no-store-gc"]).success();
    assert_eq!(generation_ids(&f), [2, 3]);
    f.xtask(&["switch"])
        .success()
        .stderr_has("killed before it finished");
    assert_eq!(assert_agree(&f), 3);
    // Now that $HOME has generation 3 for sure, generation 2 may go.
    f.xtask(&["gc", "--keep", "1", "--no-store-gc"]).success();
    assert_eq!(generation_ids(&f), [3]);
    assert_eq!(read(&f.home.join(".config/app/conf")), "v3\n");
}

/// Sends `signal` to the whole job (xtask and activation, as a terminal does) while the
/// activation of generation 2 runs: the previous generation must be restored, exit 1,
/// profile and `$HOME` agreeing on it, the backed-up file back in place (for SIGQUIT, see
/// its test).
fn stopped_mid_activation(signal: Signal, group: bool) {
    let f = Fixture::with_home_files(&[(".bashrc", "one\n")]);
    f.xtask(&["switch"]).success();
    fs::write(f.home.join(".profile"), "mine\n").unwrap();
    let gate = Gate::new(&f, "hook");
    home(
        &f,
        &[(".bashrc", "two\n"), (".profile", "managed\n")],
        Some(&gate.shell()),
    );
    let log = f.root.parent().unwrap().join("switch.log");
    let mut switch = spawn(&f, &["switch"], &log);
    gate.wait_reached(&mut switch);
    if group {
        rustix::process::kill_process_group(pid(&switch), signal).unwrap();
    } else {
        rustix::process::kill_process(pid(&switch), signal).unwrap();
    }
    // bash ignores SIGQUIT, and a signal to the xtask alone does not reach `activate`:
    // the xtask passes every stop on to the activation, so each ends the same way.
    let status = wait_child(&mut switch);
    gate.open();
    let id = assert_agree(&f);
    assert_eq!(status.code(), Some(1), "{status}\n{}", log_text(&log));
    assert_eq!(id, 1, "{}", log_text(&log));
    assert_eq!(read(&f.home.join(".bashrc")), "one\n");
    assert!(is_hm_link(&f.home.join(".bashrc")));
    // The file generation 2 had backed up is back where it was.
    assert_eq!(read(&f.home.join(".profile")), "mine\n");
    assert!(fs::symlink_metadata(f.home.join(".profile.bak")).is_err());
    assert!(lock_free(&f));
    // Nothing is left for the next switch to repair.
    home(&f, &[(".bashrc", "three\n")], None);
    let run = f.xtask(&["switch"]);
    run.success();
    assert!(!run.stderr.contains("killed before"), "{}", run.stderr);
    assert_eq!(read(&f.home.join(".bashrc")), "three\n");
}

/// Row 5: SIGHUP to the job (an ssh connection dropping) mid-activation is handled like
/// Ctrl-C (before, exit 129 and no restore).
#[test]
fn a_hangup_mid_activation_restores_the_previous_generation() {
    let _store = store_shared();
    stopped_mid_activation(Signal::HUP, true);
}

/// SIGQUIT (`Ctrl-\`) is caught the same way; the activation (bash, which ignores SIGQUIT)
/// may run to its end, and then the new generation is active: either way, profile and
/// `$HOME` agree and the exit code says which.
#[test]
fn a_quit_mid_activation_restores_the_previous_generation() {
    let _store = store_shared();
    stopped_mid_activation(Signal::QUIT, true);
}

/// SIGHUP or SIGTERM to the xtask alone (`kill -HUP PID`): the activation does not get it
/// from the terminal, so the xtask passes it on and restores, as for the whole job.
#[test]
fn a_stop_signal_to_the_xtask_alone_stops_and_restores() {
    let _store = store_shared();
    stopped_mid_activation(Signal::HUP, false);
    stopped_mid_activation(Signal::TERM, false);
}

/// Row 6: `cargo xtask switch 2>&1 | sed '/nix-env/q'`: output stops being read in the
/// critical section. No panic (exit 101), and profile and `$HOME` agree afterwards
/// (switched, or restored).
#[test]
fn closed_output_mid_switch_does_not_panic_or_split_the_home() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".bashrc", "one\n")]);
    f.xtask(&["switch"]).success();
    home(
        &f,
        &[
            (".bashrc", "two\n"),
            (".config/a", "a\n"),
            (".config/b", "b\n"),
        ],
        None,
    );
    let (reader, writer) = std::io::pipe().unwrap();
    let mut cmd = f.command(&["switch"]);
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // the test's copies of the write end
    let mut seen = String::new();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("nix-env") {
            break;
        }
    }
    // The reader is gone (like sed after `q`).
    assert!(seen.contains("nix-env"), "{seen}");
    let status = wait_child(&mut child);
    assert_ne!(status.code(), Some(101), "the xtask panicked:\n{seen}");
    assert!(
        status.code().is_some(),
        "the xtask died of a signal ({status}):\n{seen}"
    );
    let id = assert_agree(&f);
    let expected = if id == 2 { "two\n" } else { "one\n" };
    assert_eq!(read(&f.home.join(".bashrc")), expected, "generation {id}");
    assert_eq!(status.success(), id == 2, "{status} but generation {id}");
    assert!(lock_free(&f));
    // And the next switch works.
    f.xtask(&["switch"]).success();
    assert_eq!(read(&f.home.join(".bashrc")), "two\n");
}

/// Row 8: a rollback while a switch holds the lock is refused (it reads nothing first);
/// afterwards it goes to the explicit previous id, not "whatever is previous".
#[test]
fn a_rollback_racing_a_switch_is_refused_then_goes_to_the_explicit_id() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".bashrc", "one\n")]);
    f.xtask(&["switch"]).success();
    home(&f, &[(".bashrc", "two\n")], None);
    f.xtask(&["switch"]).success();
    let gate = Gate::new(&f, "hook");
    home(&f, &[(".bashrc", "three\n")], Some(&gate.shell()));
    let log = f.root.parent().unwrap().join("switch.log");
    let mut switch = spawn(&f, &["switch"], &log);
    gate.wait_reached(&mut switch);

    let before = digests(&f);
    f.xtask(&["rollback"])
        .failure(1)
        .stderr_has("another switch, rollback or gc")
        .stderr_has(&lock_file(&f).display().to_string());
    assert_unchanged(&f, &before, "rollback");
    f.xtask(&["rollback", "--to", "1"])
        .failure(1)
        .stderr_has(&lock_file(&f).display().to_string());
    assert_unchanged(&f, &before, "rollback --to 1");

    gate.open();
    let status = wait_child(&mut switch);
    assert!(status.success(), "{status}\n{}", log_text(&log));
    assert_eq!(assert_agree(&f), 3);

    f.xtask(&["rollback", "--dry-run"])
        .success()
        .stdout_has("--switch-generation 2");
    f.xtask(&["rollback"]).success();
    assert_eq!(assert_agree(&f), 2);
    assert_eq!(read(&f.home.join(".bashrc")), "two\n");
    // From 2 the previous one is 1, and a rollback never goes "forward".
    f.xtask(&["rollback"]).success();
    assert_eq!(assert_agree(&f), 1);
    assert_eq!(read(&f.home.join(".bashrc")), "one\n");
}

/// A directory outside the fixture's `$HOME` and repository, to check nothing is written
/// there.
fn outside(f: &Fixture) -> PathBuf {
    let dir = f.root.parent().unwrap().join("outside");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Row 3: `~/.bashrc.bak` a symlink to a file outside `$HOME`, with --overwrite-backup:
/// blocked, nothing written there or in `$HOME`.
#[test]
fn a_symlinked_backup_blocks_even_with_overwrite_backup() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".bashrc", "managed\n")]);
    let out = outside(&f);
    fs::write(out.join("victim"), "not yours\n").unwrap();
    fs::write(f.home.join(".bashrc"), "mine\n").unwrap();
    symlink(out.join("victim"), f.home.join(".bashrc.bak")).unwrap();
    let before = digests(&f);
    let outside_before = Fixture::tree_digest(&out);
    for (args, why) in [
        (
            &["switch", "--overwrite-backup"][..],
            "its backup path ~/.bashrc.bak is a symlink",
        ),
        (&["switch"], "its backup ~/.bashrc.bak exists"),
    ] {
        f.xtask(args)
            .failure(1)
            .stderr_has("blocked: ~/.bashrc:")
            .stderr_has(why)
            .stderr_has("move ~/.bashrc.bak away")
            .stderr_has("nothing was changed");
        assert_unchanged(&f, &before, &args.join(" "));
        assert_eq!(Fixture::tree_digest(&out), outside_before);
        assert!(fs::symlink_metadata(profiles(&f).join("home-manager")).is_err());
    }
}

/// Row 3: `~/.bashrc.bak` a directory: `mv` would put `.bashrc` inside it.
#[test]
fn a_backup_directory_blocks() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".bashrc", "managed\n")]);
    fs::write(f.home.join(".bashrc"), "mine\n").unwrap();
    fs::create_dir(f.home.join(".bashrc.bak")).unwrap();
    fs::write(f.home.join(".bashrc.bak/old"), "old\n").unwrap();
    let before = digests(&f);
    for (args, why) in [
        (
            &["switch", "--overwrite-backup"][..],
            "its backup path ~/.bashrc.bak is a directory: ~/.bashrc would be moved inside it",
        ),
        (&["switch"], "its backup ~/.bashrc.bak exists"),
    ] {
        f.xtask(args)
            .failure(1)
            .stderr_has("blocked: ~/.bashrc:")
            .stderr_has(why)
            .stderr_has("move ~/.bashrc.bak away")
            .stderr_has("nothing was changed");
        assert_unchanged(&f, &before, &args.join(" "));
    }
}

/// Row 4: `~/.config` a symlink to a directory outside `$HOME`: links and backups would be
/// written there; the pre-flight says so and blocks.
#[test]
fn a_symlinked_parent_leading_out_of_home_blocks() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".config/app/conf", "managed\n"), (".x", "x\n")]);
    let out = outside(&f);
    fs::create_dir_all(out.join("app")).unwrap();
    fs::write(out.join("app/conf"), "mine\n").unwrap();
    symlink(&out, f.home.join(".config")).unwrap();
    let before = digests(&f);
    let outside_before = Fixture::tree_digest(&out);
    for args in [&["switch"][..], &["switch", "--overwrite-backup"]] {
        f.xtask(args)
            .failure(1)
            .stderr_has("~/.config is a symlink to")
            .stderr_has("outside $HOME")
            .stderr_has("replace it with a directory")
            .stderr_has("nothing was changed");
        assert_unchanged(&f, &before, &args.join(" "));
        assert_eq!(Fixture::tree_digest(&out), outside_before);
    }
    // With the file absent there, too: a new link would still be written outside.
    fs::remove_file(out.join("app/conf")).unwrap();
    let before = digests(&f);
    let outside_before = Fixture::tree_digest(&out);
    f.xtask(&["switch"]).failure(1).stderr_has("outside $HOME");
    assert_unchanged(&f, &before, "switch, nothing in the way");
    assert_eq!(Fixture::tree_digest(&out), outside_before);
}

/// Runs `args` with `HOME` set to `home` (as given, not canonicalized).
fn with_home(f: &Fixture, home: &Path, args: &[&str]) -> Run {
    let mut cmd = f.command(args);
    cmd.env("HOME", home);
    common::run(cmd.output().unwrap())
}

/// The home tasks that read or write `$HOME`.
const HOME_TASKS: [&[&str]; 4] = [
    &["switch"],
    &["rollback"],
    &["gc", "--no-store-gc"],
    &["generations"],
];

#[test]
fn a_relative_home_is_refused_and_nothing_is_created() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".x", "x\n")]);
    let before = digests(&f);
    for args in HOME_TASKS {
        with_home(&f, Path::new("relhome"), args)
            .failure(1)
            .stderr_has("$HOME is \"relhome\", a relative path")
            .stderr_has("set HOME to the absolute path");
        assert!(!f.root.join("relhome").exists(), "{args:?}");
        assert_unchanged(&f, &before, &args.join(" "));
    }
}

#[test]
fn a_missing_home_is_refused_and_not_created() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".x", "x\n")]);
    let missing = f.root.parent().unwrap().join("nonexistent/h");
    let before = digests(&f);
    for home in [Path::new("/nonexistent/h"), &missing] {
        for args in HOME_TASKS {
            with_home(&f, home, args)
                .failure(1)
                .stderr_has(&format!("$HOME ({}) does not exist", home.display()))
                .stderr_has("set HOME to your home directory");
            assert!(!home.exists(), "{args:?} created {}", home.display());
            assert!(!home.parent().unwrap().exists());
            assert_unchanged(&f, &before, &args.join(" "));
        }
    }
}

#[test]
fn a_home_that_is_a_file_is_refused() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".x", "x\n")]);
    let file = f.root.parent().unwrap().join("home-file");
    fs::write(&file, "not a directory\n").unwrap();
    let before = digests(&f);
    for args in HOME_TASKS {
        with_home(&f, &file, args)
            .failure(1)
            .stderr_has("is not a directory");
        assert_unchanged(&f, &before, &args.join(" "));
        assert_eq!(read(&file), "not a directory\n");
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[test]
fn a_home_owned_by_another_user_is_refused_by_every_task() {
    let _store = store_shared();
    if euid() != 0 {
        return; // only root can give a directory away
    }
    let f = Fixture::with_home_files(&[(".x", "x\n")]);
    std::os::unix::fs::chown(&f.home, Some(12345), None).unwrap();
    let before = digests(&f);
    for args in HOME_TASKS {
        f.xtask(args)
            .failure(1)
            .stderr_has("belongs to uid 12345, but this runs as uid 0")
            .stderr_has("without sudo");
        assert_unchanged(&f, &before, &args.join(" "));
    }
}

/// A read-only bind mount of a directory onto itself, undone when dropped. `None` when
/// this sandbox cannot mount.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn mount(dir: &Path) -> Option<ReadOnly> {
        if euid() != 0 {
            return None;
        }
        let ok = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["--bind"]) {
            return None;
        }
        let mounted = ReadOnly(dir.to_path_buf());
        ok(&["-o", "remount,ro,bind"]).then_some(mounted)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A read-only `$HOME` (root bypasses permissions, so a read-only bind mount): named with
/// the fix before anything runs, not nix's raw SQLite error. Tasks that only read still
/// work.
#[test]
fn a_read_only_home_is_named_with_the_fix() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".x", "x\n")]);
    f.xtask(&["switch"]).success();
    home(&f, &[(".x", "y\n")], None);
    let Some(_ro) = ReadOnly::mount(&f.home) else {
        eprintln!("skipped: mount does not work here, and root ignores permissions");
        return;
    };
    let before = digests(&f);
    for args in [&["switch"][..], &["rollback"], &["gc", "--no-store-gc"]] {
        f.xtask(args)
            .failure(1)
            .stderr_has("is on a read-only file system")
            .stderr_has("remount it read-write");
        assert_unchanged(&f, &before, &args.join(" "));
    }
    f.xtask(&["generations"]).success();
    f.xtask(&["switch", "--dry-run"]).success();
    assert_unchanged(&f, &before, "read-only tasks");
}

/// A full file system as `$HOME` (a tiny tmpfs, filled): named with the fix, and no empty
/// `switch.lock` left behind.
#[test]
fn a_full_home_is_named_with_the_fix() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".x", "x\n")]);
    if euid() != 0 {
        return;
    }
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
        .arg(&f.home)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mount does not work here");
        return;
    }
    let _unmount = ReadOnly(f.home.clone());
    fs::create_dir_all(profiles(&f)).unwrap();
    let mut fill = File::create(f.home.join("fill")).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut fill, &chunk).is_ok() {}
    drop(fill);
    let before = digests(&f);
    f.xtask(&["switch"])
        .failure(1)
        .stderr_has("full file system")
        .stderr_has("free some space");
    assert_unchanged(&f, &before, "switch");
    assert!(!lock_file(&f).exists());
}

/// `homes/alice/meta.nix` broken: `switch alice` fails as `list` and `check` do, before
/// anything changes.
#[test]
fn a_broken_meta_nix_fails_the_switch() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".x", "x\n")]);
    for (meta, says) in [
        ("{ system = \"x86_64-linux\"\n", "homes/alice/meta.nix"),
        ("{ system = \"x86_64-windows\"; }\n", "x86_64-windows"),
    ] {
        f.write("homes/alice/meta.nix", meta).commit();
        let before = digests(&f);
        for args in [&["switch", "alice"][..], &["switch"], &["list"]] {
            f.xtask(args).failure(1).stderr_has(says);
            assert_unchanged(&f, &before, &format!("{args:?} with {meta:?}"));
        }
        assert!(!f.home.join(".x").exists());
    }
}

/// `--overwrite-backup` and `--backup-command` against a generation that ignores them
/// (Home Manager 24.11): a usage error with the reason, nothing changed.
#[test]
fn backup_flags_an_old_generation_ignores_are_usage_errors() {
    let _store = store_shared();
    let f = Fixture::new();
    fs::create_dir_all(profiles(&f)).unwrap();
    f.home_module(
        &f.user,
        &format!(
            "{{ ... }}: {{\n  home.homeDirectory = {};\n  home.file.\".x\".text = \"x\\n\";\n  stub.release = \"24.11\";\n}}\n",
            nix_str(&f.home.display().to_string())
        ),
    )
    .commit();
    fs::write(f.home.join(".x"), "mine\n").unwrap();
    let before = digests(&f);
    for (args, var) in [
        (
            &["switch", "--overwrite-backup"][..],
            "HOME_MANAGER_BACKUP_OVERWRITE",
        ),
        (&["switch", "-B", "true"], "HOME_MANAGER_BACKUP_COMMAND"),
        (
            &["switch", "--backup-command", "mv -n"],
            "HOME_MANAGER_BACKUP_COMMAND",
        ),
    ] {
        f.xtask(args)
            .failure(2)
            .stderr_has(&format!("ignores {var}"))
            .stderr_has("release-25.11 or later");
        assert_unchanged(&f, &before, &args.join(" "));
    }
}

/// Names that are no home's: a clear error naming the rule, exit 2 (a bad argument is a
/// usage error), nothing changed.
#[test]
fn bad_names_are_refused_by_every_home_task() {
    let _store = store_shared();
    let f = Fixture::with_home_files(&[(".x", "x\n")]);
    f.xtask(&["switch"]).success();
    let before = digests(&f);
    for task in ["switch", "rollback", "gc", "generations", "build-home"] {
        for name in ["../x", "a b", "-rf", "@", "", "Alice", "alice/../root"] {
            let run = f.xtask(&[task, "--", name]);
            run.failure(2);
            assert!(
                run.stderr.contains("does not follow the rule")
                    || run.stderr.contains("the name is empty"),
                "{task} {name:?}: {}",
                run.stderr
            );
            run.stderr_has("[a-z_][a-z0-9_-]*");
            assert_unchanged(&f, &before, &format!("{task} {name:?}"));
        }
    }
    // And a flag-like name without `--` is a usage error.
    for task in ["switch", "rollback", "gc", "generations"] {
        f.xtask(&[task, "-rf"]).failure(2);
        assert_unchanged(&f, &before, &format!("{task} -rf"));
    }
    // The reserved part name is no home's either: a usage error that suggests nothing
    // the tool would refuse (no `new-user global`, no "log in as global").
    for args in [
        &["switch", "global"][..],
        &["build-home", "global"],
        &["diff", "global"],
        &["gc", "global"],
        &["generations", "global"],
        &["rollback", "global"],
        &["packages", "global"],
        &["uninstall", "global", "--dry-run"],
    ] {
        let run = f.xtask(args);
        run.failure(2);
        assert!(
            !run.stderr.contains("new-user global") && !run.stderr.contains("log in as global"),
            "{args:?}: {}",
            run.stderr
        );
        assert_unchanged(&f, &before, &format!("{args:?}"));
    }
    // A host name that cannot be one, an unsupported system: usage errors too.
    for args in [
        &["switch", "--host", "Bad", "--dry-run"][..],
        &["switch", "--host", "global", "--dry-run"],
        &["build-home", "--system", "foo-bar"],
        &["switch", "--system", "foo-bar", "--dry-run"],
    ] {
        f.xtask(args).failure(2);
        assert_unchanged(&f, &before, &format!("{args:?}"));
    }
    // root has no home here; the fix is one new-user accepts (its --allow-root), not a
    // flag switch does not have.
    let run = f.xtask(&["switch", "root"]);
    run.failure(1)
        .stderr_has("cargo xtask new-user root --allow-root");
    assert_unchanged(&f, &before, "switch root");
}
