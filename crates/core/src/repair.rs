//! Repairs: running the failed (or chosen) tasks of an ended run again, inside the same run
//! (`POST /api/2.2/jobs/runs/repair`), and following the run to its new end.
//!
//! runs/repair takes no idempotency token. Its `latest_repair_id`, which the API requires on
//! every repair after the first and refuses when it is not the latest, makes a repeated request
//! fail rather than repair twice, so the write tier may retry a repair like any write. When a
//! retried attempt is refused, an earlier attempt may have gone through with its answer lost:
//! the run's history is read again, and a repair that appeared there since this call began is
//! this call's own.
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::Identity;
use crate::error::{JobsError, Result};
use crate::jobs::Jobs;
use crate::ledger::{StartRecord, StartedBy};
use crate::params;
use crate::poller::RunWatch;
use crate::registry::JobEntry;
use crate::run;
// Read from a run like its other fields; named here too, where repairs need it.
pub use crate::run::latest_repair_id;

/// How long a repaired run may keep showing its old end before the watch starts anyway (the
/// service records a repair asynchronously; the run normally leaves its end at once).
const SETTLE_LIMIT: Duration = Duration::from_secs(180);

/// What to run again, as `repairRun(runId, options)` takes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepairOptions {
    pub rerun_all_failed_tasks: bool,
    pub rerun_tasks: Option<Vec<String>>,
    pub rerun_dependent_tasks: bool,
    /// Mapped as `runNow` maps them; absent: the run keeps the parameters it had.
    pub params: Option<Value>,
    /// Who the ledger records as repairing (not read from JSON: the caller's request says;
    /// `None`: as `Jobs::default_started_by`).
    pub started_by: Option<StartedBy>,
}

impl RepairOptions {
    /// From the camelCase object JS and the route send: `{ rerunAllFailedTasks?, rerunTasks?,
    /// rerunDependentTasks?, params? }`. A field of the wrong type is `InvalidRequest`.
    pub fn from_json(value: Option<&Value>) -> Result<RepairOptions> {
        let obj = match value {
            None | Some(Value::Null) => return Ok(RepairOptions::default()),
            Some(Value::Object(obj)) => obj,
            Some(_) => {
                return Err(JobsError::InvalidRequest(
                    "repair options must be an object".into(),
                ))
            }
        };
        let flag = |field: &str| match obj.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(JobsError::InvalidRequest(format!(
                "{field} must be a boolean"
            ))),
        };
        let rerun_tasks = match obj.get("rerunTasks") {
            None | Some(Value::Null) => None,
            Some(keys) => Some(Vec::<String>::deserialize(keys).map_err(|_| {
                JobsError::InvalidRequest("rerunTasks must be an array of task keys".into())
            })?),
        };
        Ok(RepairOptions {
            rerun_all_failed_tasks: flag("rerunAllFailedTasks")?,
            rerun_tasks,
            rerun_dependent_tasks: flag("rerunDependentTasks")?,
            params: obj
                .get("params")
                .filter(|p| !params::asks_for_nothing(Some(p)))
                .cloned(),
            started_by: None,
        })
    }
}

/// The runs/repair body, without `latest_repair_id`. `Validation` (nothing sent) unless exactly
/// one of `rerun_all_failed_tasks` / a non-empty `rerun_tasks` is given, or when the params
/// fail as they would for `runNow`.
pub fn build_repair_request(
    entry: &JobEntry,
    run_id: i64,
    options: &RepairOptions,
) -> Result<Value> {
    let key = entry.key.as_str();
    match (&options.rerun_tasks, options.rerun_all_failed_tasks) {
        (Some(tasks), false) if !tasks.is_empty() => {}
        (None, true) => {}
        (Some(tasks), false) if tasks.is_empty() => {
            return Err(JobsError::validation(
                key,
                "rerunTasks must name at least one task",
            ))
        }
        _ => {
            return Err(JobsError::validation(
                key,
                "a repair needs exactly one of rerunAllFailedTasks: true or rerunTasks",
            ))
        }
    }
    let mut body = Map::new();
    body.insert("run_id".into(), Value::from(run_id));
    if let Some(tasks) = &options.rerun_tasks {
        body.insert("rerun_tasks".into(), Value::from(tasks.clone()));
    } else {
        body.insert("rerun_all_failed_tasks".into(), Value::Bool(true));
    }
    if options.rerun_dependent_tasks {
        body.insert("rerun_dependent_tasks".into(), Value::Bool(true));
    }
    if let Some(p) = &options.params {
        if let Value::Object(mapped) = params::build_run_now_request(entry, Some(p))? {
            body.extend(mapped.into_iter().filter(|(k, _)| k != "job_id"));
        }
    }
    Ok(Value::Object(body))
}

/// A repair that passed every check and is ready to send: the run (its job checked) was read
/// with its history, and the body names the latest repair found there.
#[derive(Debug, Clone)]
pub struct PreparedRepair {
    run_id: i64,
    job_id: i64,
    body: Value,
    /// The latest repair of the run when it was read (`None`: never repaired). A repair that
    /// appears after it is the one this request made.
    latest: Option<i64>,
    /// For the ledger: who repairs, and the params as given.
    started_by: StartedBy,
    params: Option<Value>,
}

impl PreparedRepair {
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// The latest repair of the run before this one (`None`: never repaired).
    pub fn latest(&self) -> Option<i64> {
        self.latest
    }
}

/// What a resumed repair stream finds (see [`Jobs::resume_repair`]).
#[derive(Debug)]
pub enum RepairResume {
    /// The run shows a repair newer than the one the stream started after: it is this request's.
    Made(i64),
    /// No newer repair yet: the request is sent (again), naming the same latest repair, so that
    /// the API refuses it if the first one went through after all.
    Send(PreparedRepair),
}

impl Jobs {
    /// Repairs a run of the job: `{ repair_id }`. The run is read first (with its history):
    /// another job's run is `NotFound` and nothing is sent. See the module docs for retries.
    pub async fn repair_run(
        &self,
        key: &str,
        id: &Identity,
        run_id: i64,
        options: RepairOptions,
    ) -> Result<Value> {
        let prepared = self.prepare_repair(key, id, run_id, &options, None).await?;
        let repair_id = self.send_repair(key, id, &prepared, false).await?;
        Ok(serde_json::json!({ "repair_id": repair_id }))
    }

    /// Everything a repair does before the write: options checked, params checked against the
    /// job's own definition where they come from it, and the run read fresh with its history
    /// (ownership, and the latest repair to name). `after`: name this latest repair instead of
    /// the one read (a resumed request that must not overtake a repair made since).
    pub async fn prepare_repair(
        &self,
        key: &str,
        id: &Identity,
        run_id: i64,
        options: &RepairOptions,
        after: Option<Option<i64>>,
    ) -> Result<PreparedRepair> {
        let entry = self.registry().get(key)?;
        let mut body = build_repair_request(entry, run_id, options)?;
        if let Some(defined) = Box::pin(self.defined_parameters(key, id)).await? {
            params::check_defined(key, options.params.as_ref(), &defined)?;
        }
        let latest = match after {
            Some(latest) => latest,
            None => latest_repair_id(&self.run_with_history(key, id, run_id).await?),
        };
        if let (Some(latest), Value::Object(map)) = (latest, &mut body) {
            map.insert("latest_repair_id".into(), Value::from(latest));
        }
        Ok(PreparedRepair {
            run_id,
            job_id: entry.job_id()?,
            body,
            latest,
            started_by: options
                .started_by
                .clone()
                .unwrap_or_else(|| self.default_started_by(id)),
            params: options.params.clone(),
        })
    }

    /// A repair stream resumed after `after` (the latest repair when it began; `None`: the run
    /// had none): the run is read with its history (ownership checked). A newer repair there is
    /// the one the stream asked for; otherwise the request is prepared to be sent again.
    pub async fn resume_repair(
        &self,
        key: &str,
        id: &Identity,
        run_id: i64,
        options: &RepairOptions,
        after: Option<i64>,
    ) -> Result<RepairResume> {
        let run = self.run_with_history(key, id, run_id).await?;
        match latest_repair_id(&run) {
            Some(newer) if Some(newer) != after => Ok(RepairResume::Made(newer)),
            _ => Ok(RepairResume::Send(
                self.prepare_repair(key, id, run_id, options, Some(after))
                    .await?,
            )),
        }
    }

    /// Sends a prepared repair under the write tier: its id. `sent_before`: the same request may
    /// have gone through already (a resumed stream), so a refusal is checked against the
    /// history as a refused retry is.
    pub async fn send_repair(
        &self,
        key: &str,
        id: &Identity,
        prepared: &PreparedRepair,
        sent_before: bool,
    ) -> Result<i64> {
        let run_id = prepared.run_id;
        let mut attempts = 0u32;
        let result = self
            .call("repairRun", Some(run_id), &self.settings().write, || {
                attempts += 1;
                self.client().repair_run(id, &prepared.body)
            })
            .await;
        let result = match result {
            // Refused after an attempt that may have gone through: did it?
            Err(JobsError::Api { status: 400, .. }) if attempts > 1 || sent_before => {
                match self
                    .history(id, run_id)
                    .await
                    .as_ref()
                    .map(latest_repair_id)
                {
                    Ok(Some(newer)) if Some(newer) != prepared.latest => {
                        Ok(serde_json::json!({ "repair_id": newer }))
                    }
                    _ => result,
                }
            }
            other => other,
        };
        let repair_id = result
            .as_ref()
            .ok()
            .and_then(|r| r.get("repair_id"))
            .and_then(crate::ids::from_json);
        // As for a run-now: recorded before the caller has the repair id, caches stale everywhere.
        let record = repair_id.map(|repair_id| StartRecord {
            run_id,
            repair_id,
            job_id: prepared.job_id,
            job_key: key.to_string(),
            started_by: prepared.started_by.clone(),
            params: prepared.params.clone(),
            at_ms: crate::telemetry::now_ms() as i64,
            watch_end: self.run_ends().handles(key),
        });
        self.forget_job_reads(prepared.job_id);
        self.record_start(record, prepared.job_id).await;
        result?;
        repair_id.ok_or_else(|| {
            JobsError::InvalidResponse("runs/repair answered without a repair_id".into())
        })
    }

    /// Repairs the run (as `repair_run`), then follows it from the repair to its new end,
    /// sharing the poll with any other watcher of the run: the repair id and the watch.
    /// Must be called within a Tokio runtime.
    pub async fn repair_and_watch(
        &self,
        key: &str,
        id: &Identity,
        run_id: i64,
        options: RepairOptions,
    ) -> Result<(i64, RunWatch)> {
        let prepared = self.prepare_repair(key, id, run_id, &options, None).await?;
        let repair_id = self.send_repair(key, id, &prepared, false).await?;
        Ok((
            repair_id,
            self.watch_repair(key, id, run_id, repair_id).await?,
        ))
    }

    /// Follows a run from repair `repair_id` on: waits until the run shows it (see `settle`),
    /// then joins the shared poll. Must be called within a Tokio runtime.
    pub async fn watch_repair(
        &self,
        key: &str,
        id: &Identity,
        run_id: i64,
        repair_id: i64,
    ) -> Result<RunWatch> {
        self.settle(id, run_id, repair_id).await;
        self.watch_started_run(key, id, run_id)
    }

    /// Waits (paced by the poll engine, at most [`SETTLE_LIMIT`]) until the run shows the
    /// repair: active again, or the repair already in its history. Without it a watch could
    /// stop at the old end.
    async fn settle(&self, id: &Identity, run_id: i64, repair_id: i64) {
        let began = Instant::now();
        let interval = self.poller().settings().base_interval;
        loop {
            self.poller().request_turn().await;
            match self.history(id, run_id).await {
                Ok(run) if !run::is_terminal(&run) => return,
                Ok(run) if latest_repair_id(&run) == Some(repair_id) => return,
                // A failed read is the watch's to report.
                Err(_) => return,
                Ok(_) => {}
            }
            if began.elapsed() >= SETTLE_LIMIT {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// runs/get with the repair history, fresh, under the read tier and measured as `getRun`.
    async fn history(&self, id: &Identity, run_id: i64) -> Result<Value> {
        self.call("getRun", Some(run_id), &self.settings().read, || {
            self.client().get_run_with_history(id, run_id)
        })
        .await
    }

    /// The run with its repair history, when it belongs to `key`'s job (`NotFound` otherwise).
    /// Always read fresh: the latest repair id must be current.
    async fn run_with_history(&self, key: &str, id: &Identity, run_id: i64) -> Result<Value> {
        let job_id = self.check_known_owner(key, id, run_id)?;
        let run = self.history(id, run_id).await?;
        if run::job_id(&run) != Some(job_id) {
            return Err(Jobs::not_found(key, run_id));
        }
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_parse_from_camel_case() {
        let o = RepairOptions::from_json(Some(&json!({
            "rerunTasks": ["a", "b"], "rerunDependentTasks": true, "params": {"x": 1}
        })))
        .unwrap();
        assert_eq!(o.rerun_tasks, Some(vec!["a".to_string(), "b".to_string()]));
        assert!(o.rerun_dependent_tasks && !o.rerun_all_failed_tasks);
        assert_eq!(o.params, Some(json!({"x": 1})));
        assert_eq!(
            RepairOptions::from_json(None).unwrap(),
            RepairOptions::default()
        );
        // Empty params ask for nothing: the run keeps its own, as without params.
        for nothing in [json!(null), json!({})] {
            let o = RepairOptions::from_json(Some(&json!({"params": nothing}))).unwrap();
            assert_eq!(o.params, None);
        }
        for bad in [
            json!([]),
            json!({"rerunTasks": "a"}),
            json!({"rerunTasks": [1]}),
            json!({"rerunAllFailedTasks": "yes"}),
        ] {
            let e = RepairOptions::from_json(Some(&bad)).unwrap_err();
            assert_eq!(e.code(), "INVALID_REQUEST", "{bad}");
        }
    }
}
