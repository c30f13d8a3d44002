//! `BindingEmulator`: the core Jobs API emulator, seen from Node (emulator.js is the only caller).
//!
//! Crossing conventions: option objects (emulator options, faults, users, jobs) arrive as JSON
//! strings (`JSON.stringify` keeps large integers exact); run ids arrive as decimal strings;
//! results are JSON values. The server runs on napi's tokio runtime and does not keep Node alive.
use std::sync::{Arc, Mutex};

use appkit_jobs_core::emulator::{Emulator, EmulatorOptions};
use appkit_jobs_core::JobsError;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

fn to_napi(e: JobsError) -> Error {
    Error::new(Status::InvalidArg, e.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T> {
    serde_json::from_str(json)
        .map_err(|e| Error::new(Status::InvalidArg, format!("invalid {what}: {e}")))
}

fn run_id(raw: &str) -> Result<i64> {
    raw.trim().parse::<i64>().map_err(|_| {
        Error::new(
            Status::InvalidArg,
            format!("invalid run id {raw:?}: expected an integer"),
        )
    })
}

/// Emulators not stopped yet. The core stops a server when its `Emulator` is dropped; from JS
/// that would happen at a random garbage collection if the caller kept only `url` and `token`,
/// so each server is held here until `stop()` (or the process exits).
static RUNNING: Mutex<Vec<Arc<Emulator>>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<Arc<Emulator>>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running emulator.
#[napi]
pub struct BindingEmulator {
    inner: Arc<Emulator>,
}

/// Starts an emulator. `options_json`: `JSON.stringify(EmulatorOptions)` (camelCase), or none.
#[napi(catch_unwind)]
pub async fn start_emulator(options_json: Option<String>) -> Result<BindingEmulator> {
    let options: EmulatorOptions = match options_json.as_deref() {
        None | Some("") | Some("null") | Some("undefined") => EmulatorOptions::default(),
        Some(text) => parse("emulator options", text)?,
    };
    let emu = Emulator::start(options)
        .await
        .map_err(|e| Error::new(Status::GenericFailure, e.to_string()))?;
    let inner = Arc::new(emu);
    running().push(inner.clone());
    Ok(BindingEmulator { inner })
}

#[napi]
impl BindingEmulator {
    /// `http://127.0.0.1:PORT`
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.inner.url()
    }
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        u32::from(self.inner.port())
    }
    /// The service principal's personal access token.
    #[napi(getter)]
    pub fn token(&self) -> String {
        self.inner.token()
    }
    #[napi(getter)]
    pub fn client_id(&self) -> String {
        self.inner.client_id()
    }
    #[napi(getter)]
    pub fn client_secret(&self) -> String {
        self.inner.client_secret()
    }
    #[napi(getter)]
    pub fn org_id(&self) -> String {
        self.inner.org_id()
    }

    /// Stops the server and frees the port (idempotent).
    #[napi(catch_unwind)]
    pub async fn stop(&self) -> Result<()> {
        running().retain(|e| !Arc::ptr_eq(e, &self.inner));
        self.inner.stop().await;
        Ok(())
    }

    /// `fault_json`: a FaultSpec (`{ path, method?, status?, errorCode?, message?, retryAfter?,
    /// delayMs?, reset?, body?, contentType?, html?, times? }`).
    #[napi]
    pub fn inject_fault(&self, fault_json: String) -> Result<()> {
        self.inner
            .inject_fault(parse("fault", &fault_json)?)
            .map_err(to_napi)
    }
    #[napi]
    pub fn clear_faults(&self) {
        self.inner.clear_faults()
    }
    /// The request log: `[{ method, path, query, body, identity, status, fault }]`, oldest first.
    #[napi]
    pub fn requests(&self) -> Result<Value> {
        serde_json::to_value(self.inner.requests()).map_err(|e| Error::from_reason(e.to_string()))
    }
    #[napi]
    pub fn clear_requests(&self) {
        self.inner.clear_requests()
    }
    /// Forgets runs, requests, faults, idempotency and OAuth tokens.
    #[napi]
    pub fn reset(&self) {
        self.inner.reset()
    }
    /// Moves a run to a state at once and returns it.
    #[napi]
    pub fn set_run_state(&self, run_id_str: String, state: String) -> Result<Value> {
        self.inner
            .set_run_state(run_id(&run_id_str)?, &state)
            .map_err(to_napi)
    }
    /// The run as runs/get renders it (first page of tasks), or null.
    #[napi]
    pub fn get_run(&self, run_id_str: String) -> Result<Option<Value>> {
        Ok(self.inner.get_run(run_id(&run_id_str)?))
    }
    /// `user_json`: `{ token, userName, permissions?: { "<jobId>": "CAN_VIEW" | ... }, defaultPermission? }`.
    #[napi]
    pub fn add_user(&self, user_json: String) -> Result<()> {
        self.inner
            .add_user(parse("user", &user_json)?)
            .map_err(to_napi)
    }
    /// `job_json`: a JobSpec; replaces a job with the same id.
    #[napi]
    pub fn add_job(&self, job_json: String) -> Result<()> {
        self.inner
            .add_job(parse("job", &job_json)?)
            .map_err(to_napi)
    }
    /// `[{ id, name, taskType, taskCount, parameters }]`
    #[napi]
    pub fn jobs(&self) -> Value {
        Value::Array(self.inner.jobs())
    }
    #[napi]
    pub fn set_time_scale(&self, scale: f64) -> Result<()> {
        self.inner.set_time_scale(scale).map_err(to_napi)
    }
    #[napi]
    pub fn advance_time(&self, ms: f64) -> Result<()> {
        self.inner.advance_time(ms).map_err(to_napi)
    }
    #[napi]
    pub fn set_oauth_token_ttl(&self, secs: u32) {
        self.inner.set_oauth_token_ttl(u64::from(secs))
    }
    #[napi]
    pub fn expire_oauth_tokens(&self) {
        self.inner.expire_oauth_tokens()
    }
    #[napi]
    pub fn run_count(&self) -> u32 {
        self.inner.run_count() as u32
    }
}
