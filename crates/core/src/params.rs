//! Run-now params: validated against the job's schema (`schema.rs`), then mapped onto the run-now
//! request. Every rule about params is here; the routes, `runNow`, `runAndWait` and repairs all
//! read them from this file (a Zod / Standard Schema is the one exception: it is JS, validated
//! by lib/runtime.js, and the job then arrives with `externalSchema`).
//!
//! Absent params, `null` and `{}` ask for nothing: the run starts as with no params (a schema
//! still sees `{}`, as the stock plugin validates absent params).
//!
//! Params from an HTTP request (the routes' `params`, written by a browser rather than by the
//! app's own code) meet two more rules first, as in the stock plugin ([`from_request`]): a job
//! without a schema takes them only when it says where they go (a task type or
//! `jobParameters`), since otherwise they would be passed through as run-now fields, which only
//! the app's own code may do; and at most [`MAX_UNVALIDATED_PARAM_KEYS`] of them.
//!
//! Mapping (`build_run_now_request`):
//!
//! | job config            | params shape                 | request field          |
//! |-----------------------|------------------------------|------------------------|
//! | `jobParameters: true` | `{ name: value }`            | `job_parameters`       |
//! | `notebook`            | `{ name: value }`            | `notebook_params`      |
//! | `python_wheel`        | `{ name: value }`            | `python_named_params`  |
//! | `python_script`       | `{ args: value[] }`          | `python_params`        |
//! | `spark_jar`           | `{ args: value[] }`          | `jar_params`           |
//! | `sql`                 | `{ name: value }`            | `sql_params`           |
//! | `dbt`                 | none (non-empty is an error) | none                   |
//! | no task type          | run-now fields               | passed through as-is   |
//!
//! Values are coerced to strings: strings as they are, numbers and booleans as JavaScript's
//! `String()` prints them, objects and arrays as compact JSON text. A `null` value in a map
//! leaves that key out (the job's default applies); a `null` item in `args` is an error, since
//! dropping it would shift the positions. `args` items follow the same coercion.
//!
//! Pass-through (no task type): the params object's fields become run-now fields, e.g.
//! `{ "notebook_params": {...}, "queue": {"enabled": true} }`. `job_id` always comes from the
//! registry (a `job_id` in params is ignored, as in the stock plugin) and `idempotency_token`
//! is dropped (the caller adds its own).
//!
//! Every `*_params` field (and `job_parameters`) must stay within the Jobs API's 10,000 bytes as
//! JSON; a larger one is a validation error and nothing is sent.
use serde_json::{Map, Value};

use crate::error::{JobsError, Result};
use crate::registry::{JobEntry, TaskType};
use crate::schema::{json_type, truncate};

/// The Jobs API limit on each `*_params` field, in bytes of JSON.
pub const MAX_PARAMS_FIELD_BYTES: usize = 10_000;
/// Without a params schema, params from an HTTP request may carry at most this many keys.
pub const MAX_UNVALIDATED_PARAM_KEYS: usize = 50;

/// Whether `params` ask for nothing: absent, `null` and `{}` do (the run starts, or a repair
/// keeps the run's parameters, as without params).
pub fn asks_for_nothing(params: Option<&Value>) -> bool {
    match params {
        None | Some(Value::Null) => true,
        Some(Value::Object(map)) => map.is_empty(),
        Some(_) => false,
    }
}

/// The `params` of a run or repair request (an HTTP body), checked before anything is sent:
/// `None` when absent or `{}`; refused when not an object (`null` included), when the job has
/// no schema and no task type or `jobParameters`, or when a job without a schema gets more than
/// [`MAX_UNVALIDATED_PARAM_KEYS`]. The rest (the schema, the mapping) is
/// [`build_run_now_request`]'s, as for `runNow`. `Err` is the 400's message (the stock
/// plugin's wording, code `VALIDATION_ERROR`).
pub fn from_request(
    entry: &JobEntry,
    params: Option<Value>,
) -> std::result::Result<Option<Value>, String> {
    let Some(params) = params else {
        return Ok(None);
    };
    let Value::Object(map) = &params else {
        return Err("params must be a plain object".into());
    };
    if asks_for_nothing(Some(&params)) {
        return Ok(None);
    }
    let config = &entry.config;
    if config.params.is_none() && !config.external_schema {
        if config.task_type.is_none() && !config.job_parameters {
            return Err("This job does not accept parameters".into());
        }
        if map.len() > MAX_UNVALIDATED_PARAM_KEYS {
            return Err(format!(
                "Too many parameters ({}). Define a params schema to accept more than {MAX_UNVALIDATED_PARAM_KEYS}.",
                map.len()
            ));
        }
    }
    Ok(Some(params))
}

/// The run-now request body for `entry` with `params` validated and mapped:
/// `{ "job_id": <id>, ...param fields }`. No `idempotency_token`: the caller adds it.
///
/// Errors, all before anything is sent: `JobIdMissing`, `Config` (invalid schema in config),
/// `Validation` (params not an object, failing the schema, wrong shape for the task type, a
/// field over 10,000 bytes).
pub fn build_run_now_request(entry: &JobEntry, params: Option<&Value>) -> Result<Value> {
    let job_id = entry.job_id()?;
    let key = entry.key.as_str();
    let params_value = params;
    let params = match params.filter(|p| !asks_for_nothing(Some(p))) {
        None => None,
        Some(Value::Object(map)) => Some(map),
        Some(other) => {
            return Err(JobsError::validation(
                key,
                format!("params must be a JSON object, got {}", json_type(other)),
            ))
        }
    };

    if !entry.config.external_schema {
        if let Some(validator) = entry.checked_validator()? {
            // As the stock plugin: absent params are validated as `{}`.
            let empty = Value::Object(Map::new());
            let instance = match params_value {
                Some(v @ Value::Object(_)) => v,
                _ => &empty,
            };
            validator.validate(key, instance)?;
        }
    }

    let mut request = Map::new();
    if let Some(params) = params {
        if entry.config.job_parameters {
            request.insert(
                "job_parameters".into(),
                Value::Object(coerce_map(key, params)),
            );
        } else {
            match entry.config.task_type {
                Some(TaskType::Notebook) => {
                    request.insert(
                        "notebook_params".into(),
                        Value::Object(coerce_map(key, params)),
                    );
                }
                Some(TaskType::PythonWheel) => {
                    request.insert(
                        "python_named_params".into(),
                        Value::Object(coerce_map(key, params)),
                    );
                }
                Some(TaskType::Sql) => {
                    request.insert("sql_params".into(), Value::Object(coerce_map(key, params)));
                }
                Some(TaskType::PythonScript) => {
                    request.insert(
                        "python_params".into(),
                        args(key, TaskType::PythonScript, params)?,
                    );
                }
                Some(TaskType::SparkJar) => {
                    request.insert("jar_params".into(), args(key, TaskType::SparkJar, params)?);
                }
                Some(TaskType::Dbt) => {
                    return Err(JobsError::validation(
                        key,
                        "dbt tasks do not accept parameters",
                    ));
                }
                None => {
                    for (field, value) in params {
                        if field == "job_id" || field == "idempotency_token" {
                            continue;
                        }
                        request.insert(field.clone(), value.clone());
                    }
                }
            }
        }
    }

    for (field, value) in &request {
        if field.ends_with("_params") || field == "job_parameters" {
            let size = serde_json::to_vec(value)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_PARAMS_FIELD_BYTES {
                return Err(JobsError::validation(
                    key,
                    format!("{field} is {size} bytes as JSON, over the Jobs API limit of {MAX_PARAMS_FIELD_BYTES} bytes"),
                ));
            }
        }
    }

    let mut body = Map::with_capacity(request.len() + 1);
    body.insert("job_id".into(), Value::from(job_id));
    body.extend(request);
    Ok(Value::Object(body))
}

/// The parameters a job defines (`settings.parameters` of jobs/get): `(name, default)`.
pub fn defined_parameters(job: &Value) -> Vec<(String, String)> {
    job.pointer("/settings/parameters")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|p| {
                    let name = p.get("name")?.as_str()?.to_string();
                    let default = p
                        .get("default")
                        .and_then(coerce_to_string)
                        .unwrap_or_default();
                    Some((name, default))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `Ok` when every param is one of `defined`, else a `Validation` error naming the first unknown
/// one and listing those the job defines. Checked before anything is sent: Databricks would
/// refuse the run with a bare "Bad Request".
pub fn check_defined(
    key: &str,
    params: Option<&Value>,
    defined: &[(String, String)],
) -> Result<()> {
    let Some(Value::Object(map)) = params else {
        return Ok(());
    };
    let Some(unknown) = map
        .keys()
        .find(|k| !defined.iter().any(|(name, _)| name == *k))
    else {
        return Ok(());
    };
    let shown: String = unknown
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect();
    let names = if defined.is_empty() {
        "it defines none".to_string()
    } else {
        format!(
            "it defines: {}",
            defined
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(JobsError::validation(
        key,
        format!("unknown parameter \"{shown}\" for this job ({names})"),
    ))
}

/// The defined parameters as a JSON Schema for a form: strings, each with its default, all
/// optional, no others.
pub fn defined_schema(defined: &[(String, String)]) -> Value {
    let properties: Map<String, Value> = defined
        .iter()
        .map(|(name, default)| {
            let mut p = Map::new();
            p.insert("type".into(), Value::String("string".into()));
            p.insert("default".into(), Value::String(default.clone()));
            (name.clone(), Value::Object(p))
        })
        .collect();
    let mut schema = Map::new();
    schema.insert("type".into(), Value::String("object".into()));
    schema.insert("properties".into(), Value::Object(properties));
    schema.insert("additionalProperties".into(), Value::Bool(false));
    Value::Object(schema)
}

/// Coerce one value to the string a Jobs API param carries. `None` for `null`.
pub fn coerce_to_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(number_text(n)),
        other => Some(other.to_string()),
    }
}

/// A number printed as JavaScript's `String()` would for the usual cases: integral floats
/// (how JS numbers may cross the boundary) print without `.0`.
fn number_text(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
        Some(f) => f.to_string(),
        None => n.to_string(),
    }
}

fn coerce_map(_key: &str, params: &Map<String, Value>) -> Map<String, Value> {
    params
        .iter()
        .filter_map(|(k, v)| coerce_to_string(v).map(|s| (k.clone(), Value::String(s))))
        .collect()
}

fn args(key: &str, task: TaskType, params: &Map<String, Value>) -> Result<Value> {
    if let Some(extra) = params.keys().find(|k| *k != "args") {
        return Err(JobsError::validation(
            key,
            format!(
                "{task} params take the shape {{ args: string[] }}; unexpected field \"{}\"",
                truncate(extra, 100)
            ),
        ));
    }
    let items = match params.get("args") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(JobsError::validation(
                key,
                format!("args: must be an array, got {}", json_type(other)),
            ))
        }
        None => {
            return Err(JobsError::validation(
                key,
                format!("{task} params take the shape {{ args: string[] }}"),
            ))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match coerce_to_string(item) {
            Some(s) => out.push(Value::String(s)),
            None => {
                return Err(JobsError::validation(
                    key,
                    format!("args/{i}: must not be null"),
                ))
            }
        }
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{PluginConfig, Registry};
    use crate::schema::MAX_DETAIL_CHARS;
    use serde_json::json;
    use std::collections::HashMap;

    /// A registry with one job `j` (id 42) configured by `job`.
    fn entry(job: Value) -> JobEntry {
        let env: HashMap<String, String> =
            [("DATABRICKS_JOB_J".to_string(), "42".to_string())].into();
        let config: PluginConfig = serde_json::from_value(json!({ "jobs": { "j": job } })).unwrap();
        Registry::new(&env, &config).get("j").unwrap().clone()
    }

    fn build(job: Value, params: Value) -> Result<Value> {
        build_run_now_request(&entry(job), Some(&params))
    }

    fn detail(err: JobsError) -> String {
        match err {
            JobsError::Validation { key, detail } => {
                assert_eq!(key, "j");
                detail
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn notebook_coerces_values() {
        let body = build(
            json!({"taskType": "notebook"}),
            json!({"s": "x", "i": 3, "f": 2.5, "whole": 4.0, "b": true, "n": null, "o": {"a": [1, "b"]}, "arr": [1, 2]}),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"job_id": 42, "notebook_params": {
                "s": "x", "i": "3", "f": "2.5", "whole": "4", "b": "true",
                "o": "{\"a\":[1,\"b\"]}", "arr": "[1,2]"
            }})
        );
    }

    #[test]
    fn python_wheel_and_sql_maps() {
        assert_eq!(
            build(
                json!({"taskType": "python_wheel"}),
                json!({"a": 1, "b": false})
            )
            .unwrap(),
            json!({"job_id": 42, "python_named_params": {"a": "1", "b": "false"}})
        );
        assert_eq!(
            build(
                json!({"taskType": "sql"}),
                json!({"day": "2025-01-01", "n": -7})
            )
            .unwrap(),
            json!({"job_id": 42, "sql_params": {"day": "2025-01-01", "n": "-7"}})
        );
    }

    #[test]
    fn python_script_and_spark_jar_take_args() {
        assert_eq!(
            build(
                json!({"taskType": "python_script"}),
                json!({"args": ["--x", 1, true]})
            )
            .unwrap(),
            json!({"job_id": 42, "python_params": ["--x", "1", "true"]})
        );
        assert_eq!(
            build(
                json!({"taskType": "spark_jar"}),
                json!({"args": ["a", 2.0]})
            )
            .unwrap(),
            json!({"job_id": 42, "jar_params": ["a", "2"]})
        );
        assert_eq!(
            detail(build(json!({"taskType": "spark_jar"}), json!({"args": "a b"})).unwrap_err()),
            "args: must be an array, got string"
        );
        assert_eq!(
            detail(
                build(
                    json!({"taskType": "python_script"}),
                    json!({"args": ["a", null]})
                )
                .unwrap_err()
            ),
            "args/1: must not be null"
        );
        assert_eq!(
            detail(
                build(
                    json!({"taskType": "python_script"}),
                    json!({"args": [], "x": 1})
                )
                .unwrap_err()
            ),
            "python_script params take the shape { args: string[] }; unexpected field \"x\""
        );
        assert_eq!(
            detail(build(json!({"taskType": "spark_jar"}), json!({"other": 1})).unwrap_err()),
            "spark_jar params take the shape { args: string[] }; unexpected field \"other\""
        );
    }

    #[test]
    fn dbt_rejects_params_but_accepts_none() {
        let err = build(json!({"taskType": "dbt"}), json!({"a": 1})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Parameter validation failed for job \"j\": dbt tasks do not accept parameters"
        );
        assert_eq!(err.status(), 400);
        assert_eq!(
            build(json!({"taskType": "dbt"}), json!({})).unwrap(),
            json!({"job_id": 42})
        );
        assert_eq!(
            build_run_now_request(&entry(json!({"taskType": "dbt"})), None).unwrap(),
            json!({"job_id": 42})
        );
    }

    #[test]
    fn no_task_type_passes_fields_through() {
        assert_eq!(
            build(
                json!({}),
                json!({"notebook_params": {"a": "1"}, "queue": {"enabled": true}, "job_id": 7, "idempotency_token": "x"})
            )
            .unwrap(),
            json!({"job_id": 42, "notebook_params": {"a": "1"}, "queue": {"enabled": true}})
        );
    }

    #[test]
    fn job_parameters_mode_wins_over_task_type() {
        assert_eq!(
            build(
                json!({"taskType": "python_script", "jobParameters": true}),
                json!({"a": 1, "b": "x", "c": null})
            )
            .unwrap(),
            json!({"job_id": 42, "job_parameters": {"a": "1", "b": "x"}})
        );
        // dbt jobs may take job-level parameters.
        assert_eq!(
            build(
                json!({"taskType": "dbt", "jobParameters": true}),
                json!({"target": "prod"})
            )
            .unwrap(),
            json!({"job_id": 42, "job_parameters": {"target": "prod"}})
        );
    }

    #[test]
    fn empty_or_absent_params_send_no_field() {
        for job in [
            json!({"taskType": "notebook"}),
            json!({"taskType": "spark_jar"}),
            json!({}),
            json!({"jobParameters": true}),
        ] {
            assert_eq!(
                build(job.clone(), json!({})).unwrap(),
                json!({"job_id": 42})
            );
            assert_eq!(
                build(job.clone(), Value::Null).unwrap(),
                json!({"job_id": 42})
            );
            assert_eq!(
                build_run_now_request(&entry(job), None).unwrap(),
                json!({"job_id": 42})
            );
        }
    }

    #[test]
    fn params_must_be_an_object() {
        for (p, t) in [
            (json!([1]), "array"),
            (json!("x"), "string"),
            (json!(3), "number"),
        ] {
            let err = build(json!({"taskType": "notebook"}), p).unwrap_err();
            assert_eq!(
                detail(err),
                format!("params must be a JSON object, got {t}")
            );
        }
    }

    #[test]
    fn missing_job_id_fails_first() {
        let config: PluginConfig = serde_json::from_value(json!({"jobs": {"x": {}}})).unwrap();
        let r = Registry::new(&HashMap::new(), &config);
        let err = build_run_now_request(r.get("x").unwrap(), None).unwrap_err();
        assert!(matches!(err, JobsError::JobIdMissing { .. }));
    }

    #[test]
    fn schema_errors_list_paths_and_messages() {
        let schema = json!({
            "type": "object",
            "properties": {
                "startDate": {"type": "string"},
                "count": {"type": "integer", "minimum": 1},
                "nested": {"type": "object", "properties": {"flag": {"type": "boolean"}}}
            },
            "required": ["startDate"],
            "additionalProperties": false
        });
        let job = json!({"taskType": "notebook", "params": schema});
        let ok = build(job.clone(), json!({"startDate": "2025-01-01", "count": 2})).unwrap();
        assert_eq!(
            ok["notebook_params"],
            json!({"startDate": "2025-01-01", "count": "2"})
        );

        let err = build(job.clone(), json!({"count": 0, "nested": {"flag": "yes"}})).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("Parameter validation failed for job \"j\": "),
            "{text}"
        );
        let d = detail(err);
        let parts: Vec<&str> = d.split("; ").collect();
        assert_eq!(parts.len(), 3, "{d}");
        assert!(
            parts.contains(&"(root): \"startDate\" is a required property"),
            "{d}"
        );
        assert!(
            parts.contains(&"/count: value is less than the minimum of 1"),
            "{d}"
        );
        assert!(
            parts.contains(&"/nested/flag: value is not of type \"boolean\""),
            "{d}"
        );

        // Absent params are validated as `{}`.
        let err = build_run_now_request(&entry(job), None).unwrap_err();
        assert_eq!(detail(err), "(root): \"startDate\" is a required property");
    }

    #[test]
    fn older_drafts_compile() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "properties": {"n": {"type": "number", "maximum": 5, "exclusiveMaximum": true}}
        });
        let job = json!({"params": schema, "taskType": "sql"});
        assert!(build(job.clone(), json!({"n": 4})).is_ok());
        assert_eq!(
            detail(build(job, json!({"n": 5})).unwrap_err())
                .split(':')
                .next(),
            Some("/n")
        );
    }

    #[test]
    fn external_schema_skips_rust_validation_but_maps() {
        let job = json!({"taskType": "sql", "externalSchema": true, "params": {"type": "object", "required": ["x"]}});
        assert_eq!(
            build(job, json!({"y": 1})).unwrap(),
            json!({"job_id": 42, "sql_params": {"y": "1"}})
        );
    }

    #[test]
    fn invalid_schema_is_a_config_error_at_call_time() {
        let err = build(json!({"params": {"type": 12}}), json!({})).unwrap_err();
        assert_eq!(err.code(), "CONFIG_ERROR");
        assert!(
            err.to_string()
                .starts_with("Job \"j\" has an invalid params JSON Schema"),
            "{err}"
        );
    }

    #[test]
    fn detail_is_capped_for_huge_inputs() {
        let schema = json!({"type": "object", "additionalProperties": {"type": "integer"}});
        let mut params = Map::new();
        for i in 0..500 {
            params.insert(format!("k{i}"), Value::String("v".repeat(5_000)));
        }
        let d = detail(build(json!({"params": schema}), Value::Object(params)).unwrap_err());
        assert!(d.len() <= MAX_DETAIL_CHARS + 40, "{}", d.len());
        assert!(d.contains("more"), "{d}");
        assert!(!d.contains(&"v".repeat(300)));
    }

    #[test]
    fn params_field_over_10000_bytes_is_rejected() {
        let big = "x".repeat(10_000);
        let err = build(json!({"taskType": "notebook"}), json!({ "a": big })).unwrap_err();
        let d = detail(err);
        assert!(
            d.starts_with(
                "notebook_params is 10008 bytes as JSON, over the Jobs API limit of 10000 bytes"
            ),
            "{d}"
        );
        // Just under the limit passes: {"a":"..."} = 8 bytes of framing.
        let fits = "x".repeat(9_992);
        assert!(build(json!({"taskType": "notebook"}), json!({ "a": fits })).is_ok());
        // Pass-through fields are checked too.
        let err = build(json!({}), json!({"python_params": ["y".repeat(10_000)]})).unwrap_err();
        assert!(detail(err).starts_with("python_params is"));
        let err = build(
            json!({"jobParameters": true}),
            json!({"a": "z".repeat(10_000)}),
        )
        .unwrap_err();
        assert!(detail(err).starts_with("job_parameters is"));
    }

    #[test]
    fn job_defined_parameters_check_names_and_describe_a_form() {
        let job = json!({"settings": {"parameters": [{"name": "date", "default": "today"}, {"name": "mode", "default": "full"}]}});
        let defined = defined_parameters(&job);
        assert_eq!(
            defined,
            [
                ("date".into(), "today".into()),
                ("mode".into(), "full".into())
            ]
        );
        assert!(check_defined("j", Some(&json!({"date": "d", "mode": 1})), &defined).is_ok());
        assert!(check_defined("j", None, &defined).is_ok());
        let err = check_defined("j", Some(&json!({"date": "d", "<b>x": 1})), &defined).unwrap_err();
        assert_eq!(err.code(), "VALIDATION_ERROR");
        assert_eq!(
            err.to_string(),
            "Parameter validation failed for job \"j\": unknown parameter \"bx\" for this job (it defines: date, mode)"
        );
        let none = check_defined("j", Some(&json!({"a": 1})), &[]).unwrap_err();
        assert!(none.to_string().ends_with("(it defines none)"));
        assert_eq!(
            defined_schema(&defined),
            json!({"type": "object", "additionalProperties": false, "properties": {
                "date": {"type": "string", "default": "today"}, "mode": {"type": "string", "default": "full"}}})
        );
    }

    #[test]
    fn an_empty_object_asks_for_nothing_everywhere() {
        for job in [
            json!({}),
            json!({"taskType": "dbt"}),
            json!({"taskType": "notebook"}),
            json!({"jobParameters": true}),
            json!({"externalSchema": true}),
        ] {
            assert_eq!(from_request(&entry(job.clone()), Some(json!({}))), Ok(None));
            assert_eq!(from_request(&entry(job.clone()), None), Ok(None));
            assert_eq!(build(job, json!({})).unwrap(), json!({"job_id": 42}));
        }
        assert!(asks_for_nothing(None) && asks_for_nothing(Some(&json!(null))));
        assert!(asks_for_nothing(Some(&json!({}))));
        assert!(!asks_for_nothing(Some(&json!({"a": null}))));
        assert!(!asks_for_nothing(Some(&json!([]))));
    }

    #[test]
    fn request_params_meet_the_routes_rules_before_the_mapping() {
        for p in [json!(null), json!([1]), json!("x"), json!(3)] {
            assert_eq!(
                from_request(&entry(json!({"taskType": "notebook"})), Some(p)),
                Err("params must be a plain object".to_string())
            );
        }
        // Without a schema, only a job that says where params go takes them.
        assert_eq!(
            from_request(&entry(json!({})), Some(json!({"a": 1}))),
            Err("This job does not accept parameters".to_string())
        );
        for job in [
            json!({"taskType": "sql"}),
            json!({"jobParameters": true}),
            json!({"params": {"type": "object"}}),
            json!({"externalSchema": true}),
        ] {
            assert_eq!(
                from_request(&entry(job), Some(json!({"a": 1}))),
                Ok(Some(json!({"a": 1})))
            );
        }
        // At most 50 keys without a schema; a schema takes any number.
        let keys = |n: usize| -> Value {
            Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect())
        };
        let sql = entry(json!({"taskType": "sql"}));
        assert!(from_request(&sql, Some(keys(MAX_UNVALIDATED_PARAM_KEYS))).is_ok());
        assert_eq!(
            from_request(&sql, Some(keys(51))),
            Err("Too many parameters (51). Define a params schema to accept more than 50.".into())
        );
        let schema = entry(json!({"taskType": "sql", "params": {"type": "object"}}));
        assert!(from_request(&schema, Some(keys(200))).is_ok());
        // The app's own runNow passes run-now fields through without a task type (spec).
        assert_eq!(
            build(json!({}), json!({"queue": {"enabled": true}})).unwrap(),
            json!({"job_id": 42, "queue": {"enabled": true}})
        );
    }

    #[test]
    fn coercion_rules() {
        assert_eq!(coerce_to_string(&json!("s")), Some("s".into()));
        assert_eq!(coerce_to_string(&json!(1)), Some("1".into()));
        assert_eq!(coerce_to_string(&json!(1.0)), Some("1".into()));
        assert_eq!(coerce_to_string(&json!(0.1)), Some("0.1".into()));
        assert_eq!(coerce_to_string(&json!(-3.0)), Some("-3".into()));
        assert_eq!(coerce_to_string(&json!(false)), Some("false".into()));
        assert_eq!(coerce_to_string(&json!(null)), None);
        assert_eq!(coerce_to_string(&json!({"a": 1})), Some("{\"a\":1}".into()));
    }
}
