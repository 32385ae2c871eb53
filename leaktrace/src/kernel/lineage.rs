//! The chain of processes behind a kernel allocation: the allocating process's parent, its
//! parent, and so on. A status script's leak is allocated by a short-lived child (`perl`);
//! what the operator needs is what started it (`perl` ← `fake-status.sh` ← `sh` ←
//! `service`). The eBPF side records each process's parent and name at fork and exec, so
//! the chain can be told after every process in it has exited; /proc fills in the
//! processes that were forked before tracing began.

use std::collections::HashMap;

use crate::model::Ancestor;

/// Ancestors shown at most.
pub const MAX_ANCESTORS: usize = 8;

/// Names that only start another program: the origin of a chain is the top-most ancestor
/// not among them.
const LAUNCHERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "busybox", "env", "sudo", "su", "runuser", "nice", "nohup",
    "setsid", "timeout", "xargs", "stdbuf", "ionice", "chrt", "taskset", "script", "login", "sshd", "tmux", "screen",
];

/// What is known of one process: its parent, its name, and whether it leads its session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessLink {
    /// Parent's process id; 0 when unknown.
    pub parent: u32,
    /// Command name.
    pub comm: String,
    /// It is its session's leader (known only for processes still alive).
    pub session_leader: bool,
}

/// The ancestors of `tgid`, parent first: up to and including a session leader, never init
/// (pid 1), kthreadd (pid 2) or `stop_at` (leaktrace itself, whose `--run` shells are the
/// top of their chains), at most [`MAX_ANCESTORS`].
pub fn ancestry(tgid: u32, stop_at: u32, link: impl Fn(u32) -> Option<ProcessLink>) -> Vec<Ancestor> {
    let mut chain = Vec::new();
    let mut current = link(tgid);
    while let Some(ProcessLink { parent, session_leader, .. }) = current {
        if session_leader || parent <= 2 || parent == stop_at || chain.len() == MAX_ANCESTORS {
            break;
        }
        current = link(parent);
        let comm = current.as_ref().map_or_else(|| "?".to_string(), |l| l.comm.clone());
        chain.push(Ancestor { pid: parent, comm });
    }
    chain
}

/// Where a chain starts: the top-most ancestor that is not a shell or a launcher, else the
/// allocating process itself.
pub fn origin(comm: &str, chain: &[Ancestor]) -> String {
    chain
        .iter()
        .rev()
        .map(|a| a.comm.as_str())
        .find(|c| !LAUNCHERS.contains(c) && *c != "?")
        .unwrap_or(comm)
        .to_string()
}

/// The chains of `tgids`, from what the fork and exec tracepoints recorded (`recorded`) and
/// from /proc for processes they did not see start.
pub fn ancestries(
    tgids: impl IntoIterator<Item = u32>,
    recorded: impl Fn(u32) -> Option<(u32, String)>,
    stop_at: u32,
) -> HashMap<u32, Vec<Ancestor>> {
    let link = |pid: u32| {
        let live = from_proc(pid);
        match (recorded(pid), live) {
            // The recorded parent is the one at fork: a reparented process's /proc parent is
            // init or a subreaper, not what started it.
            (Some((parent, comm)), live) if parent != 0 => {
                Some(ProcessLink { parent, comm, session_leader: live.is_some_and(|l| l.session_leader) })
            }
            (Some((_, comm)), Some(live)) => Some(ProcessLink { comm, ..live }),
            (Some((_, comm)), None) => Some(ProcessLink { comm, ..ProcessLink::default() }),
            (None, live) => live,
        }
    };
    tgids.into_iter().map(|tgid| (tgid, ancestry(tgid, stop_at, link))).collect()
}

/// A live process's parent, name and session from /proc/PID/stat.
fn from_proc(pid: u32) -> Option<ProcessLink> {
    let stat = procfs::process::Process::new(pid as i32).ok()?.stat().ok()?;
    Some(ProcessLink {
        parent: u32::try_from(stat.ppid).unwrap_or(0),
        comm: stat.comm,
        session_leader: stat.session == stat.pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table<'a>(entries: &'a [(u32, u32, &'a str, bool)]) -> impl Fn(u32) -> Option<ProcessLink> + 'a {
        move |pid| {
            entries.iter().find(|e| e.0 == pid).map(|&(_, parent, comm, session_leader)| ProcessLink {
                parent,
                comm: comm.to_string(),
                session_leader,
            })
        }
    }

    fn names(chain: &[Ancestor]) -> Vec<String> {
        chain.iter().map(|a| format!("{}[{}]", a.comm, a.pid)).collect()
    }

    #[test]
    fn a_chain_goes_up_to_its_session_leader() {
        let processes = [
            (40, 30, "perl", false),
            (30, 20, "fake-status.sh", false),
            (20, 10, "sh", false),
            (10, 5, "service", false),
            (5, 1, "bash", true),
        ];
        let chain = ancestry(40, 0, table(&processes));
        assert_eq!(names(&chain), ["fake-status.sh[30]", "sh[20]", "service[10]", "bash[5]"]);
        assert_eq!(origin("perl", &chain), "service");
    }

    #[test]
    fn a_chain_stops_below_init_leaktrace_and_the_limit() {
        let processes = [(40, 30, "perl", false), (30, 1, "cron", false)];
        assert_eq!(names(&ancestry(40, 0, table(&processes))), ["cron[30]"]);
        assert_eq!(names(&ancestry(40, 30, table(&processes))), Vec::<String>::new());
        let deep: Vec<(u32, u32, &str, bool)> = (3..40).map(|pid| (pid, pid - 1, "sh", false)).collect();
        assert_eq!(ancestry(39, 0, table(&deep)).len(), MAX_ANCESTORS);
    }

    #[test]
    fn an_unknown_parent_is_named_as_such_and_ends_the_chain() {
        let processes = [(40, 30, "perl", false)];
        assert_eq!(names(&ancestry(40, 0, table(&processes))), ["?[30]"]);
        assert_eq!(origin("perl", &ancestry(40, 0, table(&processes))), "perl");
    }

    #[test]
    fn the_origin_skips_shells_and_launchers() {
        let chain = |comms: &[&str]| -> Vec<Ancestor> {
            comms.iter().enumerate().map(|(i, c)| Ancestor { pid: i as u32 + 10, comm: c.to_string() }).collect()
        };
        assert_eq!(origin("cat", &chain(&["sh", "cron", "bash"])), "cron");
        assert_eq!(origin("cat", &chain(&["env", "sudo", "bash"])), "cat");
        assert_eq!(origin("cat", &[]), "cat");
    }
}
