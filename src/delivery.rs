//! Native events on their way to JS, in batches. Producers (watch and stream drivers on Tokio
//! workers) push; the JS thread is woken once when the queue turns non-empty and takes the
//! whole queue. One wake-up then serves many events, where a promise per event would cost a
//! threadsafe function, a promise and a wake-up each.
use std::sync::{Mutex, OnceLock};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

/// `() => void`, called on the JS thread. Weak: it never keeps Node alive by itself.
pub type Wake = ThreadsafeFunction<(), Unknown<'static>, (), Status, false, true>;

pub struct Delivery<E> {
    queue: Mutex<Vec<E>>,
    wake: OnceLock<Wake>,
}

impl<E> Default for Delivery<E> {
    fn default() -> Self {
        Delivery {
            queue: Mutex::new(Vec::new()),
            wake: OnceLock::new(),
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
        if first {
            if let Some(wake) = self.wake.get() {
                wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }

    /// Every event pushed since the last call, in order.
    pub fn take(&self) -> Vec<E> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
