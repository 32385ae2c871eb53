//! Indices of the per-CPU `COUNTERS` array: activity and every kind of lost or
//! unattributable event, so reports can say exactly what they could not see.

indexed_enum! {
    /// One slot of the `COUNTERS` per-CPU array.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Counter {
        /// Allocation calls that returned a block and were recorded (or tried to be).
        AllocCalls = 0,
        /// free() calls with a non-NULL pointer.
        FreeCalls = 1,
        /// Allocations not recorded because `ALLOCS` was full.
        AllocsMapFull = 2,
        /// Allocations recorded without a stack: the stack map was full or the walk failed.
        StackLost = 3,
        /// Allocations recorded without a stack: their stack hashed onto a different stored stack.
        StackCollision = 4,
        /// Allocation returns with no matching entry (the call began before attach, or entry state was lost).
        ReturnWithoutEntry = 5,
        /// Allocation entries not recorded because `PENDING` was full.
        PendingMapFull = 6,
        /// Entries found left behind by a call that never returned (longjmp, thread killed).
        PendingStale = 7,
        /// free() of an address not in `ALLOCS` (allocated before attach, or untracked): informational.
        FreeUnknown = 8,
        /// posix_memalign results whose out-pointer could not be read.
        OutPointerUnreadable = 9,
        /// Traced calls made from inside another traced call; the outer call accounts for the block.
        NestedCalls = 10,
        /// Allocation calls that failed (returned NULL): informational.
        FailedAllocs = 11,
        /// Kernel mode: objects recorded.
        KernelAllocs = 12,
        /// Kernel mode: free events seen.
        KernelFrees = 13,
        /// Kernel mode: objects not recorded because `KALLOCS` was full.
        KernelMapFull = 14,
        /// Kernel mode: objects recorded without a kernel stack (map full or walk failed).
        KernelStackLost = 15,
        /// Kernel mode: objects recorded without a kernel stack (hash collision).
        KernelStackCollision = 16,
        /// Kernel mode: frees of objects not being tracked (most predate tracing): informational.
        KernelFreeUnknown = 17,
        /// Kernel mode: user stacks requested but not captured (kernel thread, IRQ, map full).
        KernelUserStackLost = 18,
        /// Allocations whose stack could not be given turnover counters (`STACK_STATS` full).
        StackStatsFull = 19,
        /// Library loads user space was not told of (event buffer full): allocations from the new
        /// library may be unwound short until the next table refresh.
        UnwindEventLost = 20,
        /// `--sample-bytes`: allocation calls the sampler left out (by design, not a loss).
        SampledOut = 21,
        /// Process events user space was not told of (event buffer full): a followed child or
        /// an exec may have been missed.
        ProcessEventLost = 22,
        /// Allocations whose DWARF unwinding stopped at a library the process had just loaded,
        /// before its unwind table took the library in (`StackEnd::TableNotReady`).
        UnwindTableNotReady = 23,
        /// PHP processes: allocations whose PHP frames were not stored (`PHP_STACKS` full); their
        /// stacks show the native frames only.
        PhpStackLost = 24,
        /// PHP processes: PHP frame chains cut at `MAX_PHP_FRAMES` (the outermost frames are missing).
        PhpStackTruncated = 25,
    }
}
