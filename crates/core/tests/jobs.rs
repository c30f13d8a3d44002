//! The jobs service against the emulator: one idempotency token per run-now, another job's
//! runs untouched, ownership read once per identity, multi-task output, durations learnt from
//! a run seen to its end.
mod common;

use appkit_jobs_core::auth::Identity;
use appkit_jobs_core::jobs::Jobs;
use appkit_jobs_core::run;
use appkit_jobs_emulator::{Emulator, EmulatorOptions, FaultSpec, JobSpec};
use common::{config, env};
use serde_json::json;

#[tokio::test]
async fn run_now_sends_one_token_and_retries_without_a_second_run() {
    // A 503 (nothing started), then a lost answer (the run started, the client never heard).
    let faults = [
        FaultSpec {
            status: Some(503),
            retry_after: Some(0),
            ..Default::default()
        },
        FaultSpec {
            lose_response: true,
            ..Default::default()
        },
    ];
    for fault in faults {
        let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
        let jobs = Jobs::new(
            config(json!({})),
            env(&emu, &[("DATABRICKS_JOB_ETL", "1001")]), // a sample job of the emulator
        );
        emu.inject_fault(FaultSpec {
            path: "/api/2.2/jobs/run-now".into(),
            ..fault
        })
        .unwrap();
        let started = jobs
            .run_now("etl", &Identity::ServicePrincipal, None)
            .await
            .unwrap();
        assert!(run::run_id(&started).is_some());
        assert_eq!(emu.run_count(), 1);
        let posts: Vec<_> = emu
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/run-now"))
            .collect();
        assert_eq!(posts.len(), 2);
        assert!(posts[0].fault && !posts[1].fault);
        let t0 = &posts[0].body["idempotency_token"];
        assert!(t0.is_string());
        assert_eq!(&posts[1].body["idempotency_token"], t0);
        emu.stop().await;
    }
}

#[tokio::test]
async fn another_jobs_run_is_not_found_and_untouched() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let (a, b) = (1001, 1002); // sample jobs of the emulator
    let jobs = Jobs::new(
        config(json!({})),
        env(
            &emu,
            &[
                ("DATABRICKS_JOB_A", &a.to_string()),
                ("DATABRICKS_JOB_B", &b.to_string()),
            ],
        ),
    );
    let sp = Identity::ServicePrincipal;
    let started = jobs.run_now("b", &sp, None).await.unwrap();
    let run_id = run::run_id(&started).unwrap();
    emu.clear_requests();
    for err in [
        jobs.get_run("a", &sp, run_id).await.unwrap_err(),
        jobs.get_run_output("a", &sp, run_id).await.unwrap_err(),
        jobs.cancel_run("a", &sp, run_id).await.unwrap_err(),
    ] {
        assert_eq!(err.status(), 404);
        assert_eq!(
            err.to_string(),
            format!("Run {run_id} not found for job \"a\"")
        );
    }
    assert!(jobs.watch_run("a", &sp, run_id).await.is_err());
    // Only reads of the run went out: no cancel, no output.
    assert!(emu.requests().iter().all(|r| r.path.ends_with("/runs/get")));
    emu.stop().await;
}

#[tokio::test]
async fn a_runs_job_is_read_once_per_identity_for_ownership_checks() {
    let emu = Emulator::start(EmulatorOptions {
        time_scale: Some(0.0),
        ..Default::default()
    })
    .await
    .unwrap();
    let (a, b) = (1001, 1002); // sample jobs of the emulator
    let make = || {
        Jobs::new(
            config(json!({})),
            env(
                &emu,
                &[
                    ("DATABRICKS_JOB_A", &a.to_string()),
                    ("DATABRICKS_JOB_B", &b.to_string()),
                ],
            ),
        )
    };
    let jobs = make();
    let sp = Identity::ServicePrincipal;
    // A run started elsewhere (another app, no shared ledger): its job must be read to check it.
    let run_id = run::run_id(&make().run_now("b", &sp, None).await.unwrap()).unwrap();
    emu.clear_requests();
    let gets = |emu: &Emulator| {
        emu.requests()
            .iter()
            .filter(|r| r.path.ends_with("/runs/get"))
            .count()
    };
    // The first watch reads the run once to check it; its poll reads it too.
    let mut w = jobs.watch_run("b", &sp, run_id).await.unwrap();
    w.next().await.unwrap().unwrap();
    let after_first = gets(&emu);
    assert_eq!(after_first, 2);
    // Later watches and checks, even after an update dropped the read cache, read nothing.
    let mut more = Vec::new();
    for _ in 0..5 {
        more.push(jobs.watch_run("b", &sp, run_id).await.unwrap());
    }
    assert!(jobs.watch_run("a", &sp, run_id).await.is_err());
    assert_eq!(
        jobs.get_run("a", &sp, run_id).await.unwrap_err().status(),
        404
    );
    assert_eq!(gets(&emu), after_first);
    // Another identity's reads vouch for nothing: a user checks for itself.
    let user = Identity::user("token-of-someone");
    let _ = jobs.watch_run("b", &user, run_id).await;
    assert_eq!(gets(&emu), after_first + 1);
    drop((w, more));
    // A run this plugin started is in its ledger: the check reads nothing, only the poll does.
    let own = run::run_id(&jobs.run_now("b", &sp, None).await.unwrap()).unwrap();
    emu.clear_requests();
    let mut w = jobs.watch_run("b", &sp, own).await.unwrap();
    w.next().await.unwrap().unwrap();
    assert_eq!(gets(&emu), 1);
    assert!(jobs.watch_run("a", &sp, own).await.is_err());
    assert_eq!(gets(&emu), 1);
    drop(w);
    emu.stop().await;
}

#[tokio::test]
async fn multi_task_output_is_aggregated() {
    let emu = emulator_with(
        json!({
            "id": 4242, "name": "multi", "tasks": [
                {"taskKey": "extract"}, {"taskKey": "load"}
            ],
            "durationMs": 1
        }),
        1000.0,
    )
    .await;
    let jobs = Jobs::new(
        config(json!({})),
        env(&emu, &[("DATABRICKS_JOB_MULTI", "4242")]),
    );
    let sp = Identity::ServicePrincipal;
    let run_id = run::run_id(&jobs.run_now("multi", &sp, None).await.unwrap()).unwrap();
    emu.set_run_state(run_id, "SUCCESS").unwrap();
    let out = jobs.get_run_output("multi", &sp, run_id).await.unwrap();
    let tasks = out["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["task_key"], "extract");
    assert_eq!(tasks[1]["task_key"], "load");
    assert!(tasks.iter().all(|t| t["run_id"].as_i64().is_some()));
    assert_eq!(run::run_id(&out["metadata"]), Some(run_id));
    emu.stop().await;
}

#[tokio::test]
async fn output_of_a_150_task_run_covers_every_task_in_order() {
    let emu = Emulator::start(EmulatorOptions {
        time_scale: Some(1000.0),
        ..Default::default()
    })
    .await
    .unwrap();
    // Sample job 1004 has 150 tasks: runs/get pages are merged, then 150 outputs fetched.
    let jobs = Jobs::new(
        config(json!({})),
        env(&emu, &[("DATABRICKS_JOB_WIDE", "1004")]),
    );
    let sp = Identity::ServicePrincipal;
    let run_id = run::run_id(&jobs.run_now("wide", &sp, None).await.unwrap()).unwrap();
    emu.set_run_state(run_id, "SUCCESS").unwrap();
    let run = jobs.get_run("wide", &sp, run_id).await.unwrap();
    let out = jobs.get_run_output("wide", &sp, run_id).await.unwrap();
    let tasks = out["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 150);
    let want: Vec<_> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["run_id"].clone())
        .collect();
    let got: Vec<_> = tasks.iter().map(|t| t["run_id"].clone()).collect();
    assert_eq!(got, want);
    assert!(tasks.iter().all(|t| t.get("error_status").is_none()));
    emu.stop().await;
}

#[tokio::test]
async fn calls_are_measured_only_while_telemetry_is_on() {
    use appkit_jobs_core::telemetry::collect;
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let jobs = Jobs::new(
        config(json!({})),
        env(&emu, &[("DATABRICKS_JOB_ETL", "1001")]),
    );
    let sp = Identity::ServicePrincipal;
    // Off: nothing is recorded.
    let ((), calls) = collect(async {
        jobs.get_job("etl", &sp).await.unwrap();
    })
    .await;
    assert!(calls.is_empty());
    assert!(jobs.telemetry().take_calls().is_empty());

    jobs.telemetry().set_enabled(true);
    emu.inject_fault(FaultSpec {
        path: "/api/2.2/jobs/run-now".into(),
        status: Some(503),
        retry_after: Some(0),
        ..Default::default()
    })
    .unwrap();
    let (started, calls) = collect(jobs.run_now("etl", &sp, None)).await;
    let run_id = run::run_id(&started.unwrap()).unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].operation, calls[0].attempts, calls[0].http_status),
        ("runNow", 2, Some(200))
    );
    // A cached read: a miss that fetched, then a hit that did not.
    let (_, first) = collect(jobs.get_run("etl", &sp, run_id)).await;
    let (_, second) = collect(jobs.get_run("etl", &sp, run_id)).await;
    // The API call inside the miss is recorded when it ends, before the cache's record.
    assert_eq!(
        first
            .iter()
            .map(|c| (c.operation, c.cache_hit, c.run_id))
            .collect::<Vec<_>>(),
        [
            ("getRun", None, Some(run_id)),
            ("getRun", Some(false), Some(run_id))
        ]
    );
    assert!(first[1].start_ms <= first[0].start_ms);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].cache_hit, Some(true));
    assert_eq!(second[0].attempts, 0);
    assert_eq!(jobs.telemetry().retries(), 1);
    let mut sums: Vec<_> = jobs
        .telemetry()
        .take_calls()
        .into_iter()
        .map(|(op, ok, sum)| (op, ok, sum.count))
        .collect();
    sums.sort();
    assert_eq!(sums, [("getRun", true, 1), ("runNow", true, 1)]);
    emu.stop().await;
}

#[tokio::test]
async fn a_job_without_history_learns_its_duration_from_a_run_seen_to_its_end() {
    // No past runs: the history read finds nothing, and the first run has no expected end.
    let emu = emulator_with(
        json!({"id": 4343, "name": "new", "queueMs": 100, "pendingMs": 100, "durationMs": 600}),
        10.0,
    )
    .await;
    let jobs = Jobs::new(
        config(json!({"pollIntervalMs": 20})),
        env(&emu, &[("DATABRICKS_JOB_NEW", "4343")]),
    );
    let sp = Identity::ServicePrincipal;
    let expected_of = |u: &appkit_jobs_core::poller::RunUpdate| {
        serde_json::from_str::<serde_json::Value>(&u.meta_json).unwrap()["progress"]["expectedMs"]
            .as_i64()
    };
    let mut first = jobs.start_and_watch("new", &sp, None).await.unwrap();
    let mut last = None;
    while let Some(update) = first.next().await {
        let update = update.unwrap();
        assert_eq!(expected_of(&update), None, "no history yet");
        last = Some(update);
    }
    let last = last.unwrap();
    let run: serde_json::Value = serde_json::from_str(&last.run_json).unwrap();
    assert_eq!(run["state"]["result_state"], "SUCCESS");
    let took = run["end_time"].as_i64().unwrap() - run["start_time"].as_i64().unwrap();
    // The next run is expected to take as long, before any new history read (the TTL holds).
    let lists = common::requests_to(&emu, "/runs/list").len();
    let mut second = jobs.start_and_watch("new", &sp, None).await.unwrap();
    let mut seen = None;
    while let Some(update) = second.next().await {
        seen = seen.or(expected_of(&update.unwrap()));
    }
    assert_eq!(seen, Some(took));
    assert_eq!(common::requests_to(&emu, "/runs/list").len(), lists);
    emu.stop().await;
}

/// An emulator with one job of the given spec, its clock sped up by `time_scale`.
async fn emulator_with(spec: serde_json::Value, time_scale: f64) -> Emulator {
    let spec: JobSpec = serde_json::from_value(spec).unwrap();
    Emulator::start(EmulatorOptions {
        jobs: Some(vec![spec]),
        time_scale: Some(time_scale),
        ..Default::default()
    })
    .await
    .unwrap()
}
