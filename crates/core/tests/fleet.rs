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
    // The follower serves the holder's updates, in order, from the one current when it joined
    // (under load its ownership read and claim may outlast the brief QUEUED state).
    assert!(
        !seen_b.is_empty() && seen_a.ends_with(&seen_b),
        "{seen_a:?} / {seen_b:?}"
    );
    // (Not the same list as `single`: which short states a poll catches depends on its jitter.)
    assert_eq!(single.last().map(String::as_str), Some("TERMINATED"));
    let fleet_polls = polls_of(&emu, run_id);
    // One poller: about one instance's polls (the follower's ownership read is one runs/get;
    // jitter moves a count by one or two; two pollers would make about twice as many).
    assert!(
        fleet_polls <= single_polls + 3,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_nobody_took_over_is_swept_an_hour_after_it_lapsed() {
    let db = server().database("fleet_sweep").await;
    let emu = Emulator::start(EmulatorOptions {
        jobs: Some(vec![serde_json::from_value(json!({
            "id": 4001, "name": "etl", "durationMs": 600_000
        }))
        .unwrap()]),
        ..Default::default()
    })
    .await
    .unwrap();
    let sql = server().client(&db).await;
    let rows = |table: &'static str, run_id: i64| {
        let sql = &sql;
        async move {
            sql.query_one(
                &format!("SELECT count(*) FROM appkit_jobs.{table} WHERE run_id = $1"),
                &[&run_id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    // Two runs watched on one instance, whose watchers both leave mid-run: nobody takes over.
    let a = instance(&emu, &db);
    ready(&a).await;
    let mut watches = Vec::new();
    for _ in 0..2 {
        let mut w = a
            .start_and_watch("etl", &Identity::ServicePrincipal, None)
            .await
            .unwrap();
        w.next().await.unwrap().unwrap();
        watches.push(w);
    }
    let (old, recent) = (watches[0].run_id(), watches[1].run_id());
    // The fleet's copy of the first update is written just after this instance's watchers got it.
    let started = std::time::Instant::now();
    for run_id in [old, recent] {
        while rows("updates", run_id).await == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "never published"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(watches);
    drop(a);
    for run_id in [old, recent] {
        assert_eq!(rows("polls", run_id).await, 1);
        assert!(rows("updates", run_id).await >= 1);
    }
    // One lapsed two hours ago, the other just now.
    sql.execute(
        "UPDATE appkit_jobs.polls SET expires_at = now() - interval '2 hours' WHERE run_id = $1",
        &[&old],
    )
    .await
    .unwrap();
    // The next instance to start sweeps the old one and keeps the recent one.
    let b = instance(&emu, &db);
    ready(&b).await;
    let started = std::time::Instant::now();
    while rows("polls", old).await > 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "not swept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows("updates", old).await, 0);
    assert_eq!(rows("polls", recent).await, 1);
    assert!(rows("updates", recent).await >= 1);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_let_go_is_polled_by_the_next_instance_that_watches_it() {
    let db = server().database("fleet_let_go").await;
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
    wa.next().await.unwrap().unwrap();
    // a's only watcher leaves while nobody else watches; a lives on (and renews its leases).
    drop(wa);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // b watches the run later: someone must poll it to its end.
    let seen = drain(
        b.watch_run("etl", &Identity::ServicePrincipal, run_id)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("TERMINATED"),
        "{seen:?}"
    );
    drop(a);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_run_ends_are_adopted_only_for_this_apps_handled_jobs_and_never_left_waiting() {
    let db = server().database("fleet_run_ends").await;
    let emu = Emulator::start(EmulatorOptions {
        jobs: Some(vec![job()]),
        ..Default::default()
    })
    .await
    .unwrap();
    let env: HashMap<String, String> = env(&emu, &[("DATABRICKS_JOB_ETL", "4001")]);
    let jobs = Jobs::new(
        config(json!({
            "pollIntervalMs": 100,
            "ledger": { "connectionString": server().url(&db) },
            "jobs": { "etl": { "onRunEnd": true } },
        })),
        env,
    );
    ready(&jobs).await;
    let sql = server().client(&db).await;
    // Two ends whose instance died: one of a job this app does not handle (another app on the
    // same database, or a handler a deploy removed), one of a run the workspace does not know.
    sql.batch_execute(
        "INSERT INTO appkit_jobs.run_ends (run_id, job_key, claimed_by, claimed_until)
         VALUES (7001, 'other', 'gone', now() - interval '1 minute'),
                (7002, 'etl', 'gone', now() - interval '1 minute')",
    )
    .await
    .unwrap();
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = fired.clone();
    jobs.run_ends()
        .set_handler(std::sync::Arc::new(move |_end| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }));
    let row = |run_id: i64| {
        let sql = &sql;
        async move {
            let r = sql
                .query_one(
                    "SELECT state, claimed_by, last_error FROM appkit_jobs.run_ends WHERE run_id = $1",
                    &[&run_id],
                )
                .await
                .unwrap();
            (
                r.get::<_, String>(0),
                r.get::<_, Option<String>>(1),
                r.get::<_, Option<String>>(2),
            )
        }
    };
    // The unknown run is adopted, found not to exist, and written failed with why.
    let started = std::time::Instant::now();
    while row(7002).await.0 == "waiting" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            row(7002).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (state, _, error) = row(7002).await;
    assert_eq!(state, "failed");
    assert!(error.unwrap_or_default().contains("cannot be followed"));
    // The other job's end is still where its instance left it, for an app that handles it.
    assert_eq!(
        row(7001).await,
        ("waiting".to_string(), Some("gone".to_string()), None)
    );
    assert_eq!(fired.load(std::sync::atomic::Ordering::SeqCst), 0);
    emu.stop().await;
}
