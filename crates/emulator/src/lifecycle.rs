//! The life-cycle clock: virtual time, and where a run stands in its life cycle at a given
//! instant, computed from its job's plan (no task per run).
use std::time::Instant;

use crate::store::{Plan, RunRec};

/// Virtual time in milliseconds since the emulator started, advancing `scale` times real time.
pub(crate) struct Clock {
    start_epoch_ms: i64,
    anchor: Instant,
    anchor_v: f64,
    scale: f64,
}

impl Clock {
    pub fn new(scale: f64) -> Clock {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock {
            start_epoch_ms: epoch,
            anchor: Instant::now(),
            anchor_v: 0.0,
            scale,
        }
    }
    pub fn now(&self) -> f64 {
        self.anchor_v + self.anchor.elapsed().as_secs_f64() * 1000.0 * self.scale
    }
    pub fn set_scale(&mut self, scale: f64) {
        let now = self.now();
        self.anchor = Instant::now();
        self.anchor_v = now;
        self.scale = scale;
    }
    pub fn advance(&mut self, ms: f64) {
        self.anchor_v += ms;
    }
    pub fn epoch_ms(&self, v: f64) -> i64 {
        self.start_epoch_ms + v.floor() as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Queued,
    Pending,
    Running,
    Terminating,
    Terminated,
    Skipped,
    InternalError,
    WaitingForRetry,
    Blocked,
}

impl Life {
    pub fn as_str(self) -> &'static str {
        match self {
            Life::Queued => "QUEUED",
            Life::Pending => "PENDING",
            Life::Running => "RUNNING",
            Life::Terminating => "TERMINATING",
            Life::Terminated => "TERMINATED",
            Life::Skipped => "SKIPPED",
            Life::InternalError => "INTERNAL_ERROR",
            Life::WaitingForRetry => "WAITING_FOR_RETRY",
            Life::Blocked => "BLOCKED",
        }
    }
    /// The V2 `status.state`.
    pub fn v2(self) -> &'static str {
        match self {
            Life::Queued => "QUEUED",
            Life::Pending => "PENDING",
            Life::Running => "RUNNING",
            Life::Terminating => "TERMINATING",
            Life::Terminated | Life::Skipped | Life::InternalError => "TERMINATED",
            Life::WaitingForRetry => "WAITING",
            Life::Blocked => "BLOCKED",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Life::Terminated | Life::Skipped | Life::InternalError)
    }
    pub(crate) fn message(self) -> &'static str {
        match self {
            Life::Queued => "Waiting in the job queue.",
            Life::Pending => "Waiting for cluster.",
            Life::Running => "In run",
            Life::Terminating => "Terminating the run.",
            Life::WaitingForRetry => "Waiting for retry.",
            Life::Blocked => "Blocked by an upstream run.",
            _ => "",
        }
    }
}

/// How a run ends when left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    SuccessWithFailures,
    Failed,
    TimedOut,
    Canceled,
    Skipped,
    InternalError,
}

impl Outcome {
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s.to_ascii_uppercase().as_str() {
            "SUCCESS" => Outcome::Success,
            "SUCCESS_WITH_FAILURES" => Outcome::SuccessWithFailures,
            "FAILED" => Outcome::Failed,
            "TIMEDOUT" | "TIMED_OUT" => Outcome::TimedOut,
            "CANCELED" | "CANCELLED" => Outcome::Canceled,
            "SKIPPED" => Outcome::Skipped,
            "INTERNAL_ERROR" => Outcome::InternalError,
            _ => return None,
        })
    }
    pub fn life(self) -> Life {
        match self {
            Outcome::Skipped => Life::Skipped,
            Outcome::InternalError => Life::InternalError,
            _ => Life::Terminated,
        }
    }
    pub fn result_state(self) -> Option<&'static str> {
        match self {
            Outcome::Success => Some("SUCCESS"),
            Outcome::SuccessWithFailures => Some("SUCCESS_WITH_FAILURES"),
            Outcome::Failed | Outcome::InternalError => Some("FAILED"),
            Outcome::TimedOut => Some("TIMEDOUT"),
            Outcome::Canceled => Some("CANCELED"),
            Outcome::Skipped => None,
        }
    }
    /// `(code, type, message)` of `status.termination_details`.
    pub(crate) fn termination(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Outcome::Success => ("SUCCESS", "SUCCESS", ""),
            Outcome::SuccessWithFailures => {
                ("SUCCESS_WITH_FAILURES", "SUCCESS", "Some tasks failed.")
            }
            Outcome::Failed => (
                "RUN_EXECUTION_ERROR",
                "CLIENT_ERROR",
                "Workload failed, see run output for details.",
            ),
            Outcome::TimedOut => (
                "CANCELED",
                "CLIENT_ERROR",
                "The run was stopped after reaching its timeout.",
            ),
            Outcome::Canceled => ("CANCELED", "SUCCESS", "The run was canceled."),
            Outcome::Skipped => ("SKIPPED", "SUCCESS", "The run was skipped."),
            Outcome::InternalError => (
                "INTERNAL_ERROR",
                "INTERNAL_ERROR",
                "An unexpected error occurred while running the job.",
            ),
        }
    }
}

/// What `set_run_state` forces.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Forced {
    /// Stay in this active state until told otherwise (or canceled).
    Pin(Life),
    /// End now with this outcome.
    End(Outcome),
}

impl Forced {
    pub fn parse(s: &str, default_outcome: Outcome) -> Option<Forced> {
        let up = s.to_ascii_uppercase();
        Some(match up.as_str() {
            "QUEUED" => Forced::Pin(Life::Queued),
            "PENDING" => Forced::Pin(Life::Pending),
            "RUNNING" => Forced::Pin(Life::Running),
            "TERMINATING" => Forced::Pin(Life::Terminating),
            "WAITING_FOR_RETRY" => Forced::Pin(Life::WaitingForRetry),
            "BLOCKED" => Forced::Pin(Life::Blocked),
            "TERMINATED" => Forced::End(default_outcome),
            other => Forced::End(Outcome::parse(other)?),
        })
    }
}

/// The run's situation at a given instant.
#[derive(Debug, Clone)]
pub(crate) struct Snap {
    pub life: Life,
    pub outcome: Option<Outcome>,
    pub user_cancelled: bool,
    pub attempt: u32,
    /// Elapsed virtual ms at the end, for terminal states.
    pub end_e: Option<f64>,
    pub queue_d: f64,
    pub setup_d: f64,
    pub exec_d: f64,
    pub cleanup_d: f64,
}

impl Snap {
    fn new() -> Snap {
        Snap {
            life: Life::Queued,
            outcome: None,
            user_cancelled: false,
            attempt: 0,
            end_e: None,
            queue_d: 0.0,
            setup_d: 0.0,
            exec_d: 0.0,
            cleanup_d: 0.0,
        }
    }
    fn add(&mut self, life: Life, d: f64) {
        match life {
            Life::Queued => self.queue_d += d,
            Life::Pending => self.setup_d += d,
            Life::Running => self.exec_d += d,
            Life::Terminating => self.cleanup_d += d,
            _ => {}
        }
    }
}

/// The natural timeline of a plan at elapsed virtual time `e`.
fn walk(plan: &Plan, e: f64) -> Snap {
    let mut segs: Vec<(Life, f64)> = Vec::with_capacity(6 + 3 * plan.retries as usize);
    segs.push((Life::Queued, plan.queue));
    if plan.outcome != Outcome::Skipped {
        for _ in 0..plan.retries {
            segs.push((Life::Pending, plan.pending));
            segs.push((Life::Running, plan.running));
            segs.push((Life::WaitingForRetry, plan.retry_wait));
        }
        segs.push((Life::Pending, plan.pending));
        segs.push((Life::Running, plan.running));
        if plan.outcome != Outcome::InternalError {
            segs.push((Life::Terminating, plan.terminating));
        }
    }
    let mut snap = Snap::new();
    let mut t = 0.0;
    for (life, d) in segs {
        if e < t + d {
            snap.life = life;
            snap.add(life, (e - t).max(0.0));
            return snap;
        }
        snap.add(life, d);
        t += d;
        if life == Life::WaitingForRetry {
            snap.attempt += 1;
        }
    }
    snap.life = plan.outcome.life();
    snap.outcome = Some(plan.outcome);
    snap.end_e = Some(t);
    snap
}

impl RunRec {
    pub fn job_id(&self) -> i64 {
        self.job.id
    }
    pub fn task_count(&self) -> usize {
        self.job.tasks.len()
    }
    /// Whether `id` is this run or one of its task runs.
    pub fn owns(&self, id: i64) -> bool {
        id >= self.run_id && id <= self.run_id + self.task_count() as i64
    }

    fn cancel_grace(&self) -> f64 {
        if self.job.plan.terminating > 0.0 {
            self.job.plan.terminating
        } else {
            200.0
        }
    }

    /// The plan of the current attempt: the job's, or a repair's (no queue, no retries, the
    /// repaired tasks' outcome).
    pub fn plan(&self) -> Plan {
        match &self.repair {
            None => self.job.plan,
            Some(repair) => Plan {
                queue: 0.0,
                retries: 0,
                outcome: repair.outcome,
                ..self.job.plan
            },
        }
    }

    /// Timeline with a pin applied, ignoring cancel and forced ends.
    fn base(&self, e: f64) -> Snap {
        let plan = self.plan();
        match self.forced {
            Some((Forced::Pin(life), at_v)) => {
                let at = at_v - self.attempt_v;
                if e < at {
                    return walk(&plan, e);
                }
                let mut s = walk(&plan, at);
                s.life = life;
                s.outcome = None;
                s.end_e = None;
                s.add(life, e - at);
                s
            }
            _ => walk(&plan, e),
        }
    }

    /// The current attempt's state at `now_v` (virtual ms); `end_e` is counted from
    /// `attempt_v`.
    pub fn snapshot(&self, now_v: f64) -> Snap {
        let e = (now_v - self.attempt_v).max(0.0);
        if let Some((Forced::End(outcome), at_v)) = self.forced {
            let at = (at_v - self.attempt_v).max(0.0);
            let natural = walk(&self.plan(), at);
            let end = natural.end_e.unwrap_or(at);
            let mut s = natural;
            s.life = outcome.life();
            s.outcome = Some(outcome);
            s.end_e = Some(end);
            return s;
        }
        if let Some(cv) = self.cancel_v {
            let c = (cv - self.attempt_v).max(0.0);
            if e >= c {
                let mut s = self.base(c);
                let grace = self.cancel_grace();
                if e < c + grace {
                    s.life = Life::Terminating;
                    s.cleanup_d += e - c;
                } else {
                    s.cleanup_d += grace;
                    s.life = Life::Terminated;
                    s.outcome = Some(Outcome::Canceled);
                    s.user_cancelled = true;
                    s.end_e = Some(c + grace);
                }
                return s;
            }
        }
        self.base(e)
    }

    pub fn is_active(&self, now_v: f64) -> bool {
        !self.snapshot(now_v).life.is_terminal()
    }
}
