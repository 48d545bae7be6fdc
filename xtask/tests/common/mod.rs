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

/// Offline nix for tests: no substituters (the machine has no network), no dirty-tree noise.
pub const NIX_CONFIG: &str = "substituters =\nwarn-dirty = false\n";

/// The fixture flake: the repo's own lib/ with stub builders, no inputs.
pub const FIXTURE_FLAKE: &str = r#"{
  outputs =
    { self }:
    import ./lib {
      homesDir = ./homes;
      systemsDir = ./systems;
      inherit (import ./stub-builders.nix) mkHome mkSystem;
    };
}
"#;

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
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
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
        for f in ["stub-builders.nix", "activate.sh"] {
            fs::copy(fixtures_dir().join(f), root.join(f)).unwrap();
        }
        fs::write(root.join("flake.nix"), FIXTURE_FLAKE).unwrap();
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

    /// `systems/<host>/` with a default.nix and, when given, a meta.nix.
    pub fn host(&self, host: &str, meta: Option<&str>) -> &Self {
        self.write(
            &format!("systems/{host}/default.nix"),
            "{ ... }:\n{\n  system.stateVersion = \"24.11\";\n}\n",
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
            .env_remove("XDG_CACHE_HOME");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn xtask(&self, args: &[&str]) -> Run {
        run(self.command(args).output().unwrap())
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

/// A Nix string literal.
pub fn nix_str(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace("${", "\\${")
    )
}
