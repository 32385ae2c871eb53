//! The processes our probes stopped (`HELD`) and the attached processes whose unwind table
//! lags a library change (`TABLE_STALE`): read and cleared by leaktrace, and read by the
//! guardian, which holds its own descriptor of `HELD` so that the map outlives leaktrace.

use std::os::fd::{AsFd, OwnedFd};

use aya::maps::{HashMap, Map, MapData};
use leaktrace_common::{names, ProcessSlot};

use super::{map_error, missing_map, Tracer};
use crate::error::Result;

/// `HELD` opened from a descriptor another process handed over.
pub struct HeldMap {
    map: HashMap<MapData, u32, u32>,
}

impl HeldMap {
    /// The map behind `fd` (a duplicate of leaktrace's own descriptor of `HELD`).
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let data = MapData::from_fd(fd).map_err(|e| map_error(names::HELD, e))?;
        let map = HashMap::try_from(Map::HashMap(data)).map_err(|e| map_error(names::HELD, e))?;
        Ok(Self { map })
    }

    /// Every process marked as stopped by a probe.
    pub fn marked(&self) -> Vec<u32> {
        self.map.keys().filter_map(|key| key.ok()).collect()
    }
}

impl Tracer {
    /// A descriptor of `HELD` for the guardian.
    pub fn held_map_fd(&self) -> Result<OwnedFd> {
        let Some(Map::HashMap(data)) = self.ebpf.map(names::HELD) else { return Err(missing_map(names::HELD)) };
        data.fd().as_fd().try_clone_to_owned().map_err(|e| map_error(names::HELD, e))
    }

    /// True when a probe stopped `tgid` and it has not been resumed since.
    pub fn is_held(&self, tgid: u32) -> bool {
        let Some(map) = self.ebpf.map(names::HELD) else { return false };
        let Ok(held) = HashMap::<_, u32, u32>::try_from(map) else { return false };
        held.get(&tgid, 0).is_ok()
    }

    /// Clears the mark of a process a probe stopped, before it is resumed. Returns whether
    /// it was marked: a process stopped by anyone else (the user's Ctrl-Z, a debugger) is not
    /// ours to resume.
    pub fn release_hold(&mut self, tgid: u32) -> Result<bool> {
        let map = self.ebpf.map_mut(names::HELD).ok_or_else(|| missing_map(names::HELD))?;
        let mut held: HashMap<_, u32, u32> = HashMap::try_from(map).map_err(|e| map_error(names::HELD, e))?;
        Ok(held.remove(&tgid).is_ok())
    }

    /// After a library change of an attached process has been handled: when its table did
    /// not change (nothing new was mapped), its stale mark would go on labelling unknown
    /// code as a library not taken in yet, so it is removed. When the table did change, the
    /// mark no longer matches its generation and is left alone.
    pub fn settle_table_stale(&mut self, tgid: u32) -> Result<()> {
        let current = {
            let map = self.ebpf.map(names::UNWIND_PROCESSES).ok_or_else(|| missing_map(names::UNWIND_PROCESSES))?;
            let processes: HashMap<_, u32, ProcessSlot> =
                HashMap::try_from(map).map_err(|e| map_error(names::UNWIND_PROCESSES, e))?;
            processes.get(&tgid, 0).ok().map(|slot| slot.generation)
        };
        let map = self.ebpf.map_mut(names::TABLE_STALE).ok_or_else(|| missing_map(names::TABLE_STALE))?;
        let mut stale: HashMap<_, u32, u32> = HashMap::try_from(map).map_err(|e| map_error(names::TABLE_STALE, e))?;
        if stale.get(&tgid, 0).ok().is_some_and(|marked| Some(marked) == current) {
            let _ = stale.remove(&tgid);
        }
        Ok(())
    }
}
