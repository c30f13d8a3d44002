//! One poller per run for a fleet of instances, on a real PostgreSQL: two services (as two app
//! instances would have) share one run's polls, serve the same updates in the same order, and
//! the follower takes over when the holder lets go.
mod common;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use appkit_jobs_core::auth::Identity;
use appkit_jobs_core::jobs::Jobs;
use appkit_jobs_core::poller::RunWatch;
use appkit_jobs_emulator::{Emulator, EmulatorOptions, JobSpec};
use common::postgres::PgServer;
use common::{config, env};
use serde_json::json;

fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

/// A job whose runs take about 1.5 s at the emulator's real-time pace.
fn job() -> JobSpec {
    serde_json::from_value(json!({
        "id": 4001, "name": "etl", "queueMs": 100, "pendingMs": 200,
        "durationMs": 1000, "terminatingMs": 200
    }))
    .unwrap()
}

/// An instance of the app: the service with the ledger on `db`.
fn instance(emu: &Emulator, db: &str) -> Jobs {
    let env: HashMap<String, String> = env(emu, &[("DATABRICKS_JOB_ETL", "4001")]);
    Jobs::new(
        config(json!({
            "pollIntervalMs": 100,
            "ledger": { "connectionString": server().url(db) },
        })),
        env,
    )
}

async fn ready(jobs: &Jobs) {
    assert!(
        jobs.ledger().ready(Duration::from_secs(30)).await,
        "{:?}",
        jobs.ledger().status()
    );
}

/// The statuses of every update of a watch until its end.
async fn drain(mut w: RunWatch) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some(item) = w.next().await {
        let u = item.expect("an update");
        seen.push(u.status.clone().unwrap_or_default());
    }
    seen
}

fn polls_of(emu: &Emulator, run_id: i64) -> usize {
    emu.requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/runs/get") && r.query.contains(&format!("run_id={run_id}")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_following_one_run_poll_it_once_and_see_the_same_updates() {
    let db = server().database("fleet_once").await;
    let emu = Emulator::start(EmulatorOptions {
        jobs: Some(vec![job()]),
        ..Default::default()
    })
    .await
    .unwrap();
    // Alone: how many polls one instance makes for one run.
    let alone = Jobs::new(
        config(json!({ "pollIntervalMs": 100, "ledger": false })),
        env(&emu, &[("DATABRICKS_JOB_ETL", "4001")]),
    );
    let w = alone
        .start_and_watch("etl", &Identity::ServicePrincipal, None)
        .await
        .unwrap();
    let single_run = w.run_id();
    let single = drain(w).await;
    let single_polls = polls_of(&emu, single_run);

    let (a, b) = (instance(&emu, &db), instance(&emu, &db));
    ready(&a).await;
    ready(&b).await;
    let wa = a
        .start_and_watch("etl", &Identity::ServicePrincipal, None)
        .await
        .unwrap();
    let run_id = wa.run_id();
    let wb = b
        .watch_run("etl", &Identity::ServicePrincipal, run_id)
        .await
        .unwrap();
    let (seen_a, seen_b) = tokio::join!(drain(wa), drain(wb));
    assert_eq!(seen_a.last().map(String::as_str), Some("TERMINATED"));
    assert_eq!(
        seen_a, seen_b,
        "the follower serves the holder's updates, in order"
    );
    assert_eq!(seen_a, single, "the same updates as one instance alone");
    let fleet_polls = polls_of(&emu, run_id);
    // One poller: about one instance's polls (the follower's ownership read is one runs/get).
    assert!(
        fleet_polls <= single_polls + 2,
        "two instances polled {fleet_polls} times, one alone {single_polls}"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_holder_lets_go_the_follower_takes_over_and_goes_on_to_the_end() {
    let db = server().database("fleet_handover").await;
    let emu = Emulator::start(EmulatorOptions {
        jobs: Some(vec![job()]),
        ..Default::default()
    })
    .await
    .unwrap();
    let (a, b) = (instance(&emu, &db), instance(&emu, &db));
    ready(&a).await;
    ready(&b).await;
    let mut wa = a
        .start_and_watch("etl", &Identity::ServicePrincipal, None)
        .await
        .unwrap();
    let run_id = wa.run_id();
    let first = wa.next().await.unwrap().unwrap();
    assert!(!first.terminal);
    let wb = b
        .watch_run("etl", &Identity::ServicePrincipal, run_id)
        .await
        .unwrap();
    // a's only watcher leaves: a hands the lease back, b polls from then on.
    drop(wa);
    let started = std::time::Instant::now();
    let seen = drain(wb).await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("TERMINATED"),
        "{seen:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    emu.stop().await;
}
