//! The in-process ledger: who started each run from this process, bounded. It is the whole
//! ledger without a database, and with one, what this instance knows at once (it answers
//! before the database, and while the database is away).
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::{StartRecord, StartedBy};

/// Starts remembered at most; the oldest go first.
pub const MAX_STARTS: usize = 100_000;

#[derive(Default)]
struct Starts {
    by_key: HashMap<(i64, i64), Arc<StartRecord>>,
    order: VecDeque<(i64, i64)>,
}

/// Starts and repairs recorded in this process.
#[derive(Default)]
pub struct MemoryStore {
    starts: Mutex<Starts>,
}

impl MemoryStore {
    pub fn insert(&self, record: StartRecord) {
        let key = (record.run_id, record.repair_id);
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        if starts.by_key.insert(key, Arc::new(record)).is_none() {
            starts.order.push_back(key);
            while starts.order.len() > MAX_STARTS {
                if let Some(old) = starts.order.pop_front() {
                    starts.by_key.remove(&old);
                }
            }
        }
    }

    /// Who started `run_id`, when this process recorded it.
    pub fn started_by(&self, run_id: i64) -> Option<StartedBy> {
        let starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        starts
            .by_key
            .get(&(run_id, 0))
            .map(|r| r.started_by.clone())
    }

    /// The newest runs of `job_id` that `who` started (see `StartedBy::matches`), at most `limit`.
    pub fn started_by_who(&self, job_id: i64, who: &str, limit: usize) -> Vec<(i64, i64)> {
        let starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<(i64, i64)> = starts
            .by_key
            .values()
            .filter(|r| r.repair_id == 0 && r.job_id == job_id && r.started_by.matches(who))
            .map(|r| (r.at_ms, r.run_id))
            .collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.truncate(limit);
        found
    }

    pub fn len(&self) -> usize {
        self.starts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_key
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(run_id: i64, job_id: i64, who: &str, at_ms: i64) -> StartRecord {
        StartRecord {
            run_id,
            repair_id: 0,
            job_id,
            job_key: "etl".into(),
            started_by: StartedBy::new(Some(who), None, None).unwrap(),
            params: None,
            at_ms,
            watch_end: false,
        }
    }

    #[test]
    fn newest_first_per_job_and_person() {
        let m = MemoryStore::default();
        m.insert(start(1, 7, "a@x", 10));
        m.insert(start(2, 7, "b@x", 20));
        m.insert(start(3, 7, "a@x", 30));
        m.insert(start(4, 8, "a@x", 40));
        m.insert(StartRecord {
            repair_id: 99,
            ..start(1, 7, "b@x", 50)
        });
        assert_eq!(m.started_by_who(7, "a@x", 10), vec![(30, 3), (10, 1)]);
        assert_eq!(m.started_by_who(7, "a@x", 1), vec![(30, 3)]);
        assert_eq!(
            m.started_by(1).unwrap().email.as_deref(),
            Some("a@x"),
            "not the repair's"
        );
        assert_eq!(m.started_by(5), None);
    }

    #[test]
    fn bounded() {
        let m = MemoryStore::default();
        for i in 0..(MAX_STARTS as i64 + 10) {
            m.insert(start(i + 1, 7, "a@x", i));
        }
        assert_eq!(m.len(), MAX_STARTS);
        assert_eq!(m.started_by(1), None, "the oldest went first");
        assert!(m.started_by(MAX_STARTS as i64 + 10).is_some());
    }
}
