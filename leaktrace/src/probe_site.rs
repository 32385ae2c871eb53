//! Where in a function to put its uprobe so that the kernel emulates the probed instruction.
//!
//! When a uprobe fires, x86's uprobe code either emulates the instruction under the breakpoint
//! in the trap handler, or copies it out of line and single-steps it, which costs a second
//! trap (about 11 µs on a VM, ten times the emulated path). Only a few instructions are
//! emulated (`arch/x86/kernel/uprobes.c`, Linux 6.18: `branch_setup_xol_ops` and
//! `push_setup_xol_ops`): `jmp rel8/rel32`, `call rel32`, `jcc rel8/rel32`, `nop`, and
//! `push` of a general register. glibc's `free` starts with `test %rdi,%rdi` (single-stepped)
//! followed by `je` (emulated), `memalign` with a `cmpb` followed by `je`.
//!
//! [`choose`] walks the function's entry block and picks the first emulated instruction that
//! every call passes exactly once, where every argument the eBPF program reads is still in a
//! register (its own, or one a 64-bit `mov` copied it to: mimalloc's `malloc` moves its size to
//! `%rsi` and reuses `%rdi` before its first branch; the site then tells the program where to
//! read it, through the attach cookie), and, when a return probe shares the site, where the
//! stack pointer still points at the return address (the kernel hijacks the word at `%rsp`
//! when the probe fires). Anything it cannot prove keeps the probe at the function's first
//! instruction.

use std::collections::BTreeSet;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess, OpKind, Register,
};

pub use crate::model::Handling;

/// What the programs at a site need from the machine state there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// Integer argument registers the entry program reads (rdi, rsi, rdx, … in order).
    pub args: u8,
    /// A return probe shares the site: the stack pointer must still address the return address.
    pub return_probe: bool,
}

/// The chosen place of one function's probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    /// Bytes from the function's first instruction.
    pub offset: u64,
    /// How the kernel runs the instruction there.
    pub handling: Handling,
    /// Bytes the instructions before the site moved the stack pointer down (pushes, `sub $n,%rsp`):
    /// the caller's return address is at `%rsp + stack_delta` there.
    pub stack_delta: u64,
    /// Where each argument is at the site, 4 bits per argument (0: its own register), as the
    /// entry programs read them from the attach cookie (`leaktrace_common::alloc::ARG_REGISTERS`).
    pub args_in: u16,
}

impl Site {
    /// The bits this site adds to its probe's attach cookie.
    pub fn cookie_bits(&self) -> u64 {
        u64::from(self.args_in) << leaktrace_common::alloc::ARG_REGISTERS_SHIFT
    }
}

/// The System V argument registers, in order.
const ARG_REGISTERS: [Register; 6] =
    [Register::RDI, Register::RSI, Register::RDX, Register::RCX, Register::R8, Register::R9];

/// The registers an entry program can read an argument from, in the order of their codes
/// (`leaktrace_common::alloc::ARG_REGISTERS`).
const READABLE: [Register; 7] =
    [Register::RDI, Register::RSI, Register::RDX, Register::RCX, Register::R8, Register::R9, Register::RAX];

/// `mov %src,%dst` between 64-bit registers: (dst, src). A narrower move truncates, so it is
/// no copy of a 64-bit argument.
fn register_copy(instruction: &Instruction) -> Option<(Register, Register)> {
    let is_mov = matches!(instruction.code(), Code::Mov_r64_rm64 | Code::Mov_rm64_r64);
    let registers = instruction.op0_kind() == OpKind::Register && instruction.op1_kind() == OpKind::Register;
    (is_mov && registers).then(|| (instruction.op0_register(), instruction.op1_register()))
}

/// The cookie bits saying where each argument is, given the registers holding each: its own
/// when it still holds it, else the first readable one. None when one is in none of them.
fn args_in(holders: &[Vec<Register>]) -> Option<u16> {
    let mut bits = 0u16;
    for (n, held) in holders.iter().enumerate() {
        if held.contains(&ARG_REGISTERS[n]) {
            continue;
        }
        let code = held.iter().find_map(|r| READABLE.iter().position(|x| x == r))? + 1;
        bits |= (code as u16) << (4 * n);
    }
    Some(bits)
}

/// Instructions looked at before giving up (entry blocks of allocator functions are short).
const MAX_INSTRUCTIONS: usize = 16;

/// Bytes of a function decoded when looking for its site.
pub const WINDOW: usize = 96;

/// How the kernel handles the instruction whose bytes start `bytes`, decided as the 6.18
/// kernel decides it (prefixes and opcode bytes, not semantics): see the module comment.
pub fn kernel_handling(bytes: &[u8]) -> Handling {
    let mut i = 0;
    let mut has_66 = false;
    let mut rex: Option<u8> = None;
    let mut prefixes = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            // es, cs, ss, ds and lock prefixes: is_prefix_bad() refuses the probe.
            0x26 | 0x2e | 0x36 | 0x3e | 0xf0 => return Handling::Refused,
            0x66 => has_66 = true,
            0x64 | 0x65 | 0x67 | 0xf2 | 0xf3 => {}
            0x40..=0x4f => {
                // REX only counts directly before the opcode.
                rex = Some(b);
                i += 1;
                break;
            }
            _ => break,
        }
        prefixes += 1;
        i += 1;
    }
    let Some(&opcode) = bytes.get(i) else { return Handling::SingleStepped };
    let legacy = prefixes > 0;
    match opcode {
        0xeb | 0xe9 | 0xe8 | 0x70..=0x7f if !has_66 => Handling::Emulated,
        // `prefix* + nop` is emulated as a jump by zero. With a REX prefix 0x90 is an xchg
        // (`41 90` swaps eax and r8d) that the kernel would skip: never a site.
        0x90 if rex.is_none() => Handling::Emulated,
        0x0f if !has_66 && matches!(bytes.get(i + 1), Some(0x80..=0x8f)) => Handling::Emulated,
        // push reg: one byte, or two with exactly REX 0x41 (r8–r15).
        0x50..=0x57 if !legacy && (rex.is_none() || rex == Some(0x41)) => Handling::Emulated,
        0x0f if matches!(
            bytes.get(i + 1),
            Some(0x00 | 0x01 | 0x05..=0x09 | 0x0b | 0x30 | 0x34 | 0x35 | 0x37 | 0x78 | 0x79 | 0xae)
        ) =>
        {
            Handling::Refused
        }
        0x06
        | 0x07
        | 0x0e
        | 0x16
        | 0x17
        | 0x1e
        | 0x1f
        | 0x27
        | 0x2f
        | 0x37
        | 0x3f
        | 0x60..=0x62
        | 0x6c..=0x6f
        | 0x82
        | 0x9a
        | 0xcc..=0xcf
        | 0xd4..=0xd6
        | 0xe4..=0xe7
        | 0xea
        | 0xec..=0xef
        | 0xf1
        | 0xf4
        | 0xfa
        | 0xfb => Handling::Refused,
        _ => Handling::SingleStepped,
    }
}

/// Picks the probe site in `code`, the first bytes of a function (at least its entry block).
/// `is_branch_target(offset)` says whether any branch of the program lands `offset` bytes into
/// the function: the site must be passed exactly once per call, so the walk stops before such
/// an instruction.
pub fn choose(code: &[u8], needs: Needs, is_branch_target: impl Fn(u64) -> bool) -> Site {
    let entry = Site { offset: 0, handling: kernel_handling(code), stack_delta: 0, args_in: 0 };
    if entry.handling == Handling::Emulated {
        return entry;
    }
    // The registers holding each argument the programs read, as the walk goes: its own at
    // first, and those it is copied to.
    let mut holders: Vec<Vec<Register>> = ARG_REGISTERS.iter().take(needs.args as usize).map(|r| vec![*r]).collect();
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut factory = InstructionInfoFactory::new();
    let mut instruction = Instruction::default();
    let mut stack_delta: u64 = 0;
    for index in 0..MAX_INSTRUCTIONS {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            break;
        }
        let offset = instruction.ip();
        if index > 0 {
            if is_branch_target(offset) {
                break;
            }
            let handling = kernel_handling(&code[offset as usize..]);
            if handling == Handling::Emulated {
                match args_in(&holders) {
                    Some(args_in) => return Site { offset, handling, stack_delta, args_in },
                    None => break,
                }
            }
        }
        // Not emulated: the walk may continue past it only if it cannot change what the
        // programs read or the path of the call.
        if instruction.flow_control() != FlowControl::Next {
            break;
        }
        let info = factory.info(&instruction);
        let writes = |access: OpAccess| {
            matches!(access, OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite)
        };
        let written: Vec<Register> =
            info.used_registers().iter().filter(|r| writes(r.access())).map(|r| r.register().full_register()).collect();
        let copy = register_copy(&instruction);
        for held in &mut holders {
            let copied = copy.filter(|(_, src)| held.contains(src));
            held.retain(|r| !written.contains(r));
            if let Some((dst, _)) = copied {
                held.push(dst);
            }
        }
        if holders.iter().any(Vec::is_empty) {
            break;
        }
        let moves_stack =
            info.used_registers().iter().any(|r| writes(r.access()) && r.register().full_register() == Register::RSP);
        if moves_stack {
            if needs.return_probe {
                break;
            }
            match stack_decrement(&instruction) {
                Some(bytes) => stack_delta += bytes,
                None => break,
            }
        }
        // A store through %rsp could overwrite the return address the return probe replaces.
        let writes_stack_memory =
            info.used_memory().iter().any(|m| writes(m.access()) && m.base().full_register() == Register::RSP);
        if writes_stack_memory && needs.return_probe {
            break;
        }
    }
    entry
}

/// Bytes by which a passed instruction lowers the stack pointer, when it is a plain push or
/// `sub $imm,%rsp`; None for anything else that writes %rsp.
fn stack_decrement(instruction: &Instruction) -> Option<u64> {
    let increment = instruction.stack_pointer_increment();
    if increment < 0 {
        return Some(increment.unsigned_abs() as u64);
    }
    let is_sub_imm = matches!(instruction.code(), Code::Sub_rm64_imm8 | Code::Sub_rm64_imm32)
        && instruction.op0_kind() == OpKind::Register
        && instruction.op0_register() == Register::RSP;
    (is_sub_imm && instruction.immediate(1) as i64 >= 0).then(|| instruction.immediate(1))
}

/// Addresses, inside any of `windows` (half-open `[start, end)`), that a direct branch in
/// `code` (loaded at `address`) jumps or calls to.
///
/// Two passes, both conservative: a linear decode of the whole code finds every branch a
/// compiler emits; a byte scan for 32-bit relative branches finds those a linear decode could
/// step over (bytes it misread after data in code). A stray byte pattern can only add a
/// target, which keeps a probe at its function's entry: never wrong, at worst slower.
pub fn branch_targets(code: &[u8], address: u64, windows: &[(u64, u64)]) -> BTreeSet<u64> {
    let inside = |target: u64| windows.iter().any(|&(start, end)| target >= start && target < end);
    let mut targets = BTreeSet::new();
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            continue;
        }
        if matches!(instruction.op0_kind(), OpKind::NearBranch64) {
            let target = instruction.near_branch64();
            if inside(target) {
                targets.insert(target);
            }
        }
    }
    for (i, window) in code.windows(6).enumerate() {
        let (length, displacement) = match window {
            [0xe8 | 0xe9, a, b, c, d, _] => (5, i32::from_le_bytes([*a, *b, *c, *d])),
            [0x0f, 0x80..=0x8f, a, b, c, d] => (6, i32::from_le_bytes([*a, *b, *c, *d])),
            _ => continue,
        };
        // Wrapping, as the CPU computes it: a corrupt file may place the section anywhere.
        let target = address.wrapping_add(i as u64 + length).wrapping_add(displacement as i64 as u64);
        if inside(target) {
            targets.insert(target);
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: fn(u64) -> bool = |_| false;
    const FREE_LIKE: Needs = Needs { args: 1, return_probe: false };
    const MALLOC_LIKE: Needs = Needs { args: 1, return_probe: true };
    const TWO_ARGS: Needs = Needs { args: 2, return_probe: true };

    /// Debian's mimalloc 2.0.9: `malloc`, `calloc` and `realloc` copy their arguments to other
    /// registers and reuse theirs before the first instruction the kernel emulates.
    #[test]
    fn arguments_copied_away_are_read_where_they_went() {
        let malloc = [
            0x48, 0x8b, 0x05, 0x49, 0xb4, 0x00, 0x00, // mov 0xb449(%rip),%rax
            0x48, 0x89, 0xfe, // mov %rdi,%rsi
            0x64, 0x48, 0x8b, 0x38, // mov %fs:(%rax),%rdi
            0x48, 0x81, 0xfe, 0x00, 0x04, 0x00, 0x00, // cmp $0x400,%rsi
            0x77, 0x29, // ja
        ];
        // The size is in %rsi (code 2) at the `ja`.
        let site = choose(&malloc, MALLOC_LIKE, NONE);
        assert_eq!(site, Site { offset: 21, handling: Handling::Emulated, stack_delta: 0, args_in: 2 });
        assert_eq!(site.cookie_bits(), 2 << 48);
        let calloc = [
            0x48, 0x8b, 0x15, 0xc9, 0xad, 0x00, 0x00, // mov 0xadc9(%rip),%rdx
            0x48, 0x89, 0xf8, // mov %rdi,%rax
            0x64, 0x48, 0x8b, 0x3a, // mov %fs:(%rdx),%rdi
            0x48, 0x83, 0xf8, 0x01, // cmp $0x1,%rax
            0x74, 0x08, // je
        ];
        // The count in %rax (code 7), the size still in %rsi.
        assert_eq!(
            choose(&calloc, TWO_ARGS, NONE),
            Site { offset: 18, handling: Handling::Emulated, stack_delta: 0, args_in: 7 }
        );
        let realloc = [
            0x48, 0x8b, 0x05, 0x49, 0xa9, 0x00, 0x00, // mov 0xa949(%rip),%rax
            0x48, 0x89, 0xf2, // mov %rsi,%rdx
            0x48, 0x89, 0xfe, // mov %rdi,%rsi
            0x64, 0x48, 0x8b, 0x00, // mov %fs:(%rax),%rax
            0x48, 0x89, 0xc7, // mov %rax,%rdi
            0xe9, 0xf7, 0x4e, 0xff, 0xff, // jmp mi_heap_realloc
        ];
        // The old block in %rsi (code 2), the size in %rdx (code 3).
        let args_in = 2 | (3 << 4);
        assert_eq!(
            choose(&realloc, TWO_ARGS, NONE),
            Site { offset: 20, handling: Handling::Emulated, stack_delta: 0, args_in }
        );
        // A 32-bit copy truncates: no copy of a 64-bit argument, so the probe stays at the entry.
        let narrow = [&malloc[..7], &[0x89, 0xfe], &malloc[10..]].concat(); // mov %edi,%esi
        assert_eq!(choose(&narrow, MALLOC_LIKE, NONE).offset, 0);
    }

    #[test]
    fn the_kernels_emulated_forms() {
        for bytes in [
            &[0x55][..],                  // push %rbp
            &[0x41, 0x54],                // push %r12
            &[0xeb, 0x10],                // jmp rel8
            &[0xe9, 0, 0, 0, 0],          // jmp rel32
            &[0xe8, 0, 0, 0, 0],          // call rel32
            &[0x74, 0x07],                // je rel8
            &[0x0f, 0x84, 0xbf, 0, 0, 0], // je rel32
            &[0x90],                      // nop
            &[0x66, 0x90],                // xchg %ax,%ax
            &[0xf2, 0xe9, 0, 0, 0, 0],    // bnd jmp
        ] {
            assert_eq!(kernel_handling(bytes), Handling::Emulated, "{bytes:02x?}");
        }
        for bytes in [
            &[0x48, 0x85, 0xff][..],   // test %rdi,%rdi
            &[0xf3, 0x0f, 0x1e, 0xfa], // endbr64
            &[0x0f, 0x1f, 0x44, 0, 0], // nopl (multi-byte nops are stepped)
            &[0x48, 0x83, 0xec, 0x18], // sub $0x18,%rsp
            &[0x41, 0x90],             // xchg %eax,%r8d, not a nop
            &[0x49, 0x54],             // push with REX.W|B: not the 0x41 form
            &[0x66, 0xe9, 0, 0],       // 16-bit jmp
            &[0xc3],                   // ret
        ] {
            assert_eq!(kernel_handling(bytes), Handling::SingleStepped, "{bytes:02x?}");
        }
        assert_eq!(kernel_handling(&[0xf0, 0x48, 0x0f, 0xb1, 0x11]), Handling::Refused); // lock cmpxchg
        assert_eq!(kernel_handling(&[0x3e, 0xff, 0xe0]), Handling::Refused); // notrack jmp *%rax
        assert_eq!(kernel_handling(&[0x0f, 0x05]), Handling::Refused); // syscall
    }

    #[test]
    fn an_emulated_first_instruction_stays_at_the_entry() {
        // malloc: push %r12; push %rbp
        let site = choose(&[0x41, 0x54, 0x55, 0x53], MALLOC_LIKE, NONE);
        assert_eq!(site, Site { offset: 0, handling: Handling::Emulated, stack_delta: 0, args_in: 0 });
    }

    #[test]
    fn frees_test_moves_to_its_je() {
        // free: test %rdi,%rdi; je …; push %rbp
        let code = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55];
        assert_eq!(
            choose(&code, FREE_LIKE, NONE),
            Site { offset: 3, handling: Handling::Emulated, stack_delta: 0, args_in: 0 }
        );
    }

    #[test]
    fn memaligns_cmpb_moves_to_the_branch_and_endbr64_is_passed() {
        // cmpb $0x0,0x140e71(%rip); je +7
        let code = [0x80, 0x3d, 0x71, 0x0e, 0x14, 0x00, 0x00, 0x74, 0x07];
        assert_eq!(choose(&code, Needs { args: 2, return_probe: true }, NONE).offset, 7);
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x55];
        assert_eq!(choose(&code, MALLOC_LIKE, NONE).offset, 4);
    }

    #[test]
    fn an_overwritten_argument_keeps_the_entry() {
        // mov %rsi,%rdi; push %rbx — the program reads rdi, gone after the mov.
        let code = [0x48, 0x89, 0xf7, 0x53];
        assert_eq!(
            choose(&code, FREE_LIKE, NONE),
            Site { offset: 0, handling: Handling::SingleStepped, stack_delta: 0, args_in: 0 }
        );
        // The same mov is harmless when only rdi's old value is not needed.
        assert_eq!(choose(&code, Needs { args: 0, return_probe: false }, NONE).offset, 3);
        // A 32-bit write clobbers the whole register: mov %eax,%esi for a two-argument program.
        let code = [0x89, 0xc6, 0x53];
        assert_eq!(choose(&code, Needs { args: 2, return_probe: false }, NONE).offset, 0);
    }

    #[test]
    fn a_branch_before_the_first_emulated_instruction_keeps_the_entry() {
        // test %rdi,%rdi; ret (a branch that is not emulated); push %rbx
        let code = [0x48, 0x85, 0xff, 0xc3, 0x53];
        assert_eq!(choose(&code, FREE_LIKE, NONE).offset, 0);
        // cmp; jmp *%rax; push
        let code = [0x48, 0x39, 0xf7, 0xff, 0xe0, 0x53];
        assert_eq!(choose(&code, FREE_LIKE, NONE).offset, 0);
    }

    #[test]
    fn a_jump_into_the_block_keeps_the_probe_before_it() {
        // test %rdi,%rdi; je: if something jumps to +3, the je runs twice in some calls.
        let code = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0];
        assert_eq!(choose(&code, FREE_LIKE, |offset| offset == 3).offset, 0);
    }

    #[test]
    fn a_moved_stack_adjusts_the_return_address_or_stops_a_return_probe() {
        // sub $0x18,%rsp; mov %rsi,0x8(%rsp); call rel32
        let code = [0x48, 0x83, 0xec, 0x18, 0x48, 0x89, 0x74, 0x24, 0x08, 0xe8, 0, 0, 0, 0];
        // Entry-only (exit-like): the site is the call, 0x18 bytes below the return address.
        assert_eq!(
            choose(&code, Needs { args: 2, return_probe: false }, NONE),
            Site { offset: 9, handling: Handling::Emulated, stack_delta: 0x18, args_in: 0 }
        );
        // With a return probe the kernel would hijack the wrong word: stay at the entry.
        assert_eq!(choose(&code, Needs { args: 2, return_probe: true }, NONE).offset, 0);
        // push imm32 (not emulated) lowers the stack by 8.
        let code = [0x68, 1, 0, 0, 0, 0xeb, 0];
        assert_eq!(choose(&code, Needs { args: 0, return_probe: false }, NONE).stack_delta, 8);
    }

    #[test]
    fn a_store_through_rsp_stops_a_return_probe() {
        // mov %rax,(%rsp); push %rbx
        let code = [0x48, 0x89, 0x04, 0x24, 0x53];
        assert_eq!(choose(&code, MALLOC_LIKE, NONE).offset, 0);
        assert_eq!(choose(&code, FREE_LIKE, NONE).offset, 4);
    }

    #[test]
    fn branch_targets_are_found_by_decoding_and_by_scanning() {
        // At 0x1000: jmp rel8 to 0x1007; nop; nop; …; then a call rel32 back to 0x1003.
        let mut code = vec![0xeb, 0x05, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90];
        let call_at = code.len() as u64;
        let displacement = (3i64 - (call_at as i64 + 5)) as i32;
        code.push(0xe8);
        code.extend_from_slice(&displacement.to_le_bytes());
        code.push(0xc3);
        let targets = branch_targets(&code, 0x1000, &[(0x1001, 0x1010)]);
        assert_eq!(targets.into_iter().collect::<Vec<_>>(), [0x1003, 0x1007]);
        assert!(branch_targets(&code, 0x1000, &[(0x2000, 0x2010)]).is_empty());
    }
}
