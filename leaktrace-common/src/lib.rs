//! Types and names shared by leaktrace's eBPF programs and its user-space loader.
//!
//! Everything here is `#[repr(C)]` and crosses the kernel boundary as raw bytes, so the
//! layouts are fixed by hand and checked by size assertions at compile time. With the `user`
//! feature the types implement `aya::Pod` so the loader can read them from maps.
#![no_std]

/// Declares a `#[repr(u32)]` enum whose values are 0, 1, 2… in order, with the conversions
/// both sides need derived from the one list: `ALL` (every value, in order), `LEN` and
/// `from_u32`. A compile-time check keeps the values equal to their positions, so a value
/// can index an array (the `COUNTERS` slots).
macro_rules! indexed_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: [$name; [$($value),+].len()] = [$($name::$variant),+];
            /// Number of values.
            pub const LEN: u32 = Self::ALL.len() as u32;

            /// The value numbered `value`, if there is one.
            pub const fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        const _: () = {
            let mut i = 0;
            while i < $name::ALL.len() {
                assert!($name::ALL[i] as usize == i, "values must be 0, 1, 2… in order");
                i += 1;
            }
        };
    };
}

pub mod alloc;
pub mod counters;
pub mod kernel;
pub mod names;
pub mod php;
pub mod process;
pub mod sampling;
pub mod unwind;

pub use alloc::{AllocInfo, AllocKey, Heap, PendingCall, PendingKind, StackRecord, StackStats, MAX_STACK_DEPTH};
pub use counters::Counter;
pub use kernel::{KernelAlloc, KernelKey, KernelSpace, Lineage, ReuseKey};
pub use php::{PhpFrame, PhpProcess, PhpStack, MAX_PHP_FRAMES};
pub use process::{ProcessEvent, ProcessEventKind};
pub use unwind::{
    HoldReason, MappingUnwinder, ProcessSlot, RowKind, StackEnd, UnwindEvent, UnwindEventKind, UnwindMapping, UnwindRow,
};
