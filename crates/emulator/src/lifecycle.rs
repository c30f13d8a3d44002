//! The workspace clock and the vocabulary of run states: life-cycle states, results, what
//! `set_run_state` forces, and a run's or task run's situation at an instant ([`Snap`]).
//! Nothing here knows about jobs or runs; the graph schedule and the store build on it.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Virtual time in milliseconds since the emulator started, advancing `scale` times real time.
pub(crate) struct Clock {
    start_epoch_ms: i64,
    anchor: Instant,
    anchor_v: f64,
    scale: f64,
}

impl Clock {
    pub fn new(scale: f64) -> Clock {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
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
    /// Epoch milliseconds of virtual instant `v`.
    pub fn epoch_ms(&self, v: f64) -> i64 {
        self.start_epoch_ms + whole_ms(v)
    }
    /// The workspace's time of day now, as an HTTP `Date` (RFC 7231): clients measure a run's
    /// elapsed time as this minus its `start_time`, so it must be virtual time too.
    pub fn http_date(&self) -> String {
        let ms = self.epoch_ms(self.now()).max(0) as u64;
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
    }
}

/// Whole milliseconds of a virtual duration or instant. Scaled durations (seeded history)
/// come out a hair under the whole number they add up to; that hair is not a millisecond.
pub(crate) fn whole_ms(v: f64) -> i64 {
    (v + 1e-6).floor() as i64
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

/// How a run or a task run ended. The first seven can be asked for in a job spec; the last
/// three are what the graph gives a task whose `run_if` does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    SuccessWithFailures,
    Failed,
    TimedOut,
    Canceled,
    Skipped,
    InternalError,
    UpstreamFailed,
    UpstreamCanceled,
    Excluded,
}

impl Outcome {
    /// An outcome a spec may name (not the upstream ones, which only the graph decides).
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
            Outcome::Skipped
            | Outcome::UpstreamFailed
            | Outcome::UpstreamCanceled
            | Outcome::Excluded => Life::Skipped,
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
            Outcome::UpstreamFailed => Some("UPSTREAM_FAILED"),
            Outcome::UpstreamCanceled => Some("UPSTREAM_CANCELED"),
            Outcome::Excluded => Some("EXCLUDED"),
        }
    }
    /// Whether a task that ended so counts as succeeded for its dependents and the run
    /// (an excluded task is skipped but "treated as successful", per the docs).
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            Outcome::Success | Outcome::SuccessWithFailures | Outcome::Excluded | Outcome::Skipped
        )
    }
    /// Whether the task actually ran (was not skipped by the graph or the run).
    pub fn executed(self) -> bool {
        !matches!(
            self,
            Outcome::Skipped
                | Outcome::UpstreamFailed
                | Outcome::UpstreamCanceled
                | Outcome::Excluded
        )
    }
    /// Whether it ended by a cancel, its own or an upstream one.
    pub fn is_cancel(self) -> bool {
        matches!(self, Outcome::Canceled | Outcome::UpstreamCanceled)
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
            // The termination code SKIPPED is documented as "never executed, for example,
            // if the upstream task run failed, the dependency type condition was not met".
            Outcome::UpstreamFailed => (
                "SKIPPED",
                "SUCCESS",
                "Skipped: an upstream task did not succeed.",
            ),
            Outcome::UpstreamCanceled => (
                "SKIPPED",
                "SUCCESS",
                "Skipped: an upstream task was canceled.",
            ),
            Outcome::Excluded => (
                "SKIPPED",
                "SUCCESS",
                "Excluded: the run_if condition was not met.",
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

/// A run's or task run's situation at an instant. Offsets are virtual ms from the start of
/// the attempt it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Snap {
    pub life: Life,
    pub outcome: Option<Outcome>,
    pub user_cancelled: bool,
    pub attempt: u32,
    /// When it left BLOCKED (`None`: it has not, so `start_time` is 0).
    pub begin: Option<f64>,
    /// When it ended, for terminal states.
    pub end_e: Option<f64>,
    pub queue_d: f64,
    pub setup_d: f64,
    pub exec_d: f64,
    pub cleanup_d: f64,
}

impl Snap {
    pub fn new(life: Life, begin: Option<f64>) -> Snap {
        Snap {
            life,
            outcome: None,
            user_cancelled: false,
            attempt: 0,
            begin,
            end_e: None,
            queue_d: 0.0,
            setup_d: 0.0,
            exec_d: 0.0,
            cleanup_d: 0.0,
        }
    }
    /// Counts `d` ms spent in `life` towards the phase durations.
    pub fn add(&mut self, life: Life, d: f64) {
        match life {
            Life::Queued => self.queue_d += d,
            Life::Pending => self.setup_d += d,
            Life::Running => self.exec_d += d,
            Life::Terminating => self.cleanup_d += d,
            _ => {}
        }
    }
    /// Ends it with `outcome` at offset `at`.
    pub fn end(&mut self, outcome: Outcome, at: f64) {
        self.life = outcome.life();
        self.outcome = Some(outcome);
        self.end_e = Some(at);
    }
    pub fn is_active(&self) -> bool {
        self.begin.is_some() && !self.life.is_terminal()
    }
}
