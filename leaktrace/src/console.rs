//! Standard output of a trace, written by a thread of its own.
//!
//! A write to a pipe nobody reads blocks (`leaktrace … | less` left paused, a stalled
//! reader). Done on the trace loop's thread, that write would keep the loop from seeing
//! Ctrl-C, the deadline or the target's exit; here the loop only hands reports over. An
//! interval report offered while two are still waiting to be written is skipped (and
//! counted): the reader is behind, and the next report says everything again. A closed
//! stdout (`| head`) ends the trace, with the exports still written.

use std::{
    io::Write as _,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Reports handed over and not yet written, beyond which interval reports are skipped.
const BACKLOG: usize = 2;
/// How long the end waits for stdout before saying that it waits.
const PATIENCE: Duration = Duration::from_secs(1);

/// The writer thread, seen from the trace.
pub(crate) struct Console {
    sender: Option<mpsc::Sender<String>>,
    pending: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Interval reports skipped because stdout was not being read.
    pub skipped: u64,
}

impl Console {
    /// Starts the writer thread.
    pub fn start() -> Self {
        let (sender, receiver) = mpsc::channel::<String>();
        let pending = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let (thread_pending, thread_closed) = (pending.clone(), closed.clone());
        let thread = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                let mut stdout = std::io::stdout().lock();
                for text in receiver {
                    let written = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
                    thread_pending.fetch_sub(1, Ordering::SeqCst);
                    if written.is_err() {
                        // EPIPE (the reader left) or any other failure: nothing more can be
                        // shown; the trace ends and writes its files.
                        thread_closed.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            })
            .ok();
        Self { sender: Some(sender), pending, closed, thread, skipped: 0 }
    }

    /// True once stdout cannot be written any more.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.thread.is_none()
    }

    /// Hands an interval report over, unless the reader is behind.
    pub fn offer(&mut self, text: String) {
        if self.pending.load(Ordering::SeqCst) >= BACKLOG {
            self.skipped += 1;
            return;
        }
        self.send(text);
    }

    /// Hands the final report over, whatever the backlog.
    pub fn finish(&mut self, text: String) {
        self.send(text);
    }

    fn send(&mut self, text: String) {
        if self.is_closed() {
            return;
        }
        if let Some(sender) = &self.sender {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if sender.send(text).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Waits until everything handed over is written, or stdout is closed. Returns whether
    /// it was all written.
    pub fn drain(mut self) -> bool {
        drop(self.sender.take());
        let Some(thread) = self.thread.take() else { return false };
        let started = Instant::now();
        let mut said = false;
        while !thread.is_finished() {
            if !said && started.elapsed() > PATIENCE {
                crate::say!("leaktrace: waiting for stdout to be read (Ctrl-C to quit without the report)");
                said = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = thread.join();
        !self.closed.load(Ordering::SeqCst)
    }
}
