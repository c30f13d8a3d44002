//! Helpers shared by the core's emulator-driven tests.
#![allow(dead_code)]
use std::collections::HashMap;

use appkit_jobs_core::registry::PluginConfig;
use appkit_jobs_emulator::{Emulator, EmulatorOptions, RequestLogEntry};
use serde_json::Value;

/// The emulator with its clock frozen (time scale 0): runs move only when a test moves them.
pub async fn frozen_emulator(opts: EmulatorOptions) -> Emulator {
    Emulator::start(EmulatorOptions {
        time_scale: Some(0.0),
        ..opts
    })
    .await
    .expect("emulator starts")
}

/// Host and PAT of `emu` (HOME points nowhere, so no ~/.databrickscfg is read), plus `extra`.
pub fn env(emu: &Emulator, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = HashMap::from([
        ("DATABRICKS_HOST".to_string(), emu.url()),
        ("DATABRICKS_TOKEN".to_string(), emu.token()),
        (
            "HOME".to_string(),
            "/nonexistent-appkit-jobs-home".to_string(),
        ),
    ]);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

/// Host and OAuth M2M client credentials of `emu`.
pub fn m2m_env(emu: &Emulator) -> HashMap<String, String> {
    HashMap::from([
        ("DATABRICKS_HOST".to_string(), emu.url()),
        ("DATABRICKS_CLIENT_ID".to_string(), emu.client_id()),
        ("DATABRICKS_CLIENT_SECRET".to_string(), emu.client_secret()),
        (
            "HOME".to_string(),
            "/nonexistent-appkit-jobs-home".to_string(),
        ),
    ])
}

pub fn config(v: Value) -> PluginConfig {
    serde_json::from_value(v).expect("plugin config")
}

/// Requests the emulator logged whose path ends with `suffix`.
pub fn requests_to(emu: &Emulator, suffix: &str) -> Vec<RequestLogEntry> {
    emu.requests()
        .into_iter()
        .filter(|r| r.path.ends_with(suffix))
        .collect()
}
pub mod postgres;
