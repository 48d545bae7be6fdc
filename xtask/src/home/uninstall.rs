//! What `uninstall` removes and what it leaves, as `home-manager uninstall` does it
//! (it activates an empty generation whose cleanup removes the old generation's links,
//! then deletes the profile links, the GC roots and Home Manager's state), computed
//! before anything changes so it can be listed and confirmed.
//!
//! A path of the active generation's `home-files` is removed from `$HOME` only while it is
//! still the link that generation made (its text is `<home-manager-files>/<path>`), and
//! then the directories that leaves empty. Anything else stays: your files, backups, links
//! to elsewhere, and paths reached through a symlinked directory. Stricter than Home
//! Manager, whose cleanup also removes links into *other* `*-home-manager-files` paths.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::Result;

use super::{env::UserEnv, profile::Profile};
use crate::term;

#[derive(Debug, Default)]
pub struct Uninstall {
    /// The generations whose links are removed (`gcroots/current-home`, and the profile's
    /// current one when a killed switch left them apart).
    pub generations: Vec<PathBuf>,
    /// Links in `$HOME` that the generation made.
    pub links: Vec<PathBuf>,
    /// The profile link and its generation links.
    pub profile_links: Vec<PathBuf>,
    /// GC roots of the home.
    pub roots: Vec<PathBuf>,
    /// Home Manager's own state directories, removed whole (as Home Manager does).
    pub state: Vec<PathBuf>,
    /// What stays, and why.
    pub stays: Vec<(PathBuf, String)>,
}

impl Uninstall {
    /// The plan for `env`'s home. `extra_roots`: roots outside the home (the repository's
    /// `result-home-<user>`); `backup_ext`: the extension whose backups are listed as staying.
    pub fn plan(
        env: &UserEnv,
        profile: &Profile,
        extra_roots: &[PathBuf],
        backup_ext: Option<&str>,
    ) -> Uninstall {
        let mut u = Uninstall::default();
        let active = fs::read_link(env.current_home_root())
            .ok()
            .and_then(|p| fs::canonicalize(p).ok());
        let profiled = fs::canonicalize(profile.link()).ok();
        for g in active.into_iter().chain(profiled) {
            if !u.generations.contains(&g) {
                u.generations.push(g);
            }
        }
        let trees: Vec<PathBuf> = u
            .generations
            .iter()
            .filter_map(|g| fs::canonicalize(g.join("home-files")).ok())
            .collect();
        let mut rels = BTreeSet::new();
        for t in &trees {
            leaves(t, &mut PathBuf::new(), &mut rels);
        }
        for rel in &rels {
            let target = env.home.join(rel);
            if let Some(dir) = symlinked_parent(&env.home, rel) {
                if fs::symlink_metadata(&target).is_ok() {
                    u.stays.push((
                        target,
                        format!(
                            "reached through the symlinked directory {}",
                            env.tilde(&dir)
                        ),
                    ));
                }
                continue;
            }
            match fs::read_link(&target) {
                Ok(text) if trees.iter().any(|t| text == t.join(rel)) => {
                    u.links.push(target.clone());
                }
                Ok(text) => u.stays.push((
                    target.clone(),
                    format!("a link this home did not make (-> {})", text.display()),
                )),
                Err(_) if fs::symlink_metadata(&target).is_ok() => {
                    u.stays.push((target.clone(), "your file".into()));
                }
                Err(_) => {}
            }
            if let Some(ext) = backup_ext {
                let mut name = target.clone().into_os_string();
                name.push(format!(".{ext}"));
                let bak = PathBuf::from(name);
                if fs::symlink_metadata(&bak).is_ok() {
                    u.stays.push((bak, "a backup".into()));
                }
            }
        }
        u.profile_links = profile.links();
        let legacy = env
            .nix_state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/nix/var/nix"))
            .join("gcroots/per-user")
            .join(&env.user)
            .join("current-home");
        let gcroots = env.hm_state_dir().join("gcroots");
        u.roots = [
            gcroots.join("current-home"),
            gcroots.join("new-home"),
            legacy,
        ]
        .into_iter()
        .chain(extra_roots.iter().cloned())
        .filter(|r| fs::symlink_metadata(r).is_ok_and(|m| m.file_type().is_symlink()))
        .collect();
        // `${XDG_DATA_HOME:-~/.local/share}/home-manager`: Home Manager's news state.
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map_or_else(|| env.home.join(".local/share"), PathBuf::from)
            .join("home-manager");
        if fs::symlink_metadata(&data).is_ok_and(|m| m.is_dir()) {
            u.state.push(data);
        }
        u
    }

    /// Whether there is nothing of the home on this machine.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
            && self.profile_links.is_empty()
            && self.roots.is_empty()
            && self.state.is_empty()
    }

    /// The complete list: what goes, then what stays.
    pub fn print(&self, env: &UserEnv) {
        let t = |p: &Path| env.tilde(p);
        for g in &self.generations {
            term::info(&format!("active generation: {}", g.display()));
        }
        term::info(&format!(
            "{} {} links in $HOME, {} profile links, {} GC roots go; {} paths stay",
            term::paint(term::Style::Bold, "uninstall:"),
            self.links.len(),
            self.profile_links.len(),
            self.roots.len(),
            self.stays.len()
        ));
        for l in &self.links {
            term::info(&format!("  remove   {} (the generation's link)", t(l)));
        }
        for l in &self.profile_links {
            term::info(&format!("  remove   {} (profile)", t(l)));
        }
        for r in &self.roots {
            term::info(&format!("  remove   {} (GC root)", t(r)));
        }
        for s in &self.state {
            term::info(&format!("  remove   {} (Home Manager's state)", t(s)));
        }
        for (p, why) in &self.stays {
            term::info(&format!("  stays    {} ({why})", t(p)));
        }
    }

    /// Removes the links (and the directories that leaves empty, never `$HOME`), then the
    /// profile links, the roots and the state. Links first: if anything fails after them,
    /// the profile is still there and a switch puts the home back.
    pub fn run(&self, env: &UserEnv) -> Result<()> {
        for l in &self.links {
            remove(l)?;
            let mut dir = l.parent();
            while let Some(d) = dir {
                if d == env.home || !d.starts_with(&env.home) || fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
        for l in self.profile_links.iter().chain(&self.roots) {
            remove(l)?;
        }
        let gcroots = env.hm_state_dir().join("gcroots");
        let _ = fs::remove_dir(&gcroots);
        for s in &self.state {
            fs::remove_dir_all(s).map_err(|e| super::lock::io_error(e, s, "removing"))?;
        }
        Ok(())
    }
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(super::lock::io_error(e, path, "removing")),
    }
}

/// Relative paths of the files and links under `dir` (directories are walked, as `find
/// -type f -o -type l` lists them).
fn leaves(dir: &Path, rel: &mut PathBuf, out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir.join(&*rel)) else {
        return;
    };
    for e in entries.flatten() {
        rel.push(e.file_name());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            leaves(dir, rel, out);
        } else {
            out.insert(rel.clone());
        }
        rel.pop();
    }
}

/// The first directory between `home` and `home/rel` that is a symlink, if any.
fn symlinked_parent(home: &Path, rel: &Path) -> Option<PathBuf> {
    let mut dir = home.to_path_buf();
    let parent = rel.parent()?;
    for c in parent.components() {
        dir.push(c);
        if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some(dir);
        }
    }
    None
}
