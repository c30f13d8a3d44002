//! appkit-jobs core: everything the Jobs plugin does, with no Node types.
//! One module per concept; `jobs` ties them together for the binding and the routes.
pub mod auth;
pub mod client;
pub mod error;
pub mod exec;
pub mod history;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod ledger;
pub mod params;
pub mod poller;
pub mod progress;
pub mod registry;
pub mod repair;
pub mod routes;
pub mod run;
pub mod run_end;
pub mod schema;
pub mod sse;
pub mod telemetry;

pub use error::{JobsError, Result};

/// An environment map from pairs, for tests.
#[cfg(test)]
pub(crate) mod test_env {
    use std::collections::HashMap;

    pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}
