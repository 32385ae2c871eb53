#!/usr/bin/python3
"""Runs bcc's memleak (Debian's /usr/sbin/memleak-bpfcc) unchanged, with one fix to bcc's
Python binding: Debian 12's python3-bpfcc 0.26 declares libbcc's bpf_attach_uprobe with six
arguments while libbcc 0.26 takes seven (the last is ref_ctr_offset, for USDT semaphores), so
every uprobe gets whatever the stack holds there as its ref_ctr_offset (6 on the benchmark's
VM: strace shows perf_event_open with config=0x600000000). The kernel then treats the probe as
a USDT probe with a semaphore at that file offset (which it increments in the target when a
writable mapping covers it), and while the probes exist every other uprobe at the same place
with another ref_ctr_offset fails with EINVAL ("ref_ctr_offset mismatch" in dmesg): bpftrace
could not attach to malloc while an unpatched memleak ran. The fix passes 0, as for any plain
uprobe. When the binding already declares seven arguments nothing is changed.

Usage: memleak-bpfcc.py [memleak-bpfcc arguments]   (MEMLEAK_BPFCC overrides the tool path)
"""
import ctypes as ct
import os
import runpy
import sys

from bcc.libbcc import lib

TOOL = os.environ.get("MEMLEAK_BPFCC", "/usr/sbin/memleak-bpfcc")

attach = lib.bpf_attach_uprobe
if len(attach.argtypes) == 6:
    attach.argtypes = list(attach.argtypes) + [ct.c_uint32]
    # bcc calls lib.bpf_attach_uprobe(...) through this module's `lib` object.
    lib.bpf_attach_uprobe = lambda *args: attach(*args, 0)

sys.argv = [TOOL] + sys.argv[1:]
runpy.run_path(TOOL, run_name="__main__")
