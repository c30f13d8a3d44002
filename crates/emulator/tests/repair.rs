//! `runs/repair` over real HTTP: the rules (ended runs only, one selector, `latest_repair_id`
//! in order), what runs/get shows during and after a repair (new task run ids, the history),
//! permissions and faults. The clock is frozen and moved by hand.
mod common;

use common::*;
use serde_json::{json, Value};

use appkit_jobs_emulator::*;

const REPAIR: &str = "/api/2.2/jobs/runs/repair";

/// Three tasks; `train` fails, so the run fails. Each attempt takes 1300 virtual ms.
fn mixed(id: i64, repair_outcome: Option<&str>) -> JobSpec {
    let mut spec = job(id, "FAILED");
    spec.tasks = serde_json::from_value(json!([
        {"taskKey": "ingest", "outcome": "SUCCESS"},
        {"taskKey": "train", "outcome": "FAILED"},
        {"taskKey": "report", "outcome": "SUCCESS"},
    ]))
    .unwrap();
    spec.repair_outcome = repair_outcome.map(str::to_string);
    spec
}

async fn history(api: &Api, id: i64) -> Value {
    let (s, v) = api
        .get(
            "/api/2.2/jobs/runs/get",
            &[
                ("run_id", id.to_string()),
                ("include_history", "true".into()),
            ],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn refused(api: &Api, body: Value) -> String {
    let (s, v) = api.post(REPAIR, body).await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE")),
        "{v}"
    );
    v["message"].as_str().unwrap().to_string()
}

fn task_keys(run: &Value) -> Vec<(String, i64)> {
    run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["task_key"].as_str().unwrap().to_string(),
                t["run_id"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn repair_reruns_failed_tasks_inside_the_same_run() {
    let emu = frozen(vec![mixed(1, None)]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;

    // Only an ended run can be repaired.
    emu.advance_time(500.0).unwrap();
    let m = refused(&api, json!({"run_id": id, "rerun_all_failed_tasks": true})).await;
    assert_eq!(
        m,
        format!("Run {id} is in state RUNNING and cannot be repaired until it has ended.")
    );
    emu.advance_time(1000.0).unwrap();
    let run = history(&api, id).await;
    assert_eq!(run["state"]["result_state"], "FAILED");
    let original: Vec<i64> = task_keys(&run).iter().map(|t| t.1).collect();
    assert_eq!(original, vec![id + 1, id + 2, id + 3]);
    assert_eq!(run["repair_history"].as_array().unwrap().len(), 1);
    assert_eq!(run["repair_history"][0]["type"], "ORIGINAL");
    assert!(run["repair_history"][0].get("id").is_none());
    assert_eq!(run["repair_history"][0]["task_run_ids"], json!(original));
    // Without include_history there is none.
    assert!(api.run(id).await.get("repair_history").is_none());

    let (s, v) = api
        .post(
            REPAIR,
            json!({"run_id": id, "rerun_all_failed_tasks": true}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let repair_id = v["repair_id"].as_i64().unwrap();
    assert!(repair_id > 1 << 32, "repair ids are wide like run ids");

    // The run is active again at once, so a waiter polling it does not stop at the old end.
    let run = history(&api, id).await;
    assert_eq!(life(&run), "PENDING");
    assert!(run["state"].get("result_state").is_none());
    assert_eq!(run["end_time"], 0);
    let tasks = task_keys(&run);
    assert_eq!(tasks.len(), 4, "one task run per task and attempt");
    let (key, new_id) = &tasks[3];
    assert_eq!(key, "train");
    assert!(!original.contains(new_id));
    assert_eq!(run["tasks"][1]["state"]["result_state"], "FAILED");
    let items = run["repair_history"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["state"]["result_state"], "FAILED");
    assert!(items[0]["end_time"].as_i64().unwrap() > 0);
    assert_eq!(items[1]["type"], "REPAIR");
    assert_eq!(items[1]["id"], repair_id);
    assert_eq!(items[1]["task_run_ids"], json!([new_id]));

    // The new task run answers runs/get and get-output by its own id.
    let task = api.run(*new_id).await;
    assert_eq!(task["parent_run_id"], id);
    assert_eq!(task["tasks"][0]["task_key"], "train");

    emu.advance_time(1300.0).unwrap();
    let run = history(&api, id).await;
    assert_eq!(life(&run), "TERMINATED");
    assert_eq!(run["state"]["result_state"], "SUCCESS");
    assert_eq!(run["repair_history"][1]["state"]["result_state"], "SUCCESS");
    assert_eq!(run["tasks"][3]["state"]["result_state"], "SUCCESS");
    // The run's duration spans the original attempt and the repair.
    assert_eq!(run["run_duration"], 2700, "{run}");
    // The repaired task run starts with the repair.
    assert_eq!(
        run["tasks"][3]["start_time"],
        run["repair_history"][1]["start_time"]
    );
    let (s, out) = api
        .get(
            "/api/2.2/jobs/runs/get-output",
            &[("run_id", new_id.to_string())],
        )
        .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["metadata"]["run_id"], *new_id);
    assert!(out["notebook_output"]["result"]
        .as_str()
        .unwrap()
        .contains("train"));

    // Nothing failed any more.
    let m = refused(
        &api,
        json!({"run_id": id, "rerun_all_failed_tasks": true, "latest_repair_id": repair_id}),
    )
    .await;
    assert_eq!(m, format!("Run {id} has no failed tasks to repair."));
    // A later repair must name the latest one.
    let m = refused(&api, json!({"run_id": id, "rerun_tasks": ["report"]})).await;
    assert_eq!(
        m,
        "The latest repair ID needs to be provided in order to create a new repair"
    );
    let m = refused(
        &api,
        json!({"run_id": id, "rerun_tasks": ["report"], "latest_repair_id": repair_id - 1}),
    )
    .await;
    assert!(m.contains("does not match the latest repair"), "{m}");
    let (s, v) = api
        .post(
            REPAIR,
            json!({"run_id": id, "rerun_tasks": ["report"], "latest_repair_id": repair_id.to_string()}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let second = v["repair_id"].as_i64().unwrap();
    assert_ne!(second, repair_id);
    emu.advance_time(1300.0).unwrap();
    let run = history(&api, id).await;
    let ids: Vec<&Value> = run["repair_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(ids, vec![&Value::Null, &json!(repair_id), &json!(second)]);
    assert_eq!(task_keys(&run).len(), 5);
    assert_eq!(run["state"]["result_state"], "SUCCESS");
    emu.stop().await;
}

#[tokio::test]
async fn repair_requests_are_checked() {
    let emu = frozen(vec![mixed(1, None), job(2, "SUCCESS")]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    let ok = api.run_now(json!({"job_id": 2})).await;
    emu.advance_time(2000.0).unwrap();
    let cases = [
        (
            json!({"run_id": id}),
            "One of rerun_tasks or rerun_all_failed_tasks is required.".to_string(),
        ),
        (
            json!({"run_id": id, "rerun_tasks": ["train"], "rerun_all_failed_tasks": true}),
            "Only one of rerun_tasks or rerun_all_failed_tasks can be used.".into(),
        ),
        (
            json!({"run_id": id, "rerun_tasks": ["train", "train"]}),
            "rerun_tasks cannot contain duplicate task keys.".into(),
        ),
        (
            json!({"run_id": id, "rerun_tasks": ["nope"]}),
            format!("Task nope does not exist in run {id}."),
        ),
        (
            json!({"run_id": id, "rerun_tasks": []}),
            "rerun_tasks must name at least one task.".into(),
        ),
        (
            json!({"run_id": id, "rerun_tasks": "train"}),
            "rerun_tasks must be an array of task keys.".into(),
        ),
        (
            json!({"run_id": id, "rerun_all_failed_tasks": "yes"}),
            "rerun_all_failed_tasks must be a boolean.".into(),
        ),
        (
            json!({"run_id": id, "rerun_all_failed_tasks": true, "latest_repair_id": 7}),
            format!("latest_repair_id 7 does not match: run {id} has not been repaired."),
        ),
        (
            json!({"run_id": id + 2, "rerun_all_failed_tasks": true}),
            format!("Run {} is a task run; repair its parent run {id}.", id + 2),
        ),
        (
            json!({"run_id": 42, "rerun_all_failed_tasks": true}),
            "Run 42 does not exist.".into(),
        ),
        (
            json!({"rerun_all_failed_tasks": true}),
            "Missing required field: run_id".into(),
        ),
        (
            json!({"run_id": ok, "rerun_all_failed_tasks": true}),
            format!("Run {ok} has no failed tasks to repair."),
        ),
        (
            json!({"run_id": id, "rerun_all_failed_tasks": true, "job_parameters": "x"}),
            "job_parameters must be an object of strings.".into(),
        ),
    ];
    for (body, message) in cases {
        assert_eq!(refused(&api, body.clone()).await, message, "{body}");
    }
    // None of that changed the run.
    let run = history(&api, id).await;
    assert_eq!(run["repair_history"].as_array().unwrap().len(), 1);
    assert_eq!(run["state"]["result_state"], "FAILED");
    // A successful run's task can still be re-run by name.
    let (s, _) = api
        .post(REPAIR, json!({"run_id": ok, "rerun_tasks": ["main"]}))
        .await;
    assert_eq!(s, 200);
    emu.stop().await;
}

#[tokio::test]
async fn a_repair_can_fail_again_carry_parameters_and_be_cancelled() {
    let mut spec = mixed(1, Some("FAILED"));
    spec.parameters =
        vec![serde_json::from_value(json!({"name": "date", "default": "today"})).unwrap()];
    let emu = frozen(vec![spec]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    emu.advance_time(2000.0).unwrap();
    let (s, v) = api
        .post(
            REPAIR,
            json!({"run_id": id, "rerun_all_failed_tasks": true, "job_parameters": {"date": "2026-12-01"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let first = v["repair_id"].as_i64().unwrap();
    emu.advance_time(2000.0).unwrap();
    let run = history(&api, id).await;
    assert_eq!(run["state"]["result_state"], "FAILED");
    assert_eq!(run["job_parameters"][0]["value"], "2026-12-01");

    // Cancel a second repair while it runs; the run ends CANCELED and can be repaired again.
    let (s, v) = api
        .post(
            REPAIR,
            json!({"run_id": id, "rerun_all_failed_tasks": true, "latest_repair_id": first}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let second = v["repair_id"].as_i64().unwrap();
    emu.advance_time(300.0).unwrap();
    let (s, _) = api
        .post("/api/2.2/jobs/runs/cancel", json!({"run_id": id}))
        .await;
    assert_eq!(s, 200);
    emu.advance_time(1000.0).unwrap();
    let run = history(&api, id).await;
    assert_eq!(run["state"]["result_state"], "CANCELED");
    assert_eq!(
        run["repair_history"][2]["state"]["result_state"],
        "CANCELED"
    );
    let (s, _) = api
        .post(
            REPAIR,
            json!({"run_id": id, "rerun_all_failed_tasks": true, "latest_repair_id": second}),
        )
        .await;
    assert_eq!(s, 200);
    emu.stop().await;
}

#[tokio::test]
async fn repair_needs_manage_run_and_takes_faults() {
    let emu = frozen(vec![mixed(1, None)]).await;
    emu.add_user(
        serde_json::from_value(json!({
            "token": "viewer-token", "userName": "viewer@example.com",
            "permissions": {"1": "CAN_VIEW"}
        }))
        .unwrap(),
    )
    .unwrap();
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    emu.advance_time(2000.0).unwrap();
    let body = json!({"run_id": id, "rerun_all_failed_tasks": true});
    let (s, v) = api
        .with_token("viewer-token")
        .post(REPAIR, body.clone())
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );

    emu.inject_fault(FaultSpec {
        path: REPAIR.into(),
        status: Some(503),
        ..Default::default()
    })
    .unwrap();
    let (s, v) = api.post(REPAIR, body.clone()).await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (503, Some("TEMPORARILY_UNAVAILABLE"))
    );
    assert_eq!(
        history(&api, id).await["repair_history"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (s, _) = api.post(REPAIR, body).await;
    assert_eq!(s, 200);
    let log: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.path == REPAIR)
        .map(|r| (r.status, r.fault))
        .collect();
    assert_eq!(log, vec![(403, false), (503, true), (200, false)]);
    emu.stop().await;
}

/// a -> b -> c, and d after a whatever happens (ALL_DONE). `a` fails, so b and c are
/// UPSTREAM_FAILED and the run FAILED; d succeeds. Original: a [0,1200), d [1200,2400).
fn chain(id: i64) -> JobSpec {
    serde_json::from_value(json!({
        "id": id, "queueMs": 0, "pendingMs": 100, "durationMs": 1000, "terminatingMs": 100,
        "tasks": [
            {"taskKey": "a", "outcome": "FAILED"},
            {"taskKey": "b", "dependsOn": ["a"], "durationMs": 500},
            {"taskKey": "c", "dependsOn": ["b"], "durationMs": 300, "repairOutcome": "TIMEDOUT"},
            {"taskKey": "d", "dependsOn": ["a"], "runIf": "ALL_DONE"}
        ]
    }))
    .unwrap()
}

fn keyed(run: &Value, key: &str) -> Vec<Value> {
    run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["task_key"] == key)
        .cloned()
        .collect()
}

#[tokio::test]
async fn repairs_rerun_failed_and_dependent_tasks_in_graph_order() {
    let emu = frozen(vec![chain(1)]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    emu.advance_time(3000.0).unwrap();
    let run = history(&api, id).await;
    assert_eq!(run["state"]["result_state"], "FAILED");
    assert_eq!(
        pairs(&results(&run)),
        [
            ("a", "FAILED"),
            ("b", "UPSTREAM_FAILED"),
            ("c", "UPSTREAM_FAILED"),
            ("d", "SUCCESS")
        ]
    );

    // Every task that did not succeed runs again, the skipped dependents included; d stays.
    let first = api
        .repair(json!({"run_id": id, "rerun_all_failed_tasks": true}))
        .await;
    emu.advance_time(50.0).unwrap();
    let run = history(&api, id).await;
    assert_eq!(life(&run), "PENDING");
    let order: Vec<(String, i64)> = task_keys(&run)[4..].to_vec();
    assert_eq!(
        order.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"],
        "new task runs in graph order"
    );
    assert_eq!(
        run["repair_history"][1]["task_run_ids"],
        json!(order.iter().map(|t| t.1).collect::<Vec<_>>())
    );
    assert_eq!(keyed(&run, "b")[1]["state"]["life_cycle_state"], "BLOCKED");
    assert_eq!(keyed(&run, "b")[1]["start_time"], 0);
    assert_eq!(
        keyed(&run, "a")[1]["attempt_number"],
        1,
        "a's second task run"
    );
    emu.advance_time(3000.0).unwrap();
    let run = history(&api, id).await;
    let start = run["repair_history"][1]["start_time"].as_i64().unwrap();
    let (a, b, c) = (
        &keyed(&run, "a")[1],
        &keyed(&run, "b")[1],
        &keyed(&run, "c")[1],
    );
    assert_eq!(a["start_time"].as_i64().unwrap() - start, 0);
    assert_eq!(b["start_time"], a["end_time"], "b waits for a");
    assert_eq!(c["start_time"], b["end_time"], "c waits for b");
    assert_eq!(c["end_time"].as_i64().unwrap() - start, 1200 + 700 + 500);
    assert_eq!(
        c["state"]["result_state"], "TIMEDOUT",
        "c's own repairOutcome"
    );
    assert_eq!(run["repair_history"][1]["end_time"], c["end_time"]);
    assert_eq!(
        run["repair_history"][1]["state"]["result_state"],
        "TIMEDOUT"
    );
    assert_eq!(run["state"]["result_state"], "TIMEDOUT");
    assert_eq!(keyed(&run, "d").len(), 1, "d was not run again");

    // rerun_tasks with rerun_dependent_tasks: a and everything downstream, in graph order,
    // d beside b once a is done.
    api.repair(
        json!({"run_id": id, "rerun_tasks": ["a"], "rerun_dependent_tasks": true,
                      "latest_repair_id": first}),
    )
    .await;
    emu.advance_time(5000.0).unwrap();
    let run = history(&api, id).await;
    let third: Vec<String> = task_keys(&run)[7..].iter().map(|t| t.0.clone()).collect();
    assert_eq!(third, ["a", "b", "c", "d"]);
    assert_eq!(run["repair_history"].as_array().unwrap().len(), 3);
    assert_eq!(
        keyed(&run, "d")[1]["start_time"],
        keyed(&run, "a")[2]["end_time"]
    );
    assert_eq!(keyed(&run, "a")[2]["attempt_number"], 2);
    emu.stop().await;
}

#[tokio::test]
async fn a_rerun_task_whose_upstream_still_failed_is_skipped_again() {
    let emu = frozen(vec![chain(1)]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    emu.advance_time(3000.0).unwrap();
    api.repair(json!({"run_id": id, "rerun_tasks": ["b"]}))
        .await;
    emu.advance_time(10.0).unwrap();
    let run = history(&api, id).await;
    let b = &keyed(&run, "b")[1];
    assert_eq!(b["state"]["result_state"], "UPSTREAM_FAILED");
    assert_ne!(b["run_id"], keyed(&run, "b")[0]["run_id"]);
    assert_eq!(run["state"]["result_state"], "FAILED");
    assert_eq!(
        run["repair_history"][1]["task_run_ids"],
        json!([b["run_id"]])
    );
    emu.stop().await;
}
