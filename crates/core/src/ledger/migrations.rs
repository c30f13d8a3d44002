//! The ledger's own schema, `appkit_jobs`, created and migrated at start.
//!
//! Several instances start at once on every deploy. Each migrates in one transaction that first
//! takes a transaction-level advisory lock (it survives poolers, unlike a session lock, and is
//! released by the commit or by the connection dying): one instance migrates, the others wait
//! on the lock, then find the schema at its version and have nothing to do. A database at a
//! newer version than this code (an older instance during a rolling deploy) is used as it is:
//! every migration only adds.
use tokio_postgres::Client;

/// The schema every table lives in.
pub const SCHEMA: &str = "appkit_jobs";

/// The advisory lock key of migrations ("apkjobs" in ASCII).
const MIGRATION_LOCK: i64 = 0x61_70_6b_6a_6f_62_73;

/// How long a starting instance waits for another's migration before it gives up (and retries).
const LOCK_TIMEOUT: &str = "30s";

/// Each migration: its version and its statements. Append only: a released migration never
/// changes.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE appkit_jobs.starts (
    run_id      bigint      NOT NULL,
    repair_id   bigint      NOT NULL DEFAULT 0,
    job_id      bigint      NOT NULL,
    job_key     text        NOT NULL,
    email       text,
    user_id     text,
    user_name   text,
    params      jsonb,
    instance    text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, repair_id)
);
CREATE INDEX starts_by_job ON appkit_jobs.starts (job_id, started_at DESC) WHERE repair_id = 0;
COMMENT ON TABLE appkit_jobs.starts IS
    'appkit-jobs: who started (repair_id 0) or repaired each run, when, with which params, from which instance';

CREATE TABLE appkit_jobs.cache (
    key         text        PRIMARY KEY,
    gen_job     bigint,
    gen         bigint      NOT NULL DEFAULT 0,
    value       text        NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX cache_expiry ON appkit_jobs.cache (expires_at);
COMMENT ON TABLE appkit_jobs.cache IS
    'appkit-jobs: the read cache shared by every instance (per identity, expiring)';

CREATE TABLE appkit_jobs.job_generations (
    job_id      bigint      PRIMARY KEY,
    gen         bigint      NOT NULL
);
COMMENT ON TABLE appkit_jobs.job_generations IS
    'appkit-jobs: bumped by every write to a job: cached reads of an older generation are stale';
"#,
    ),
    (
        2,
        r#"
CREATE TABLE appkit_jobs.polls (
    partition   text        NOT NULL,
    run_id      bigint      NOT NULL,
    holder      text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    seq         bigint      NOT NULL DEFAULT 0,
    ended       boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partition, run_id)
);
CREATE INDEX polls_by_holder ON appkit_jobs.polls (holder) WHERE NOT ended;
CREATE INDEX polls_ended ON appkit_jobs.polls (updated_at) WHERE ended;
COMMENT ON TABLE appkit_jobs.polls IS
    'appkit-jobs: the lease of each watched run (one instance polls it for the fleet) and its latest update';

CREATE TABLE appkit_jobs.updates (
    partition   text             NOT NULL,
    run_id      bigint           NOT NULL,
    seq         bigint           NOT NULL,
    status      text,
    terminal    boolean          NOT NULL,
    job_id      bigint,
    run_json    text             NOT NULL,
    meta_json   text             NOT NULL,
    beyond_js_numbers boolean    NOT NULL DEFAULT false,
    read_at_ms  bigint           NOT NULL,
    signature   bigint           NOT NULL,
    signature_flags integer      NOT NULL DEFAULT 0,
    fraction    double precision NOT NULL,
    PRIMARY KEY (partition, run_id, seq)
);
COMMENT ON TABLE appkit_jobs.updates IS
    'appkit-jobs: every update a poll holder published, in order, for the other instances to serve';

CREATE TABLE appkit_jobs.run_ends (
    run_id        bigint      NOT NULL,
    repair_id     bigint      NOT NULL DEFAULT 0,
    job_key       text        NOT NULL,
    state         text        NOT NULL DEFAULT 'waiting',
    claimed_by    text,
    claimed_until timestamptz NOT NULL DEFAULT now(),
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text,
    ended_state   text,
    fired_at      timestamptz,
    PRIMARY KEY (run_id, repair_id)
);
CREATE INDEX run_ends_open ON appkit_jobs.run_ends (claimed_until) WHERE state IN ('waiting', 'firing');
COMMENT ON TABLE appkit_jobs.run_ends IS
    'appkit-jobs: each started or repaired run whose job has an onRunEnd handler: who watches it, whether it fired';
"#,
    ),
];

/// The latest version this code knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0)
}

/// What `migrate` found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema's version before.
    pub from: i32,
    /// Its version now (higher than `latest()` when a newer instance migrated it).
    pub to: i32,
}

/// Brings the schema to `latest()`, once across every instance that calls it at once.
pub async fn migrate(client: &mut Client) -> Result<Migrated, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {SCHEMA};
         CREATE TABLE IF NOT EXISTS {SCHEMA}.migrations (
             version     integer     PRIMARY KEY,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let from: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {SCHEMA}.migrations"),
            &[],
        )
        .await?
        .get(0);
    let mut to = from;
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        tx.batch_execute(statements).await?;
        tx.execute(
            &format!("INSERT INTO {SCHEMA}.migrations (version) VALUES ($1)"),
            &[version],
        )
        .await?;
        to = *version;
    }
    tx.commit().await?;
    Ok(Migrated { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_only_go_up_and_every_table_is_in_the_schema() {
        let mut last = 0;
        for (v, sql) in MIGRATIONS {
            assert!(*v > last, "version {v} after {last}");
            last = *v;
            for line in sql.lines().map(str::trim) {
                if let Some(rest) = line
                    .strip_prefix("CREATE TABLE ")
                    .or_else(|| line.strip_prefix("CREATE INDEX "))
                {
                    let target = rest.split(" ON ").nth(1).unwrap_or(rest);
                    if line.starts_with("CREATE TABLE") || line.starts_with("CREATE INDEX") {
                        assert!(
                            target.starts_with(&format!("{SCHEMA}.")),
                            "outside {SCHEMA}: {line}"
                        );
                    }
                }
            }
        }
        assert_eq!(latest(), last);
    }
}
