//! Job discovery and configuration: which job keys exist, which Databricks job id each one
//! targets, and how its params are validated and mapped.
//!
//! Discovery follows the stock plugin:
//! - every non-empty `DATABRICKS_JOB_<NAME>` env var registers the key `<name>` (lowercased);
//!   the bare prefix `DATABRICKS_JOB_` and empty values are skipped;
//! - `DATABRICKS_JOB_ID` registers `default`, but only when no other job was discovered from
//!   the environment and no job is configured explicitly;
//! - explicit `jobs` config is merged over what was discovered (explicit wins, field by field);
//!   an explicit key with no env var is still registered (its calls fail with `JobIdMissing`
//!   unless the config carries `jobId`).
//!
//! Everything that can be prepared once is prepared here, once per plugin instance: the
//! job id is parsed and the params JSON Schema is compiled.
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{JobsError, Result};
use crate::ids;
use crate::schema::{json_type, ParamsValidator};

/// Default per-job `waitTimeout`.
pub const DEFAULT_WAIT_TIMEOUT_MS: u64 = 600_000;
/// Env var prefix of discovered jobs.
pub const ENV_PREFIX: &str = "DATABRICKS_JOB_";
/// Env var of the single-job mode (`default` key).
pub const ENV_DEFAULT: &str = "DATABRICKS_JOB_ID";
/// Key registered from `DATABRICKS_JOB_ID`.
pub const DEFAULT_KEY: &str = "default";

/// The task type of a job, which decides how params are mapped onto run-now fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskType {
    Notebook,
    PythonWheel,
    PythonScript,
    SparkJar,
    Sql,
    Dbt,
}

impl TaskType {
    pub const ALL: [TaskType; 6] = [
        TaskType::Notebook,
        TaskType::PythonWheel,
        TaskType::PythonScript,
        TaskType::SparkJar,
        TaskType::Sql,
        TaskType::Dbt,
    ];

    /// A task type by its config name (`notebook`, `python_wheel`, ...).
    pub fn parse(name: &str) -> Option<TaskType> {
        TaskType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Notebook => "notebook",
            TaskType::PythonWheel => "python_wheel",
            TaskType::PythonScript => "python_script",
            TaskType::SparkJar => "spark_jar",
            TaskType::Sql => "sql",
            TaskType::Dbt => "dbt",
        }
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-job configuration (`JobConfig` in JS, camelCase). Unknown fields are ignored and
/// `null` counts as "not set" everywhere.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobConfig {
    /// Polling timeout of `runAndWait` in ms (default 600000).
    pub wait_timeout: Option<u64>,
    /// Task type for the automatic params mapping; none means pass-through.
    pub task_type: Option<TaskType>,
    /// A JSON Schema (any draft from 4 to 2020-12) the params must satisfy. Validated in Rust,
    /// unless `external_schema` is set.
    pub params: Option<Value>,
    /// The params are validated in JS (a Zod / Standard Schema); Rust then skips JSON Schema
    /// validation but still applies the mapping.
    pub external_schema: bool,
    /// The Databricks job id (config `jobId`: a number, or decimal text for ids beyond 2^53).
    /// Wins over the env var.
    pub job_id: Option<i64>,
    /// `jobParameters: true` sends the params as job-level `job_parameters` (map of strings,
    /// the current Jobs API way) instead of the deprecated task-level fields chosen by
    /// `taskType`. `taskType` then only describes the job to clients.
    pub job_parameters: bool,
    /// The app handles this job's run ends (`onRunEnd` in JS; the JS function stays in JS, the
    /// core only learns that there is one).
    pub on_run_end: bool,
}

impl JobConfig {
    /// `waitTimeout` or its default.
    pub fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT_MS))
    }

    /// Explicit config over discovered config, field by field: set explicit fields win.
    fn merged_over(self, base: JobConfig) -> JobConfig {
        JobConfig {
            wait_timeout: self.wait_timeout.or(base.wait_timeout),
            task_type: self.task_type.or(base.task_type),
            params: self.params.or(base.params),
            external_schema: self.external_schema || base.external_schema,
            job_id: self.job_id.or(base.job_id),
            job_parameters: self.job_parameters || base.job_parameters,
            on_run_end: self.on_run_end || base.on_run_end,
        }
    }

    /// The config of job `key` from its JSON; errors name the option (`jobs.<key>.<field>`).
    fn from_json(key: &str, v: &Value) -> Result<JobConfig> {
        let at = |field: &str| format!("jobs.{key}.{field}");
        let Some(obj) = object_or_null(&format!("jobs.{key}"), v)? else {
            return Ok(JobConfig::default());
        };
        let task_type = match obj.get("taskType") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(TaskType::parse(t).ok_or_else(|| {
                config_error(
                    &at("taskType"),
                    format!(
                        "must be one of {}, got {}",
                        TaskType::ALL.map(TaskType::as_str).join(", "),
                        shown(v.get("taskType").unwrap_or(&Value::Null))
                    ),
                )
            })?),
            Some(other) => {
                return Err(config_error(
                    &at("taskType"),
                    format!("must be a string, got {}", json_type(other)),
                ))
            }
        };
        let params = match obj.get("params") {
            None | Some(Value::Null) => None,
            Some(schema @ (Value::Object(_) | Value::Bool(_))) => Some(schema.clone()),
            Some(other) => {
                return Err(config_error(
                    &at("params"),
                    format!(
                        "must be a schema (Zod, Standard Schema or JSON Schema), got {}",
                        json_type(other)
                    ),
                ))
            }
        };
        let job_id = match obj.get("jobId") {
            None | Some(Value::Null) => None,
            Some(id) => Some(ids::from_json(id).ok_or_else(|| {
                config_error(
                    &at("jobId"),
                    format!(
                        "must be a positive integer (a number, or its decimal text), got {}",
                        shown(id)
                    ),
                )
            })?),
        };
        Ok(JobConfig {
            wait_timeout: millis(&at("waitTimeout"), obj.get("waitTimeout"))?,
            task_type,
            params,
            external_schema: flag(&at("externalSchema"), obj.get("externalSchema"))?,
            job_id,
            job_parameters: flag(&at("jobParameters"), obj.get("jobParameters"))?,
            on_run_end: flag(&at("onRunEnd"), obj.get("onRunEnd"))?,
        })
    }
}

/// Plugin configuration (`IJobsConfig` in JS, camelCase). Unknown fields (AppKit passes its
/// global config along) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub struct PluginConfig {
    /// Timeout override for every Jobs API call, in ms.
    pub timeout: Option<u64>,
    /// Base poll interval of `runAndWait` in ms (default 5000; below 50 it is raised to 50).
    pub poll_interval_ms: Option<u64>,
    /// How long polls ride out a workspace that cannot be reached, in ms (default 30000).
    pub outage_timeout: Option<u64>,
    /// Named jobs, merged over the jobs discovered from the environment.
    pub jobs: BTreeMap<String, JobConfig>,
    /// Client-side limit of poll requests per second for this workspace (fair across runs).
    pub max_requests_per_second: Option<f64>,
    /// Where the ledger lives (`ledger`: absent, `false` or an object; see `ledger::settings`).
    pub ledger: crate::ledger::LedgerOption,
}

impl PluginConfig {
    /// The config from its JSON (what JS passes). Every mistake is a `Config` error that names
    /// the option (`pollIntervalMs`, `jobs.etl.waitTimeout`) and what is wrong with its value.
    pub fn from_json(v: &Value) -> Result<PluginConfig> {
        let Some(obj) = object_or_null("config", v)? else {
            return Ok(PluginConfig::default());
        };
        let max_requests_per_second = match obj.get("maxRequestsPerSecond") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_f64().is_some_and(|r| r.is_finite() && r > 0.0) => {
                n.as_f64()
            }
            Some(other) => {
                return Err(config_error(
                    "maxRequestsPerSecond",
                    format!("must be a positive number, got {}", shown(other)),
                ))
            }
        };
        let mut jobs = BTreeMap::new();
        if let Some(map) = object_or_null("jobs", obj.get("jobs").unwrap_or(&Value::Null))? {
            for (key, job) in map {
                jobs.insert(key.clone(), JobConfig::from_json(key, job)?);
            }
        }
        Ok(PluginConfig {
            timeout: millis("timeout", obj.get("timeout"))?,
            poll_interval_ms: millis("pollIntervalMs", obj.get("pollIntervalMs"))?,
            outage_timeout: millis("outageTimeout", obj.get("outageTimeout"))?,
            jobs,
            max_requests_per_second,
            ledger: crate::ledger::LedgerOption::from_json(obj.get("ledger"))?,
        })
    }
}

impl TryFrom<Value> for PluginConfig {
    type Error = JobsError;

    fn try_from(v: Value) -> Result<PluginConfig> {
        PluginConfig::from_json(&v)
    }
}

fn config_error(option: &str, problem: String) -> JobsError {
    JobsError::Config(format!("Invalid jobs config: {option} {problem}"))
}

/// A value as an error shows it: short JSON (the developer's own config, never a credential).
fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        format!("{}...", text.chars().take(37).collect::<String>())
    } else {
        text
    }
}

fn object_or_null<'a>(
    option: &str,
    v: &'a Value,
) -> Result<Option<&'a serde_json::Map<String, Value>>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(o) => Ok(Some(o)),
        other => Err(config_error(
            option,
            format!("must be an object, got {}", json_type(other)),
        )),
    }
}

/// Milliseconds: a finite number >= 0 (JS numbers may cross as floats). `null` is unset.
fn millis(option: &str, v: Option<&Value>) -> Result<Option<u64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(ms) => Ok(Some(ms)),
            None => match n.as_f64().filter(|f| f.is_finite() && *f >= 0.0) {
                Some(f) => Ok(Some(f.round() as u64)),
                None => Err(config_error(
                    option,
                    format!("must be a non-negative number of milliseconds, got {n}"),
                )),
            },
        },
        Some(other) => Err(config_error(
            option,
            format!("must be a number of milliseconds, got {}", json_type(other)),
        )),
    }
}

fn flag(option: &str, v: Option<&Value>) -> Result<bool> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(config_error(
            option,
            format!("must be true or false, got {}", json_type(other)),
        )),
    }
}

/// One registered job, prepared once.
#[derive(Debug, Clone)]
pub struct JobEntry {
    pub key: String,
    /// The env var that holds this job's id (`DATABRICKS_JOB_<KEY>` or `DATABRICKS_JOB_ID`).
    pub env_var: String,
    /// The parsed job id: explicit `jobId` when it is valid, else the env var.
    pub job_id: Option<i64>,
    pub config: JobConfig,
    /// The compiled params JSON Schema (none without a schema or with `externalSchema`).
    pub validator: Option<Arc<ParamsValidator>>,
    /// Why the configured JSON Schema could not be compiled. Reported as a `Config` error by
    /// every call that needs the params (`build_run_now_request`), never at construction, so
    /// that the rest of the plugin keeps working.
    pub schema_error: Option<String>,
}

impl JobEntry {
    /// The job id, or `JobIdMissing` naming the env var to set.
    pub fn job_id(&self) -> Result<i64> {
        self.job_id.ok_or_else(|| JobsError::JobIdMissing {
            key: self.key.clone(),
            env_var: self.env_var.clone(),
        })
    }

    pub fn task_type(&self) -> Option<TaskType> {
        self.config.task_type
    }

    pub fn wait_timeout(&self) -> Duration {
        self.config.wait_timeout()
    }

    /// The compiled validator, or the `Config` error of a schema that did not compile.
    pub fn checked_validator(&self) -> Result<Option<&ParamsValidator>> {
        if let Some(err) = &self.schema_error {
            return Err(JobsError::Config(format!(
                "Job \"{}\" has an invalid params JSON Schema: {err}",
                self.key
            )));
        }
        Ok(self.validator.as_deref())
    }
}

/// The jobs of one plugin instance.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, JobEntry>,
}

impl Registry {
    pub fn new(env: &HashMap<String, String>, config: &PluginConfig) -> Registry {
        // key -> env var it was discovered from. The canonical upper-case name wins when two
        // spellings lowercase to the same key.
        let mut discovered: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in env {
            let Some(suffix) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == ENV_DEFAULT || suffix.is_empty() || value.trim().is_empty() {
                continue;
            }
            let key = suffix.to_lowercase();
            let canonical = format!("{ENV_PREFIX}{}", suffix.to_uppercase());
            let replace = match discovered.get(&key) {
                None => true,
                Some(prev) => *name == canonical || (*prev != canonical && name < prev),
            };
            if replace {
                discovered.insert(key, name.clone());
            }
        }

        let default_id = env.get(ENV_DEFAULT).filter(|v| !v.trim().is_empty());
        let mut discovered: BTreeMap<String, (String, JobConfig)> = discovered
            .into_iter()
            .map(|(k, var)| (k, (var, JobConfig::default())))
            .collect();
        if default_id.is_some() && discovered.is_empty() && config.jobs.is_empty() {
            discovered.insert(
                DEFAULT_KEY.to_string(),
                (ENV_DEFAULT.to_string(), JobConfig::default()),
            );
        }

        let mut entries = BTreeMap::new();
        let mut keys: Vec<String> = discovered.keys().cloned().collect();
        keys.extend(
            config
                .jobs
                .keys()
                .filter(|k| !discovered.contains_key(*k))
                .cloned(),
        );
        for key in keys {
            let (env_var, base) = match discovered.remove(&key) {
                Some((var, cfg)) => (var, cfg),
                None => (env_var_for(&key), JobConfig::default()),
            };
            let cfg = match config.jobs.get(&key) {
                Some(explicit) => explicit.clone().merged_over(base),
                None => base,
            };
            let job_id = cfg
                .job_id
                .or_else(|| env.get(&env_var).and_then(|v| ids::parse(v.trim())));
            let (validator, schema_error) = match (&cfg.params, cfg.external_schema) {
                (Some(schema), false) if !schema.is_null() => {
                    match ParamsValidator::compile_detail(schema) {
                        Ok(v) => (Some(Arc::new(v)), None),
                        Err(e) => (None, Some(e)),
                    }
                }
                _ => (None, None),
            };
            entries.insert(
                key.clone(),
                JobEntry {
                    key,
                    env_var,
                    job_id,
                    config: cfg,
                    validator,
                    schema_error,
                },
            );
        }
        Registry { entries }
    }

    /// The entry of `key`, or `UnknownJob` listing the available keys.
    pub fn get(&self, key: &str) -> Result<&JobEntry> {
        self.entries.get(key).ok_or_else(|| JobsError::UnknownJob {
            key: key.to_string(),
            available: self.available(),
        })
    }

    /// Registered keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// Registered entries, sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = &JobEntry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `"a, b"` or `"none"`.
    pub fn available(&self) -> String {
        if self.entries.is_empty() {
            "none".to_string()
        } else {
            self.keys().join(", ")
        }
    }
}

/// The env var that holds a key's job id: `DATABRICKS_JOB_ID` for `default`, else
/// `DATABRICKS_JOB_<KEY uppercased>`.
pub fn env_var_for(key: &str) -> String {
    if key == DEFAULT_KEY {
        ENV_DEFAULT.to_string()
    } else {
        format!("{ENV_PREFIX}{}", key.to_uppercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_env::env;
    use serde_json::json;

    fn config(v: Value) -> PluginConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn named_env_vars_become_lowercase_keys() {
        let r = Registry::new(
            &env(&[
                ("DATABRICKS_JOB_ETL", "123"),
                ("DATABRICKS_JOB_ML_TRAIN", "456"),
                ("OTHER", "1"),
            ]),
            &PluginConfig::default(),
        );
        assert_eq!(r.keys(), vec!["etl", "ml_train"]);
        let etl = r.get("etl").unwrap();
        assert_eq!(etl.job_id().unwrap(), 123);
        assert_eq!(etl.env_var, "DATABRICKS_JOB_ETL");
        assert_eq!(r.get("ml_train").unwrap().job_id().unwrap(), 456);
    }

    #[test]
    fn job_id_env_is_default_only_alone() {
        let r = Registry::new(
            &env(&[("DATABRICKS_JOB_ID", "77")]),
            &PluginConfig::default(),
        );
        assert_eq!(r.keys(), vec!["default"]);
        let d = r.get("default").unwrap();
        assert_eq!(d.job_id().unwrap(), 77);
        assert_eq!(d.env_var, "DATABRICKS_JOB_ID");

        // Another discovered job hides it.
        let r = Registry::new(
            &env(&[("DATABRICKS_JOB_ID", "77"), ("DATABRICKS_JOB_ETL", "1")]),
            &PluginConfig::default(),
        );
        assert_eq!(r.keys(), vec!["etl"]);

        // An explicitly configured job hides it too.
        let r = Registry::new(
            &env(&[("DATABRICKS_JOB_ID", "77")]),
            &config(json!({"jobs": {"etl": {}}})),
        );
        assert_eq!(r.keys(), vec!["etl"]);
    }

    #[test]
    fn bare_prefix_and_empty_values_are_skipped() {
        let r = Registry::new(
            &env(&[
                ("DATABRICKS_JOB_", "5"),
                ("DATABRICKS_JOB_EMPTY", ""),
                ("DATABRICKS_JOB_BLANK", "  "),
            ]),
            &PluginConfig::default(),
        );
        assert!(r.is_empty());
        assert_eq!(r.available(), "none");
        // An empty DATABRICKS_JOB_ID registers nothing either.
        let r = Registry::new(&env(&[("DATABRICKS_JOB_ID", "")]), &PluginConfig::default());
        assert!(r.is_empty());
    }

    #[test]
    fn explicit_config_merges_over_discovered() {
        let r = Registry::new(
            &env(&[("DATABRICKS_JOB_ETL", "10"), ("DATABRICKS_JOB_ML", "20")]),
            &config(json!({"jobs": {
                "etl": {"taskType": "notebook", "waitTimeout": 1000},
                "report": {"taskType": "sql"}
            }})),
        );
        assert_eq!(r.keys(), vec!["etl", "ml", "report"]);
        let etl = r.get("etl").unwrap();
        assert_eq!(etl.job_id().unwrap(), 10);
        assert_eq!(etl.task_type(), Some(TaskType::Notebook));
        assert_eq!(etl.wait_timeout(), Duration::from_millis(1000));
        assert_eq!(r.get("ml").unwrap().task_type(), None);
        assert_eq!(
            r.get("ml").unwrap().wait_timeout(),
            Duration::from_millis(DEFAULT_WAIT_TIMEOUT_MS)
        );

        // Explicit key without env id: registered, but its calls fail naming the env var.
        let report = r.get("report").unwrap();
        assert_eq!(report.env_var, "DATABRICKS_JOB_REPORT");
        let err = report.job_id().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Job \"report\" has no valid job id: set DATABRICKS_JOB_REPORT to the numeric id of the Databricks job"
        );
        assert_eq!(err.code(), "JOB_ID_MISSING");
    }

    #[test]
    fn explicit_job_id_wins_and_accepts_numbers_and_strings() {
        let r = Registry::new(
            &env(&[("DATABRICKS_JOB_ETL", "10")]),
            &config(json!({"jobs": {
                "etl": {"jobId": 99},
                "big": {"jobId": "9007199254740993"},
                "float": {"jobId": 42.0}
            }})),
        );
        assert_eq!(r.get("etl").unwrap().job_id().unwrap(), 99);
        assert_eq!(r.get("big").unwrap().job_id().unwrap(), 9007199254740993);
        assert_eq!(r.get("float").unwrap().job_id().unwrap(), 42);
    }

    #[test]
    fn non_numeric_env_id_fails_at_call_time() {
        let r = Registry::new(
            &env(&[
                ("DATABRICKS_JOB_ETL", "not-a-number"),
                ("DATABRICKS_JOB_NEG", "-4"),
            ]),
            &PluginConfig::default(),
        );
        assert_eq!(r.keys(), vec!["etl", "neg"]);
        match r.get("etl").unwrap().job_id() {
            Err(JobsError::JobIdMissing { key, env_var }) => {
                assert_eq!(key, "etl");
                assert_eq!(env_var, "DATABRICKS_JOB_ETL");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(r.get("neg").unwrap().job_id().is_err());
    }

    #[test]
    fn explicit_default_key_uses_job_id_env() {
        let r = Registry::new(
            &env(&[("DATABRICKS_JOB_ID", "5")]),
            &config(json!({"jobs": {"default": {"taskType": "dbt"}}})),
        );
        let d = r.get("default").unwrap();
        assert_eq!(d.env_var, "DATABRICKS_JOB_ID");
        assert_eq!(d.job_id().unwrap(), 5);
        assert_eq!(d.task_type(), Some(TaskType::Dbt));
    }

    #[test]
    fn unknown_job_lists_available_keys() {
        let r = Registry::new(
            &env(&[("DATABRICKS_JOB_B", "1"), ("DATABRICKS_JOB_A", "2")]),
            &PluginConfig::default(),
        );
        let err = r.get("nope").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Unknown job \"nope\". Available jobs: a, b"
        );
        assert_eq!(err.status(), 404);
        let empty = Registry::new(&HashMap::new(), &PluginConfig::default());
        assert_eq!(
            empty.get("x").unwrap_err().to_string(),
            "Unknown job \"x\". Available jobs: none"
        );
    }

    #[test]
    fn config_deserializes_from_js_shapes() {
        let c = config(json!({
            "timeout": 30000.0,
            "pollIntervalMs": 250,
            "maxRequestsPerSecond": 15,
            "name": "jobs",
            "somethingElse": {"x": 1},
            "jobs": {"etl": {"taskType": "python_wheel", "waitTimeout": null, "externalSchema": true,
                              "params": null, "jobParameters": null, "zod": {}}}
        }));
        assert_eq!(c.timeout, Some(30000));
        assert_eq!(c.poll_interval_ms, Some(250));
        assert_eq!(c.max_requests_per_second, Some(15.0));
        let etl = &c.jobs["etl"];
        assert_eq!(etl.task_type, Some(TaskType::PythonWheel));
        assert_eq!(etl.wait_timeout, None);
        assert!(etl.external_schema);
        assert!(!etl.job_parameters);

        let empty = config(json!({"jobs": null, "pollIntervalMs": null}));
        assert!(empty.jobs.is_empty());
        assert_eq!(empty.poll_interval_ms, None);
    }

    #[test]
    fn config_mistakes_name_the_option_and_the_problem() {
        for (config, message) in [
            (json!({"timeout": "soon"}), "timeout must be a number of milliseconds, got string"),
            (json!({"pollIntervalMs": -5}), "pollIntervalMs must be a non-negative number of milliseconds, got -5"),
            (json!({"timeout": -1}), "timeout must be a non-negative number of milliseconds, got -1"),
            (json!({"jobs": {"etl": {"waitTimeout": -1}}}), "jobs.etl.waitTimeout must be a non-negative number of milliseconds, got -1"),
            (json!({"jobs": {"etl": {"jobId": "abc"}}}), "jobs.etl.jobId must be a positive integer (a number, or its decimal text), got \"abc\""),
            (json!({"jobs": {"etl": {"jobId": 0}}}), "jobs.etl.jobId must be a positive integer (a number, or its decimal text), got 0"),
            (json!({"jobs": {"a": {"taskType": "scala"}}}), "jobs.a.taskType must be one of notebook, python_wheel, python_script, spark_jar, sql, dbt, got \"scala\""),
            (json!({"jobs": {"a": {"jobParameters": "yes"}}}), "jobs.a.jobParameters must be true or false, got string"),
            (json!({"jobs": {"a": {"params": "x"}}}), "jobs.a.params must be a schema (Zod, Standard Schema or JSON Schema), got string"),
            (json!({"jobs": []}), "jobs must be an object, got array"),
            (json!({"jobs": {"a": 3}}), "jobs.a must be an object, got number"),
            (json!({"maxRequestsPerSecond": 0}), "maxRequestsPerSecond must be a positive number, got 0"),
            (json!({"outageTimeout": true}), "outageTimeout must be a number of milliseconds, got boolean"),
        ] {
            let err = PluginConfig::from_json(&config).unwrap_err();
            assert_eq!(err.code(), "CONFIG_ERROR");
            assert_eq!(err.to_string(), format!("Invalid jobs config: {message}"));
        }
    }

    #[test]
    fn task_type_strings() {
        for (t, s) in [
            (TaskType::Notebook, "notebook"),
            (TaskType::PythonWheel, "python_wheel"),
            (TaskType::PythonScript, "python_script"),
            (TaskType::SparkJar, "spark_jar"),
            (TaskType::Sql, "sql"),
            (TaskType::Dbt, "dbt"),
        ] {
            assert_eq!(t.to_string(), s);
            assert_eq!(TaskType::parse(s), Some(t));
        }
    }

    #[test]
    fn schema_compiled_once_and_bad_schema_reported_at_call_time() {
        let r = Registry::new(
            &env(&[
                ("DATABRICKS_JOB_A", "1"),
                ("DATABRICKS_JOB_B", "2"),
                ("DATABRICKS_JOB_C", "3"),
            ]),
            &config(json!({"jobs": {
                "a": {"params": {"type": "object", "required": ["x"]}},
                "b": {"params": {"type": "not-a-type"}},
                "c": {"params": {"type": "object"}, "externalSchema": true}
            }})),
        );
        let a = r.get("a").unwrap();
        assert!(a.validator.is_some());
        assert!(a.checked_validator().unwrap().is_some());
        let b = r.get("b").unwrap();
        assert!(b.validator.is_none());
        let err = b.checked_validator().unwrap_err();
        assert_eq!(err.code(), "CONFIG_ERROR");
        assert!(
            err.to_string()
                .starts_with("Job \"b\" has an invalid params JSON Schema: "),
            "{err}"
        );
        assert!(r.get("c").unwrap().validator.is_none());
        assert!(r.get("c").unwrap().schema_error.is_none());
    }
}
