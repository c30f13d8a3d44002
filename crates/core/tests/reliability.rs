//! Reliability tests across modules (issue 6), at the Rust level where that is the better fit:
//! - a seeded fuzz of 20,000 requests straight into `routes::Router` (no HTTP): no panic, no
//!   5xx, no echo of hostile input, and nothing sent upstream for an invalid request;
//! - a call dropped while it waits to retry is never retried (service and `exec` level);
//! - `Debug` output of the service and its parts never shows a credential.
//!
//! The 100,000-poll soak has its own test binary (`crates/core/tests/soak.rs`) so that its
//! memory measurement is not disturbed by the tests running beside these.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::env;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

mod common;

use appkit_jobs_core::auth::Identity;
use appkit_jobs_core::exec::{self, TierPolicy};
use appkit_jobs_core::jobs::Jobs;
use appkit_jobs_core::registry::PluginConfig;
use appkit_jobs_core::routes::{RouteRequest, RouteResponse, Router, RouterOptions};
use appkit_jobs_core::JobsError;
use appkit_jobs_emulator::{Emulator, EmulatorOptions, FaultSpec};

// ---------------------------------------------------------------------------------------------
// Route fuzz
// ---------------------------------------------------------------------------------------------

const HOSTILE: &[&str] = &[
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "\u{202e}evil",
    "nul\u{0}byte",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "' OR 1=1--",
    "zzzzzzzz-hostile-value",
];

/// Substrings that must never come back in a response to hostile input.
const ECHO_MARKERS: &[&str] = &[
    "<script",
    "etc/passwd",
    "\u{202e}",
    "\u{0}",
    "${jndi",
    "{{7*7}}",
    "OR 1=1",
    "zzzzzzzz-hostile-value",
];

const ODD_KEYS: &[&str] = &[
    "..",
    "%2e%2e",
    "%00",
    "%3Cscript%3E",
    "%E2%80%AE",
    "%ff%fe",
    "__proto__",
    "ETL",
    "etl%20",
    "%",
    "%zz",
    "1",
    "-1",
    "0x10",
    "%F0%9F%92%A5",
];

const ODD_RUN_IDS: &[&str] = &[
    "0",
    "-1",
    "1.5",
    "1e3",
    "0x10",
    "+1",
    "%201",
    "NaN",
    "9223372036854775808",
    "99999999999999999999999",
    "%D9%A1",
    "%EF%BC%91",
    "1%00",
    "..",
    "abc",
    "%ff",
];

fn hostile(r: &mut StdRng) -> String {
    let base = HOSTILE[r.random_range(0..HOSTILE.len())];
    if r.random_bool(0.1) {
        base.repeat(r.random_range(10..500))
    } else {
        base.to_string()
    }
}

fn random_json(r: &mut StdRng, depth: usize) -> Value {
    match if depth > 4 {
        r.random_range(0..4)
    } else {
        r.random_range(0..7)
    } {
        0 => Value::Null,
        1 => json!(r.random::<bool>()),
        2 => json!(r.random_range(-1_000_000i64..1_000_000)),
        3 => json!(hostile(r)),
        4 => json!(r.random::<f64>() * 1e300),
        5 => Value::Array(
            (0..r.random_range(0..4))
                .map(|_| random_json(r, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..r.random_range(0..4) {
                m.insert(hostile(r), random_json(r, depth + 1));
            }
            Value::Object(m)
        }
    }
}

/// `{"params": {k0..k9999}}`, built once.
fn many_params_body() -> Bytes {
    static BODY: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BODY.get_or_init(|| {
        let params: serde_json::Map<String, Value> =
            (0..10_000).map(|i| (format!("k{i}"), json!("v"))).collect();
        Bytes::from(json!({ "params": params }).to_string())
    })
    .clone()
}

/// One request and whether it is invalid (must be refused without any upstream call).
fn generate(r: &mut StdRng) -> (RouteRequest, bool) {
    let key = ["etl", "sql", "plain"][r.random_range(0..3)];
    let mut req = RouteRequest::default();
    let invalid = match r.random_range(0..9) {
        0 => {
            let k = ODD_KEYS[r.random_range(0..ODD_KEYS.len())];
            let (m, suffix) = [
                ("POST", "/run"),
                ("GET", "/runs"),
                ("GET", "/status"),
                ("GET", "/runs/1"),
                ("DELETE", "/runs/1"),
                ("GET", "/runs/1/stream"),
            ][r.random_range(0..6)];
            req.method = m.into();
            req.path = format!("/{k}{suffix}");
            true
        }
        1 => {
            let id = ODD_RUN_IDS[r.random_range(0..ODD_RUN_IDS.len())];
            let (m, suffix) =
                [("GET", ""), ("DELETE", ""), ("GET", "/stream")][r.random_range(0..3)];
            req.method = m.into();
            req.path = format!("/{key}/runs/{id}{suffix}");
            true
        }
        2 => {
            // Random bytes as the body (mostly not JSON, some not UTF-8).
            req.method = "POST".into();
            req.path = format!("/{key}/run");
            let n = r.random_range(1..64);
            let mut body: Vec<u8> = (0..n).map(|_| r.random::<u8>()).collect();
            body.insert(0, b'{');
            req.body = Bytes::from(body);
            true
        }
        3 => {
            // Deep nesting, far beyond any parser's limit.
            req.method = "POST".into();
            req.path = format!("/{key}/run");
            let depth = r.random_range(200..5_000);
            req.body = Bytes::from(format!(
                "{{\"params\":{{\"a\":{}1{}}}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            ));
            true
        }
        4 => {
            // Random JSON params: refused by the schema (etl, sql) or by a job taking none.
            req.method = "POST".into();
            req.path = format!("/{key}/run");
            let mut params = serde_json::Map::new();
            params.insert(hostile(r), random_json(r, 0));
            req.body = Bytes::from(json!({ "params": params }).to_string());
            true
        }
        5 => {
            req.method = "POST".into();
            req.path = format!("/{key}/run");
            // 10,000 params now and then (each costs a full parse), else params of a wrong type.
            req.body = if r.random_bool(0.05) {
                many_params_body()
            } else {
                let wrong = [
                    json!([]),
                    json!("x"),
                    json!(5),
                    json!(true),
                    json!([{"a": 1}]),
                ];
                Bytes::from(json!({ "params": wrong[r.random_range(0..wrong.len())] }).to_string())
            };
            true
        }
        6 => {
            req.method = ["PUT", "PATCH", "HEAD", "OPTIONS", "GET"][r.random_range(0..5)].into();
            req.path = format!("/{key}/run/{}", hostile(r));
            true
        }
        7 => {
            req.method = "POST".into();
            req.path = format!("/{key}/run");
            req.query.insert("stream".into(), "true".into());
            req.headers.insert("last-event-id".into(), hostile(r));
            true
        }
        _ => {
            // Valid shapes: odd limits are clamped, an absent run is the upstream's 4xx.
            req.method = "GET".into();
            if r.random_bool(0.5) {
                req.path = format!("/{key}/runs");
                req.query.insert("limit".into(), hostile(r));
            } else {
                req.path = format!("/{key}/runs/{}", r.random_range(1..i64::MAX));
            }
            false
        }
    };
    (req, invalid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_fuzz_20000_requests_no_5xx_no_echo_no_upstream_for_invalid() {
    let emu = Emulator::start(EmulatorOptions {
        time_scale: Some(0.0),
        ..Default::default()
    })
    .await
    .unwrap();
    let config: PluginConfig = serde_json::from_value(json!({
        "jobs": {
            "etl": {
                "taskType": "notebook",
                "params": {
                    "type": "object",
                    "properties": { "date": { "type": "string", "pattern": "^[0-9-]{1,10}$" } },
                    "additionalProperties": false
                }
            },
            "sql": { "taskType": "sql", "params": { "type": "object", "maxProperties": 0 } },
            "plain": {}
        }
    }))
    .unwrap();
    let jobs = Arc::new(Jobs::new(
        config,
        env(
            &emu,
            &[
                ("DATABRICKS_JOB_ETL", "1001"),
                ("DATABRICKS_JOB_SQL", "1003"),
                ("DATABRICKS_JOB_PLAIN", "1002"),
            ],
        ),
    ));
    let router = Router::new(jobs, RouterOptions::default());
    let mut r = StdRng::seed_from_u64(0x5eed_f00d);
    let mut counts = [0usize; 2];
    for i in 0..20_000 {
        let (req, invalid) = generate(&mut r);
        let label = format!(
            "#{i} {} {}",
            req.method,
            req.path.chars().take(120).collect::<String>()
        );
        let before = emu.requests().len();
        let resp = router.handle(req).await;
        let status = resp.status();
        assert!(status < 500, "{label} -> {status} {resp:?}");
        if invalid {
            counts[0] += 1;
            assert!(status >= 400, "{label} -> {status}");
            assert_eq!(emu.requests().len(), before, "{label} went upstream");
        } else {
            counts[1] += 1;
        }
        if let RouteResponse::Json { body, .. } = &resp {
            let text = body.to_string();
            for m in ECHO_MARKERS {
                assert!(
                    !text.contains(m),
                    "{label} echoed {m:?}: {}",
                    &text[..text.len().min(300)]
                );
            }
            if status >= 400 {
                let error = body["error"].as_str().unwrap_or("");
                assert!(
                    error.len() <= 1_200,
                    "{label}: error of {} bytes",
                    error.len()
                );
                assert!(!error.chars().any(char::is_control), "{label}: {error:?}");
            }
        }
        if before > 100 {
            emu.clear_requests(); // keeps the log (cloned for each check) short
        }
    }
    assert!(counts[0] > 15_000 && counts[1] > 1_000, "{counts:?}");
    assert_eq!(router.active_streams(), 0);
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// No retry after a drop
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn exec_a_dropped_call_is_never_retried() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let policy = TierPolicy::read();
    let call = exec::execute(&policy, move || {
        let a = a.clone();
        async move {
            a.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(JobsError::Api {
                status: 503,
                error_code: None,
                upstream_message: String::new(),
                retry_after: Some(Duration::from_secs(5)),
            })
        }
    });
    // The first attempt fails; the call then waits 5 s to retry: drop it during the wait.
    let _ = tokio::time::timeout(Duration::from_secs(1), call).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "retried after the drop");
}

#[tokio::test]
async fn service_calls_dropped_while_waiting_to_retry_send_nothing_more() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let config: PluginConfig = serde_json::from_value(json!({})).unwrap();
    let jobs = Jobs::new(config, env(&emu, &[("DATABRICKS_JOB_ETL", "1001")]));
    let sp = Identity::ServicePrincipal;
    for path in [
        "/api/2.2/jobs/run-now",
        "/api/2.2/jobs/get",
        "/api/2.2/jobs/runs/list",
    ] {
        emu.clear_requests();
        emu.inject_fault(FaultSpec {
            path: path.into(),
            status: Some(503),
            retry_after: Some(1),
            ..Default::default()
        })
        .unwrap();
        let call = async {
            match path {
                "/api/2.2/jobs/run-now" => jobs.run_now("etl", &sp, None).await.map(|_| ()),
                "/api/2.2/jobs/get" => jobs.get_job("etl", &sp).await.map(|_| ()),
                _ => jobs.list_runs("etl", &sp, None).await.map(|_| ()),
            }
        };
        // Wait for the first (refused) attempt, then drop the call during its 1 s wait.
        let dropped = tokio::time::timeout(Duration::from_millis(400), call).await;
        assert!(dropped.is_err(), "{path}: finished before the drop");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let sent: Vec<_> = emu
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect();
        assert_eq!(sent.len(), 1, "{path}: {sent:?}");
        emu.clear_faults();
    }
    assert_eq!(emu.run_count(), 0, "no run started after the drop");
    emu.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Secrets in Debug output
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn debug_output_never_shows_a_credential() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let user_token = "user-token-secret-debug-0001";
    for creds in [
        vec![("DATABRICKS_TOKEN", emu.token())],
        vec![
            ("DATABRICKS_CLIENT_ID", emu.client_id()),
            ("DATABRICKS_CLIENT_SECRET", emu.client_secret()),
        ],
    ] {
        let mut env: HashMap<String, String> = creds
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        env.insert("DATABRICKS_HOST".into(), emu.url());
        env.insert("DATABRICKS_JOB_ETL".into(), "1001".into());
        let jobs = Jobs::new(serde_json::from_value(json!({})).unwrap(), env);
        let user = Identity::user(user_token);
        // Make the service fetch and cache a token, then print everything.
        jobs.get_job("etl", &Identity::ServicePrincipal)
            .await
            .unwrap();
        let watch = jobs.watch_started_run("etl", &user, 1);
        let texts = [
            format!("{jobs:?}"),
            format!("{:?}", jobs.client()),
            format!("{:?}", jobs.poller()),
            format!("{user:?}"),
            format!("{watch:?}"),
            format!("{:?}", jobs.registry()),
        ];
        for text in texts {
            for secret in [emu.token(), emu.client_secret(), user_token.to_string()] {
                assert!(!text.contains(&secret), "a secret in Debug output: {text}");
            }
        }
    }
    emu.stop().await;
}
