//! Seeded history (past runs for duration estimates) through runs/list and runs/get, the
//! workspace clock in the `Date` header, and the sample graph jobs. The clock is frozen and
//! moved by hand.
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

use appkit_jobs_emulator::*;

const LIST: &str = "/api/2.2/jobs/runs/list";

/// extract -> transform -> load, each 100 + 500 + 100 ms: 2100 ms a run, plus a 100 ms queue.
/// Two past runs: SUCCESS for 5000 ms 100 s ago, FAILED for 3000 ms (queue 50) 50 s ago.
fn chain(id: i64) -> JobSpec {
    serde_json::from_value(json!({
        "id": id, "name": "chain", "queueMs": 100, "pendingMs": 100, "durationMs": 500,
        "terminatingMs": 100,
        "tasks": [
            {"taskKey": "extract"},
            {"taskKey": "transform", "dependsOn": ["extract"]},
            {"taskKey": "load", "dependsOn": ["transform"]}
        ],
        "history": [
            {"outcome": "SUCCESS", "durationMs": 5000, "agoMs": 100000},
            {"outcome": "FAILED", "durationMs": 3000, "queueMs": 50, "agoMs": 50000}
        ]
    }))
    .unwrap()
}

fn ms(v: &Value) -> i64 {
    v.as_i64().unwrap()
}

fn runs(page: &Value) -> Vec<Value> {
    page["runs"].as_array().cloned().unwrap_or_default()
}

async fn list(api: &Api, query: &[(&str, &str)]) -> Value {
    let q: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let (s, v) = api.get(LIST, &q).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// The emulator's time now, epoch ms (a fresh run starts now).
async fn now_epoch(api: &Api, job_id: i64) -> (i64, i64) {
    let id = api.run_now(json!({"job_id": job_id})).await;
    (id, ms(&api.run(id).await["start_time"]))
}

#[tokio::test]
async fn seeded_runs_are_completed_runs_with_their_tasks_times() {
    let emu = frozen(vec![chain(1), job(2, "SUCCESS")]).await;
    let api = Api::new(&emu);
    assert_eq!(emu.run_count(), 0, "seeded runs are not counted as started");
    let page = list(
        &api,
        &[
            ("job_id", "1"),
            ("completed_only", "true"),
            ("expand_tasks", "true"),
        ],
    )
    .await;
    let seeded = runs(&page);
    assert_eq!(seeded.len(), 2);
    let (failed, ok) = (&seeded[0], &seeded[1]);
    assert!(
        ms(&failed["run_id"]) > ms(&ok["run_id"]),
        "older runs have smaller ids"
    );
    assert_eq!(ok["state"]["result_state"], "SUCCESS");
    assert_eq!(ok["status"]["state"], "TERMINATED");
    assert_eq!(ms(&ok["run_duration"]), 5000);
    assert_eq!(ms(&ok["queue_duration"]), 100);
    assert_eq!(ms(&ok["end_time"]) - ms(&ok["start_time"]), 5100);
    assert_eq!(ok["trigger"], "PERIODIC");
    assert_eq!(failed["state"]["result_state"], "FAILED");
    assert_eq!(ms(&failed["run_duration"]), 3000);
    assert_eq!(ms(&failed["queue_duration"]), 50);
    assert_eq!(
        failed["status"]["termination_details"]["code"],
        "RUN_EXECUTION_ERROR"
    );

    // Each task has its own times, from the graph, scaled to the run's length.
    for run in [ok, failed] {
        let tasks = run["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks[0]["start_time"], run["start_time"]);
        assert_eq!(tasks[1]["start_time"], tasks[0]["end_time"]);
        assert_eq!(tasks[2]["start_time"], tasks[1]["end_time"]);
        assert_eq!(tasks[2]["end_time"], run["end_time"]);
        for t in tasks {
            let span = ms(&t["end_time"]) - ms(&t["start_time"]);
            let parts = [
                "queue_duration",
                "setup_duration",
                "execution_duration",
                "cleanup_duration",
            ]
            .iter()
            .map(|f| ms(&t[*f]))
            .sum::<i64>();
            // Each part is whole ms, rounded down.
            assert!((0..=3).contains(&(span - parts)), "{t}");
            assert_eq!(ms(&t["run_duration"]) + ms(&t["queue_duration"]), span);
        }
    }
    assert_eq!(
        pairs(&results(failed)),
        [
            ("extract", "SUCCESS"),
            ("transform", "SUCCESS"),
            ("load", "FAILED")
        ],
        "the last task fails"
    );
    // 5000 ms for a 2100 ms graph: each task's RUNNING took 500 * 5000 / 2100 ms.
    assert_eq!(ms(&ok["tasks"][1]["execution_duration"]), 1190);

    // runs/get reads them too, by run id and by task run id.
    let by_id = api.run(ms(&ok["run_id"])).await;
    assert_eq!(by_id["run_duration"], 5000);
    let task = api.run(ms(&ok["tasks"][2]["run_id"])).await;
    assert_eq!(task["parent_run_id"], ok["run_id"]);

    // Start times 100 s and 50 s before now; a run started now is listed first.
    let (live, now) = now_epoch(&api, 1).await;
    assert_eq!(now - ms(&ok["start_time"]), 100_000);
    assert_eq!(now - ms(&failed["start_time"]), 50_000);
    let all = list(&api, &[("job_id", "1")]).await;
    let ids: Vec<i64> = runs(&all).iter().map(|r| ms(&r["run_id"])).collect();
    assert_eq!(ids, [live, ms(&failed["run_id"]), ms(&ok["run_id"])]);
    assert!(runs(&all)[0].get("tasks").is_none());
    let active = list(&api, &[("job_id", "1"), ("active_only", "true")]).await;
    assert_eq!(runs(&active).len(), 1);
    let from = (now - 60_000).to_string();
    let recent = list(
        &api,
        &[
            ("job_id", "1"),
            ("completed_only", "true"),
            ("start_time_from", &from),
        ],
    )
    .await;
    assert_eq!(runs(&recent).len(), 1);
    let to = (now - 60_000).to_string();
    let old = list(&api, &[("job_id", "1"), ("start_time_to", &to)]).await;
    assert_eq!(runs(&old)[0]["run_id"], ok["run_id"]);
    let p1 = list(&api, &[("job_id", "1"), ("limit", "2")]).await;
    assert_eq!(p1["has_more"], true);
    let token = p1["next_page_token"].as_str().unwrap().to_string();
    let p2 = list(
        &api,
        &[("job_id", "1"), ("limit", "2"), ("page_token", &token)],
    )
    .await;
    assert_eq!(runs(&p2).len(), 1);
    assert_eq!(runs(&p2)[0]["run_id"], ok["run_id"]);
    assert_eq!(emu.run_count(), 1);

    // More through the control API (a count: successful runs of the job's own length) and
    // the Rust API; a reset keeps only the job spec's own history.
    let (_, seeded) = control_post(&emu, "/jobs/1/history", json!(3)).await;
    let new_ids = seeded["runIds"].as_array().unwrap();
    assert_eq!(new_ids.len(), 3);
    let newest = api.run(ms(&new_ids[2])).await;
    assert_eq!(newest["run_duration"], 2100);
    assert_eq!(now - ms(&newest["start_time"]), 3_600_000);
    let more = emu
        .seed_history(
            2,
            serde_json::from_value(json!([{"durationMs": 700, "agoMs": 10_000}])).unwrap(),
        )
        .unwrap();
    assert_eq!(api.run(more[0]).await["run_duration"], 700);
    let (s, body) = control_post(&emu, "/jobs/1/history", json!({"runs": [{"agoMs": 1000}]})).await;
    assert_eq!(s, 400);
    assert_eq!(
        body["message"],
        "job 1 (\"chain\"): history run 0: agoMs 1000 is shorter than the run itself (2200 ms): a seeded run must have ended"
    );
    let (s, _) = control_post(&emu, "/jobs/77/history", json!(1)).await;
    assert_eq!(s, 404);
    emu.reset();
    let after = list(&api, &[("job_id", "1")]).await;
    assert_eq!(runs(&after).len(), 2);
    assert!(list(&api, &[("job_id", "2")]).await.get("runs").is_none());
    emu.stop().await;
}

#[tokio::test]
async fn a_history_that_cannot_have_ended_is_refused_at_start() {
    let mut bad = chain(4);
    bad.history = Some(serde_json::from_value(json!([{"outcome": "MEH"}])).unwrap());
    let err = Emulator::start(EmulatorOptions {
        jobs: Some(vec![bad]),
        ..Default::default()
    })
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("job 4 (\"chain\"): history run 0: unknown outcome \"MEH\""),
        "{err}"
    );
    let mut early = chain(4);
    early.history = Some(serde_json::from_value(json!([{"agoMs": 10}])).unwrap());
    assert!(Emulator::start(EmulatorOptions {
        jobs: Some(vec![early]),
        ..Default::default()
    })
    .await
    .is_err());
}

fn http_date(r: &reqwest::Response) -> SystemTime {
    let text = r.headers()["date"].to_str().unwrap().to_string();
    httpdate::parse_http_date(&text).unwrap()
}

#[tokio::test]
async fn the_date_header_is_the_virtual_clock() {
    let emu = frozen(vec![job(1, "SUCCESS")]).await;
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    let start = ms(&api.run(id).await["start_time"]);
    let get = || {
        api.http
            .get(format!("{}/api/2.2/jobs/runs/get?run_id={id}", emu.url()))
            .bearer_auth(&api.token)
            .send()
    };
    // A day and 5 s of virtual time pass in no real time.
    emu.advance_time(86_405_000.0).unwrap();
    let r = get().await.unwrap();
    let date = http_date(&r);
    let date_ms = date.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    // The client's elapsed time: Date minus start_time (Date has whole seconds).
    assert!(
        (date_ms - start - 86_405_000).abs() < 1000,
        "{date_ms} {start}"
    );
    let ahead = date.duration_since(SystemTime::now()).unwrap();
    assert!(ahead > Duration::from_secs(86_000), "{ahead:?}");
    assert_eq!(r.headers().get_all("date").iter().count(), 1);
    // Every answer carries it: errors, unauthenticated ones, the control API.
    let denied = api
        .http
        .get(format!("{}/api/2.2/jobs/get?job_id=1", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    assert_eq!(http_date(&denied), date);
    let health = api
        .http
        .get(format!("{}/__emulator/health", emu.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(http_date(&health), date);
    emu.stop().await;
}

#[tokio::test]
async fn the_sample_graph_fails_at_publish_and_its_repair_succeeds() {
    let emu = frozen_samples().await;
    let api = Api::new(&emu);
    let past = list(
        &api,
        &[
            ("job_id", "1010"),
            ("completed_only", "true"),
            ("expand_tasks", "true"),
        ],
    )
    .await;
    assert_eq!(runs(&past).len(), 5);
    assert!(runs(&past)
        .iter()
        .all(|r| r["tasks"].as_array().unwrap().len() == 8));
    let chain_past = list(&api, &[("job_id", "1011"), ("completed_only", "true")]).await;
    assert_eq!(runs(&chain_past).len(), 5);

    let id = api.run_now(json!({"job_id": 1010})).await;
    let chained = api.run_now(json!({"job_id": 1011})).await;
    emu.advance_time(60_000.0).unwrap();
    let run = api.run(id).await;
    assert_eq!(run["state"]["result_state"], "FAILED");
    let results: Vec<(&str, &str)> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["task_key"].as_str().unwrap(),
                t["state"]["result_state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("extract", "SUCCESS"),
            ("clean_orders", "SUCCESS"),
            ("clean_customers", "SUCCESS"),
            ("score_regions", "SUCCESS"),
            ("join", "SUCCESS"),
            ("publish", "FAILED"),
            ("report", "UPSTREAM_FAILED"),
            ("notify", "SUCCESS"),
        ]
    );
    let duration = ms(&run["run_duration"]);
    assert!((10_000..=14_000).contains(&duration), "{duration}");
    api.repair(json!({"run_id": id, "rerun_all_failed_tasks": true}))
        .await;
    emu.advance_time(60_000.0).unwrap();
    let run = api.run(id).await;
    assert_eq!(run["state"]["result_state"], "SUCCESS");
    assert_eq!(run["tasks"].as_array().unwrap().len(), 10);
    let run = api.run(chained).await;
    assert_eq!(run["state"]["result_state"], "SUCCESS");
    assert_eq!(ms(&run["run_duration"]), 3 * 700);
    emu.stop().await;
}

#[tokio::test]
async fn a_small_first_run_id_puts_seeded_runs_above_it() {
    let emu = Emulator::start(EmulatorOptions {
        jobs: Some(vec![chain(1)]),
        time_scale: Some(0.0),
        first_run_id: Some(3),
        ..Default::default()
    })
    .await
    .unwrap();
    let api = Api::new(&emu);
    let id = api.run_now(json!({"job_id": 1})).await;
    let page = list(&api, &[("job_id", "1")]).await;
    let listed: Vec<i64> = runs(&page).iter().map(|r| ms(&r["run_id"])).collect();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed[0], id,
        "newest first by start time, whatever the ids"
    );
    assert!(listed[1..].iter().all(|past| *past >= 3 && *past < id));
    emu.stop().await;
}
