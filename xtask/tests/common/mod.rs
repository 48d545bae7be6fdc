//! Shared test support: fixture flakes that use the repo's real `lib/` with the stub
//! builders (tests/fixtures/stub-builders.nix), in a real git repository, and the real
//! xtask binary run against real nix with a temporary `$HOME`.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use tempfile::TempDir;

/// The repository this crate lives in (holds lib/, homes/, systems/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Offline nix for tests: no substituters (the machine has no network), no dirty-tree
/// noise, and no build sandbox: the stub builders use the host's /bin/sh and coreutils,
/// which a sandbox hides (honoured for root and trusted users; others set it in nix.conf).
pub const NIX_CONFIG: &str = "substituters =\nwarn-dirty = false\nsandbox = false\n";

pub struct Fixture {
    _tmp: TempDir,
    /// The flake (and git repository) root.
    pub root: PathBuf,
    /// The temporary `$HOME` the xtask runs with.
    pub home: PathBuf,
    /// `$USER` for the xtask and nix.
    pub user: String,
    pub extra_env: BTreeMap<String, String>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn failure(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Fixture {
    /// An empty fixture flake (lib/, stub builders, flake.nix) committed in a fresh git repo.
    pub fn new() -> Fixture {
        Fixture::named("repo")
    }

    /// The same, with the repository in a directory of this name (e.g. with a space).
    pub fn named(dir: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(dir);
        let home = tmp.path().join("home");
        fs::create_dir_all(root.join("homes")).unwrap();
        fs::create_dir_all(root.join("systems")).unwrap();
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(root.join("lib")).unwrap();
        fs::copy(
            repo_root().join("lib/default.nix"),
            root.join("lib/default.nix"),
        )
        .unwrap();
        // The rules and defaults, read by the fixture flake and by the xtask alike.
        fs::copy(repo_root().join("Cargo.toml"), root.join("Cargo.toml")).unwrap();
        for f in [
            "stub-builders.nix",
            "activate.sh",
            "check-link-targets.sh",
            "flake.nix",
        ] {
            fs::copy(fixtures_dir().join(f), root.join(f)).unwrap();
        }
        let f = Fixture {
            _tmp: tmp,
            root,
            home: home.canonicalize().unwrap(),
            user: "alice".into(),
            extra_env: BTreeMap::new(),
        };
        f.git(&["init", "-q", "-b", "main"]);
        f.git(&["config", "user.email", "test@example.org"]);
        f.git(&["config", "user.name", "test"]);
        f.commit();
        f
    }

    /// Writes a file under the fixture root, creating directories.
    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        self
    }

    /// `homes/<dir>/default.nix` with the given module text.
    pub fn home_module(&self, dir: &str, module: &str) -> &Self {
        self.write(&format!("homes/{dir}/default.nix"), module)
    }

    /// A standalone home for `user` whose homeDirectory is the fixture's `$HOME`, managing
    /// the given files (`home.file.<path>.text`).
    pub fn home_with_files(&self, user: &str, files: &[(&str, &str)]) -> &Self {
        let mut body = String::new();
        for (path, text) in files {
            body.push_str(&format!(
                "  home.file.{}.text = {};\n",
                nix_str(path),
                nix_str(text)
            ));
        }
        self.home_module(
            user,
            &format!(
                "{{ lib, ... }}:\n{{\n  home.homeDirectory = {};\n{body}}}\n",
                nix_str(&self.home.display().to_string())
            ),
        )
    }

    /// A fixture whose home (for the fixture's user) manages `files`, with the XDG profile
    /// directory present: the machine-wide per-user fallback is shared by parallel tests.
    pub fn with_home_files(files: &[(&str, &str)]) -> Fixture {
        let f = Fixture::new();
        fs::create_dir_all(f.profiles()).unwrap();
        f.home_with_files(&f.user, files).commit();
        f
    }

    /// The XDG profile directory of the temporary HOME.
    pub fn profiles(&self) -> PathBuf {
        self.home.join(".local/state/nix/profiles")
    }

    /// `systems/<host>/` with a default.nix and, when given, a meta.nix.
    pub fn host(&self, host: &str, meta: Option<&str>) -> &Self {
        self.write(
            &format!("systems/{host}/default.nix"),
            "{ ... }:\n{\n  system.stateVersion = \"26.05\";\n}\n",
        );
        if let Some(meta) = meta {
            self.write(&format!("systems/{host}/meta.nix"), meta);
        }
        self
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `git add -A && git commit`: flakes only see tracked files.
    pub fn commit(&self) -> &Self {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", "fixture"]);
        self
    }

    /// The xtask command, ready to run in the fixture with the temporary HOME.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args)
            .current_dir(&self.root)
            .env("HOME", &self.home)
            .env("USER", &self.user)
            .env("LOGNAME", &self.user)
            .env("NIX_CONFIG", NIX_CONFIG)
            .env("NO_COLOR", "1")
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            // nix keeps its eval and fetcher caches in $XDG_CACHE_HOME/nix (else ~/.cache/nix);
            // outside HOME, so a HOME digest shows only what the xtask changed.
            .env("XDG_CACHE_HOME", self.root.parent().unwrap().join("cache"));
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn xtask(&self, args: &[&str]) -> Run {
        run(self.command(args).output().unwrap())
    }

    /// The xtask on a machine without nix: only git on PATH.
    pub fn xtask_without_nix(&self, args: &[&str]) -> Run {
        let bin = path_with_git_only();
        run(self.command(args).env("PATH", bin.path()).output().unwrap())
    }

    /// Evaluates `apply` applied to the flake's outputs (`o: …`) with real nix; Ok(JSON)
    /// or Err(nix's stderr). Through `builtins.getFlake "git+file://…"`, not `nix eval
    /// ROOT#attr`: nix tries `legacyPackages.<this system>.<attr>` first, and lib/ exposes
    /// every home there too, so `ROOT#homeConfigurations.bob` would be this machine's
    /// variant; and `git+file` sees only tracked files, as a flake in git does.
    pub fn nix_eval(&self, apply: &str) -> Result<serde_json::Value, String> {
        nix_eval_expr(&format!(
            "({apply}) (builtins.getFlake {})",
            nix_str(&format!("git+file://{}", self.root.display()))
        ))
    }

    /// A digest of every path, type, target and content under `dir`: equal digests mean
    /// nothing was created, removed or changed.
    pub fn tree_digest(dir: &Path) -> String {
        let mut out = String::new();
        digest_into(dir, dir, &mut out);
        out
    }
}

pub fn run(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn digest_into(base: &Path, dir: &Path, out: &mut String) {
    let mut entries: Vec<_> = match fs::read_dir(dir) {
        Ok(e) => e.map(|e| e.unwrap().path()).collect(),
        Err(_) => return,
    };
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(base).unwrap().display().to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            out.push_str(&format!(
                "L {rel} -> {}\n",
                fs::read_link(&path).unwrap().display()
            ));
        } else if meta.is_dir() {
            out.push_str(&format!("D {rel}\n"));
            digest_into(base, &path, out);
        } else {
            let content = fs::read(&path).unwrap();
            out.push_str(&format!(
                "F {rel} {} {:?}\n",
                content.len(),
                String::from_utf8_lossy(&content)
            ));
        }
    }
}

/// Where `tool` is on PATH.
pub fn which(tool: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is required for these tests"))
}

/// A supported system other than this machine's (a meta.nix for another machine).
pub fn other_system() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "aarch64-linux"
    } else {
        "x86_64-linux"
    }
}

/// A directory holding only a link to git, to use as PATH: a machine without nix.
pub fn path_with_git_only() -> TempDir {
    let git = which("git");
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(git, bin.path().join("git")).unwrap();
    bin
}

/// `nix eval --json --impure --expr EXPR` with the tests' offline settings: Ok(JSON) or
/// Err(nix's stderr).
pub fn nix_eval_expr(expr: &str) -> Result<serde_json::Value, String> {
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--json",
            "--impure",
        ])
        .args(["--expr", expr])
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .expect("nix is required for these tests (apt-get install nix-bin)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// A Nix string literal.
pub fn nix_str(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace("${", "\\${")
    )
}

/// Gives `cmd` (a generation's `activate`, or its check script) exactly the environment a
/// test means: `home` and `user`, the legacy profile directory under `nix_state` (never
/// the machine's), and none of the HOME_MANAGER_BACKUP_*, DRY_RUN, VERBOSE or
/// XDG_STATE_HOME the test process may have inherited.
pub fn hm_env(cmd: &mut Command, home: &Path, user: &str, nix_state: &Path) {
    cmd.env("HOME", home)
        .env("USER", user)
        .env("NIX_STATE_DIR", nix_state);
    for k in [
        "XDG_STATE_HOME",
        "HOME_MANAGER_BACKUP_EXT",
        "HOME_MANAGER_BACKUP_COMMAND",
        "HOME_MANAGER_BACKUP_OVERWRITE",
        "DRY_RUN",
        "VERBOSE",
    ] {
        cmd.env_remove(k);
    }
}
