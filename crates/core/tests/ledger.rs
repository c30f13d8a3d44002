//! The ledger on a real PostgreSQL (embedded-postgres, started by the tests): migrations with
//! several instances starting at once, starts seen from another instance and after restarts,
//! the shared read cache and its invalidation, a database that goes away and comes back, and
//! Lakebase credentials minted through the emulator.
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use appkit_jobs_core::client::{ClientOptions, JobsClient};
use appkit_jobs_core::exec::{CacheKey, ReadCache, TierPolicy};
use appkit_jobs_core::ledger::{migrations, Ledger, LedgerOption, StartRecord, StartedBy};
use appkit_jobs_emulator::{Emulator, EmulatorOptions, LakebaseSpec};
use common::postgres::PgServer;
use serde_json::{json, Value};

/// One server for the tests that do not stop it (each takes a database of its own).
fn shared_server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

fn no_env() -> HashMap<String, String> {
    HashMap::from([("HOSTNAME".to_string(), "test-host".to_string())])
}

/// A ledger on `url` (no workspace: the password is in the URL).
fn ledger(url: &str) -> Ledger {
    let settings = LedgerOption::from_json(Some(&json!({ "connectionString": url })))
        .unwrap()
        .resolve(&no_env())
        .unwrap();
    Ledger::start(
        settings,
        &no_env(),
        &JobsClient::new(&no_env(), ClientOptions::default()),
        Default::default(),
    )
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn start(run_id: i64, job_id: i64, email: &str) -> StartRecord {
    StartRecord {
        run_id,
        repair_id: 0,
        job_id,
        job_key: "etl".into(),
        started_by: StartedBy::new(Some(email), Some("u-1"), Some("alice")).unwrap(),
        params: Some(json!({ "day": "2026-12-06" })),
        at_ms: 1_765_000_000_000 + run_id,
        watch_end: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_instances_starting_at_once_migrate_once() {
    let pg = shared_server();
    let db = pg.database("migrate_at_once").await;
    let ledgers: Vec<Ledger> = (0..8).map(|_| ledger(&pg.url(&db))).collect();
    for l in &ledgers {
        assert!(l.ready(Duration::from_secs(60)).await, "{:?}", l.status());
        assert_eq!(l.status().schema_version, migrations::latest());
    }
    let client = pg.client(&db).await;
    let rows = client
        .query(
            "SELECT version FROM appkit_jobs.migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let every: Vec<i32> = migrations::MIGRATIONS.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, every, "each migration applied once");
    // A later start finds the schema at its version and changes nothing.
    let late = ledger(&pg.url(&db));
    assert!(late.ready(Duration::from_secs(30)).await);
    let n: i64 = client
        .query_one("SELECT count(*) FROM appkit_jobs.migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, every.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_is_seen_from_another_instance_and_after_every_restart() {
    let pg = shared_server();
    let db = pg.database("seen_elsewhere").await;
    let a = ledger(&pg.url(&db));
    let b = ledger(&pg.url(&db));
    assert!(a.ready(Duration::from_secs(30)).await && b.ready(Duration::from_secs(30)).await);
    a.record(start(101, 7, "alice@example.com")).await;
    a.record(start(102, 7, "bob@example.com")).await;
    a.record(start(103, 7, "alice@example.com")).await;
    a.record(StartRecord {
        repair_id: 55,
        ..start(101, 7, "bob@example.com")
    })
    .await;
    // Another instance, with nothing in its memory.
    let seen = b.started_by_each(&[101, 102, 999]).await;
    assert_eq!(
        seen[&101].email.as_deref(),
        Some("alice@example.com"),
        "not the repair's"
    );
    assert_eq!(seen[&102].email.as_deref(), Some("bob@example.com"));
    assert!(
        !seen.contains_key(&999),
        "a run started elsewhere is unknown"
    );
    assert_eq!(
        b.runs_started_by(7, "alice@example.com", 10).await,
        vec![103, 101]
    );
    assert_eq!(
        b.runs_started_by(7, "alice", 1).await,
        vec![103],
        "by user name too"
    );
    assert!(b
        .runs_started_by(8, "alice@example.com", 10)
        .await
        .is_empty());
    // Every instance gone, a new one comes: still there.
    drop(a);
    drop(b);
    let c = ledger(&pg.url(&db));
    assert!(c.ready(Duration::from_secs(30)).await);
    assert_eq!(
        c.started_by(102).await.and_then(|w| w.email),
        Some("bob@example.com".into())
    );
    // Who, when, the job, the params and the instance are all kept.
    let client = pg.client(&db).await;
    let row = client
        .query_one(
            "SELECT job_id, job_key, params::text, instance, user_name FROM appkit_jobs.starts
             WHERE run_id = 101 AND repair_id = 0",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 7);
    assert_eq!(row.get::<_, String>(1), "etl");
    assert_eq!(row.get::<_, String>(2), r#"{"day": "2026-12-06"}"#);
    assert!(row.get::<_, String>(3).starts_with("test-host-"));
    assert_eq!(row.get::<_, String>(4), "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_stored_as_text() {
    let pg = shared_server();
    let db = pg.database("hostile_names").await;
    let a = ledger(&pg.url(&db));
    assert!(a.ready(Duration::from_secs(30)).await);
    let nasty = "'); DROP TABLE appkit_jobs.starts; --";
    let huge = "x".repeat(10 * 1024);
    a.record(StartRecord {
        started_by: StartedBy::new(Some(nasty), Some(&huge), Some("\"quoted\" \\ name")).unwrap(),
        ..start(201, 7, "ignored")
    })
    .await;
    let b = ledger(&pg.url(&db));
    assert!(b.ready(Duration::from_secs(30)).await);
    let who = b.started_by(201).await.unwrap();
    assert_eq!(who.email.as_deref(), Some(nasty));
    assert_eq!(who.user_id.unwrap().len(), 256, "bounded");
    assert_eq!(who.user_name.as_deref(), Some("\"quoted\" \\ name"));
    assert_eq!(b.runs_started_by(7, nasty, 5).await, vec![201]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_cache_is_shared_and_a_write_makes_it_stale_everywhere() {
    let pg = shared_server();
    let db = pg.database("shared_cache").await;
    let (a, b) = (ledger(&pg.url(&db)), ledger(&pg.url(&db)));
    assert!(a.ready(Duration::from_secs(30)).await && b.ready(Duration::from_secs(30)).await);
    let policy = TierPolicy::read();
    let cache_a = Arc::new(ReadCache::with_shared(&policy, 100, a.shared_tier()));
    let cache_b = Arc::new(ReadCache::with_shared(&policy, 100, b.shared_tier()));
    // What b hears from the others: a job's reads are stale.
    {
        let cache_b = Arc::downgrade(&cache_b);
        b.postgres().unwrap().on_announcement(Arc::new(move |ann| {
            if let (Some(c), appkit_jobs_core::ledger::postgres::Announcement::Invalidate(job)) =
                (cache_b.upgrade(), ann)
            {
                c.invalidate_job(*job);
            }
        }));
    }
    until("b listens", || b.status().listening).await;
    let fetches = Arc::new(AtomicUsize::new(0));
    let read = |cache: Arc<ReadCache>, answer: Value| {
        let fetches = fetches.clone();
        async move {
            let key = CacheKey::of(
                &appkit_jobs_core::auth::Identity::ServicePrincipal,
                "lastRun",
                7,
                1i64,
            );
            cache
                .get_or_fetch(key, async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    Ok(answer)
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(read(cache_a.clone(), json!("first")).await, json!("first"));
    // The other instance's first read is served from the database: one fetch in all.
    assert_eq!(read(cache_b.clone(), json!("second")).await, json!("first"));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // A write on a (a run-now, a cancel): b's next read fetches.
    a.invalidate(7).await;
    cache_a.invalidate_job(7);
    let before = fetches.load(Ordering::SeqCst);
    for _ in 0..200 {
        if read(cache_b.clone(), json!("third")).await == json!("third") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read(cache_b.clone(), json!("fourth")).await, json!("third"));
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1);
    // Per identity: a user's read never serves another's.
    let user = |t: &str| appkit_jobs_core::auth::Identity::user(t);
    for (token, answer) in [("token-1", "one"), ("token-2", "two")] {
        let got = cache_a
            .get_or_fetch(CacheKey::of(&user(token), "getJob", 7, ()), async move {
                Ok(json!(answer))
            })
            .await
            .unwrap();
        assert_eq!(got, json!(answer));
    }
    // The database holds no token, only its fleet partition.
    let client = pg.client(&db).await;
    let keys: Vec<String> = client
        .query("SELECT key FROM appkit_jobs.cache", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(keys.iter().all(|k| !k.contains("token")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("sp|lastRun|7|")),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_fails_nothing_and_gets_the_backlog_when_back() {
    let pg = PgServer::start();
    let db = pg.database("goes_away").await;
    let a = ledger(&pg.url(&db));
    assert!(a.ready(Duration::from_secs(30)).await);
    let cache = ReadCache::with_shared(&TierPolicy::read(), 100, a.shared_tier());
    // A start the database itself refuses (jsonb takes no NUL): dropped and counted, not kept.
    let refused = || StartRecord {
        job_id: 8,
        params: Some(json!({ "day": "\u{0}" })),
        ..start(300, 8, "carol@example.com")
    };
    a.record(refused()).await;
    assert_eq!((a.status().backlog, a.status().dropped), (0, 1));
    pg.stop();
    // Recording while the database is away returns at once, and this instance still knows.
    let t0 = std::time::Instant::now();
    // First in the backlog: refused when it is written, it must not hold up the others.
    a.record(refused()).await;
    for i in 0..3 {
        a.record(start(301 + i, 7, "carol@example.com")).await;
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    until("the database seen down", || !a.status().up).await;
    let t1 = std::time::Instant::now();
    a.record(start(304, 7, "carol@example.com")).await;
    assert!(
        t1.elapsed() < Duration::from_millis(500),
        "no wait once down: {:?}",
        t1.elapsed()
    );
    assert_eq!(a.status().backlog, 5);
    assert_eq!(
        a.started_by(301).await.and_then(|w| w.email),
        Some("carol@example.com".into())
    );
    assert_eq!(
        a.runs_started_by(7, "carol@example.com", 10).await,
        vec![304, 303, 302, 301]
    );
    // Reads still work (served by the fetch).
    let got = cache
        .get_or_fetch(CacheKey::new(0, "lastRun", 7, 1i64), async {
            Ok(json!("live"))
        })
        .await
        .unwrap();
    assert_eq!(got, json!("live"));
    assert!(a.status().errors > 0 && a.status().last_error.is_some());
    // Back: the backlog is written, another instance sees it.
    pg.start_again();
    until("the backlog written", || {
        let s = a.status();
        s.up && s.backlog == 0
    })
    .await;
    assert_eq!(a.status().dropped, 2, "the refused start, twice");
    let b = ledger(&pg.url(&db));
    assert!(b.ready(Duration::from_secs(30)).await);
    assert_eq!(
        b.runs_started_by(7, "carol@example.com", 10).await,
        vec![304, 303, 302, 301]
    );
    let logs: Vec<String> = a.take_logs().into_iter().map(|l| l.message).collect();
    assert!(
        logs.iter().any(|l| l.contains("serving from memory")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("written from the backlog")),
        "{logs:?}"
    );
    assert!(logs.iter().all(|l| !l.contains(&pg.password)), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lakebase_credentials_are_minted_by_the_workspace_and_never_kept_in_a_table() {
    let pg = shared_server();
    let db = pg.database("lakebase").await;
    let endpoint = "projects/p/branches/main/endpoints/primary";
    let emu = Emulator::start(EmulatorOptions {
        lakebase: Some(LakebaseSpec {
            password: pg.password.clone(),
            endpoint: Some(endpoint.into()),
            ttl_secs: None,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    // Exactly what Databricks Apps gives an app with a database (no password).
    let env = HashMap::from([
        ("DATABRICKS_HOST".to_string(), emu.url()),
        ("DATABRICKS_TOKEN".to_string(), emu.token()),
        ("PGHOST".to_string(), "127.0.0.1".to_string()),
        ("PGPORT".to_string(), pg.port.to_string()),
        ("PGDATABASE".to_string(), db.clone()),
        ("PGUSER".to_string(), "postgres".to_string()),
        ("PGSSLMODE".to_string(), "disable".to_string()),
        ("LAKEBASE_ENDPOINT".to_string(), endpoint.to_string()),
    ]);
    let settings = LedgerOption::Auto.resolve(&env).unwrap();
    let client = JobsClient::new(&env, ClientOptions::default());
    let l = Ledger::start(settings, &env, &client, Default::default());
    assert!(l.ready(Duration::from_secs(30)).await, "{:?}", l.status());
    until("the listener connected", || l.status().listening).await;
    let status = l.status();
    assert_eq!(status.credentials, "lakebase");
    // One credential for the pool's connection and the listener's (kept until near expiry).
    assert_eq!(status.credentials_minted, 1);
    let asked: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/2.0/postgres/credentials")
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].body, json!({ "endpoint": endpoint }));
    assert_eq!(asked[0].identity.as_deref(), Some("service_principal"));
    l.record(start(401, 7, "dave@example.com")).await;
    let cache = ReadCache::with_shared(&TierPolicy::read(), 10, l.shared_tier());
    cache
        .get_or_fetch(CacheKey::new(0, "getJob", 7, ()), async {
            Ok(json!({"ok": true}))
        })
        .await
        .unwrap();
    // No workspace or database credential in any table of the schema.
    let client = pg.client(&db).await;
    let dump: String = client
        .query_one(
            "SELECT coalesce(string_agg(t::text, ' '), '') FROM (
               SELECT row_to_json(s)::text AS t FROM appkit_jobs.starts s
               UNION ALL SELECT row_to_json(c)::text FROM appkit_jobs.cache c
               UNION ALL SELECT row_to_json(m)::text FROM appkit_jobs.migrations m
               UNION ALL SELECT row_to_json(g)::text FROM appkit_jobs.job_generations g) x",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(dump.contains("dave@example.com"), "{dump}");
    assert!(
        !dump.contains(&pg.password) && !dump.contains(&emu.token()),
        "{dump}"
    );
    let status = format!("{:?}", l.status());
    assert!(!status.contains(&pg.password) && !status.contains(&emu.token()));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_is_minted_again() {
    let pg = shared_server();
    let db = pg.database("refused").await;
    let endpoint = "projects/p/branches/main/endpoints/primary";
    let emu = Emulator::start(EmulatorOptions {
        lakebase: Some(LakebaseSpec {
            password: "not-the-password".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let env = HashMap::from([
        ("DATABRICKS_HOST".to_string(), emu.url()),
        ("DATABRICKS_TOKEN".to_string(), emu.token()),
    ]);
    let settings = LedgerOption::from_json(Some(&json!({
        "host": "127.0.0.1", "port": pg.port, "database": db, "user": "postgres",
        "sslMode": "disable", "endpoint": endpoint,
    })))
    .unwrap()
    .resolve(&env)
    .unwrap();
    let l = Ledger::start(
        settings,
        &env,
        &JobsClient::new(&env, ClientOptions::default()),
        Default::default(),
    );
    until("a refusal", || {
        l.status()
            .last_error
            .is_some_and(|e| e.starts_with("28P01"))
    })
    .await;
    assert!(!l.status().up);
    // The workspace now hands out the right one (a rotation): the next attempt mints it.
    emu.set_lakebase(Some(LakebaseSpec {
        password: pg.password.clone(),
        ..Default::default()
    }));
    assert!(l.ready(Duration::from_secs(30)).await, "{:?}", l.status());
    assert!(l.status().credentials_minted >= 2);
    emu.stop().await;
}
