//! Task graphs over real HTTP: tasks wait for their dependencies (BLOCKED), run with their own
//! times, are skipped when their `run_if` does not hold, and decide the run's result; for-each
//! tasks run their iterations in waves; cancels reach every task. The clock is frozen and moved
//! by hand.
mod common;

use common::*;
use serde_json::{json, Value};

use appkit_jobs_emulator::*;

fn spec(v: Value) -> JobSpec {
    serde_json::from_value(v).unwrap()
}

/// a -> {b, c} -> d. Each task: 100 ms PENDING, its duration RUNNING, 100 ms TERMINATING.
/// a [0,1300) (after a 100 ms queue), b [1300,2000), c [1300,3500), d [3500,4700).
fn diamond(id: i64) -> JobSpec {
    spec(json!({
        "id": id, "name": "diamond", "queueMs": 100, "pendingMs": 100, "durationMs": 1000,
        "terminatingMs": 100,
        "tasks": [
            {"taskKey": "a"},
            {"taskKey": "b", "dependsOn": ["a"], "durationMs": 500},
            {"taskKey": "c", "dependsOn": ["a"], "durationMs": 2000, "type": "sql"},
            {"taskKey": "d", "dependsOn": ["b", "c"]}
        ]
    }))
}

fn task<'a>(run: &'a Value, key: &str) -> &'a Value {
    run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|t| t["task_key"] == key)
        .unwrap_or_else(|| panic!("no task {key} in {run}"))
}

fn states(run: &Value) -> Vec<(String, String)> {
    by_task(run, "life_cycle_state")
}

fn result(t: &Value) -> &str {
    t["state"]["result_state"].as_str().unwrap_or("")
}

fn ms(v: &Value) -> i64 {
    v.as_i64().unwrap()
}

#[tokio::test]
async fn tasks_wait_for_their_dependencies_and_keep_their_own_times() {
    let emu = frozen(vec![diamond(1)]).await;
    let api = Api::new(&emu);
    let (_, job) = api
        .get("/api/2.2/jobs/get", &[("job_id", "1".into())])
        .await;
    assert_eq!(
        job["settings"]["tasks"][3]["depends_on"],
        json!([{"task_key": "b"}, {"task_key": "c"}])
    );
    assert_eq!(job["settings"]["tasks"][3]["run_if"], "ALL_SUCCESS");
    assert!(job["settings"]["tasks"][0].get("depends_on").is_none());

    let id = api.run_now(json!({"job_id": 1})).await;
    let run = api.run(id).await;
    let start = ms(&run["start_time"]);
    let (a, b) = (task(&run, "a"), task(&run, "b"));
    assert_eq!(life(a), "QUEUED");
    assert_eq!(
        ms(&a["start_time"]),
        start,
        "a root task starts with the run"
    );
    assert_eq!(life(b), "BLOCKED");
    assert_eq!(b["status"]["state"], "BLOCKED");
    assert_eq!(b["state"]["state_message"], "Blocked by an upstream run.");
    assert_eq!((ms(&b["start_time"]), ms(&b["end_time"])), (0, 0));
    assert_eq!(ms(&b["run_duration"]), 0);
    assert_eq!(run["tasks"][0]["run_id"], id + 1);
    assert_eq!(run["tasks"][3]["run_id"], id + 4);

    let steps = [
        (
            150.0,
            "PENDING",
            [
                ("a", "PENDING"),
                ("b", "BLOCKED"),
                ("c", "BLOCKED"),
                ("d", "BLOCKED"),
            ],
        ),
        (
            1100.0,
            "RUNNING",
            [
                ("a", "TERMINATING"),
                ("b", "BLOCKED"),
                ("c", "BLOCKED"),
                ("d", "BLOCKED"),
            ],
        ),
        (
            200.0,
            "RUNNING",
            [
                ("a", "TERMINATED"),
                ("b", "RUNNING"),
                ("c", "RUNNING"),
                ("d", "BLOCKED"),
            ],
        ),
        (
            1050.0,
            "RUNNING",
            [
                ("a", "TERMINATED"),
                ("b", "TERMINATED"),
                ("c", "RUNNING"),
                ("d", "BLOCKED"),
            ],
        ),
        (
            1050.0,
            "RUNNING",
            [
                ("a", "TERMINATED"),
                ("b", "TERMINATED"),
                ("c", "TERMINATED"),
                ("d", "PENDING"),
            ],
        ),
        (
            1100.0,
            "TERMINATING",
            [
                ("a", "TERMINATED"),
                ("b", "TERMINATED"),
                ("c", "TERMINATED"),
                ("d", "TERMINATING"),
            ],
        ),
    ];
    for (advance, run_state, tasks) in steps {
        emu.advance_time(advance).unwrap();
        let run = api.run(id).await;
        assert_eq!(life(&run), run_state, "{run}");
        let want: Vec<(String, String)> = tasks
            .iter()
            .map(|(k, s)| (k.to_string(), s.to_string()))
            .collect();
        assert_eq!(states(&run), want);
    }
    emu.advance_time(50.0).unwrap();
    let run = api.run(id).await;
    assert_eq!(run["state"]["result_state"], "SUCCESS");
    // The run follows the critical path a -> c -> d.
    assert_eq!(ms(&run["end_time"]) - start, 4700);
    assert_eq!(ms(&run["run_duration"]), 4600);
    assert_eq!(ms(&run["queue_duration"]), 100);
    let expect = [
        ("a", 0, 1300, 100, 1000, 100),
        ("b", 1300, 2000, 0, 500, 100),
        ("c", 1300, 3500, 0, 2000, 100),
        ("d", 3500, 4700, 0, 1000, 100),
    ];
    for (key, from, to, queue, exec, cleanup) in expect {
        let t = task(&run, key);
        assert_eq!(ms(&t["start_time"]) - start, from, "{key} start");
        assert_eq!(ms(&t["end_time"]) - start, to, "{key} end");
        assert_eq!(ms(&t["queue_duration"]), queue, "{key}");
        assert_eq!(ms(&t["setup_duration"]), 100, "{key}");
        assert_eq!(ms(&t["execution_duration"]), exec, "{key}");
        assert_eq!(ms(&t["cleanup_duration"]), cleanup, "{key}");
        assert_eq!(ms(&t["run_duration"]), to - from - queue, "{key}");
    }
    // A task run read by its own id has the same times.
    let d = api.run(id + 4).await;
    assert_eq!(d["start_time"], task(&run, "d")["start_time"]);
    assert_eq!(
        d["tasks"][0]["depends_on"],
        json!([{"task_key": "b"}, {"task_key": "c"}])
    );
    emu.stop().await;
}

#[tokio::test]
async fn run_if_skips_tasks_and_the_leaves_decide_the_result() {
    let failing = spec(json!({
        "id": 1, "queueMs": 0, "pendingMs": 100, "durationMs": 1000, "terminatingMs": 100,
        "tasks": [
            {"taskKey": "a", "outcome": "FAILED"},
            {"taskKey": "b", "dependsOn": ["a"]},
            {"taskKey": "c", "dependsOn": ["a"], "runIf": "ALL_DONE"},
            {"taskKey": "d", "dependsOn": ["b"]},
            {"taskKey": "e", "dependsOn": ["a"], "runIf": "AT_LEAST_ONE_FAILED"},
            {"taskKey": "f", "dependsOn": ["c"], "runIf": "ALL_FAILED"},
            {"taskKey": "g", "dependsOn": ["f"], "runIf": "ALL_DONE"},
            {"taskKey": "h", "dependsOn": ["c", "b"], "runIf": "NONE_FAILED"},
            {"taskKey": "i", "dependsOn": ["c", "b"], "runIf": "at_least_one_success"}
        ]
    }));
    // A failure that only a non-leaf task has: SUCCESS_WITH_FAILURES.
    let recovered = spec(json!({
        "id": 2, "queueMs": 0, "pendingMs": 100, "durationMs": 1000, "terminatingMs": 100,
        "tasks": [
            {"taskKey": "x", "outcome": "FAILED"},
            {"taskKey": "cleanup", "dependsOn": ["x"], "runIf": "ALL_DONE"}
        ]
    }));
    let timed_out = spec(json!({
        "id": 3, "queueMs": 0, "pendingMs": 100, "durationMs": 1000, "terminatingMs": 100,
        "tasks": [{"taskKey": "x"}, {"taskKey": "y", "dependsOn": ["x"], "outcome": "TIMEDOUT"}]
    }));
    let emu = frozen(vec![failing, recovered, timed_out]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    let swf = api.run_now(json!({"job_id": 2})).await;
    let slow = api.run_now(json!({"job_id": 3})).await;
    emu.advance_time(1150.0).unwrap();
    let run = api.run(id).await;
    assert_eq!(life(task(&run, "a")), "TERMINATING");
    assert_eq!(life(task(&run, "b")), "BLOCKED");
    emu.advance_time(50.0).unwrap();
    let run = api.run(id).await;
    let a_end = ms(&task(&run, "a")["end_time"]);
    let b = task(&run, "b");
    assert_eq!(life(b), "SKIPPED");
    assert_eq!(result(b), "UPSTREAM_FAILED");
    assert_eq!(b["status"]["state"], "TERMINATED");
    assert_eq!(b["status"]["termination_details"]["code"], "SKIPPED");
    assert_eq!((ms(&b["start_time"]), ms(&b["end_time"])), (a_end, a_end));
    assert_eq!(ms(&b["run_duration"]), 0);
    assert_eq!(
        life(task(&run, "c")),
        "PENDING",
        "ALL_DONE runs after a failure"
    );
    assert_eq!(life(task(&run, "e")), "PENDING", "AT_LEAST_ONE_FAILED runs");
    emu.advance_time(10_000.0).unwrap();
    let run = api.run(id).await;
    assert_eq!(
        pairs(&results(&run)),
        [
            ("a", "FAILED"),
            ("b", "UPSTREAM_FAILED"),
            ("c", "SUCCESS"),
            ("d", "UPSTREAM_FAILED"),
            ("e", "SUCCESS"),
            ("f", "EXCLUDED"),
            ("g", "EXCLUDED"),
            ("h", "UPSTREAM_FAILED"),
            ("i", "SUCCESS"),
        ]
    );
    assert_eq!(life(task(&run, "f")), "SKIPPED");
    assert_eq!(run["state"]["result_state"], "FAILED");
    assert_eq!(
        run["status"]["termination_details"]["code"],
        "RUN_EXECUTION_ERROR"
    );
    assert_eq!(
        run["state"]["state_message"],
        "Task a failed with message: Workload failed, see run output for details."
    );
    let run = api.run(swf).await;
    assert_eq!(run["state"]["result_state"], "SUCCESS_WITH_FAILURES");
    assert_eq!(result(task(&run, "cleanup")), "SUCCESS");
    assert_eq!(api.run(slow).await["state"]["result_state"], "TIMEDOUT");
    emu.stop().await;
}

#[tokio::test]
async fn cancel_stops_running_tasks_and_skips_blocked_ones() {
    let emu = frozen(vec![diamond(1)]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    emu.advance_time(1500.0).unwrap(); // b and c running
    let (s, _) = api
        .post("/api/2.2/jobs/runs/cancel", json!({"run_id": id}))
        .await;
    assert_eq!(s, 200);
    let run = api.run(id).await;
    assert_eq!(life(&run), "TERMINATING");
    assert_eq!(life(task(&run, "b")), "TERMINATING");
    assert_eq!(life(task(&run, "d")), "BLOCKED");
    emu.advance_time(100.0).unwrap();
    let run = api.run(id).await;
    assert_eq!(run["state"]["result_state"], "CANCELED");
    let results: Vec<&str> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(result)
        .collect();
    assert_eq!(
        results,
        ["SUCCESS", "CANCELED", "CANCELED", "UPSTREAM_CANCELED"]
    );
    assert_eq!(
        task(&run, "b")["status"]["termination_details"]["code"],
        "USER_CANCELED"
    );
    assert_eq!(life(task(&run, "d")), "SKIPPED");
    assert_eq!(task(&run, "d")["end_time"], run["end_time"]);

    // A pin holds the graph where it stands; a forced end ends every task with it.
    let id = api.run_now(json!({"job_id": 1})).await;
    emu.advance_time(1500.0).unwrap();
    let run = emu.set_run_state(id, "RUNNING").unwrap();
    emu.advance_time(100_000.0).unwrap();
    assert_eq!(states(&api.run(id).await), states(&run));
    let run = emu.set_run_state(id, "FAILED").unwrap();
    assert_eq!(run["state"]["result_state"], "FAILED");
    let results: Vec<&str> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(result)
        .collect();
    assert_eq!(results, ["FAILED"; 4]);
    emu.stop().await;
}

/// `prep` [0,700), then `fan` over five inputs, two at a time, each iteration 1000 ms
/// (100 + 800 + 100); iteration 3 fails. Waves start at 700, 1700, 2700; `fan` ends at 3700.
fn fan(id: i64) -> JobSpec {
    spec(json!({
        "id": id, "queueMs": 0, "pendingMs": 100, "durationMs": 500, "terminatingMs": 100,
        "tasks": [
            {"taskKey": "prep"},
            {"taskKey": "fan", "dependsOn": ["prep"],
             "forEach": {"count": 5, "concurrency": 2, "iterationDurationMs": 800, "failIterations": [3]}}
        ]
    }))
}

fn stats(run: &Value) -> Value {
    task(run, "fan")["for_each_task"]["stats"]["task_run_stats"].clone()
}

#[tokio::test]
async fn for_each_iterations_run_in_waves_and_are_counted() {
    let mut wide = spec(json!({
        "id": 2, "queueMs": 0, "tasks": [{"taskKey": "many", "forEach": {"inputs": [], "concurrency": 100}}]
    }));
    wide.tasks[0].for_each.as_mut().unwrap().inputs =
        Some((0..150).map(|i| json!({"n": i})).collect());
    let emu = frozen(vec![fan(1), wide]).await;
    let api = Api::new(&emu);
    let (_, job) = api
        .get("/api/2.2/jobs/get", &[("job_id", "1".into())])
        .await;
    let settings = &job["settings"]["tasks"][1]["for_each_task"];
    assert_eq!(settings["inputs"], "[0,1,2,3,4]");
    assert_eq!(settings["concurrency"], 2);
    assert_eq!(settings["task"]["task_key"], "fan_iteration");
    assert!(settings["task"]["notebook_task"].is_object());
    assert!(settings.get("stats").is_none());

    let id = api.run_now(json!({"job_id": 1})).await;
    let expect = [
        (0.0, [5, 0, 0, 0, 0, 0]),
        (750.0, [5, 2, 2, 0, 0, 0]),
        (1000.0, [5, 4, 2, 2, 2, 0]),
        (1000.0, [5, 5, 1, 4, 3, 1]),
        (1000.0, [5, 5, 0, 5, 4, 1]),
    ];
    for (advance, [total, scheduled, active, completed, succeeded, failed]) in expect {
        emu.advance_time(advance).unwrap();
        let st = stats(&api.run(id).await);
        assert_eq!(
            st,
            json!({"total_iterations": total, "scheduled_iterations": scheduled,
                   "active_iterations": active, "completed_iterations": completed,
                   "succeeded_iterations": succeeded, "failed_iterations": failed}),
            "after {advance}"
        );
    }
    let run = api.run(id).await;
    let fan_task = task(&run, "fan");
    assert_eq!(result(fan_task), "FAILED");
    assert_eq!(run["state"]["result_state"], "FAILED");
    assert_eq!(ms(&fan_task["end_time"]) - ms(&run["start_time"]), 3700);
    assert_eq!(ms(&fan_task["execution_duration"]), 3000);
    assert_eq!(
        fan_task["for_each_task"]["stats"]["error_message_stats"][0]["count"],
        1
    );
    // runs/get on the for-each task run lists its iterations, each a task run of its own.
    let fan_run = api.run(ms(&fan_task["run_id"])).await;
    let iterations = fan_run["iterations"].as_array().unwrap();
    assert_eq!(iterations.len(), 5);
    assert_eq!(iterations[0]["task_key"], "fan_iteration");
    let iteration_results: Vec<&str> = iterations.iter().map(result).collect();
    assert_eq!(
        iteration_results,
        ["SUCCESS", "SUCCESS", "SUCCESS", "FAILED", "SUCCESS"]
    );
    let starts: Vec<i64> = iterations
        .iter()
        .map(|i| ms(&i["start_time"]) - ms(&run["start_time"]))
        .collect();
    assert_eq!(starts, [700, 700, 1700, 1700, 2700]);
    let third = ms(&iterations[3]["run_id"]);
    let one = api.run(third).await;
    assert_eq!(
        (one["parent_run_id"].as_i64(), result(&one)),
        (Some(id), "FAILED")
    );
    let (s, out) = api
        .get(
            "/api/2.2/jobs/runs/get-output",
            &[("run_id", ms(&iterations[4]["run_id"]).to_string())],
        )
        .await;
    assert_eq!(s, 200, "{out}");
    let echo: Value =
        serde_json::from_str(out["notebook_output"]["result"].as_str().unwrap()).unwrap();
    assert_eq!(echo["input"], 4);

    // A repair runs the failed for-each task again, every iteration well this time.
    api.repair(json!({"run_id": id, "rerun_all_failed_tasks": true}))
        .await;
    emu.advance_time(3000.0).unwrap();
    let run = api.run(id).await;
    assert_eq!(run["state"]["result_state"], "SUCCESS");
    let repaired = task(&run, "fan");
    assert_ne!(repaired["run_id"], fan_task["run_id"]);
    assert_eq!(
        repaired["for_each_task"]["stats"]["task_run_stats"]["succeeded_iterations"],
        5
    );
    let again = api.run(ms(&repaired["run_id"])).await;
    let new_ids: Vec<i64> = again["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| ms(&i["run_id"]))
        .collect();
    assert!(new_ids
        .iter()
        .all(|i| !iterations.iter().any(|o| ms(&o["run_id"]) == *i)));
    assert_eq!(
        api.run(new_ids[3]).await["tasks"][0]["state"]["result_state"],
        "SUCCESS"
    );

    // 150 iterations come 100 a page.
    let many = api.run_now(json!({"job_id": 2})).await;
    let many_task = many + 1;
    let p1 = api.run(many_task).await;
    assert_eq!(p1["iterations"].as_array().unwrap().len(), 100);
    let token = p1["next_page_token"].as_str().unwrap().to_string();
    let (_, p2) = api
        .get(
            "/api/2.2/jobs/runs/get",
            &[("run_id", many_task.to_string()), ("page_token", token)],
        )
        .await;
    assert_eq!(p2["iterations"].as_array().unwrap().len(), 50);
    assert_eq!(p2["has_more"], false);
    assert_eq!(ms(&p2["iterations"][49]["run_id"]), many + 1 + 1 + 149);
    emu.stop().await;
}

#[tokio::test]
async fn cycles_unknown_dependencies_and_bad_fields_are_refused() {
    let cases = [
        (
            json!([{"taskKey": "a", "dependsOn": ["b"]}, {"taskKey": "b", "dependsOn": ["a"]}]),
            "job 9 (\"bad\"): tasks depend on each other in a cycle: a -> b -> a",
        ),
        (
            json!([{"taskKey": "a"}, {"taskKey": "b", "dependsOn": ["a", "c"]}, {"taskKey": "c", "dependsOn": ["b"]}]),
            "job 9 (\"bad\"): tasks depend on each other in a cycle: b -> c -> b",
        ),
        (
            json!([{"taskKey": "a", "dependsOn": ["a"]}]),
            "job 9 (\"bad\"): tasks depend on each other in a cycle: a -> a",
        ),
        (
            json!([{"taskKey": "a"}, {"taskKey": "b", "dependsOn": ["zzz"]}]),
            "job 9 (\"bad\"): task \"b\" depends on \"zzz\", which is not a task of this job",
        ),
        (
            json!([{"taskKey": "a"}, {"taskKey": "a"}]),
            "job 9 (\"bad\"): task key \"a\" is used twice",
        ),
        (
            json!([{"taskKey": "a"}, {"taskKey": "b", "dependsOn": ["a"], "runIf": "SOMETIMES"}]),
            "job 9 (\"bad\"): task \"b\" has an unknown runIf \"SOMETIMES\"",
        ),
        (
            json!([{"taskKey": "a", "forEach": {"count": 2, "failIterations": [2]}}]),
            "job 9 (\"bad\"): task \"a\" forEach failIterations names iteration 2, but there are 2 inputs",
        ),
        (
            json!([{"taskKey": "a", "forEach": {"concurrency": 2}}]),
            "job 9 (\"bad\"): task \"a\" forEach needs inputs or count",
        ),
        (
            json!([{"taskKey": "a", "repairOutcome": "MAYBE"}]),
            "job 9 (\"bad\"): task \"a\" unknown outcome \"MAYBE\"",
        ),
    ];
    for (tasks, message) in cases {
        let job = spec(json!({"id": 9, "name": "bad", "tasks": tasks}));
        let err = Emulator::start(EmulatorOptions {
            jobs: Some(vec![job.clone()]),
            ..Default::default()
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted {tasks}"));
        assert!(err.to_string().contains(message), "{err} / {message}");
    }
    // The same through the control API, and nothing is added.
    let emu = frozen(vec![job(1, "SUCCESS")]).await;
    let (s, body) = control_post(
        &emu,
        "/jobs",
        json!({"id": 9, "name": "bad", "tasks": [{"taskKey": "a", "dependsOn": ["a"]}]}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        body["message"].as_str().unwrap().contains("cycle: a -> a"),
        "{body}"
    );
    assert_eq!(emu.jobs().len(), 1);
    emu.stop().await;
}
