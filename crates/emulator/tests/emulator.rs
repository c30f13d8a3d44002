//! Emulator tests over real HTTP on 127.0.0.1. The clock is frozen (time scale 0) and moved
//! with `advance_time`, so nothing depends on wall-clock speed.
mod common;

use common::*;
use serde_json::{json, Value};

use appkit_jobs_emulator::*;

#[tokio::test]
async fn lifecycle_follows_the_clock() {
    let emu = frozen(vec![job(1, "SUCCESS")]).await;
    let api = Api::new(&emu);
    let (s, v) = api
        .post("/api/2.2/jobs/run-now", json!({"job_id": 1}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["number_in_job"], 1);
    let id = v["run_id"].as_i64().unwrap();
    let run = api.run(id).await;
    assert_eq!(life(&run), "QUEUED");
    assert_eq!(run["status"]["state"], "QUEUED");
    assert_eq!(
        run["status"]["queue_details"]["code"],
        "ACTIVE_RUNS_LIMIT_REACHED"
    );
    assert_eq!(run["end_time"], 0);
    assert!(run["run_page_url"]
        .as_str()
        .unwrap()
        .starts_with(&emu.url()));
    assert!(run["run_page_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("#job/1/run/{id}")));
    assert_eq!(run["tasks"][0]["run_id"], id + 1);
    assert_eq!(run["tasks"][0]["task_key"], "main");
    assert!(run["tasks"][0]["notebook_task"].is_object());
    let expected = [
        (150.0, "PENDING"),
        (100.0, "RUNNING"),
        (1000.0, "TERMINATING"),
        (100.0, "TERMINATED"),
    ];
    for (ms, state) in expected {
        emu.advance_time(ms).unwrap();
        let run = api.run(id).await;
        assert_eq!(life(&run), state);
        assert_eq!(run["tasks"][0]["state"]["life_cycle_state"], state);
    }
    let run = api.run(id).await;
    assert_eq!(run["state"]["result_state"], "SUCCESS");
    assert_eq!(run["status"]["state"], "TERMINATED");
    assert_eq!(run["status"]["termination_details"]["code"], "SUCCESS");
    assert_eq!(run["queue_duration"], 100);
    assert_eq!(run["setup_duration"], 100);
    assert_eq!(run["execution_duration"], 1000);
    assert_eq!(run["cleanup_duration"], 100);
    assert_eq!(run["run_duration"], 1200);
    assert_eq!(
        run["end_time"].as_i64().unwrap() - run["start_time"].as_i64().unwrap(),
        1300
    );
    let id2 = api.run_now(json!({"job_id": "1"})).await;
    assert_eq!(api.run(id2).await["number_in_job"], 2);
    emu.stop().await;
}

#[tokio::test]
async fn skipped_internal_error_and_retries() {
    let mut retry = job(3, "FAILED");
    retry.retries = Some(1);
    retry.retry_wait_ms = Some(300);
    let emu = frozen(vec![job(1, "SKIPPED"), job(2, "INTERNAL_ERROR"), retry]).await;
    let api = Api::new(&emu);
    let skipped = api.run_now(json!({"job_id": 1})).await;
    let internal = api.run_now(json!({"job_id": 2})).await;
    let retried = api.run_now(json!({"job_id": 3})).await;
    emu.advance_time(150.0).unwrap();
    let r = api.run(skipped).await;
    assert_eq!(life(&r), "SKIPPED");
    assert_eq!(r["status"]["state"], "TERMINATED");
    assert_eq!(r["status"]["termination_details"]["code"], "SKIPPED");
    emu.advance_time(1100.0).unwrap(); // t = 1250: first attempt over
    let r = api.run(retried).await;
    assert_eq!(life(&r), "WAITING_FOR_RETRY");
    assert_eq!(r["status"]["state"], "WAITING");
    let r = api.run(internal).await;
    assert_eq!(life(&r), "INTERNAL_ERROR");
    assert_eq!(r["status"]["termination_details"]["type"], "INTERNAL_ERROR");
    emu.advance_time(400.0).unwrap(); // t = 1650: second attempt
    let r = api.run(retried).await;
    assert_eq!(life(&r), "RUNNING");
    assert_eq!(r["attempt_number"], 1);
    emu.advance_time(5000.0).unwrap();
    let r = api.run(retried).await;
    assert_eq!(r["state"]["result_state"], "FAILED");
    assert_eq!(
        r["status"]["termination_details"]["code"],
        "RUN_EXECUTION_ERROR"
    );
    let (_, out) = api
        .get(
            "/api/2.2/jobs/runs/get-output",
            &[("run_id", retried.to_string())],
        )
        .await;
    assert!(out["error"].as_str().unwrap().contains("emulated error"));
    emu.stop().await;
}

#[tokio::test]
async fn cancel_goes_through_terminating() {
    let emu = frozen(vec![job(1, "SUCCESS")]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    emu.advance_time(500.0).unwrap();
    let (s, v) = api
        .post("/api/2.2/jobs/runs/cancel", json!({"run_id": id}))
        .await;
    assert_eq!((s, v), (200, json!({})));
    assert_eq!(life(&api.run(id).await), "TERMINATING");
    emu.advance_time(100.0).unwrap();
    let r = api.run(id).await;
    assert_eq!(life(&r), "TERMINATED");
    assert_eq!(r["state"]["result_state"], "CANCELED");
    assert_eq!(r["state"]["user_cancelled_or_timedout"], true);
    assert_eq!(r["status"]["termination_details"]["code"], "USER_CANCELED");
    assert_eq!(r["tasks"][0]["state"]["result_state"], "CANCELED");
    // Cancelling a finished run changes nothing.
    let (s, _) = api
        .post("/api/2.2/jobs/runs/cancel", json!({"run_id": id}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(api.run(id).await["state"]["result_state"], "CANCELED");
    let (s, v) = api
        .post("/api/2.2/jobs/runs/cancel", json!({"run_id": 42}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        v,
        json!({"error_code": "INVALID_PARAMETER_VALUE", "message": "Run 42 does not exist."})
    );
    emu.stop().await;
}

#[tokio::test]
async fn set_run_state_pins_and_ends() {
    let emu = frozen(vec![job(1, "SUCCESS")]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    assert_eq!(life(&emu.set_run_state(id, "RUNNING").unwrap()), "RUNNING");
    emu.advance_time(100_000.0).unwrap();
    assert_eq!(life(&api.run(id).await), "RUNNING");
    let r = emu.set_run_state(id, "FAILED").unwrap();
    assert_eq!(r["state"]["result_state"], "FAILED");
    assert!(r["end_time"].as_i64().unwrap() > 0);
    assert_eq!(
        api.run(id).await["tasks"][0]["state"]["result_state"],
        "FAILED"
    );
    let r = emu.set_run_state(id, "INTERNAL_ERROR").unwrap();
    assert_eq!(life(&r), "INTERNAL_ERROR");
    assert!(emu.set_run_state(id, "NONSENSE").is_err());
    assert!(emu.set_run_state(7, "RUNNING").is_err());
    // The same over HTTP.
    let (_, r) = control_post(
        &emu,
        &format!("/runs/{id}/state"),
        json!({"state": "WAITING_FOR_RETRY"}),
    )
    .await;
    assert_eq!(life(&r), "WAITING_FOR_RETRY");
    emu.stop().await;
}

#[tokio::test]
async fn runs_get_and_jobs_get_page_tasks_by_100() {
    let mut wide = job(1, "SUCCESS");
    wide.task_count = Some(150);
    let emu = frozen(vec![wide]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    let p1 = api.run(id).await;
    assert_eq!(p1["tasks"].as_array().unwrap().len(), 100);
    assert_eq!(p1["has_more"], true);
    let token = p1["next_page_token"].as_str().unwrap().to_string();
    let (_, p2) = api
        .get(
            "/api/2.2/jobs/runs/get",
            &[("run_id", id.to_string()), ("page_token", token)],
        )
        .await;
    let t2 = p2["tasks"].as_array().unwrap();
    assert_eq!(t2.len(), 50);
    assert_eq!(p2["has_more"], false);
    assert!(p2.get("next_page_token").is_none());
    assert_eq!(t2[49]["run_id"], id + 150);
    assert_eq!(t2[49]["task_key"], "task_150");
    // Multi-task runs report phase durations as 0 at the top.
    assert_eq!(p1["setup_duration"], 0);
    let (_, j1) = api
        .get("/api/2.2/jobs/get", &[("job_id", "1".into())])
        .await;
    assert_eq!(j1["settings"]["tasks"].as_array().unwrap().len(), 100);
    let token = j1["next_page_token"].as_str().unwrap().to_string();
    let (_, j2) = api
        .get(
            "/api/2.2/jobs/get",
            &[("job_id", "1".into()), ("page_token", token)],
        )
        .await;
    assert_eq!(j2["settings"]["tasks"].as_array().unwrap().len(), 50);
    assert!(j2.get("next_page_token").is_none());
    let (s, v) = api
        .get(
            "/api/2.2/jobs/get",
            &[("job_id", "1".into()), ("page_token", "garbage".into())],
        )
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );
    // get-output: the multi-task parent is refused, each task run works.
    let (s, v) = api
        .get(
            "/api/2.2/jobs/runs/get-output",
            &[("run_id", id.to_string())],
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("multiple tasks"));
    emu.advance_time(10_000.0).unwrap();
    let (s, v) = api
        .get(
            "/api/2.2/jobs/runs/get-output",
            &[("run_id", (id + 120).to_string())],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["metadata"]["run_id"], id + 120);
    assert_eq!(v["metadata"]["parent_run_id"], id);
    assert!(v["notebook_output"]["result"]
        .as_str()
        .unwrap()
        .contains("task_120"));
    // runs/get on a task run id answers the task run.
    let t = api.run(id + 3).await;
    assert_eq!(t["tasks"][0]["task_key"], "task_003");
    emu.stop().await;
}

#[tokio::test]
async fn runs_list_limits_order_paging_and_filters() {
    let emu = frozen(vec![job(1, "SUCCESS"), job(2, "SUCCESS")]).await;
    let api = Api::new(&emu);
    for n in ["26", "27", "-1", "x"] {
        let (s, v) = api
            .get("/api/2.2/jobs/runs/list", &[("limit", n.into())])
            .await;
        assert_eq!(s, 400, "limit {n}");
        assert_eq!(v["error_code"], "INVALID_PARAMETER_VALUE");
    }
    let (s, v) = api.get("/api/2.2/jobs/runs/list", &[]).await;
    assert_eq!(
        (s, v.clone()),
        (200, json!({"has_more": false})),
        "runs is left out when empty"
    );
    let mut ids = vec![];
    for _ in 0..30 {
        ids.push(api.run_now(json!({"job_id": 1})).await);
        emu.advance_time(10.0).unwrap();
    }
    let other = api.run_now(json!({"job_id": 2})).await;
    fn q<'a>(extra: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
        let mut v: Vec<(&str, String)> = vec![("job_id", "1".into())];
        v.extend(extra.iter().map(|(k, x)| (*k, x.to_string())));
        v
    }
    let (_, p1) = api
        .get("/api/2.2/jobs/runs/list", &q(&[("limit", "25")]))
        .await;
    let runs = p1["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 25);
    assert_eq!(runs[0]["run_id"], ids[29], "newest first");
    assert!(
        runs[0].get("tasks").is_none(),
        "tasks only with expand_tasks"
    );
    assert_eq!(p1["has_more"], true);
    let token = p1["next_page_token"].as_str().unwrap();
    let (_, p2) = api
        .get(
            "/api/2.2/jobs/runs/list",
            &q(&[("limit", "25"), ("page_token", token)]),
        )
        .await;
    let runs2 = p2["runs"].as_array().unwrap();
    assert_eq!(runs2.len(), 5);
    assert_eq!(runs2[4]["run_id"], ids[0]);
    assert_eq!(p2["has_more"], false);
    let (_, d) = api.get("/api/2.2/jobs/runs/list", &q(&[])).await;
    assert_eq!(d["runs"].as_array().unwrap().len(), 20, "default limit");
    let (_, z) = api
        .get(
            "/api/2.2/jobs/runs/list",
            &q(&[("limit", "0"), ("expand_tasks", "true")]),
        )
        .await;
    assert_eq!(
        z["runs"].as_array().unwrap().len(),
        25,
        "0 means the maximum"
    );
    assert!(z["runs"][0]["tasks"].is_array());
    let (_, all) = api
        .get("/api/2.2/jobs/runs/list", &[("limit", "1".into())])
        .await;
    assert_eq!(
        all["runs"][0]["run_id"], other,
        "without job_id every job is listed"
    );
    // Runs were created at t = 0, 10, ..., 290 and last 1300 ms: at t = 1420 the 13 created
    // up to t = 120 are over.
    emu.advance_time(1120.0).unwrap();
    let (_, done) = api
        .get(
            "/api/2.2/jobs/runs/list",
            &q(&[("completed_only", "true"), ("limit", "25")]),
        )
        .await;
    let (_, active) = api
        .get(
            "/api/2.2/jobs/runs/list",
            &q(&[("active_only", "true"), ("limit", "25")]),
        )
        .await;
    assert_eq!(done["runs"].as_array().unwrap().len(), 13);
    assert_eq!(active["runs"].as_array().unwrap().len(), 17);
    assert_eq!(active["runs"][16]["run_id"], ids[13]);
    for r in done["runs"].as_array().unwrap() {
        assert_eq!(life(r), "TERMINATED");
    }
    let (s, _) = api
        .get(
            "/api/2.2/jobs/runs/list",
            &q(&[("completed_only", "true"), ("active_only", "true")]),
        )
        .await;
    assert_eq!(s, 400);
    let (s, v) = api
        .get("/api/2.2/jobs/runs/list", &[("job_id", "99".into())])
        .await;
    assert_eq!(
        (s, v["message"].as_str().unwrap()),
        (400, "Job 99 does not exist.")
    );
    emu.stop().await;
}

#[tokio::test]
async fn run_now_validation_idempotency_and_parameters() {
    let mut with_params = job(1, "SUCCESS");
    with_params.parameters = vec![JobParameter {
        name: "date".into(),
        default: "today".into(),
    }];
    let emu = frozen(vec![with_params]).await;
    let api = Api::new(&emu);
    let (s, v) = api
        .post("/api/2.2/jobs/run-now", json!({"job_id": 9}))
        .await;
    assert_eq!(
        (s, v),
        (
            400,
            json!({"error_code": "INVALID_PARAMETER_VALUE", "message": "Job 9 does not exist."})
        )
    );
    let (s, _) = api.post("/api/2.2/jobs/run-now", json!({})).await;
    assert_eq!(s, 400);
    let big: String = "x".repeat(10_001);
    let (s, v) = api
        .post(
            "/api/2.2/jobs/run-now",
            json!({"job_id": 1, "notebook_params": {"a": big}}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("notebook_params"));
    let (s, _) = api
        .post(
            "/api/2.2/jobs/run-now",
            json!({"job_id": 1, "python_params": [big]}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, v) = api
        .post(
            "/api/2.2/jobs/run-now",
            json!({"job_id": 1, "notebook_params": {"a": "1"}, "jar_params": ["x"]}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("jar_params"));
    let (s, _) = api
        .post(
            "/api/2.2/jobs/run-now",
            json!({"job_id": 1, "idempotency_token": "t".repeat(65)}),
        )
        .await;
    assert_eq!(s, 400);

    let body = json!({"job_id": 1, "idempotency_token": "abc", "job_parameters": {"date": "2024-01-01"}, "notebook_params": {"k": "v"}});
    let a = api.run_now(body.clone()).await;
    let b = api.run_now(body).await;
    assert_eq!(a, b, "same idempotency token, same run");
    assert_eq!(emu.run_count(), 1);
    let run = api.run(a).await;
    assert_eq!(
        run["job_parameters"],
        json!([{"name": "date", "default": "today", "value": "2024-01-01"}])
    );
    assert_eq!(
        run["overriding_parameters"],
        json!({"notebook_params": {"k": "v"}})
    );
    emu.advance_time(5000.0).unwrap();
    let (_, out) = api
        .get(
            "/api/2.2/jobs/runs/get-output",
            &[("run_id", a.to_string())],
        )
        .await;
    let echoed: Value =
        serde_json::from_str(out["notebook_output"]["result"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["job_parameters"]["date"], "2024-01-01");
    assert_eq!(echoed["overriding_parameters"]["notebook_params"]["k"], "v");
    assert_eq!(out["metadata"]["run_id"], a);
    let (s, v) = api
        .get("/api/2.2/jobs/runs/get", &[("run_id", "5".into())])
        .await;
    assert_eq!(
        (s, v["message"].as_str().unwrap()),
        (400, "Run 5 does not exist.")
    );
    emu.stop().await;
}

#[tokio::test]
async fn auth_pat_users_and_oauth() {
    let emu = Emulator::start(EmulatorOptions {
        jobs: Some(vec![job(1, "SUCCESS"), job(2, "SUCCESS")]),
        time_scale: Some(0.0),
        users: vec![serde_json::from_value(json!({
            "token": "user-token-a", "userName": "alice@example.com",
            "permissions": {"1": "CAN_MANAGE_RUN", "2": "CAN_VIEW"}
        }))
        .unwrap()],
        client_secret: Some("s3cret".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let api = Api::new(&emu);
    let none = api.with_token("");
    let (s, v) = none
        .get("/api/2.2/jobs/get", &[("job_id", "1".into())])
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let (s, _) = api
        .with_token("wrong")
        .get("/api/2.2/jobs/get", &[("job_id", "1".into())])
        .await;
    assert_eq!(s, 401);
    let alice = api.with_token("user-token-a");
    let id = alice.run_now(json!({"job_id": 1})).await;
    assert_eq!(
        alice.run(id).await["creator_user_name"],
        "alice@example.com"
    );
    let (s, v) = alice
        .post("/api/2.2/jobs/run-now", json!({"job_id": 2}))
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );
    let (s, _) = alice
        .get("/api/2.2/jobs/get", &[("job_id", "2".into())])
        .await;
    assert_eq!(s, 200, "CAN_VIEW reads");
    emu.add_user(
        serde_json::from_value(json!({"token": "user-token-b", "userName": "bob@example.com"}))
            .unwrap(),
    )
    .unwrap();
    let bob = api.with_token("user-token-b");
    let (s, _) = bob
        .get("/api/2.2/jobs/runs/get", &[("run_id", id.to_string())])
        .await;
    assert_eq!(s, 403);
    let (s, v) = bob.get("/api/2.2/jobs/runs/list", &[]).await;
    assert_eq!(
        (s, v),
        (200, json!({"has_more": false})),
        "a user lists only the jobs they can see"
    );

    // OAuth M2M.
    let http = reqwest::Client::new();
    let disc: Value = http
        .get(format!(
            "{}/oidc/.well-known/oauth-authorization-server",
            emu.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = disc["token_endpoint"].as_str().unwrap().to_string();
    assert_eq!(endpoint, format!("{}/oidc/v1/token", emu.url()));
    let form = [("grant_type", "client_credentials"), ("scope", "all-apis")];
    let bad = http
        .post(&endpoint)
        .basic_auth(emu.client_id(), Some("nope"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let tok: Value = http
        .post(&endpoint)
        .basic_auth(emu.client_id(), Some(emu.client_secret()))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    assert_eq!(tok["expires_in"], 3600);
    let oauth = api.with_token(tok["access_token"].as_str().unwrap());
    let (s, _) = oauth
        .get("/api/2.2/jobs/get", &[("job_id", "2".into())])
        .await;
    assert_eq!(s, 200);
    emu.expire_oauth_tokens();
    let (s, v) = oauth
        .get("/api/2.2/jobs/get", &[("job_id", "2".into())])
        .await;
    assert_eq!((s, v["message"].as_str()), (401, Some("Token is expired.")));
    let log = emu.requests();
    let token_call = log.iter().find(|e| e.path == "/oidc/v1/token").unwrap();
    assert_eq!(token_call.body, json!("[redacted]"));
    let text = serde_json::to_string(
        &log.iter()
            .map(|e| json!({"b": e.body, "q": e.query}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(
        !text.contains("s3cret") && !text.contains(&emu.token()),
        "no secret in the log"
    );
    assert!(log
        .iter()
        .any(|e| e.identity.as_deref() == Some("user:alice@example.com")));
    assert!(log
        .iter()
        .any(|e| e.identity.as_deref() == Some("oauth:emulator-client")));
    emu.stop().await;
}

#[tokio::test]
async fn faults_and_request_log() {
    let emu = frozen(vec![job(1, "SUCCESS")]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    emu.clear_requests();
    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/runs/get".into(),
        status: Some(503),
        retry_after: Some(7),
        times: Some(2),
        ..Default::default()
    })
    .unwrap();
    let url = format!("{}/api/2.2/jobs/runs/get?run_id={id}", emu.url());
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let r = http
            .get(&url)
            .bearer_auth(emu.token())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["retry-after"], "7");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error_code"],
            "TEMPORARILY_UNAVAILABLE"
        );
    }
    assert_eq!(
        http.get(&url)
            .bearer_auth(emu.token())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/*".into(),
        html: true,
        ..Default::default()
    })
    .unwrap();
    let r = http
        .get(&url)
        .bearer_auth(emu.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().starts_with("<html>"));

    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/runs/get".into(),
        reset: true,
        ..Default::default()
    })
    .unwrap();
    let fresh = reqwest::Client::new();
    let err = fresh.get(&url).bearer_auth(emu.token()).send().await;
    assert!(err.is_err(), "the connection is reset");

    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/runs/get".into(),
        method: Some("GET".into()),
        delay_ms: Some(20),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        http.get(&url)
            .bearer_auth(emu.token())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "a delay alone answers normally"
    );

    let log = emu.requests();
    let statuses: Vec<(u16, bool)> = log.iter().map(|e| (e.status, e.fault)).collect();
    assert_eq!(
        statuses,
        vec![
            (503, true),
            (503, true),
            (200, false),
            (502, true),
            (0, true),
            (200, true)
        ]
    );
    assert!(log
        .iter()
        .all(|e| e.path == "/api/2.2/jobs/runs/get" && e.query == format!("run_id={id}")));
    assert!(log
        .iter()
        .all(|e| e.identity.as_deref() == Some("service_principal")));

    // Bad faults are refused; faults can also be set over HTTP.
    assert!(emu
        .inject_fault(FaultSpec {
            path: "/x".into(),
            ..Default::default()
        })
        .is_err());
    let r = http
        .post(format!("{}/__emulator/faults", emu.url()))
        .json(&json!({"path": "/api/2.2/jobs/run-now", "status": 429, "retryAfter": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, v) = api
        .post("/api/2.2/jobs/run-now", json!({"job_id": 1}))
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (429, Some("REQUEST_LIMIT_EXCEEDED"))
    );
    let logged: Value = http
        .get(format!("{}/__emulator/requests", emu.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = logged["requests"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["body"], json!({"job_id": 1}));
    assert_eq!(last["method"], "POST");

    emu.reset();
    assert!(emu.requests().is_empty());
    assert_eq!(emu.run_count(), 0);
    emu.stop().await;
}

#[tokio::test]
async fn appkit_boot_endpoints_and_unknown_paths() {
    let emu = frozen(vec![]).await;
    let http = reqwest::Client::new();
    // Host metadata, unauthenticated, with string fields only (the Go SDK rejects others), and
    // the OIDC discovery it points to.
    let r = http
        .get(format!("{}/.well-known/databricks-config", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let meta: Value = r.json().await.unwrap();
    assert_eq!(
        meta,
        json!({"oidc_endpoint": format!("{}/oidc", emu.url()), "workspace_id": "1234567890123456",
               "cloud": "AWS", "host_type": "workspace"})
    );
    let discovery: Value = http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            meta["oidc_endpoint"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["token_endpoint"],
        format!("{}/oidc/v1/token", emu.url())
    );
    let r = http
        .get(format!("{}/api/2.0/preview/scim/v2/Me", emu.url()))
        .bearer_auth(emu.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-databricks-org-id"], "1234567890123456");
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["userName"], "emulator-sp@example.com");
    assert!(me["id"].as_str().is_some());
    let r = http
        .post(format!("{}/telemetry-ext?o=1234567890123456", emu.url()))
        .bearer_auth(emu.token())
        .json(&json!({"protoLogs": ["{}"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .get(format!("{}/api/2.0/clusters/list", emu.url()))
        .bearer_auth(emu.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error_code"],
        "ENDPOINT_NOT_FOUND"
    );
    emu.stop().await;
}

#[tokio::test]
async fn sample_jobs_and_stop_frees_the_port() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let jobs = emu.jobs();
    assert!(jobs.len() >= 5);
    assert!(jobs.iter().any(|j| j["taskCount"].as_u64().unwrap() > 100));
    assert!(emu.token().starts_with("dapi"));
    let port = emu.port();
    assert_eq!(emu.url(), format!("http://127.0.0.1:{port}"));
    emu.stop().await;
    emu.stop().await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    // The time scale runs the sample jobs to the end.
    let emu = frozen_samples().await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1002})).await;
    emu.advance_time(60_000.0).unwrap();
    assert_eq!(api.run(id).await["state"]["result_state"], "FAILED");
    let mixed = api.run_now(json!({"job_id": 1009})).await;
    emu.advance_time(60_000.0).unwrap();
    let r = api.run(mixed).await;
    assert_eq!(r["state"]["result_state"], "SUCCESS_WITH_FAILURES");
    assert_eq!(
        pairs(&results(&r)),
        [
            ("ingest", "SUCCESS"),
            ("train", "FAILED"),
            ("report", "SUCCESS")
        ]
    );
    assert!(Emulator::start(EmulatorOptions {
        jobs_file: Some("/nonexistent.json".into()),
        ..Default::default()
    })
    .await
    .is_err());
    emu.stop().await;
}

#[tokio::test]
async fn jobs_list_pages_by_id_and_filters_by_name() {
    let emu = frozen(vec![job(1, "SUCCESS"), job(2, "FAILED"), job(3, "SUCCESS")]).await;
    let api = Api::new(&emu);
    let (s, page) = api
        .get("/api/2.2/jobs/list", &[("limit", "2".into())])
        .await;
    assert_eq!(s, 200, "{page}");
    let ids: Vec<i64> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(page["has_more"], true);
    assert!(
        page["jobs"][0]["settings"].get("tasks").is_none(),
        "tasks only with expand_tasks"
    );
    let token = page["next_page_token"].as_str().unwrap().to_string();
    let (_, next) = api
        .get(
            "/api/2.2/jobs/list",
            &[("page_token", token), ("expand_tasks", "true".into())],
        )
        .await;
    assert_eq!(next["jobs"][0]["job_id"], 3);
    assert_eq!(next["has_more"], false);
    assert!(next["jobs"][0]["settings"]["tasks"].is_array());
    let (_, named) = api
        .get("/api/2.2/jobs/list", &[("name", "job-2".into())])
        .await;
    assert_eq!(named["jobs"].as_array().unwrap().len(), 1);
    let (s, _) = api
        .get("/api/2.2/jobs/list", &[("limit", "0".into())])
        .await;
    assert_eq!(s, 400);
    emu.stop().await;
}

#[tokio::test]
async fn lakebase_credentials_are_handed_out_for_the_known_endpoint() {
    let endpoint = "projects/p/branches/b/endpoints/e";
    let emu = Emulator::start(EmulatorOptions {
        jobs: Some(vec![job(1, "SUCCESS")]),
        lakebase: Some(LakebaseSpec {
            password: "pg-secret".into(),
            endpoint: Some(endpoint.into()),
            ttl_secs: Some(120),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let api = Api::new(&emu);
    let path = "/api/2.0/postgres/credentials";
    let (s, v) = api.post(path, json!({ "endpoint": endpoint })).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token"], "pg-secret");
    let expires = humantime::parse_rfc3339(v["expire_time"].as_str().unwrap()).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((100..=120).contains(&left), "{left}");
    // Another endpoint, no endpoint, no credential: refused.
    let (s, _) = api
        .post(
            path,
            json!({ "endpoint": "projects/x/branches/b/endpoints/e" }),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = api.post(path, json!({})).await;
    assert_eq!(s, 400);
    let (s, _) = api
        .with_token("nope")
        .post(path, json!({ "endpoint": endpoint }))
        .await;
    assert_eq!(s, 401);
    // A rotation: the next credential is the new password; none configured answers 404.
    emu.set_lakebase(Some(LakebaseSpec {
        password: "rotated".into(),
        ..Default::default()
    }));
    let (_, v) = api.post(path, json!({ "endpoint": endpoint })).await;
    assert_eq!(v["token"], "rotated");
    emu.set_lakebase(None);
    let (s, _) = api.post(path, json!({ "endpoint": endpoint })).await;
    assert_eq!(s, 404);
    // The request log keeps the request, never the credential.
    let log = serde_json::to_string(&emu.requests()).unwrap();
    assert!(
        !log.contains("pg-secret") && !log.contains("rotated"),
        "{log}"
    );
    emu.stop().await;
}
