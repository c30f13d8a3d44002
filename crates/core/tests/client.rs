//! The Jobs API client against the emulator: paging, page merging, retries with the
//! execution tier, OAuth M2M, profiles, typed errors, the request gate and the in-flight cap.
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use appkit_jobs_core::auth::Identity;
use appkit_jobs_core::client::{ClientOptions, JobsClient, ListRuns, RequestGate};
use appkit_jobs_core::exec::{execute, TierPolicy};
use appkit_jobs_core::JobsError;
use appkit_jobs_emulator::{EmulatorOptions, FaultSpec, RequestLogEntry, UserSpec};
use futures::future::BoxFuture;
use serde_json::{json, Value};

// ---- against the emulator -------------------------------------------------------------

use std::sync::atomic::{AtomicU32, Ordering};

fn requests_at<'a>(log: &'a [RequestLogEntry], path: &str) -> Vec<&'a RequestLogEntry> {
    log.iter().filter(|r| r.path == path).collect()
}

fn query_param(entry: &RequestLogEntry, name: &str) -> Option<String> {
    url::form_urlencoded::parse(entry.query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Read policy with short waits so retry tests stay quick.
fn quick_read() -> TierPolicy {
    TierPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..TierPolicy::read()
    }
}

const SP: Identity = Identity::ServicePrincipal;

#[tokio::test]
async fn list_runs_pages_past_25() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let client = JobsClient::new(&common::env(&emu, &[]), ClientOptions::default());
    // no runs yet: runs[] is absent upstream, an empty list here
    let none = client
        .list_runs(
            &SP,
            ListRuns {
                job_id: 1001,
                limit: 20,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty());

    let mut ids = Vec::new();
    for _ in 0..60 {
        let r = client.run_now(&SP, &json!({"job_id": 1001})).await.unwrap();
        ids.push(r["run_id"].as_i64().expect("an i64 run id"));
    }
    assert!(ids[0] > u32::MAX as i64, "ids above 2^32 stay exact");

    emu.clear_requests();
    let runs = client
        .list_runs(
            &SP,
            ListRuns {
                job_id: 1001,
                limit: 55,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 55);
    let got: Vec<i64> = runs.iter().map(|r| r["run_id"].as_i64().unwrap()).collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(
        got,
        newest_first[..55].to_vec(),
        "newest first, no gaps or repeats"
    );
    let log = emu.requests();
    let pages = requests_at(&log, "/api/2.2/jobs/runs/list");
    let limits: Vec<String> = pages
        .iter()
        .map(|r| query_param(r, "limit").unwrap())
        .collect();
    assert_eq!(limits, ["25", "25", "5"]);
    assert!(query_param(pages[0], "page_token").is_none());
    assert!(query_param(pages[1], "page_token").is_some());

    // more wanted than exist: stops when has_more is false
    emu.clear_requests();
    let all = client
        .list_runs(
            &SP,
            ListRuns {
                job_id: 1001,
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 60);
    assert_eq!(
        requests_at(&emu.requests(), "/api/2.2/jobs/runs/list").len(),
        3
    );

    // filters are passed through
    emu.clear_requests();
    let active = client
        .list_runs(
            &SP,
            ListRuns {
                job_id: 1001,
                limit: 3,
                active_only: true,
                expand_tasks: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(active.len(), 3);
    let log = emu.requests();
    let q = requests_at(&log, "/api/2.2/jobs/runs/list")[0];
    assert_eq!(query_param(q, "active_only").as_deref(), Some("true"));
    assert_eq!(query_param(q, "expand_tasks").as_deref(), Some("true"));
    assert!(active[0]["tasks"].is_array());
    emu.stop().await;
}

#[tokio::test]
async fn get_run_and_get_job_merge_pages_beyond_100_tasks() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let client = JobsClient::new(&common::env(&emu, &[]), ClientOptions::default());
    let run_id = client.run_now(&SP, &json!({"job_id": 1004})).await.unwrap()["run_id"]
        .as_i64()
        .unwrap();
    emu.clear_requests();
    let run = client.get_run(&SP, run_id).await.unwrap();
    let tasks = run["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 150);
    let mut keys: Vec<&str> = tasks
        .iter()
        .map(|t| t["task_key"].as_str().unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 150, "no task twice");
    assert!(run.get("next_page_token").is_none());
    assert_eq!(run["run_id"].as_i64(), Some(run_id));
    let log = emu.requests();
    let gets = requests_at(&log, "/api/2.2/jobs/runs/get");
    assert_eq!(gets.len(), 2);
    assert!(query_param(gets[1], "page_token").is_some());

    // A poll of the same run: the first page is not the whole run, so it is merged too.
    emu.clear_requests();
    let polled = client.poll_run(&SP, run_id).await.unwrap();
    let merged: Value = serde_json::from_str(&polled.text().text).unwrap();
    assert_eq!(merged["tasks"].as_array().unwrap().len(), 150);
    assert!(merged.get("next_page_token").is_none());
    assert_eq!(polled.run_id, Some(run_id));
    assert_eq!(
        requests_at(&emu.requests(), "/api/2.2/jobs/runs/get").len(),
        2
    );

    let job = client.get_job(&SP, 1004).await.unwrap();
    assert_eq!(job["settings"]["tasks"].as_array().unwrap().len(), 150);
    assert_eq!(job["job_id"].as_i64(), Some(1004));
    assert!(job.get("next_page_token").is_none());
    emu.stop().await;
}

#[tokio::test]
async fn read_503_then_success_is_retried() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let client = JobsClient::new(&common::env(&emu, &[]), ClientOptions::default());
    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/get".into(),
        status: Some(503),
        error_code: Some("TEMPORARILY_UNAVAILABLE".into()),
        ..Default::default()
    })
    .unwrap();
    // one attempt per client call: the 503 surfaces as a typed, transient error
    let e = client.get_job(&SP, 1001).await.unwrap_err();
    assert!(
        matches!(e, JobsError::Api { status: 503, ref error_code, .. } if error_code.as_deref() == Some("TEMPORARILY_UNAVAILABLE"))
    );
    assert!(e.is_transient());

    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/get".into(),
        status: Some(503),
        ..Default::default()
    })
    .unwrap();
    emu.clear_requests();
    let job = execute(&quick_read(), || client.get_job(&SP, 1001))
        .await
        .unwrap();
    assert_eq!(job["job_id"].as_i64(), Some(1001));
    let log = emu.requests();
    let statuses: Vec<u16> = requests_at(&log, "/api/2.2/jobs/get")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [503, 200]);

    // a reset connection is a network error, retried as well
    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/get".into(),
        reset: true,
        ..Default::default()
    })
    .unwrap();
    let job = execute(&quick_read(), || client.get_job(&SP, 1001))
        .await
        .unwrap();
    assert_eq!(job["job_id"].as_i64(), Some(1001));
    emu.stop().await;
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let client = JobsClient::new(&common::env(&emu, &[]), ClientOptions::default());
    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/get".into(),
        status: Some(429),
        error_code: Some("REQUEST_LIMIT_EXCEEDED".into()),
        retry_after: Some(1),
        ..Default::default()
    })
    .unwrap();
    let e = client.get_job(&SP, 1001).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(e.code(), "REQUEST_LIMIT_EXCEEDED");

    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/get".into(),
        status: Some(429),
        retry_after: Some(1),
        ..Default::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let job = execute(&quick_read(), || client.get_job(&SP, 1001))
        .await
        .unwrap();
    assert_eq!(job["job_id"].as_i64(), Some(1001));
    // the 20 ms backoff was replaced by the server's 1 s
    assert!(started.elapsed() >= Duration::from_secs(1));
    emu.stop().await;
}

#[tokio::test]
async fn run_now_retried_with_same_idempotency_token_starts_one_run() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let client = JobsClient::new(&common::env(&emu, &[]), ClientOptions::default());
    let body = json!({"job_id": 1001, "idempotency_token": uuid::Uuid::new_v4().to_string()});
    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/run-now".into(),
        status: Some(503),
        ..Default::default()
    })
    .unwrap();
    let policy = TierPolicy {
        initial_backoff: Duration::from_millis(20),
        ..TierPolicy::write()
    };
    let first = execute(&policy, || client.run_now(&SP, &body))
        .await
        .unwrap();
    // the answer was lost in transit: the caller sends the same request again
    let again = execute(&policy, || client.run_now(&SP, &body))
        .await
        .unwrap();
    assert_eq!(first["run_id"], again["run_id"]);
    assert_eq!(emu.run_count(), 1);
    let log = emu.requests();
    let posts = requests_at(&log, "/api/2.2/jobs/run-now");
    assert_eq!(
        posts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 200, 200]
    );
    assert!(posts
        .iter()
        .all(|r| r.body["idempotency_token"] == body["idempotency_token"]));

    // cancel is idempotent and returns ()
    let run_id = first["run_id"].as_i64().unwrap();
    client.cancel_run(&SP, run_id).await.unwrap();
    client.cancel_run(&SP, run_id).await.unwrap();
    emu.stop().await;
}

#[tokio::test]
async fn oauth_m2m_single_flight_refresh_and_401_recovery() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let client = JobsClient::new(&common::m2m_env(&emu), ClientOptions::default());
    assert_eq!(client.auth().credentials_kind().unwrap(), "oauth-m2m");

    // many concurrent callers, one token fetch
    let calls = (0..40).map(|_| client.get_job(&SP, 1001));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap()["job_id"].as_i64(), Some(1001));
    }
    assert_eq!(client.auth().oauth_fetch_count(), 1);
    let log = emu.requests();
    assert_eq!(requests_at(&log, "/oidc/v1/token").len(), 1);
    assert_eq!(
        requests_at(&log, "/oidc/.well-known/oauth-authorization-server").len(),
        1
    );
    assert!(requests_at(&log, "/api/2.2/jobs/get").iter().all(|r| r
        .identity
        .as_deref()
        .is_some_and(|i| i.starts_with("oauth:"))));

    // the token expires behind our back: the 401 forces one refresh and one retry
    emu.set_oauth_token_ttl(4);
    emu.expire_oauth_tokens();
    emu.clear_requests();
    let calls = (0..20).map(|_| client.get_job(&SP, 1001));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap()["job_id"].as_i64(), Some(1001));
    }
    assert_eq!(client.auth().oauth_fetch_count(), 2);
    assert_eq!(requests_at(&emu.requests(), "/oidc/v1/token").len(), 1);

    // a 4 s token is refreshed at half-life, before it expires: no request is refused
    tokio::time::sleep(Duration::from_millis(2100)).await;
    emu.clear_requests();
    let calls = (0..20).map(|_| client.get_job(&SP, 1001));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(client.auth().oauth_fetch_count(), 3);
    let log = emu.requests();
    assert!(
        log.iter().all(|r| r.status != 401),
        "an expired token was sent"
    );
    assert_eq!(requests_at(&log, "/oidc/v1/token").len(), 1);
    emu.stop().await;
}

#[tokio::test]
async fn oauth_bad_secret_is_a_config_error_without_the_secret() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let mut env = common::m2m_env(&emu);
    env.insert(
        "DATABRICKS_CLIENT_SECRET".into(),
        "wrong-secret-value-123".into(),
    );
    let client = JobsClient::new(&env, ClientOptions::default());
    let e = client.get_job(&SP, 1001).await.unwrap_err();
    assert!(matches!(e, JobsError::Config(_)), "{e:?}");
    let text = format!("{e} {e:?} {}", e.public_message());
    assert!(text.contains("DATABRICKS_CLIENT_SECRET"));
    assert!(!text.contains("wrong-secret-value-123"));
    emu.stop().await;
}

#[tokio::test]
async fn profile_file_auth() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let dir = std::env::temp_dir().join(format!("appkit-jobs-client-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[DEFAULT]\nhost = {url}\ntoken = {tok}\n\n[robot]\nhost = {url}\nclient_id = {cid}\nclient_secret = {cs}\n",
        url = emu.url(),
        tok = emu.token(),
        cid = emu.client_id(),
        cs = emu.client_secret()
    );
    std::fs::write(dir.join(".databrickscfg"), text).unwrap();
    let home = dir.display().to_string();

    let pat = JobsClient::new(
        &HashMap::from([("HOME".to_string(), home.clone())]),
        ClientOptions::default(),
    );
    assert_eq!(
        pat.get_job(&SP, 1002).await.unwrap()["job_id"].as_i64(),
        Some(1002)
    );
    let robot = JobsClient::new(
        &HashMap::from([
            ("HOME".to_string(), home.clone()),
            ("DATABRICKS_CONFIG_PROFILE".to_string(), "robot".to_string()),
        ]),
        ClientOptions::default(),
    );
    assert_eq!(
        robot.get_job(&SP, 1002).await.unwrap()["job_id"].as_i64(),
        Some(1002)
    );
    assert_eq!(robot.auth().oauth_fetch_count(), 1);
    let log = emu.requests();
    let ids: Vec<_> = requests_at(&log, "/api/2.2/jobs/get")
        .iter()
        .map(|r| r.identity.clone().unwrap_or_default())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], "service_principal");
    assert!(ids[1].starts_with("oauth:"));
    let _ = std::fs::remove_dir_all(&dir);
    emu.stop().await;
}

#[tokio::test]
async fn error_bodies_are_typed() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let client = JobsClient::new(&common::env(&emu, &[]), ClientOptions::default());
    // a missing run: 400 INVALID_PARAMETER_VALUE
    let e = client.get_run(&SP, 987_654_321_012).await.unwrap_err();
    match &e {
        JobsError::Api {
            status: 400,
            error_code,
            upstream_message,
            ..
        } => {
            assert_eq!(error_code.as_deref(), Some("INVALID_PARAMETER_VALUE"));
            assert!(upstream_message.contains("does not exist"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.public_message(), "Bad Request");
    // an HTML error page
    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/get".into(),
        html: true,
        status: Some(502),
        ..Default::default()
    })
    .unwrap();
    let e = client.get_job(&SP, 1001).await.unwrap_err();
    assert!(
        matches!(
            e,
            JobsError::Api {
                status: 502,
                error_code: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_transient());
    // a success answer that is not JSON
    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/get".into(),
        status: Some(200),
        body: Some("<<not json>>".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        client.get_job(&SP, 1001).await.unwrap_err(),
        JobsError::Network { .. }
    ));
    // a reset connection
    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/get".into(),
        reset: true,
        ..Default::default()
    })
    .unwrap();
    let e = client.get_job(&SP, 1001).await.unwrap_err();
    assert!(matches!(e, JobsError::Network { .. }), "{e:?}");
    assert!(!e.to_string().contains("://"));
    // get-output on a multi-task parent run is a 400 upstream
    let run_id = client.run_now(&SP, &json!({"job_id": 1009})).await.unwrap()["run_id"]
        .as_i64()
        .unwrap();
    assert!(matches!(
        client.get_run_output(&SP, run_id).await.unwrap_err(),
        JobsError::Api { status: 400, .. }
    ));
    let run_id = client.run_now(&SP, &json!({"job_id": 1001})).await.unwrap()["run_id"]
        .as_i64()
        .unwrap();
    let out = client.get_run_output(&SP, run_id).await.unwrap();
    assert_eq!(out["metadata"]["run_id"].as_i64(), Some(run_id));
    emu.stop().await;
}

#[tokio::test]
async fn no_error_contains_a_token() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let secret = "dapi-not-the-right-token-0042";
    let mut env = common::env(&emu, &[]);
    env.insert("DATABRICKS_TOKEN".into(), secret.into());
    let client = JobsClient::new(&env, ClientOptions::default());
    let mut errors = vec![client.get_job(&SP, 1001).await.unwrap_err()];
    assert!(matches!(errors[0], JobsError::Api { status: 401, .. }));
    // a user token that is refused, with no retry (nothing to refresh)
    emu.clear_requests();
    let user_secret = "user-secret-token-7777";
    errors.push(
        client
            .get_job(&Identity::user(user_secret), 1001)
            .await
            .unwrap_err(),
    );
    assert_eq!(requests_at(&emu.requests(), "/api/2.2/jobs/get").len(), 1);
    emu.stop().await;
    // nobody listening any more
    errors.push(client.get_job(&SP, 1001).await.unwrap_err());
    assert!(
        matches!(errors.last(), Some(JobsError::Network { .. })),
        "{:?}",
        errors.last()
    );
    for e in &errors {
        let text = format!("{e} | {e:?} | {} | {}", e.public_message(), e.code());
        assert!(
            !text.contains(secret) && !text.contains(user_secret),
            "{text}"
        );
        assert!(!text.contains("://"), "no URL in {text}");
    }
}

#[tokio::test]
async fn user_identity_uses_the_user_token() {
    let emu = common::frozen_emulator(EmulatorOptions {
        users: vec![UserSpec {
            token: "alice-token".into(),
            user_name: "alice@example.com".into(),
            permissions: HashMap::from([(1001, "CAN_MANAGE_RUN".to_string())]),
            default_permission: None,
        }],
        ..Default::default()
    })
    .await;
    let client = JobsClient::new(&common::env(&emu, &[]), ClientOptions::default());
    let alice = Identity::user("alice-token");
    assert_eq!(
        client.get_job(&alice, 1001).await.unwrap()["job_id"].as_i64(),
        Some(1001)
    );
    let e = client.get_job(&alice, 1002).await.unwrap_err();
    assert!(
        matches!(e, JobsError::Api { status: 403, ref error_code, .. } if error_code.as_deref() == Some("PERMISSION_DENIED"))
    );
    let log = emu.requests();
    assert!(requests_at(&log, "/api/2.2/jobs/get")
        .iter()
        .all(|r| r.identity.as_deref() == Some("user:alice@example.com")));
    emu.stop().await;
}

struct CountingGate(AtomicU32);
impl RequestGate for CountingGate {
    fn acquire(&self) -> BoxFuture<'_, ()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

#[tokio::test]
async fn gate_is_awaited_before_each_request() {
    let emu = common::frozen_emulator(EmulatorOptions::default()).await;
    let gate = Arc::new(CountingGate(AtomicU32::new(0)));
    let client = JobsClient::new(
        &common::env(&emu, &[]),
        ClientOptions {
            gate: Some(gate.clone()),
            ..Default::default()
        },
    );
    let run_id = client.run_now(&SP, &json!({"job_id": 1004})).await.unwrap()["run_id"]
        .as_i64()
        .unwrap();
    client.get_run(&SP, run_id).await.unwrap();
    assert_eq!(
        gate.0.load(Ordering::SeqCst),
        3,
        "run-now + two runs/get pages"
    );
    emu.stop().await;
}

#[tokio::test]
async fn unconfigured_client_names_what_to_set() {
    let client = JobsClient::new(&HashMap::new(), ClientOptions::default());
    let e = client.get_job(&SP, 1).await.unwrap_err();
    assert!(matches!(e, JobsError::Config(ref m) if m.contains("DATABRICKS_HOST")));
}

#[tokio::test]
async fn requests_in_flight_are_capped_and_the_rest_queue() {
    // A loopback server that holds each request until released and counts how many it
    // holds at once.
    #[derive(Default)]
    struct Seen {
        now: AtomicU32,
        max: AtomicU32,
        total: AtomicU32,
    }
    let seen = Arc::new(Seen::default());
    let release = Arc::new(tokio::sync::Notify::new());
    let (s2, r2) = (seen.clone(), release.clone());
    let app = axum::Router::new().fallback(move || {
        let (seen, release) = (s2.clone(), r2.clone());
        async move {
            let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
            seen.max.fetch_max(now, Ordering::SeqCst);
            seen.total.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            seen.now.fetch_sub(1, Ordering::SeqCst);
            axum::Json(json!({"run_id": 1, "job_id": 2}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let env = HashMap::from([
        ("DATABRICKS_HOST".to_string(), url),
        ("DATABRICKS_TOKEN".to_string(), "dapi-test".to_string()),
        (
            "HOME".to_string(),
            "/nonexistent-appkit-jobs-home".to_string(),
        ),
    ]);
    let client = JobsClient::new(
        &env,
        ClientOptions {
            max_in_flight: Some(3),
            ..Default::default()
        },
    );
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.get_run(&SP, i + 1).await })
        })
        .collect();
    // Three reach the server; the other seven wait for a permit.
    while seen.now.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(seen.total.load(Ordering::SeqCst), 3);
    // Release the held requests one by one until every call has been answered.
    while seen.total.load(Ordering::SeqCst) < 10 || seen.now.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        release.notify_one();
    }
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap()["run_id"], 1);
    }
    assert_eq!(seen.total.load(Ordering::SeqCst), 10);
    assert_eq!(seen.max.load(Ordering::SeqCst), 3);
    server.abort();
}
