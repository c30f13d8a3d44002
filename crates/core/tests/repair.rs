//! Repairs against the emulator: the request the core sends (selection, `latest_repair_id`,
//! params mapped as for run-now), what it refuses before sending, another job's run, a lost
//! answer retried without a second repair, and following a run from its repair to its new end.
mod common;

use appkit_jobs_core::auth::Identity;
use appkit_jobs_core::jobs::Jobs;
use appkit_jobs_core::repair::RepairOptions;
use appkit_jobs_core::run;
use appkit_jobs_core::JobsError;
use appkit_jobs_emulator::{Emulator, EmulatorOptions, FaultSpec, JobSpec};
use common::{config, env, frozen_emulator, requests_to};
use serde_json::{json, Value};

const SP: Identity = Identity::ServicePrincipal;

/// Three tasks, `train` fails; `repairOutcome` SUCCESS. Each attempt takes 400 virtual ms.
fn failing_job(id: i64) -> JobSpec {
    serde_json::from_value(json!({
        "id": id, "outcome": "FAILED", "queueMs": 0, "pendingMs": 100, "durationMs": 200,
        "terminatingMs": 100,
        "parameters": [{"name": "date", "default": "today"}],
        "tasks": [
            {"taskKey": "ingest", "outcome": "SUCCESS"},
            {"taskKey": "train", "outcome": "FAILED"},
            {"taskKey": "report", "outcome": "SUCCESS"}
        ]
    }))
    .unwrap()
}

fn all_failed() -> RepairOptions {
    RepairOptions {
        rerun_all_failed_tasks: true,
        ..Default::default()
    }
}

fn repair_id(v: &Value) -> i64 {
    v["repair_id"].as_i64().expect("a repair_id")
}

async fn setup(job_config: Value) -> (Emulator, Jobs) {
    let emu = frozen_emulator(EmulatorOptions {
        jobs: Some(vec![failing_job(1), failing_job(2)]),
        ..Default::default()
    })
    .await;
    let jobs = Jobs::new(
        config(json!({ "jobs": { "etl": job_config } })),
        env(
            &emu,
            &[("DATABRICKS_JOB_ETL", "1"), ("DATABRICKS_JOB_OTHER", "2")],
        ),
    );
    (emu, jobs)
}

async fn ended_run(emu: &Emulator, jobs: &Jobs, key: &str) -> i64 {
    let started = jobs.run_now(key, &SP, None).await.unwrap();
    emu.advance_time(1000.0).unwrap();
    run::run_id(&started).unwrap()
}

#[tokio::test]
async fn repairs_send_the_selection_and_the_latest_repair_id() {
    let (emu, jobs) = setup(json!({})).await;
    let run_id = ended_run(&emu, &jobs, "etl").await;
    let first = repair_id(
        &jobs
            .repair_run("etl", &SP, run_id, all_failed())
            .await
            .unwrap(),
    );
    emu.advance_time(1000.0).unwrap();
    let second = jobs
        .repair_run(
            "etl",
            &SP,
            run_id,
            RepairOptions {
                rerun_tasks: Some(vec!["report".into()]),
                rerun_dependent_tasks: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_ne!(repair_id(&second), first);
    let bodies: Vec<Value> = requests_to(&emu, "/runs/repair")
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(
        bodies,
        vec![
            json!({"run_id": run_id, "rerun_all_failed_tasks": true}),
            json!({"run_id": run_id, "rerun_tasks": ["report"], "rerun_dependent_tasks": true,
                   "latest_repair_id": first}),
        ]
    );
    // Each repair read the run's history first, fresh.
    let reads = requests_to(&emu, "/runs/get");
    assert!(
        reads
            .iter()
            .filter(|r| r.query.contains("include_history=true"))
            .count()
            >= 2
    );
    emu.stop().await;
}

#[tokio::test]
async fn bad_selections_and_other_jobs_runs_send_nothing() {
    let (emu, jobs) = setup(json!({})).await;
    let run_id = ended_run(&emu, &jobs, "etl").await;
    let other = ended_run(&emu, &jobs, "other").await;
    emu.clear_requests();
    let neither = RepairOptions::default();
    let both = RepairOptions {
        rerun_all_failed_tasks: true,
        rerun_tasks: Some(vec!["train".into()]),
        ..Default::default()
    };
    let empty = RepairOptions {
        rerun_tasks: Some(vec![]),
        ..Default::default()
    };
    for options in [neither, both, empty] {
        let e = jobs
            .repair_run("etl", &SP, run_id, options)
            .await
            .unwrap_err();
        assert!(matches!(e, JobsError::Validation { .. }), "{e:?}");
    }
    let e = jobs
        .repair_run("etl", &SP, other, all_failed())
        .await
        .unwrap_err();
    assert_eq!((e.code().as_str(), e.status()), ("NOT_FOUND", 404));
    assert!(requests_to(&emu, "/runs/repair").is_empty());
    emu.stop().await;
}

#[tokio::test]
async fn a_run_still_going_keeps_the_upstream_status() {
    let (emu, jobs) = setup(json!({})).await;
    let started = jobs.run_now("etl", &SP, None).await.unwrap();
    let run_id = run::run_id(&started).unwrap();
    let e = jobs
        .repair_run("etl", &SP, run_id, all_failed())
        .await
        .unwrap_err();
    assert_eq!(e.status(), 400);
    assert_eq!(e.code(), "INVALID_PARAMETER_VALUE");
    assert_eq!(e.public_message(), "Bad Request");
    emu.stop().await;
}

#[tokio::test]
async fn params_are_mapped_and_checked_as_for_run_now() {
    let (emu, jobs) = setup(json!({ "jobParameters": true })).await;
    let run_id = ended_run(&emu, &jobs, "etl").await;
    let options = |params: Value| RepairOptions {
        params: Some(params),
        ..all_failed()
    };
    // The job defines only `date`: anything else is refused before sending.
    let e = jobs
        .repair_run("etl", &SP, run_id, options(json!({"dat": "x"})))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown parameter \"dat\""), "{e}");
    assert!(requests_to(&emu, "/runs/repair").is_empty());
    jobs.repair_run("etl", &SP, run_id, options(json!({"date": 20261201})))
        .await
        .unwrap();
    let sent = &requests_to(&emu, "/runs/repair")[0].body;
    assert_eq!(sent["job_parameters"], json!({"date": "20261201"}));
    assert!(sent.get("job_id").is_none());
    emu.stop().await;
}

#[tokio::test]
async fn a_lost_answer_is_retried_without_a_second_repair() {
    let (emu, jobs) = setup(json!({})).await;
    let run_id = ended_run(&emu, &jobs, "etl").await;
    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/runs/repair".into(),
        lose_response: true,
        ..Default::default()
    })
    .unwrap();
    let repaired = jobs
        .repair_run("etl", &SP, run_id, all_failed())
        .await
        .unwrap();
    let posts = requests_to(&emu, "/runs/repair");
    // The first attempt went through; the retry was refused (the run is active again).
    assert_eq!(
        posts.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200, 400]
    );
    let run = emu.get_run(run_id).unwrap();
    let history = jobs.get_run("etl", &SP, run_id).await.unwrap();
    assert!(!run::is_terminal(&history));
    assert_eq!(run["tasks"].as_array().unwrap().len(), 4, "one repair only");
    assert!(repair_id(&repaired) > 0);
    emu.stop().await;
}

#[tokio::test]
async fn repair_and_watch_follows_the_run_to_its_new_end() {
    let emu = Emulator::start(EmulatorOptions {
        jobs: Some(vec![failing_job(1)]),
        time_scale: Some(1.0),
        ..Default::default()
    })
    .await
    .unwrap();
    let jobs = Jobs::new(
        config(json!({ "pollIntervalMs": 50 })),
        env(&emu, &[("DATABRICKS_JOB_ETL", "1")]),
    );
    let started = jobs.start_and_watch("etl", &SP, None).await.unwrap();
    let run_id = started.run_id();
    let mut first = started;
    let mut last = None;
    while let Some(update) = first.next().await {
        last = Some(update.unwrap());
    }
    assert_eq!(last.unwrap().run()["state"]["result_state"], "FAILED");

    let (repair, mut watch) = jobs
        .repair_and_watch("etl", &SP, run_id, all_failed())
        .await
        .unwrap();
    assert!(repair > 0);
    assert_eq!(watch.run_id(), run_id);
    // A second watcher of the same run shares its poll.
    let mut other = jobs.watch_run("etl", &SP, run_id).await.unwrap();
    let mut states = Vec::new();
    let mut end = None;
    while let Some(update) = watch.next().await {
        let update = update.unwrap();
        states.push(update.status.clone().unwrap_or_default());
        end = Some(update.run());
    }
    assert_ne!(
        states.first().map(String::as_str),
        Some("TERMINATED"),
        "{states:?}"
    );
    assert_eq!(states.last().map(String::as_str), Some("TERMINATED"));
    assert_eq!(end.unwrap()["state"]["result_state"], "SUCCESS");
    while let Some(u) = other.next().await {
        u.unwrap();
    }
    assert_eq!(jobs.poller().active_polls(), 0);
    emu.stop().await;
}
