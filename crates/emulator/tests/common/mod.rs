//! Helpers shared by the emulator's HTTP tests: a frozen-clock emulator and a small client.
#![allow(dead_code)]
use serde_json::{json, Value};

use appkit_jobs_emulator::*;

pub fn job(id: i64, outcome: &str) -> JobSpec {
    serde_json::from_value(json!({
        "id": id, "name": format!("job-{id}"), "outcome": outcome,
        "queueMs": 100, "pendingMs": 100, "durationMs": 1000, "terminatingMs": 100
    }))
    .unwrap()
}

pub async fn frozen(jobs: Vec<JobSpec>) -> Emulator {
    Emulator::start(EmulatorOptions {
        jobs: Some(jobs),
        time_scale: Some(0.0),
        ..Default::default()
    })
    .await
    .unwrap()
}

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(emu: &Emulator) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: emu.url(),
            token: emu.token(),
        }
    }
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            http: self.http.clone(),
            base: self.base.clone(),
            token: token.to_string(),
        }
    }
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> (u16, Value) {
        let req = self.http.get(format!("{}{path}", self.base)).query(query);
        Self::send(req.bearer_auth(&self.token)).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let req = self.http.post(format!("{}{path}", self.base)).json(&body);
        Self::send(req.bearer_auth(&self.token)).await
    }
    async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    pub async fn run_now(&self, body: Value) -> i64 {
        let (s, v) = self.post("/api/2.2/jobs/run-now", body).await;
        assert_eq!(s, 200, "{v}");
        v["run_id"].as_i64().unwrap()
    }
    pub async fn run(&self, id: i64) -> Value {
        let (s, v) = self
            .get("/api/2.2/jobs/runs/get", &[("run_id", id.to_string())])
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

pub fn life(run: &Value) -> &str {
    run["state"]["life_cycle_state"].as_str().unwrap()
}

/// The sample jobs, clock frozen.
pub async fn frozen_samples() -> Emulator {
    Emulator::start(EmulatorOptions {
        time_scale: Some(0.0),
        ..Default::default()
    })
    .await
    .unwrap()
}

impl Api {
    /// runs/repair, which must be accepted; the repair id.
    pub async fn repair(&self, body: Value) -> i64 {
        let (s, v) = self.post("/api/2.2/jobs/runs/repair", body).await;
        assert_eq!(s, 200, "{v}");
        v["repair_id"].as_i64().unwrap()
    }
}

/// `(task_key, state.<field>)` of each task run, `""` where the field is absent.
pub fn by_task(run: &Value, field: &str) -> Vec<(String, String)> {
    run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["task_key"].as_str().unwrap().to_string(),
                t["state"][field].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// `(task_key, result_state)` of each task run.
pub fn results(run: &Value) -> Vec<(String, String)> {
    by_task(run, "result_state")
}

/// `results` as `&str` pairs, to compare with a literal.
pub fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// A POST to the control API (`/__emulator{path}`): status and JSON body.
pub async fn control_post(emu: &Emulator, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/__emulator{path}", emu.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}
