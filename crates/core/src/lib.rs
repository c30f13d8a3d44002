//! appkit-jobs core: everything the Jobs plugin does, with no Node types.
//! One module per concept; `jobs` ties them together for the binding and the routes.
pub mod auth;
pub mod client;
pub mod emulator;
pub mod error;
pub mod exec;
pub mod jobs;
pub mod params;
pub mod poller;
pub mod registry;
pub mod routes;
pub mod run;

#[cfg(test)]
mod reliability_tests;

pub use error::{JobsError, Result};
