//! One poller per run for the whole fleet of instances, on the ledger's database (the engine's
//! side is `poller::Fleet`).
//!
//! - **A lease per (identity, run)** in `appkit_jobs.polls`: the instance holding it polls the
//!   run and publishes each new state (the text in `appkit_jobs.updates`, in order, and a
//!   `NOTIFY` carrying the key and the update's seq); the others follow. Taking it is one
//!   statement (`INSERT .. ON CONFLICT .. DO UPDATE .. WHERE` the lease lapsed or is ours);
//!   expiry is on the database's clock.
//! - **Renewal** is one statement per instance, every third of the lease, for every lease it
//!   holds; each publication renews its own lease too. An instance that stops (SIGKILL
//!   included) stops renewing: its leases lapse within the lease time.
//! - **Followers** wake on the holder's notifications; every poll interval (at most a third of
//!   the lease) one statement looks for lapsed leases (an index of live leases answers it, and
//!   its answer is empty while every holder lives), and the followers of a lapsed one claim it:
//!   takeover within the lease time plus one check. Every lease, the followed runs' leases are
//!   read too: a newer update than the one served (a notification lost while the listener was
//!   reconnecting, or a half-open connection) wakes the follower. A holder
//!   that lets go of a run (nobody watches it there any more) hands the lease back and
//!   announces it, and a follower takes over at once.
//! - A holder that finds its lease taken (it stalled past the lease) follows from then on; what
//!   both published in the meantime carries its fleet seq, so nothing is served twice or out of
//!   order.
//! - Ended runs' rows are swept an hour after their end, and so are the rows of runs nobody took
//!   over (every watcher left, or the last holder died): an hour after their lease lapsed. An
//!   instance sweeps when it starts and every hundred renewals.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::postgres::{Announcement, PgStore};
use super::LedgerError;
use crate::poller::{Claim, Fleet, FleetKey, FleetNews, FleetSignal, Published};

/// The shortest lease: a few poll intervals, but never so short that a busy instance loses its
/// leases between two renewals.
const MIN_LEASE: Duration = Duration::from_secs(1);
/// The rows `renew` sweeps: of runs that ended an hour ago (a late watcher still finds the
/// end until then), or whose lease lapsed an hour ago with nobody taking it over; each side
/// reads its partial index.
const GONE: &str = "((p.ended AND p.updated_at < now() - interval '1 hour')
                     OR (NOT p.ended AND p.expires_at < now() - interval '1 hour'))";
/// Lapsed leases older than this many leases are no longer looked for every poll interval: a
/// follower finds its run's lapse by its own check every lease (`FleetPolls::check`), so a lease
/// that lapsed longer ago has no follower, and the statement stays small with many of them.
const LAPSED_RECENTLY: f64 = 3.0;
/// How many updates a follower reads at once.
const UPDATES_PAGE: i64 = 100;

/// The default lease for polls every `base` (`pollIntervalMs`): three intervals, at least 1 s.
pub fn default_lease(base: Duration) -> Duration {
    (base * 3).max(MIN_LEASE)
}

struct Followed {
    signal: watch::Sender<FleetNews>,
    /// The highest fleet seq heard of for the run.
    heard: i64,
}

/// The fleet's polls on the ledger's database.
pub struct FleetPolls {
    pg: Arc<PgStore>,
    instance: Arc<str>,
    lease: Duration,
    followed: Mutex<HashMap<FleetKey, Followed>>,
}

impl std::fmt::Debug for FleetPolls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetPolls")
            .field("lease", &self.lease)
            .finish()
    }
}

fn published_of(row: &tokio_postgres::Row) -> Published {
    Published {
        seq: row.get("seq"),
        status: row.get("status"),
        timestamp: row.get("read_at_ms"),
        job_id: row.get("job_id"),
        terminal: row.get("terminal"),
        run_json: Arc::from(row.get::<_, String>("run_json")),
        meta_json: Arc::from(row.get::<_, String>("meta_json")),
        beyond_js_numbers: row.get("beyond_js_numbers"),
        signature: row.get::<_, i64>("signature") as u64,
        history_known: row.get("history_known"),
        fraction: row.get("fraction"),
    }
}

/// The columns `published_of` reads.
const UPDATE_COLUMNS: &str = "seq, status, read_at_ms, job_id, terminal, run_json, meta_json, \
     beyond_js_numbers, signature, (signature_flags & 1) = 1 AS history_known, fraction";

impl FleetPolls {
    /// The fleet's polls on `pg`, leases of `lease`; checks the followed runs every `check`.
    /// Its tasks stop with the store.
    pub fn start(pg: Arc<PgStore>, lease: Duration, check: Duration) -> Arc<FleetPolls> {
        let fleet = Arc::new(FleetPolls {
            instance: Arc::from(pg.instance()),
            pg: pg.clone(),
            lease,
            followed: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&fleet);
        pg.on_announcement(Arc::new(move |a: &Announcement| {
            if let Some(fleet) = weak.upgrade() {
                fleet.heard(a);
            }
        }));
        let stop = pg.stopped();
        tokio::spawn(renew(Arc::downgrade(&fleet), stop.clone()));
        tokio::spawn(check_followed(Arc::downgrade(&fleet), stop, check));
        fleet
    }

    fn lease_ms(&self) -> f64 {
        self.lease.as_millis() as f64
    }

    /// What the listener heard: a run's new update, a lease handed back, or a reconnect (after
    /// which every followed run is read again: notifications sent meanwhile were lost).
    fn heard(&self, a: &Announcement) {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        match a {
            Announcement::Other(payload) => {
                let Some((kind, key, seq)) = parse_payload(payload) else {
                    return;
                };
                if let Some(f) = followed.get_mut(&key) {
                    match kind {
                        Payload::Update => {
                            f.heard = f.heard.max(seq);
                            f.signal.send_modify(|n| n.news += 1);
                        }
                        Payload::Free => f.signal.send_modify(|n| n.expired += 1),
                    }
                }
            }
            Announcement::Reconnected => {
                for f in followed.values() {
                    f.signal.send_modify(|n| n.news += 1);
                }
            }
            Announcement::Invalidate(_) => {}
        }
    }

    /// Leases that lapsed lately (every poll interval): one statement over the partial index of
    /// live leases, whose answer is empty while every holder is alive; each lapsed one followed
    /// here wakes its follower to claim it.
    async fn check_lapsed(&self) -> Result<(), LedgerError> {
        let window = self.lease_ms() * LAPSED_RECENTLY;
        let rows = self
            .pg
            .run("ledger.lapsedLeases", move |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT partition, run_id FROM appkit_jobs.polls
                         WHERE NOT ended AND expires_at < now()
                           AND expires_at > now() - $1 * interval '1 millisecond'
                         LIMIT 10000",
                        &[&window],
                    )
                    .await
                })
            })
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        for row in rows {
            let key = FleetKey {
                partition: Arc::from(row.get::<_, String>(0)),
                run_id: row.get(1),
            };
            if let Some(f) = followed.get(&key) {
                f.signal.send_modify(|n| n.expired += 1);
            }
        }
        Ok(())
    }

    /// The followed runs' leases, read in one statement (every lease): a newer update than heard
    /// (a notification lost while the listener was away, or a half-open connection) or a lapsed
    /// lease wakes the follower. Runs nobody here follows any more are forgotten.
    async fn check(&self) -> Result<(), LedgerError> {
        let (partitions, runs): (Vec<String>, Vec<i64>) = {
            let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
            followed.retain(|_, f| f.signal.receiver_count() > 0);
            followed
                .keys()
                .map(|k| (k.partition.to_string(), k.run_id))
                .unzip()
        };
        if runs.is_empty() {
            return Ok(());
        }
        let rows = self
            .pg
            .run("ledger.checkLeases", move |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT k.partition, k.run_id, p.seq, coalesce(p.expires_at < now(), true)
                         FROM unnest($1::text[], $2::bigint[]) AS k(partition, run_id)
                         LEFT JOIN appkit_jobs.polls p
                           ON p.partition = k.partition AND p.run_id = k.run_id",
                        &[&partitions, &runs],
                    )
                    .await
                })
            })
            .await?;
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        for row in rows {
            let key = FleetKey {
                partition: Arc::from(row.get::<_, String>(0)),
                run_id: row.get(1),
            };
            let seq: Option<i64> = row.get(2);
            let lapsed: bool = row.get(3);
            if let Some(f) = followed.get_mut(&key) {
                if seq.is_some_and(|s| s > f.heard) {
                    f.heard = seq.unwrap_or(f.heard);
                    f.signal.send_modify(|n| n.news += 1);
                }
                if lapsed {
                    f.signal.send_modify(|n| n.expired += 1);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
enum Payload {
    Update,
    Free,
}

/// `run:<partition>:<run id>:<seq>` (an update) or `free:<partition>:<run id>` (a lease handed
/// back). Partitions are `sp` or `u<hex>`: no `:` in them.
fn parse_payload(payload: &str) -> Option<(Payload, FleetKey, i64)> {
    let (kind, rest) = payload.split_once(':')?;
    let mut parts = rest.split(':');
    let partition = parts.next()?;
    let run_id = parts.next()?.parse().ok()?;
    let key = FleetKey {
        partition: Arc::from(partition),
        run_id,
    };
    match kind {
        "run" => Some((Payload::Update, key, parts.next()?.parse().ok()?)),
        "free" => Some((Payload::Free, key, 0)),
        _ => None,
    }
}

/// Renews every lease this instance holds, every third of the lease, in one statement; sweeps
/// the rows of runs that ended, or were left, long ago at the first renewal and every hundredth.
async fn renew(fleet: std::sync::Weak<FleetPolls>, stop: tokio_util::sync::CancellationToken) {
    let period = match fleet.upgrade() {
        Some(f) => f.lease / 3,
        None => return,
    };
    let mut sweeps = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let Some(f) = fleet.upgrade() else { return };
        let (instance, lease) = (f.instance.clone(), f.lease_ms());
        let _ =
            f.pg.run("ledger.renewLeases", move |c| {
                Box::pin(async move {
                    c.execute(
                        "UPDATE appkit_jobs.polls
                         SET expires_at = now() + $2 * interval '1 millisecond', updated_at = now()
                         WHERE holder = $1 AND NOT ended",
                        &[&&*instance, &lease],
                    )
                    .await
                })
            })
            .await;
        if sweeps.is_multiple_of(100) {
            let _ =
                f.pg.run("ledger.sweepPolls", |c| {
                    Box::pin(async move {
                        c.batch_execute(&format!(
                            "DELETE FROM appkit_jobs.updates u USING appkit_jobs.polls p
                             WHERE p.partition = u.partition AND p.run_id = u.run_id AND {GONE};
                             DELETE FROM appkit_jobs.polls p WHERE {GONE};"
                        ))
                        .await
                    })
                })
                .await;
        }
        sweeps += 1;
    }
}

/// Looks for lapsed leases every `every` (`FleetPolls::check_lapsed`) and checks the followed
/// runs every lease (`FleetPolls::check`).
async fn check_followed(
    fleet: std::sync::Weak<FleetPolls>,
    stop: tokio_util::sync::CancellationToken,
    every: Duration,
) {
    let mut since_full = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(f) = fleet.upgrade() else { return };
        if f.followed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            continue;
        }
        since_full += every;
        if since_full >= f.lease {
            since_full = Duration::ZERO;
            let _ = f.check().await;
        } else {
            let _ = f.check_lapsed().await;
        }
    }
}

impl Fleet for FleetPolls {
    fn claim<'a>(&'a self, key: &'a FleetKey) -> BoxFuture<'a, Option<Claim>> {
        Box::pin(async move {
            let (partition, run_id) = (key.partition.to_string(), key.run_id);
            let (instance, lease) = (self.instance.clone(), self.lease_ms());
            self.pg
                .run("ledger.claimLease", move |c| {
                    Box::pin(async move {
                        let holding = c
                            .query_opt(
                                "INSERT INTO appkit_jobs.polls (partition, run_id, holder, expires_at)
                                 VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')
                                 ON CONFLICT (partition, run_id) DO UPDATE
                                   SET holder = excluded.holder, expires_at = excluded.expires_at,
                                       updated_at = now()
                                   WHERE NOT appkit_jobs.polls.ended
                                     AND (appkit_jobs.polls.expires_at < now()
                                          OR appkit_jobs.polls.holder = excluded.holder)
                                 RETURNING seq",
                                &[&partition, &run_id, &&*instance, &lease],
                            )
                            .await?
                            .is_some();
                        let latest = c
                            .query_opt(
                                &format!(
                                    "SELECT {UPDATE_COLUMNS} FROM appkit_jobs.updates
                                     WHERE partition = $1 AND run_id = $2
                                     ORDER BY seq DESC LIMIT 1"
                                ),
                                &[&partition, &run_id],
                            )
                            .await?
                            .as_ref()
                            .map(published_of);
                        Ok(Claim { holding, latest })
                    })
                })
                .await
                .ok()
        })
    }

    fn publish<'a>(
        &'a self,
        key: &'a FleetKey,
        update: &'a Published,
    ) -> BoxFuture<'a, Option<bool>> {
        Box::pin(async move {
            let (partition, run_id) = (key.partition.to_string(), key.run_id);
            let (instance, lease) = (self.instance.clone(), self.lease_ms());
            let u = update.clone();
            self.pg
                .run("ledger.publish", move |c| {
                    Box::pin(async move {
                        let run_json: &str = &u.run_json;
                        let meta_json: &str = &u.meta_json;
                        let flags: i32 = u.history_known as i32;
                        let row = c
                            .query_opt(
                                "WITH p AS (
                                   UPDATE appkit_jobs.polls
                                   SET seq = seq + 1, ended = $12,
                                       expires_at = now() + $4 * interval '1 millisecond',
                                       updated_at = now()
                                   WHERE partition = $1 AND run_id = $2 AND holder = $3
                                   RETURNING seq),
                                 u AS (
                                   INSERT INTO appkit_jobs.updates
                                     (partition, run_id, seq, status, terminal, job_id, run_json,
                                      meta_json, beyond_js_numbers, read_at_ms, signature,
                                      signature_flags, fraction)
                                   SELECT $1, $2, p.seq, $5, $12, $6, $7, $8, $9, $10, $11, $13, $14
                                   FROM p
                                   RETURNING seq)
                                 SELECT seq, pg_notify('appkit_jobs',
                                   'run:' || $1 || ':' || $2::text || ':' || seq::text)
                                 FROM u",
                                &[
                                    &partition,
                                    &run_id,
                                    &&*instance,
                                    &lease,
                                    &u.status,
                                    &u.job_id,
                                    &run_json,
                                    &meta_json,
                                    &u.beyond_js_numbers,
                                    &u.timestamp,
                                    &(u.signature as i64),
                                    &u.terminal,
                                    &flags,
                                    &u.fraction,
                                ],
                            )
                            .await?;
                        Ok(row.is_some())
                    })
                })
                .await
                .ok()
        })
    }

    fn updates_after<'a>(
        &'a self,
        key: &'a FleetKey,
        after: i64,
    ) -> BoxFuture<'a, Option<Vec<Published>>> {
        Box::pin(async move {
            let (partition, run_id) = (key.partition.to_string(), key.run_id);
            self.pg
                .run("ledger.readUpdates", move |c| {
                    Box::pin(async move {
                        let rows = c
                            .query(
                                &format!(
                                    "SELECT {UPDATE_COLUMNS} FROM appkit_jobs.updates
                                     WHERE partition = $1 AND run_id = $2 AND seq > $3
                                     ORDER BY seq LIMIT {UPDATES_PAGE}"
                                ),
                                &[&partition, &run_id, &after],
                            )
                            .await?;
                        Ok(rows.iter().map(published_of).collect())
                    })
                })
                .await
                .ok()
        })
    }

    /// Hands the lease back: lapsed at once, and held by nobody, so that this instance's
    /// renewals (of every lease it holds) no longer keep it alive for a poll that has stopped.
    fn release<'a>(&'a self, key: &'a FleetKey) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (partition, run_id) = (key.partition.to_string(), key.run_id);
            let instance = self.instance.clone();
            let _ = self
                .pg
                .run("ledger.releaseLease", move |c| {
                    Box::pin(async move {
                        c.execute(
                            "WITH r AS (
                               UPDATE appkit_jobs.polls
                               SET holder = '', expires_at = now() - interval '1 millisecond',
                                   updated_at = now()
                               WHERE partition = $1 AND run_id = $2 AND holder = $3 AND NOT ended
                               RETURNING partition)
                             SELECT pg_notify('appkit_jobs', 'free:' || $1 || ':' || $2::text) FROM r",
                            &[&partition, &run_id, &&*instance],
                        )
                        .await
                    })
                })
                .await;
        })
    }

    fn follow(&self, key: &FleetKey) -> FleetSignal {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let f = followed.entry(key.clone()).or_insert_with(|| Followed {
            signal: watch::channel(FleetNews::default()).0,
            heard: 0,
        });
        FleetSignal::new(f.signal.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        let key = |p: &str, r| FleetKey {
            partition: Arc::from(p),
            run_id: r,
        };
        assert_eq!(
            parse_payload("run:sp:100000000001:7"),
            Some((Payload::Update, key("sp", 100000000001), 7))
        );
        assert_eq!(
            parse_payload("free:u0a1b:42"),
            Some((Payload::Free, key("u0a1b", 42), 0))
        );
        for bad in ["inv:7", "run:sp:x:1", "run:sp:1", "free", ""] {
            assert_eq!(parse_payload(bad), None, "{bad}");
        }
    }

    #[test]
    fn leases_are_a_few_poll_intervals() {
        assert_eq!(
            default_lease(Duration::from_secs(5)),
            Duration::from_secs(15)
        );
        assert_eq!(default_lease(Duration::from_millis(50)), MIN_LEASE);
    }
}
