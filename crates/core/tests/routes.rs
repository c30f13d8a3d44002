//! The `/api/jobs` routes against the emulator: JSON statuses and bodies, the run route's
//! checks, SSE streams to a terminal state, resume without a second run, heartbeats, repairs.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use appkit_jobs_core::jobs::Jobs;
use appkit_jobs_core::registry::PluginConfig;
use appkit_jobs_core::routes::*;
use appkit_jobs_core::run;
use appkit_jobs_core::sse::{EventStream, HEARTBEAT_FRAME};
use appkit_jobs_emulator::{Emulator, EmulatorOptions};
use bytes::Bytes;
use serde_json::{json, Value};

struct Fixture {
    emu: Emulator,
    router: Router,
}

async fn fixture(time_scale: f64, poll_ms: u64, heartbeat: Duration) -> Fixture {
    let emu = Emulator::start(EmulatorOptions {
        time_scale: Some(time_scale),
        ..Default::default()
    })
    .await
    .expect("emulator");
    let env: HashMap<String, String> = [
        ("DATABRICKS_HOST", emu.url()),
        ("DATABRICKS_TOKEN", emu.token()),
        ("DATABRICKS_JOB_ETL", "1001".to_string()),
        ("DATABRICKS_JOB_OTHER", "1002".to_string()),
        ("DATABRICKS_JOB_SCHEMA", "1004".to_string()),
        ("DATABRICKS_JOB_SLOW", "1003".to_string()),
        ("DATABRICKS_JOB_FLAKY", "1002".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config: PluginConfig = serde_json::from_value(json!({
        "pollIntervalMs": poll_ms,
        "jobs": {
            "etl": { "taskType": "notebook" },
            "slow": { "taskType": "sql" },
            "schema": { "params": {
                "type": "object",
                "properties": { "date": { "type": "string" } },
                "required": ["date"],
                "additionalProperties": false
            } }
        }
    }))
    .expect("config");
    let jobs = Arc::new(Jobs::new(config, env));
    Fixture {
        emu,
        router: Router::new(jobs, RouterOptions { heartbeat }),
    }
}

fn req(method: &str, path: &str) -> RouteRequest {
    RouteRequest::new(method, path)
}

fn with_body(method: &str, path: &str, body: Value) -> RouteRequest {
    RouteRequest {
        body: Bytes::from(body.to_string()),
        ..RouteRequest::new(method, path)
    }
}

fn json_of(r: RouteResponse) -> (u16, Value) {
    match r {
        RouteResponse::Json { status, body } => (status, body),
        other => panic!("expected JSON, got {other:?}"),
    }
}

fn stream_of(r: RouteResponse) -> EventStream {
    match r {
        RouteResponse::Stream(s) => s,
        other => panic!("expected a stream, got {other:?}"),
    }
}

/// Reads a stream to its end; returns (id, event, data) of each event and the heartbeat count.
async fn drain(mut s: EventStream) -> (Vec<(String, String, Value)>, usize) {
    let mut events = vec![];
    let mut heartbeats = 0;
    while let Some(chunk) = s.next().await.map(|f| f.text) {
        if chunk == HEARTBEAT_FRAME {
            heartbeats += 1;
            continue;
        }
        let mut id = String::new();
        let mut event = String::new();
        let mut data = Value::Null;
        for line in chunk.trim_end().lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_string();
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).expect("data is JSON");
            }
        }
        assert!(
            chunk.ends_with("\n\n"),
            "frame ends with a blank line: {chunk:?}"
        );
        events.push((id, event, data));
    }
    (events, heartbeats)
}

/// The idempotency tokens of the run-now requests, in order.
fn run_now_tokens(emu: &Emulator) -> Vec<String> {
    emu.requests()
        .iter()
        .filter(|r| r.path.ends_with("/jobs/run-now"))
        .filter_map(|r| r.body["idempotency_token"].as_str().map(str::to_string))
        .collect()
}

/// A fixed UUID-shaped text ending in `n`.
fn uuid_like(n: u8) -> String {
    format!("00000000-0000-4000-8000-00000000000{}", n % 10)
}

fn run_now_count(emu: &Emulator) -> usize {
    emu.requests()
        .iter()
        .filter(|r| r.path.ends_with("/jobs/run-now"))
        .count()
}

async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_routes_statuses_and_bodies() {
    let f = fixture(50.0, 20, Duration::from_secs(10)).await;
    let r = &f.router;

    let (status, body) = json_of(r.handle(req("GET", "/no%3Cpe%3E/status")).await);
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({ "error": "Unknown job \"nope\"", "code": "UNKNOWN_JOB", "plugin": "jobs" })
    );

    let (status, body) = json_of(r.handle(req("GET", "/etl/status")).await);
    assert_eq!(
        (status, body),
        (200, json!({ "status": null, "run": null }))
    );

    let (status, body) = json_of(
        r.handle(with_body(
            "POST",
            "/etl/run",
            json!({ "params": { "date": "2025-01-01" } }),
        ))
        .await,
    );
    assert_eq!(status, 200, "{body}");
    let run_id = body["runId"].as_i64().expect("runId");

    let (status, run) = json_of(r.handle(req("GET", &format!("/etl/runs/{run_id}"))).await);
    assert_eq!(status, 200);
    assert_eq!(run["run_id"].as_i64(), Some(run_id));
    assert_eq!(run["job_id"].as_i64(), Some(1001));

    for bad in [
        "0",
        "-1",
        "1e3",
        "0x10",
        "1.5",
        "abc",
        "99999999999999999999",
    ] {
        let (status, body) = json_of(r.handle(req("GET", &format!("/etl/runs/{bad}"))).await);
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("Invalid runId")),
            "{bad}"
        );
        let (status, _) = json_of(r.handle(req("DELETE", &format!("/etl/runs/{bad}"))).await);
        assert_eq!(status, 400, "{bad}");
    }

    // Another job's run: 404, and never cancelled.
    let (status, _) = json_of(r.handle(req("GET", &format!("/other/runs/{run_id}"))).await);
    assert_eq!(status, 404);
    let (status, _) = json_of(
        r.handle(req("DELETE", &format!("/other/runs/{run_id}")))
            .await,
    );
    assert_eq!(status, 404);
    assert!(!f
        .emu
        .requests()
        .iter()
        .any(|q| q.path.ends_with("/runs/cancel")));

    let mut list = req("GET", "/etl/runs");
    list.query.insert("limit".into(), "500".into());
    let (status, body) = json_of(r.handle(list).await);
    assert_eq!(status, 200);
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(1));

    let (status, body) = json_of(r.handle(req("GET", "/etl/status")).await);
    assert_eq!(status, 200);
    assert_eq!(body["run"]["run_id"].as_i64(), Some(run_id));
    assert!(body["status"].is_string());

    match r
        .handle(req("DELETE", &format!("/etl/runs/{run_id}")))
        .await
    {
        RouteResponse::Empty { status } => assert_eq!(status, 204),
        other => panic!("{other:?}"),
    }
    assert!(f
        .emu
        .requests()
        .iter()
        .any(|q| q.path.ends_with("/runs/cancel")));

    // A run that does not exist upstream keeps the upstream status, with generic text.
    let (status, body) = json_of(r.handle(req("GET", "/etl/runs/987654321")).await);
    assert!(status == 404 || status == 400, "{status}");
    assert_eq!(body["plugin"], "jobs");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e == appkit_jobs_core::error::status_text(status)),
        "{body}"
    );

    let (status, _) = json_of(r.handle(req("GET", "/etl/nothing-here")).await);
    assert_eq!(status, 404);
    f.emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_route_checks_params_before_sending_anything() {
    let f = fixture(50.0, 20, Duration::from_secs(10)).await;
    let r = &f.router;
    let cases = [
        (
            "/etl/run",
            json!({ "params": [1, 2] }),
            "params must be a plain object",
        ),
        (
            "/etl/run",
            json!({ "params": "x" }),
            "params must be a plain object",
        ),
        (
            "/etl/run",
            json!({ "params": null }),
            "params must be a plain object",
        ),
        (
            "/other/run",
            json!({ "params": { "a": 1 } }),
            "This job does not accept parameters",
        ),
    ];
    for stream in [false, true] {
        for (path, body, message) in &cases {
            let mut q = with_body("POST", path, body.clone());
            if stream {
                q.query.insert("stream".into(), "true".into());
            }
            let (status, got) = json_of(r.handle(q).await);
            assert_eq!(status, 400, "{path} {body}");
            assert_eq!(got["error"], json!(message));
        }
        let many: serde_json::Map<String, Value> =
            (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        let mut q = with_body("POST", "/etl/run", json!({ "params": many }));
        if stream {
            q.query.insert("stream".into(), "true".into());
        }
        let (status, got) = json_of(r.handle(q).await);
        assert_eq!(status, 400);
        assert!(got["error"]
            .as_str()
            .unwrap()
            .starts_with("Too many parameters (51)"));

        let mut q = with_body("POST", "/schema/run", json!({ "params": { "date": 5 } }));
        if stream {
            q.query.insert("stream".into(), "true".into());
        }
        let (status, got) = json_of(r.handle(q).await);
        assert_eq!(status, 400);
        assert!(
            got["error"]
                .as_str()
                .unwrap()
                .starts_with("Parameter validation failed for job \"schema\""),
            "{got}"
        );
    }
    let (status, _) = json_of(
        r.handle(RouteRequest {
            body: Bytes::from("{nope"),
            ..req("POST", "/etl/run")
        })
        .await,
    );
    assert_eq!(status, 400);
    assert_eq!(run_now_count(&f.emu), 0, "nothing was sent upstream");

    // Fifty keys with a task type are fine; no params at all on a job without a schema too.
    let fifty: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
    let (status, _) = json_of(
        r.handle(with_body("POST", "/etl/run", json!({ "params": fifty })))
            .await,
    );
    assert_eq!(status, 200);
    let (status, _) = json_of(r.handle(req("POST", "/other/run")).await);
    assert_eq!(status, 200);
    assert_eq!(run_now_count(&f.emu), 2);

    // `{}` asks for nothing: on a job that takes no params it starts a run as no params do,
    // streamed or not, and sends no params field.
    let empty = json!({ "params": {} });
    let (status, _) = json_of(
        r.handle(with_body("POST", "/other/run", empty.clone()))
            .await,
    );
    assert_eq!(status, 200);
    let mut q = with_body("POST", "/other/run", empty);
    q.query.insert("stream".into(), "true".into());
    let (events, _) = drain(stream_of(r.handle(q).await)).await;
    let (_, event, data) = events.last().unwrap();
    assert_eq!(event, "message");
    assert!(run::is_terminal(&data["run"]), "{data}");
    assert_eq!(run_now_count(&f.emu), 4);
    for sent in f
        .emu
        .requests()
        .iter()
        .filter(|q| q.path.ends_with("/jobs/run-now"))
        .skip(2)
    {
        let mut fields: Vec<&String> = sent.body.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(fields, ["idempotency_token", "job_id"]);
    }
    f.emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_runs_to_a_terminal_state_and_resumes_without_a_second_run() {
    let f = fixture(50.0, 20, Duration::from_secs(10)).await;
    let r = &f.router;
    let mut q = with_body(
        "POST",
        "/etl/run",
        json!({ "params": { "date": "2025-01-01" } }),
    );
    q.query.insert("stream".into(), "true".into());
    let s = stream_of(r.handle(q.clone()).await);
    // Cache the job's status while the run is young ...
    let (_, early) = json_of(r.handle(req("GET", "/etl/status")).await);
    assert!(!run::is_terminal(&early["run"]), "{early}");
    let (mut events, _) = drain(s).await;
    // The stream opened before run-now: its first event has no state and the run-now's token.
    let opening = events.remove(0);
    let token = opening
        .0
        .strip_prefix("start:")
        .expect("a start id")
        .to_string();
    assert_eq!(
        opening.2,
        json!({"status": null, "timestamp": opening.2["timestamp"], "run": null, "accepted": "run"})
    );
    assert!(opening.2["timestamp"].as_i64().is_some());
    assert_eq!(run_now_tokens(&f.emu), vec![token.clone()]);
    assert!(events.len() >= 2, "{events:?}");
    // ... the stream saw it change, so the cached reads were dropped.
    let (_, late) = json_of(r.handle(req("GET", "/etl/status")).await);
    assert_eq!(late["status"], "TERMINATED", "{late}");
    let run_id = events[0].2["run"]["run_id"].as_i64().unwrap();
    for (i, (id, event, data)) in events.iter().enumerate() {
        assert_eq!(id, &format!("{run_id}:{}", i + 1));
        assert_eq!(event, "message");
        assert!(data["timestamp"].as_i64().is_some());
        assert_eq!(data["run"]["run_id"].as_i64(), Some(run_id));
    }
    let last = &events.last().unwrap().2;
    assert_eq!(last["status"], "TERMINATED");
    assert!(run::is_terminal(&last["run"]));
    assert_eq!(run_now_count(&f.emu), 1);

    // The reconnect repeats the POST with Last-Event-ID: same run, ids continue, no new run.
    let mut again = q.clone();
    again
        .headers
        .insert("last-event-id".into(), format!("{run_id}:2"));
    let (resumed, _) = drain(stream_of(r.handle(again).await)).await;
    assert!(!resumed.is_empty());
    assert_eq!(resumed[0].0, format!("{run_id}:3"));
    assert_eq!(resumed.last().unwrap().2["status"], "TERMINATED");
    assert_eq!(run_now_count(&f.emu), 1);

    // A reconnect before the first state carries the opening id: run-now is sent again with
    // the same token, and the workspace answers with the run it started. No opening event again.
    let runs = f.emu.run_count();
    let mut early = q.clone();
    early
        .headers
        .insert("last-event-id".into(), format!("start:{token}"));
    let (replayed, _) = drain(stream_of(r.handle(early.clone()).await)).await;
    assert_eq!(replayed[0].0, format!("{run_id}:1"));
    assert_eq!(replayed[0].2["run"]["run_id"].as_i64(), Some(run_id));
    assert_eq!(replayed.last().unwrap().2["status"], "TERMINATED");
    assert_eq!(f.emu.run_count(), runs, "no second run");
    assert_eq!(run_now_tokens(&f.emu), vec![token.clone(), token.clone()]);
    assert_eq!(r.resumes(), 2);
    // The token names its job: on another job's route it sends nothing.
    let mut foreign = with_body("POST", "/other/run", json!({}));
    foreign.query.insert("stream".into(), "true".into());
    foreign
        .headers
        .insert("last-event-id".into(), format!("start:{token}"));
    assert_eq!(json_of(r.handle(foreign.clone()).await).0, 404);
    // A token crafted to name this job, but that the workspace already gave to another job's
    // run, reaches that run only through the ownership check: an error event, nothing followed.
    let crafted = format!("1001-{}", uuid_like(7));
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/api/2.2/jobs/run-now", f.emu.url()))
        .bearer_auth(f.emu.token())
        .json(&json!({"job_id": 1002, "idempotency_token": crafted}))
        .send()
        .await
        .expect("run-now")
        .json()
        .await
        .expect("JSON");
    assert!(answer["run_id"].as_i64().is_some(), "{answer}");
    early
        .headers
        .insert("last-event-id".into(), format!("start:{crafted}"));
    let (refused, _) = drain(stream_of(r.handle(early).await)).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].1, "error");
    assert_eq!(refused[0].2["code"], "NOT_FOUND");
    assert_eq!(run_now_count(&f.emu), 4);
    for bad in ["start:", "start:1001", "start:abc-def", "repair:1:0"] {
        foreign.headers.insert("last-event-id".into(), bad.into());
        assert_eq!(json_of(r.handle(foreign.clone()).await).0, 400, "{bad}");
    }

    // A Last-Event-ID of another job's run is refused, a malformed one too.
    let mut other = with_body("POST", "/other/run", json!({}));
    other.query.insert("stream".into(), "true".into());
    other
        .headers
        .insert("last-event-id".into(), format!("{run_id}:1"));
    assert_eq!(json_of(r.handle(other.clone()).await).0, 404);
    other
        .headers
        .insert("last-event-id".into(), "garbage".into());
    assert_eq!(json_of(r.handle(other).await).0, 400);
    assert_eq!(run_now_count(&f.emu), 4);

    // Re-attach by URL.
    let (events, _) = drain(stream_of(
        r.handle(req("GET", &format!("/etl/runs/{run_id}/stream")))
            .await,
    ))
    .await;
    assert_eq!(events.last().unwrap().2["status"], "TERMINATED");
    assert_eq!(
        json_of(
            r.handle(req("GET", &format!("/other/runs/{run_id}/stream")))
                .await
        )
        .0,
        404
    );
    assert_eq!(
        json_of(r.handle(req("GET", "/etl/runs/1e3/stream")).await).0,
        400
    );
    f.emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_while_waiting_and_dropping_a_stream_stops_its_watcher() {
    // Frozen emulator time: the run stays where it is; long polls, short heartbeats.
    let f = fixture(0.0, 60_000, Duration::from_millis(20)).await;
    let r = &f.router;
    let mut q = req("POST", "/slow/run");
    q.query.insert("stream".into(), "true".into());
    let mut s = stream_of(r.handle(q.clone()).await);
    let first = s.next().await.expect("first event").text;
    assert!(
        first.starts_with("id: ") && first.contains("event: message"),
        "{first}"
    );
    let mut heartbeats = 0;
    while heartbeats < 2 {
        let chunk = s.next().await.expect("stream stays open").text;
        if chunk == HEARTBEAT_FRAME {
            heartbeats += 1;
        }
    }
    assert_eq!(r.active_streams(), 1);
    drop(s);
    assert!(
        eventually(|| r.active_streams() == 0).await,
        "the watcher is dropped with the stream"
    );

    // cancel() and abort_all() end streams too; the run is never cancelled by that.
    let s = stream_of(r.handle(q.clone()).await);
    s.cancel();
    let (events, _) = drain(s).await;
    assert!(events.is_empty());
    let mut s = stream_of(r.handle(q).await);
    assert!(s.next().await.is_some());
    r.abort_all();
    assert_eq!(s.next().await, None);
    assert!(eventually(|| r.active_streams() == 0).await);
    assert!(!f
        .emu
        .requests()
        .iter()
        .any(|q| q.path.ends_with("/runs/cancel")));
    f.emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_route_answers_json_or_streams_to_the_new_end() {
    let f = fixture(50.0, 20, Duration::from_secs(10)).await;
    let r = &f.router;
    let mut run = with_body("POST", "/flaky/run", json!({}));
    run.query.insert("stream".into(), "true".into());
    let (events, _) = drain(stream_of(r.handle(run).await)).await;
    let first = &events.last().unwrap().2;
    assert_eq!(first["run"]["state"]["result_state"], "FAILED");
    let run_id = first["run"]["run_id"].as_i64().unwrap();
    let path = format!("/flaky/runs/{run_id}/repair");
    let repairs = |emu: &Emulator| {
        emu.requests()
            .iter()
            .filter(|q| q.path.ends_with("/runs/repair"))
            .count()
    };

    // Refused before anything is sent: no selection, both, a bad field, another job's run.
    for (body, status, message) in [
        (
            json!({}),
            400,
            "a repair needs exactly one of rerunAllFailedTasks: true or rerunTasks",
        ),
        (
            json!({"rerunAllFailedTasks": true, "rerunTasks": ["main"]}),
            400,
            "a repair needs exactly one",
        ),
        (
            json!({"rerunTasks": "main"}),
            400,
            "rerunTasks must be an array of task keys",
        ),
        (
            json!({"rerunAllFailedTasks": true, "params": {"a": 1}}),
            400,
            "This job does not accept parameters",
        ),
    ] {
        let (s, v) = json_of(r.handle(with_body("POST", &path, body.clone())).await);
        assert_eq!(s, status, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(message), "{v}");
    }
    let other = format!("/etl/runs/{run_id}/repair");
    let (s, _) = json_of(
        r.handle(with_body(
            "POST",
            &other,
            json!({"rerunAllFailedTasks": true}),
        ))
        .await,
    );
    assert_eq!(s, 404);
    assert_eq!(repairs(&f.emu), 0);

    // JSON: the repair id. `params: {}` asks for nothing, on a job that takes no params too.
    let (s, v) = json_of(
        r.handle(with_body(
            "POST",
            &path,
            json!({"rerunAllFailedTasks": true, "params": {}}),
        ))
        .await,
    );
    assert_eq!(s, 200, "{v}");
    let repair_id = v["repairId"].as_i64().unwrap();
    assert!(repair_id > 0);
    // A second repair while the first runs keeps the upstream status and its text.
    let (s, v) = json_of(
        r.handle(with_body("POST", &path, json!({"rerunTasks": ["main"]})))
            .await,
    );
    assert_eq!((s, v["error"].as_str()), (400, Some("Bad Request")));
    assert!(
        eventually(|| f
            .emu
            .get_run(run_id)
            .is_some_and(|run| run::is_terminal(&run)))
        .await
    );

    // SSE: from the repair to the new end, then resumed with Last-Event-ID (no new repair).
    let mut q = with_body("POST", &path, json!({"rerunTasks": ["main"]}));
    q.query.insert("stream".into(), "true".into());
    let (mut events, _) = drain(stream_of(r.handle(q.clone()).await)).await;
    let opening = events.remove(0);
    assert_eq!(opening.0, format!("repair:{run_id}:{repair_id}"));
    assert_eq!(opening.2["accepted"], "repair");
    assert!(events.len() >= 2, "{events:?}");
    assert_ne!(events[0].2["status"], "TERMINATED");
    for (i, (id, event, data)) in events.iter().enumerate() {
        assert_eq!(id, &format!("{run_id}:{}", i + 1));
        assert_eq!(event, "message");
        assert_eq!(data["run"]["run_id"].as_i64(), Some(run_id));
    }
    let end = &events.last().unwrap().2;
    assert_eq!(end["run"]["state"]["result_state"], "SUCCESS");
    let sent = repairs(&f.emu);
    let mut again = q.clone();
    again
        .headers
        .insert("last-event-id".into(), format!("{run_id}:1"));
    let (resumed, _) = drain(stream_of(r.handle(again).await)).await;
    assert_eq!(resumed[0].0, format!("{run_id}:2"));
    assert_eq!(resumed.last().unwrap().2["status"], "TERMINATED");
    assert_eq!(repairs(&f.emu), sent);
    let mut wrong = q.clone();
    wrong.headers.insert("last-event-id".into(), "1:1".into());
    assert_eq!(json_of(r.handle(wrong.clone()).await).0, 400);
    wrong
        .headers
        .insert("last-event-id".into(), format!("repair:1:{repair_id}"));
    assert_eq!(json_of(r.handle(wrong).await).0, 400);

    // A reconnect before the first state carries the opening id. The repair it asked for is
    // in the run's history by now: it is followed, and no second repair is sent.
    let mut early = q.clone();
    early
        .headers
        .insert("last-event-id".into(), opening.0.clone());
    let (resumed, _) = drain(stream_of(r.handle(early).await)).await;
    assert_eq!(resumed[0].0, format!("{run_id}:1"), "{resumed:?}");
    assert_eq!(resumed.last().unwrap().2["status"], "TERMINATED");
    assert_eq!(repairs(&f.emu), sent, "no second repair");

    // A reconnect whose repair never reached the workspace sends it, once, naming the same
    // latest repair: the run is repaired now.
    let history: Value = reqwest::Client::new()
        .get(format!(
            "{}/api/2.2/jobs/runs/get?run_id={run_id}&include_history=true",
            f.emu.url()
        ))
        .bearer_auth(f.emu.token())
        .send()
        .await
        .expect("runs/get")
        .json()
        .await
        .expect("JSON");
    let newest = appkit_jobs_core::repair::latest_repair_id(&history).expect("repaired");
    let mut lost = q.clone();
    lost.headers
        .insert("last-event-id".into(), format!("repair:{run_id}:{newest}"));
    let (repaired, _) = drain(stream_of(r.handle(lost.clone()).await)).await;
    assert_eq!(
        repaired.last().unwrap().2["status"],
        "TERMINATED",
        "{repaired:?}"
    );
    assert_eq!(repairs(&f.emu), sent + 1);
    // And reconnecting once more with that same id follows that repair: no third one.
    let (again, _) = drain(stream_of(r.handle(lost).await)).await;
    assert_eq!(again.last().unwrap().2["status"], "TERMINATED");
    assert_eq!(repairs(&f.emu), sent + 1);
    f.emu.stop().await;
}

fn as_person(mut r: RouteRequest, email: &str) -> RouteRequest {
    r.headers
        .insert("x-forwarded-email".into(), email.to_string());
    r.headers
        .insert("x-forwarded-preferred-username".into(), "someone".into());
    r
}

#[tokio::test]
async fn runs_carry_who_started_them_and_started_by_me_lists_ones_own() {
    let f = fixture(0.0, 1000, Duration::from_secs(10)).await;
    let run = |email: &str| {
        let r = as_person(with_body("POST", "/etl/run", json!({})), email);
        f.router.handle(r)
    };
    let (_, a) = json_of(run("alice@example.com").await);
    let (_, b) = json_of(run("bob@example.com").await);
    let (_, c) = json_of(run("alice@example.com").await);
    // Started elsewhere (the Jobs UI, another app): nobody the ledger knows.
    let elsewhere: Value = reqwest::Client::new()
        .post(format!("{}/api/2.2/jobs/run-now", f.emu.url()))
        .bearer_auth(f.emu.token())
        .json(&json!({ "job_id": 1001 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let elsewhere = elsewhere["run_id"].as_i64().unwrap();
    let (s, got) = json_of(
        f.router
            .handle(req("GET", &format!("/etl/runs/{}", a["runId"])))
            .await,
    );
    assert_eq!(s, 200);
    assert_eq!(got["started_by"]["email"], "alice@example.com");
    assert_eq!(got["started_by"]["user_name"], "someone");
    let (_, got) = json_of(
        f.router
            .handle(req("GET", &format!("/etl/runs/{elsewhere}")))
            .await,
    );
    assert_eq!(got["started_by"], Value::Null);
    let (_, status) = json_of(f.router.handle(req("GET", "/etl/status")).await);
    assert_eq!(status["run"]["run_id"], elsewhere, "the newest");
    assert!(status["run"]
        .as_object()
        .unwrap()
        .contains_key("started_by"));
    // Mine, newest first, from whatever instance; another person's by name.
    let mine = |email: &str| {
        let mut r = as_person(req("GET", "/etl/runs"), email);
        r.query.insert("startedBy".into(), "me".into());
        f.router.handle(r)
    };
    let (s, listed) = json_of(mine("alice@example.com").await);
    assert_eq!(s, 200);
    let ids: Vec<&Value> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["run_id"])
        .collect();
    assert_eq!(ids, vec![&c["runId"], &a["runId"]]);
    let mut by_name = req("GET", "/etl/runs");
    by_name
        .query
        .insert("startedBy".into(), "bob@example.com".into());
    let (_, listed) = json_of(f.router.handle(by_name).await);
    assert_eq!(listed["runs"][0]["run_id"], b["runId"]);
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1);
    // "me" without the forwarded headers: a clear 400.
    let mut anonymous = req("GET", "/etl/runs");
    anonymous.query.insert("startedBy".into(), "me".into());
    let (s, body) = json_of(f.router.handle(anonymous).await);
    assert_eq!(s, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("X-Forwarded-Email"),
        "{body}"
    );
    // Hostile headers: bounded, stored as text, no 5xx.
    let huge = format!("{}'; DROP TABLE x; --", "a".repeat(10 * 1024));
    let (s, d) = json_of(run(&huge).await);
    assert_eq!(s, 200);
    let (_, got) = json_of(
        f.router
            .handle(req("GET", &format!("/etl/runs/{}", d["runId"])))
            .await,
    );
    assert_eq!(got["started_by"]["email"].as_str().unwrap().len(), 256);
    f.emu.stop().await;
}
