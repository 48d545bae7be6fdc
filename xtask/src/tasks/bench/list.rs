//! Figure of the foundation issue: `xtask list` on a generated repo of `--homes` homes and
//! `--hosts` hosts (the issue asks for 1000 and 100) vs the one `nix eval` that reads the
//! meta files, which is the floor: list cannot be faster than reading meta.nix.

use std::{fs, path::Path};

use anyhow::Result;

use super::{Bencher, Figure, Scratch};
use crate::repo::Repo;

pub fn run(b: &Bencher) -> Result<Vec<Figure>> {
    let homes = b.homes.max(1000);
    let hosts = b.hosts.max(100);
    let tmp = Scratch::new("list")?;
    let root = tmp.0.as_path();
    generate(root, homes, hosts)?;

    // The baseline is exactly the evaluation list runs, taken from the repo model.
    let repo = Repo::scan(root)?;
    let expr = repo.meta_expr();
    let nix = b.median(|| {
        Bencher::run(
            b.nix(root)
                .args(["eval", "--json", "--impure", "--expr", &expr]),
        )
    })?;
    let ours = b.median(|| Bencher::run(b.xtask(root).args(["list", "--json"])))?;
    let delta_ms = (ours.as_secs_f64() - nix.as_secs_f64()) * 1000.0;
    Ok(vec![Figure {
        name: format!("list, {homes} homes + {hosts} hosts"),
        ours,
        baseline: Some(("nix eval of all meta.nix files (one process)".into(), nix)),
        bound: format!("+{delta_ms:.1} ms over nix eval (issue: <= +50 ms)"),
    }])
}

/// A repo of `homes` users (every tenth with @global, every fifth integrated on a host)
/// and `hosts` hosts with meta.nix.
pub fn generate(root: &Path, homes: usize, hosts: usize) -> Result<()> {
    fs::write(root.join("flake.nix"), "{ outputs = { self }: { }; }\n")?;
    for h in 0..hosts {
        let dir = root.join(format!("systems/host{h}"));
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("default.nix"), "{ ... }:\n{\n}\n")?;
        fs::write(
            dir.join("meta.nix"),
            format!("{{\n  system = \"x86_64-linux\";\n  users = [ \"user{h}\" ];\n}}\n"),
        )?;
    }
    for u in 0..homes {
        let mut dirs = vec![format!("user{u}")];
        if u % 10 == 0 {
            dirs.push(format!("user{u}@global"));
        }
        if u % 5 == 0 && hosts > 0 {
            dirs.push(format!("user{u}@host{}", u % hosts));
        }
        for d in dirs {
            let dir = root.join("homes").join(d);
            fs::create_dir_all(&dir)?;
            fs::write(dir.join("default.nix"), "{ ... }:\n{\n}\n")?;
        }
        if u % 50 == 0 {
            fs::write(
                root.join(format!("homes/user{u}/meta.nix")),
                "{ system = \"aarch64-linux\"; }\n",
            )?;
        }
    }
    Ok(())
}
