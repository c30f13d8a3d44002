//! Native events on their way to JS, in batches. Producers (watch and stream drivers on Tokio
//! workers) push; the JS thread is woken once, shortly after the queue turns non-empty, and
//! takes the whole queue. One wake-up then serves many events, where a promise per event would
//! cost a threadsafe function, a promise and a wake-up each. The short wait before waking
//! ([`COALESCE`]) gathers the updates of polls that fall due on the same tick but answer a few
//! ms apart: without it most updates of multi-task runs woke JS one by one. One-shot calls
//! (`runNow`) finish through a queue that wakes JS at once ([`Delivery::immediate`]): their
//! caller waits for that one answer.
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

/// `() => void`, called on the JS thread. Weak: it never keeps Node alive by itself.
pub type Wake = ThreadsafeFunction<(), Unknown<'static>, (), Status, false, true>;

/// How long a batch gathers events before JS is woken: well under a poll interval (50 ms at
/// the least), and long enough for the polls of one tick to answer.
pub const COALESCE: Duration = Duration::from_millis(4);

pub struct Delivery<E> {
    queue: Mutex<Vec<E>>,
    wake: Arc<OnceLock<Wake>>,
    /// How long a batch gathers before JS is woken; zero: at once, from the pushing thread.
    coalesce: Duration,
}

impl<E> Default for Delivery<E> {
    fn default() -> Self {
        Delivery {
            queue: Mutex::new(Vec::new()),
            wake: Arc::default(),
            coalesce: COALESCE,
        }
    }
}

impl<E> Delivery<E> {
    /// A queue that wakes JS as soon as it turns non-empty (what is pushed while JS has not
    /// taken the queue yet still shares that wake-up).
    pub fn immediate() -> Self {
        Delivery {
            coalesce: Duration::ZERO,
            ..Delivery::default()
        }
    }

    /// Sets where to wake JS; only the first call counts.
    pub fn wake_with(&self, wake: Wake) {
        let _ = self.wake.set(wake);
    }

    pub fn push(&self, event: E) {
        let first = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push(event);
            queue.len() == 1
        };
        if !first {
            return;
        }
        if self.coalesce.is_zero() {
            if let Some(wake) = self.wake.get() {
                wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        } else if self.wake.get().is_some() {
            let (wake, coalesce) = (self.wake.clone(), self.coalesce);
            napi::bindgen_prelude::spawn(async move {
                tokio::time::sleep(coalesce).await;
                if let Some(wake) = wake.get() {
                    wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
                }
            });
        }
    }

    /// Every event pushed since the last call, in order.
    pub fn take(&self) -> Vec<E> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
