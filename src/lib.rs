//! The napi binding: converts types at the Node boundary and nothing else.
//! Every exported type is named `Binding*`; behaviour lives in `appkit-jobs-core`.
#![deny(clippy::all)]
// Under `cfg(test)` napi registers no exports, so everything looks unused; the binding is
// tested from Node (__test__/).
#![cfg_attr(test, allow(dead_code))]

mod delivery;
mod emulator;
mod error;
mod jobs;
mod json_text;
mod routes;

use napi_derive::napi;

/// The addon's Tokio runtime (napi's own, which every async method, watch and stream runs on),
/// built when the addon loads: ONE worker thread unless `TOKIO_WORKER_THREADS` says otherwise.
///
/// A call crosses threads twice (the JS thread hands it to a worker, the worker hands the
/// answer back). With two workers, each hand-over also woke the other worker to look for work
/// it did not find: a sequential `runNow` cost 7 context switches instead of 3, about 10 % of
/// its CPU (and of a watched run's). One worker runs an HTTP exchange in ~40 µs of CPU, far
/// more than the polls and streams of an app need; the JS thread stays the busier one.
#[napi_derive::module_init]
fn init() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("tokio-rt-worker");
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    // Should it fail, napi builds its default runtime on first use.
    if let Ok(runtime) = builder.build() {
        napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
    }
}

/// The addon's version, for diagnostics.
#[napi]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
