//! Native events on their way to JS, in batches. Producers (watch and stream drivers on Tokio
//! workers) push; the JS thread is woken once, shortly after the queue turns non-empty, and
//! takes the whole queue. One wake-up then serves many events, where a promise per event would
//! cost a threadsafe function, a promise and a wake-up each. The short wait before waking
//! ([`COALESCE`]) gathers the updates of polls that fall due on the same tick but answer a few
//! ms apart: without it most updates of multi-task runs woke JS one by one.
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
}

impl<E> Default for Delivery<E> {
    fn default() -> Self {
        Delivery {
            queue: Mutex::new(Vec::new()),
            wake: Arc::default(),
        }
    }
}

impl<E> Delivery<E> {
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
        if first && self.wake.get().is_some() {
            let wake = self.wake.clone();
            napi::bindgen_prelude::spawn(async move {
                tokio::time::sleep(COALESCE).await;
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
