//! `--cgroup PATH`: a cgroup v2 (a container, a systemd service) whose processes are traced,
//! those in it at the start and those that join it or are started in it later.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};

use crate::error::{Error, Result};

/// A cgroup v2 directory, as the eBPF programs recognise it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// Its directory.
    pub path: PathBuf,
    /// Its id: the inode number of its directory (what `bpf_get_current_cgroup_id` returns).
    pub id: u64,
    /// Its depth below the root of the hierarchy (the root is 0).
    pub level: u32,
}

/// Finds the cgroup `arg` names: a cgroup v2 directory given by its full path, by a path
/// relative to the v2 mount (`system.slice/nginx.service`), or as /proc/PID/cgroup writes it
/// (`/system.slice/nginx.service`).
pub fn resolve(arg: &Path) -> Result<Cgroup> {
    let bad = |detail: String| Error::Usage(format!("--cgroup {}: {detail}", arg.display()));
    let mounts = unified_mounts();
    let Some((first_root, _)) = mounts.first() else {
        let v1 = nix::sys::statfs::statfs(arg).is_ok_and(|s| s.filesystem_type() == CGROUP_SUPER_MAGIC);
        return Err(bad(if v1 || any_v1_mounted() {
            "this system mounts cgroup v1 only; --cgroup needs the unified cgroup v2 hierarchy".into()
        } else {
            "no cgroup v2 hierarchy is mounted".into()
        }));
    };
    // A full path, else one relative to the mount (`/` is the root, as /proc/PID/cgroup says).
    let relative = first_root.join(arg.strip_prefix("/").unwrap_or(arg));
    let candidates: Vec<&Path> = if arg.is_absolute() { vec![arg, &relative] } else { vec![&relative] };
    let kind = |p: &Path| nix::sys::statfs::statfs(p).ok().map(|s| s.filesystem_type());
    let found = candidates.iter().find(|p| p.is_dir() && kind(p) == Some(CGROUP2_SUPER_MAGIC));
    let Some(path) = found.map(|p| p.to_path_buf()) else {
        let existing = candidates.iter().find(|p| p.exists());
        return Err(bad(match existing {
            Some(p) if kind(p) == Some(CGROUP_SUPER_MAGIC) => format!(
                "{} is in a cgroup v1 hierarchy; --cgroup needs cgroup v2 (mounted at {})",
                p.display(),
                first_root.display()
            ),
            Some(p) => format!("{} is not a cgroup v2 directory", p.display()),
            None => format!("no such cgroup ({} does not exist)", relative.display()),
        }));
    };
    let metadata = std::fs::metadata(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    // The depth counts from the hierarchy's root: the mount may show a subtree of it.
    let (mount, mount_depth) = mounts
        .iter()
        .filter(|(at, _)| path.starts_with(at))
        .max_by_key(|(at, _)| at.components().count())
        .ok_or_else(|| bad(format!("{} is under no cgroup v2 mount", path.display())))?;
    let below = path.strip_prefix(mount).map_or(0, |p| p.components().count());
    Ok(Cgroup { id: metadata.ino(), level: (mount_depth + below) as u32, path })
}

/// The cgroup v2 mounts: (mount point, depth in the hierarchy of the cgroup it shows).
fn unified_mounts() -> Vec<(PathBuf, usize)> {
    let Ok(infos) = procfs::process::Process::myself().and_then(|me| me.mountinfo()) else { return Vec::new() };
    infos
        .into_iter()
        .filter(|m| m.fs_type == "cgroup2")
        .map(|m| (m.mount_point, Path::new(&m.root).components().skip(1).count()))
        .collect()
}

fn any_v1_mounted() -> bool {
    procfs::process::Process::myself()
        .and_then(|me| me.mountinfo())
        .is_ok_and(|infos| infos.into_iter().any(|m| m.fs_type == "cgroup"))
}

impl Cgroup {
    /// Every process in the cgroup and in the cgroups below it, now.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        let mut dirs = vec![self.path.clone()];
        while let Some(dir) = dirs.pop() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            dirs.extend(
                entries.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()),
            );
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_cgroup_is_one_clear_error() {
        let err = resolve(Path::new("leaktrace-no-such-cgroup")).unwrap_err().to_string();
        assert!(err.starts_with("--cgroup leaktrace-no-such-cgroup: "), "{err}");
        assert!(err.contains("no such cgroup") || err.contains("cgroup v"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn the_root_is_level_zero_and_named_three_ways() {
        let Some((root, 0)) = unified_mounts().into_iter().next() else { return };
        let by_path = resolve(&root).unwrap();
        assert_eq!((by_path.level, by_path.path.clone()), (0, root.clone()));
        assert_eq!(resolve(Path::new("/")).unwrap().id, by_path.id);
        assert_eq!(resolve(Path::new("")).unwrap().id, by_path.id);
    }
}
