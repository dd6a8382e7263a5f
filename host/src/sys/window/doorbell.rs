//! The async wait engine's request queue and doorbell: how tasks hand
//! waits to the io_uring reactor thread without a lost
//! request (`host/src/wait/reactor.rs`). It lives beside the registry's
//! record protocol so that the same file is model-checked with loom
//! (`host/loom-model`, `--cfg shmgate_loom`).
//!
//! # Protocol
//!
//! - A **submitter** pushes its request under the queue's lock. If the
//!   queue was empty, it then increments the doorbell word and wakes it
//!   (a private futex wake); if not, it does nothing more.
//! - The **reactor**, in each round, reads the doorbell word (`rung`),
//!   then drains the queue, then, unless a doorbell wait is still armed,
//!   arms one (an `IORING_OP_FUTEX_WAITV`) that expects `rung`, and sleeps
//!   until some completion arrives. The armed wait completes at once if
//!   the word no longer holds `rung`, and on any wake after it was armed.
//!
//! # Invariant: no request is left in the queue while the reactor sleeps
//!
//! Take a request `r` that the reactor's drain in round `k` missed: it was
//! pushed after that drain. If the queue was empty when `r` was pushed,
//! its submitter increments and wakes the word after the drain, hence
//! after round `k` read `rung`: either the armed wait (armed in round `k`
//! with `rung`, or earlier, in which case the wake comes after it was
//! armed) sees a changed value or is woken, so the reactor runs round
//! `k + 1` and drains `r`. If the queue was not empty, it held a request
//! `q` pushed after the drain too (the drain empties the queue, and
//! nothing else removes from it), whose submitter found the queue empty
//! and so wakes as above; the drain that takes `q` takes `r`.
//!
//! The model in `loom_tests` checks this for two submitters and a
//! reactor whose doorbell wait stays armed across rounds (another wait's
//! completion ends its sleep with the doorbell wait still armed), with the kernel
//! futex modelled by a mutex and a condition variable (the futex hash
//! bucket lock makes "check the value, then sleep" atomic with respect to
//! wakes, which is what the mutex gives).

use super::sync::{AtomicU32, Mutex, Ordering};

/// A request queue with a doorbell word.
#[derive(Debug)]
pub(crate) struct Doorbell<T> {
    queue: Mutex<Vec<T>>,
    word: AtomicU32,
}

impl<T> Doorbell<T> {
    pub(crate) fn new() -> Doorbell<T> {
        Doorbell {
            queue: Mutex::new(Vec::new()),
            word: AtomicU32::new(0),
        }
    }

    /// The doorbell word (the reactor's futex waits on it).
    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.word
    }

    /// The submitter's side: queues `request`; `true` if the caller must
    /// now wake the word (the queue was empty, and the word has been
    /// incremented).
    pub(crate) fn push(&self, request: T) -> bool {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = q.is_empty();
            q.push(request);
            was_empty
        };
        if was_empty {
            self.word.fetch_add(1, Ordering::SeqCst);
        }
        was_empty
    }

    /// The reactor's side of one round: the word's value, read first, and
    /// every queued request.
    pub(crate) fn drain(&self) -> (u32, Vec<T>) {
        let rung = self.word.load(Ordering::SeqCst);
        let requests = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        (rung, requests)
    }
}

/// The protocol under loom: every interleaving of two submitters and the
/// reactor, whose doorbell wait stays armed across rounds as in the real
/// one. A lost request shows up as a deadlock, which loom reports.
#[cfg(all(test, shmgate_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::{Arc, Condvar};
    use loom::thread;

    /// The kernel's side of the doorbell's futex wait, and of some other
    /// wait's completion (which ends the reactor's sleep with the doorbell
    /// wait still armed).
    #[derive(Default)]
    struct Kernel {
        /// (armed, fired, other): an armed wait fires on a wake; a fired
        /// one is a doorbell completion the reactor has not reaped; `other`
        /// an unreaped completion of another wait.
        state: loom::sync::Mutex<(bool, bool, bool)>,
        cv: Condvar,
    }

    impl Kernel {
        /// Arms a wait that expects `rung`: fires at once if the word
        /// differs (the value check happens under the bucket lock).
        fn arm(&self, word: &AtomicU32, rung: u32) {
            let mut st = self.state.lock().unwrap();
            if word.load(Ordering::SeqCst) == rung {
                st.0 = true;
            } else {
                st.1 = true;
            }
        }

        /// A futex wake.
        fn wake(&self) {
            let mut st = self.state.lock().unwrap();
            if st.0 {
                st.0 = false;
                st.1 = true;
                self.cv.notify_all();
            }
        }

        /// Another wait completes.
        fn complete_other(&self) {
            self.state.lock().unwrap().2 = true;
            self.cv.notify_all();
        }

        /// `io_uring_enter` until a completion; reaps them all. `true` if
        /// the doorbell's was among them.
        fn sleep(&self) -> bool {
            let mut st = self.state.lock().unwrap();
            while !st.1 && !st.2 {
                st = self.cv.wait(st).unwrap();
            }
            let bell = st.1;
            st.1 = false;
            st.2 = false;
            bell
        }
    }

    /// Bounded to 3 preemptions (tokio bounds its models the same way): the full
    /// space of four threads with a mutex and a condition variable takes
    /// hours.
    #[test]
    fn no_request_is_lost() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let bell = Arc::new(Doorbell::<u32>::new());
            let kernel = Arc::new(Kernel::default());
            let submitters: Vec<_> = (0..2)
                .map(|i| {
                    let (bell, kernel) = (Arc::clone(&bell), Arc::clone(&kernel));
                    thread::spawn(move || {
                        if bell.push(i) {
                            kernel.wake();
                        }
                    })
                })
                .collect();
            let other = {
                let kernel = Arc::clone(&kernel);
                thread::spawn(move || kernel.complete_other())
            };
            let mut got = Vec::new();
            let mut armed = false;
            while got.len() < 2 {
                let (rung, requests) = bell.drain();
                got.extend(requests);
                if got.len() == 2 {
                    break;
                }
                if !armed {
                    kernel.arm(bell.word(), rung);
                    armed = true;
                }
                if kernel.sleep() {
                    armed = false;
                }
            }
            got.sort_unstable();
            assert_eq!(got, [0, 1]);
            for s in submitters {
                s.join().unwrap();
            }
            other.join().unwrap();
        });
    }
}
