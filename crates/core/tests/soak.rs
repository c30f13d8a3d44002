//! Soak: at least 100,000 polls of the shared poller against the emulator, through the real
//! service (`Jobs`: client, tiers, poller), in rounds of churn. Each round starts runs, watches
//! each one with several watchers as the service principal and as a user (one of them leaves
//! early), lets the polls run, then ends the runs. After every round all watchers are gone, and:
//! - the poller holds no poll and no watcher (`active_polls() == 0`, `active_watchers() == 0`);
//! - the runtime's live tasks are only those of idle pooled connections, whose number is
//!   bounded by the peak concurrency of a round, not by the polls or watchers served;
//! - live heap bytes (a counting allocator: this file is its own test process) level off:
//!   the later rounds stay within a small margin of the early ones.
//!
//! Its own integration-test binary, so that no other test shares the process while memory is
//! measured. Runs in CI (about a minute in a debug build); `SOAK_POLLS` changes its size.
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use appkit_jobs_core::auth::Identity;
use appkit_jobs_core::jobs::Jobs;
use appkit_jobs_core::poller::PollSettings;
use appkit_jobs_core::registry::PluginConfig;
use appkit_jobs_core::run;
use appkit_jobs_emulator::{Emulator, EmulatorOptions, UserSpec};

/// Live heap bytes of the process.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Open sockets of this process (client and server side of every TCP connection, listeners).
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

const USER_TOKEN: &str = "soak-user-token";
const RUNS_PER_ROUND: usize = 24;
const WATCHERS_PER_RUN: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_100k_polls_memory_levels_off_and_nothing_is_left_behind() {
    let total_polls: usize = std::env::var("SOAK_POLLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rounds = 10usize;
    let per_round = total_polls.div_ceil(rounds);

    let emu = Emulator::start(EmulatorOptions {
        time_scale: Some(0.0), // runs wait in QUEUED until the test ends them
        request_log_limit: Some(per_round * 2 + 10_000),
        users: vec![serde_json::from_value::<UserSpec>(serde_json::json!({
            "token": USER_TOKEN, "userName": "soak@example.com", "defaultPermission": "CAN_MANAGE_RUN"
        }))
        .unwrap()],
        ..Default::default()
    })
    .await
    .unwrap();
    let env: HashMap<String, String> = [
        ("DATABRICKS_HOST".to_string(), emu.url()),
        ("DATABRICKS_TOKEN".to_string(), emu.token()),
        ("DATABRICKS_JOB_ETL".to_string(), "1001".to_string()),
    ]
    .into_iter()
    .collect();
    let config: PluginConfig = serde_json::from_value(serde_json::json!({
        "jobs": { "etl": { "taskType": "notebook" } }
    }))
    .unwrap();
    // A 1 ms base interval, below the floor configs get: the engine itself has none.
    let poll = PollSettings {
        base_interval: Duration::from_millis(1),
        ..PollSettings::default()
    };
    let jobs = std::sync::Arc::new(Jobs::with_poll_settings(config, env, poll));
    let identities = [Identity::ServicePrincipal, Identity::user(USER_TOKEN)];

    let mut polls_total = 0usize;
    let mut samples: Vec<(isize, usize, usize)> = Vec::new(); // (live bytes, tasks, sockets)
    for round in 0..rounds {
        emu.clear_requests();
        let mut run_ids = Vec::new();
        let mut consumers = Vec::new();
        for i in 0..RUNS_PER_ROUND {
            let id = &identities[i % identities.len()];
            let started = jobs.run_now("etl", id, None).await.unwrap();
            let run_id = run::run_id(&started).unwrap();
            run_ids.push(run_id);
            for w in 0..WATCHERS_PER_RUN {
                // Half of the runs are also watched by the other identity: a second poll.
                let who = if w == 2 && i % 2 == 0 {
                    identities[(i + 1) % identities.len()].clone()
                } else {
                    id.clone()
                };
                let mut watch = jobs.watch_started_run("etl", &who, run_id).unwrap();
                // One watcher of each run leaves after its first update; every fourth run is
                // left by all of its watchers before it ends (its poll must stop on its own).
                let leaves_early = w == 1 || i % 4 == 3;
                consumers.push(tokio::spawn(async move {
                    let mut seen = 0usize;
                    while let Some(item) = watch.next().await {
                        item.expect("no poll error in the soak");
                        seen += 1;
                        if leaves_early {
                            break; // drops the watch: leaves the shared poll
                        }
                    }
                    seen
                }));
            }
        }
        let polls = || {
            emu.requests()
                .iter()
                .filter(|r| r.path.ends_with("/jobs/runs/get"))
                .count()
        };
        let mut waited = 0;
        while polls() < per_round {
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += 1;
            assert!(
                waited < 3_000,
                "round {round}: the polls stalled at {}",
                polls()
            );
        }
        for run_id in &run_ids {
            emu.set_run_state(*run_id, "SUCCESS").unwrap();
        }
        for c in consumers {
            assert!(c.await.unwrap() >= 1);
        }
        let poller = jobs.poller();
        eventually("every poll to retire", || {
            poller.active_polls() == 0 && poller.active_watchers() == 0
        })
        .await;
        polls_total += polls();
        // Let finished tasks be reaped before sampling.
        tokio::time::sleep(Duration::from_millis(100)).await;
        samples.push((live_bytes(), alive_tasks(), open_sockets()));
        eprintln!(
            "soak round {round}: {} polls so far, live heap {} KiB, tasks {}, sockets {}",
            polls_total,
            live_bytes() / 1024,
            alive_tasks(),
            open_sockets()
        );
    }
    assert!(polls_total >= total_polls, "{polls_total} polls");

    // No growth in tasks or connections once the watchers are gone. What stays is the idle
    // connection pool (each connection: a client and a server socket, a task on each side) plus
    // the emulator's listener and accept task; its size follows the peak concurrency of a round
    // (at most one request per poll; x3 leaves room for a connection being replaced), never the
    // number of polls or watchers served.
    let max_concurrent = RUNS_PER_ROUND * 3 / 2 + 2;
    for (i, (_, tasks, sockets)) in samples.iter().enumerate() {
        assert!(
            *sockets <= 3 * max_concurrent + 4,
            "round {i}: {sockets} open sockets for at most {max_concurrent} concurrent requests"
        );
        assert!(
            *tasks <= *sockets + 4,
            "round {i}: {tasks} live tasks for {sockets} sockets: a task outlived its watchers"
        );
    }
    // Memory levels off: the last rounds stay within 2 MiB of the highest of rounds 1..=3
    // (round 0 warms up pools and caches). A leak of 30 bytes per poll would exceed it.
    let early = samples[1..4].iter().map(|s| s.0).max().unwrap();
    let late = samples[rounds - 3..].iter().map(|s| s.0).max().unwrap();
    assert!(
        late - early < 2 * 1024 * 1024,
        "live heap grew from {early} to {late} bytes over the soak"
    );
    emu.stop().await;
}
