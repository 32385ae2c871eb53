//! A stop signal during the final phase (symbolizing, printing, writing the files,
//! detaching) ends leaktrace at once, saying in one line what it did not write.
//!
//! The final phase runs synchronously on the thread that would otherwise notice signals, so
//! the handler is a plain signal handler: it writes a message prepared beforehand (and
//! updated as each output is done) and exits. Exiting is safe at any point: the kernel
//! removes the probes when leaktrace's descriptors close, and the guardian resumes a
//! launched command a probe had stopped.

use std::sync::atomic::{AtomicPtr, Ordering};

/// The line the handler writes: a leaked `&'static [u8]`, replaced (never freed) as the
/// final phase progresses, so that the handler always reads a whole message.
static MESSAGE: AtomicPtr<&'static [u8]> = AtomicPtr::new(std::ptr::null_mut());

/// Exit status after a signal: 128 + its number, as a shell reports a process it killed.
pub const fn exit_status(signal: i32) -> i32 {
    128 + signal
}

extern "C" fn on_signal(signal: libc::c_int) {
    let message = MESSAGE.load(Ordering::SeqCst);
    if !message.is_null() {
        // SAFETY: MESSAGE only ever holds pointers leaked by `not_written`, never freed.
        let bytes: &[u8] = unsafe { *message };
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is valid and static.
        unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
    }
    // SAFETY: as above.
    unsafe { libc::_exit(exit_status(signal)) };
}

/// From now on, SIGINT, SIGTERM and SIGHUP end leaktrace at once (see the module).
pub fn exit_on_signal() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only calls async-signal-safe functions; a zeroed
        // sigaction with an empty mask and no flags is a valid argument.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Sets what the handler says is not written yet (`what`: the final report, file paths).
pub fn not_written(what: &[String]) {
    let line = if what.is_empty() {
        "leaktrace: stopped while detaching; every report was written\n".to_string()
    } else {
        format!("leaktrace: stopped during the final report; not written: {}\n", what.join(", "))
    };
    let bytes: &'static [u8] = Box::leak(line.into_bytes().into_boxed_slice());
    MESSAGE.store(Box::leak(Box::new(bytes)), Ordering::SeqCst);
}
