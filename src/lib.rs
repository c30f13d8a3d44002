//! The napi binding: converts types at the Node boundary and nothing else.
//! Every exported type is named `Binding*`; behaviour lives in `appkit-jobs-core`.
#![deny(clippy::all)]

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
