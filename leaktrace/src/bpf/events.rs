//! The stream of library-load events (`UNWIND_EVENTS`): the dynamic linker stopped a traced
//! process at a library load or unload, and its unwind table must take the change in.

use aya::maps::{MapData, RingBuf};
use leaktrace_common::{names, UnwindEvent};

use super::map_error;
use crate::error::Result;

/// Library-load events from the eBPF programs, readable as they come.
pub struct UnwindEvents {
    pub(super) fd: tokio::io::unix::AsyncFd<RingBuf<MapData>>,
}

impl UnwindEvents {
    /// Waits until at least one event is available and returns every pending one.
    pub async fn next_batch(&mut self) -> Result<Vec<UnwindEvent>> {
        loop {
            let mut guard = self.fd.readable_mut().await.map_err(|e| map_error(names::UNWIND_EVENTS, e))?;
            let ring = guard.get_inner_mut();
            let mut events = Vec::new();
            while let Some(item) = ring.next() {
                if item.len() >= std::mem::size_of::<UnwindEvent>() {
                    // SAFETY: the programs write whole UnwindEvent values; read unaligned.
                    events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<UnwindEvent>()) });
                }
            }
            guard.clear_ready();
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }

    /// Every event already in the buffer, without waiting.
    pub fn drain_now(&mut self) -> Vec<UnwindEvent> {
        let ring = self.fd.get_mut();
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<UnwindEvent>() {
                // SAFETY: as in `next_batch`.
                events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<UnwindEvent>()) });
            }
        }
        events
    }
}
