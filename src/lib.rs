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

/// The addon's version, for diagnostics.
#[napi]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
