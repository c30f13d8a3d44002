//! SSE streams of the run and repair routes, and their wire framing: a stream opens with an
//! optional opening event, then carries a run's updates (`event: message`), its failure
//! (`event: error`) and `: heartbeat` comments, as AppKit's `connectSSE` reads them.
//!
//! Resume ids ([`ResumeId`], sent as SSE event ids):
//! - A run or repair stream opens *before* its write is sent, with an opening data event
//!   `{status: null, timestamp, run: null, accepted: "run" | "repair"}` whose id says how to get
//!   back to the same run: `start:<idempotency token>` (a reconnect re-sends run-now with that
//!   token, and the workspace answers with the run it already started) or
//!   `repair:<runId>:<latest repair before, 0 for none>` (a reconnect finds the newer repair in
//!   the run's history, or re-sends the repair naming the same latest one, which the API
//!   refuses if the first went through). Neither needs state on the server, so a reconnect may
//!   land on any replica.
//! - Once the run is followed, ids are `<runId>:<seq>`; a reconnect with one re-attaches to the
//!   run (its job checked) and `seq` keeps counting.
//! - After the stream opened, every failure is an `event: error`, never an HTTP status, so a
//!   client that retries on an HTTP error cannot send a second write.
//! - A stream ends cleanly only after a terminal state or an error event. A shutdown
//!   (`Router::abort_all`) stops the others without an end (see [`Frame::last`]): the glue cuts
//!   their connections, so that clients reconnect, to another instance, and resume.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{JobsError, Result};
use crate::ids;
use crate::jobs::token_job_id;
use crate::poller::RunWatch;

/// Headers of every SSE response.
pub const SSE_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache, no-transform"),
    ("X-Accel-Buffering", "no"),
];
/// The comment frame sent while a stream waits.
pub const HEARTBEAT_FRAME: &str = ": heartbeat\n\n";

/// How a stream begins: the id its events carry until the run is followed, the `accepted`
/// value of its opening event (`None`: no opening event, e.g. on a resume), and the public
/// text of a failure.
pub(crate) struct Opening {
    pub(crate) id: ResumeId,
    pub(crate) accepted: Option<&'static str>,
    pub(crate) describe: fn(&JobsError) -> String,
}

/// What a `Last-Event-ID` (an event id this router sent) names: where a reconnect resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeId {
    /// `<runId>:<seq>`: a followed run, `seq` events seen.
    Run { run_id: i64, seq: u64 },
    /// `start:<token>`: a run-now sent, or about to be, with this idempotency token.
    Start { token: String },
    /// `repair:<runId>:<after>`: a repair of the run sent, or about to be, after the repair
    /// `after` (0 in the text: none).
    Repair { run_id: i64, after: Option<i64> },
}

impl ResumeId {
    /// The id from its text; anything malformed is `None`.
    pub fn parse(text: &str) -> Option<ResumeId> {
        let text = text.trim();
        if let Some(token) = text.strip_prefix("start:") {
            token_job_id(token)?;
            return Some(ResumeId::Start {
                token: token.to_string(),
            });
        }
        if let Some(rest) = text.strip_prefix("repair:") {
            let (run, after) = rest.split_once(':')?;
            let after = match after {
                "0" => None,
                other => Some(ids::parse(other)?),
            };
            return Some(ResumeId::Repair {
                run_id: ids::parse(run)?,
                after,
            });
        }
        let (run_id, seq) = parse_event_id(text)?;
        Some(ResumeId::Run { run_id, seq })
    }

    /// The run it names, 0 when not known yet (a run-now's token).
    pub fn run_id(&self) -> i64 {
        match self {
            ResumeId::Run { run_id, .. } | ResumeId::Repair { run_id, .. } => *run_id,
            ResumeId::Start { .. } => 0,
        }
    }
}

impl std::fmt::Display for ResumeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResumeId::Run { run_id, seq } => write!(f, "{run_id}:{seq}"),
            ResumeId::Start { token } => write!(f, "start:{token}"),
            ResumeId::Repair { run_id, after } => {
                write!(f, "repair:{run_id}:{}", after.unwrap_or(0))
            }
        }
    }
}

/// Opens a stream: the opening event (when `opening.accepted`), then the updates of the
/// run `start` follows once it has done its write, or its failure as an error event. With
/// an opening event, `start` waits until the glue has written it and asks for more: a
/// client gone before it saw the id to resume by (it would reconnect without one) gets
/// no write sent on its behalf. `cancel` stops it (`abort_all` cancels its parent); `active`
/// counts it while its producer lives; `heartbeat` is the silence before a `: heartbeat`.
pub(crate) fn open(
    opening: Opening,
    start: BoxFuture<'static, Result<RunWatch>>,
    cancel: CancellationToken,
    active: Arc<AtomicUsize>,
    heartbeat: Duration,
) -> EventStream {
    let (tx, rx) = mpsc::channel(16);
    let producer = Producer {
        id: opening.id.clone(),
        describe: opening.describe,
        tx,
        cancel: cancel.clone(),
        _active: ActiveGuard::new(active),
    };
    let announce = opening
        .accepted
        .map(|kind| opening_frame(&opening.id, kind));
    let (written, on_written) = match announce {
        Some(_) => {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    tokio::spawn(producer.run(on_written, start));
    EventStream {
        opening: announce.map(Box::new),
        written,
        rx,
        heartbeat,
        cancel,
        run_id: opening.id.run_id(),
    }
}

/// Counts a live producer until it is dropped.
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(counter)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Turns a stream's start (its write, then its watch) into SSE frames. Ends after a terminal
/// state or an error event, when the stream is dropped or cancelled, or on `abort_all`; the
/// watcher is dropped with it, and so is a write still in flight (a reconnect re-sends it
/// under the same resume id).
struct Producer {
    /// The id of the events sent so far: the opening id until the run is followed, then
    /// `<runId>:<seq>`.
    id: ResumeId,
    describe: fn(&JobsError) -> String,
    tx: mpsc::Sender<Frame>,
    cancel: CancellationToken,
    _active: ActiveGuard,
}

impl Producer {
    /// `written`: resolves once the opening event was written (see `open`).
    async fn run(
        mut self,
        written: Option<oneshot::Receiver<()>>,
        start: BoxFuture<'static, Result<RunWatch>>,
    ) {
        let cancel = self.cancel.clone();
        let tx = self.tx.clone();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tx.closed() => {}
            _ = self.produce(written, start) => {}
        }
    }

    async fn produce(
        &mut self,
        written: Option<oneshot::Receiver<()>>,
        start: BoxFuture<'static, Result<RunWatch>>,
    ) {
        if let Some(written) = written {
            if written.await.is_err() {
                return; // the stream was dropped first
            }
        }
        let mut watch = match start.await {
            Ok(watch) => watch,
            Err(e) => return self.send_error(&e).await,
        };
        // The start's own wording (e.g. "Failed to trigger job run") is for the start only.
        self.describe = JobsError::public_message;
        let run_id = watch.run_id();
        let mut seq = match self.id {
            ResumeId::Run { seq, .. } => seq,
            _ => 0,
        };
        let mut first = true;
        while let Some(item) = watch.next().await {
            match item {
                Ok(update) => {
                    // The job's cached reads were dropped once, when the shared poll published
                    // this update (see `Jobs::new`), not once per stream.
                    seq += 1;
                    self.id = ResumeId::Run { run_id, seq };
                    // The run's text is the poll's own, shared by every watcher of this
                    // update: splice it in rather than serializing the run per stream.
                    let frame = Frame {
                        text: update_frame(
                            &self.id.to_string(),
                            &update.run_json,
                            &update.meta_json,
                            &update.status,
                            update.timestamp,
                        ),
                        status: update.status.clone(),
                        error: None,
                        last: update.terminal,
                        run_id: first.then_some(run_id),
                    };
                    first = false;
                    if self.tx.send(frame).await.is_err() {
                        return;
                    }
                    if update.terminal {
                        return;
                    }
                }
                Err(e) => return self.send_error(&e).await,
            }
        }
    }

    async fn send_error(&mut self, e: &JobsError) {
        if let ResumeId::Run { run_id, seq } = self.id {
            self.id = ResumeId::Run {
                run_id,
                seq: seq + 1,
            };
        }
        let frame = Frame {
            text: error_frame(&self.id.to_string(), &(self.describe)(e), &e.code()),
            status: None,
            error: Some(e.code()),
            last: true,
            run_id: None,
        };
        let _ = self.tx.send(frame).await;
    }
}

/// One chunk of an SSE response, and what it says (for telemetry and the glue).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The text to write.
    pub text: String,
    /// The run's state, for an update event.
    pub status: Option<String>,
    /// The error code, for an `event: error`.
    pub error: Option<String>,
    /// The stream's last frame (a terminal state or an error): only after it may a response
    /// end cleanly. A stream that stops without one was cut short (a shutdown), and its
    /// connection must be cut too, so that the client reconnects and resumes.
    pub last: bool,
    /// The run followed, on the stream's first update.
    pub run_id: Option<i64>,
}

/// An open SSE response: pull framed text chunks with [`EventStream::next`] until `None`.
/// Dropping it (or [`EventStream::cancel`]) stops the watcher; the run goes on.
#[derive(Debug)]
pub struct EventStream {
    /// The opening event, until `next` hands it out (boxed: most streams have none).
    opening: Option<Box<Frame>>,
    /// Tells the producer the opening event was written: fired by the `next` after it.
    written: Option<oneshot::Sender<()>>,
    rx: mpsc::Receiver<Frame>,
    heartbeat: Duration,
    cancel: CancellationToken,
    run_id: i64,
}

impl EventStream {
    /// The next chunk to write: an event, an error event, or a `: heartbeat` comment after a
    /// silence of the configured interval. `None` once the stream is over.
    pub async fn next(&mut self) -> Option<Frame> {
        if self.cancel.is_cancelled() {
            self.rx.close();
            return None;
        }
        if let Some(opening) = self.opening.take() {
            return Some(*opening);
        }
        if let Some(written) = self.written.take() {
            let _ = written.send(());
        }
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => { self.rx.close(); None }
            item = self.rx.recv() => item,
            _ = tokio::time::sleep(self.heartbeat) => Some(Frame {
                text: HEARTBEAT_FRAME.to_string(),
                status: None,
                error: None,
                last: false,
                run_id: None,
            }),
        }
    }

    /// The opening event, for a glue that writes it itself before pulling the rest (the
    /// next `next` then starts the stream's write); `None` when the stream has none.
    pub fn take_opening(&mut self) -> Option<Frame> {
        self.opening.take().map(|f| *f)
    }

    /// Stops the stream: the watcher is dropped at once and `next` answers `None`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The run this stream follows, 0 while a run-now's is not known yet.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// A handle that cancels this stream from elsewhere (while `next` is pending).
    pub fn canceller(&self) -> StreamCanceller {
        StreamCanceller(self.cancel.clone())
    }
}

/// Cancels one [`EventStream`] without access to it.
#[derive(Debug, Clone)]
pub struct StreamCanceller(CancellationToken);

impl StreamCanceller {
    pub fn cancel(&self) {
        self.0.cancel();
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `<runId>:<seq>` with a positive run id; anything else is `None`.
pub fn parse_event_id(id: &str) -> Option<(i64, u64)> {
    let (run, seq) = id.trim().split_once(':')?;
    let run_id = ids::parse(run)?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((run_id, seq.parse().ok()?))
}

/// The opening event of a stream, sent before its write: no state yet, only what was accepted.
fn opening_frame(id: &ResumeId, accepted: &'static str) -> Frame {
    let data = json!({
        "status": null,
        "timestamp": now_ms(),
        "run": null,
        "accepted": accepted,
    });
    Frame {
        text: message_frame(&id.to_string(), &data),
        status: None,
        error: None,
        last: false,
        run_id: None,
    }
}

/// Now, in epoch milliseconds (the `timestamp` of an event).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn message_frame(id: &str, data: &Value) -> String {
    format!("id: {id}\nevent: message\ndata: {data}\n\n")
}

/// The frame of one update, `data: {"changes":...,"progress":...,"run":<run_json>,"status":...,
/// "timestamp":...}` (the key order `serde_json` gives the same object), from the ready-made
/// JSON texts of the run and of its `meta_json` (an object whose fields come first).
pub fn update_frame(
    id: &str,
    run_json: &str,
    meta_json: &str,
    status: &Option<String>,
    timestamp: i64,
) -> String {
    let status = match status {
        Some(s) => Value::String(s.clone()).to_string(),
        None => "null".to_string(),
    };
    let meta = meta_json
        .trim()
        .strip_prefix('{')
        .and_then(|m| m.strip_suffix('}'))
        .unwrap_or("")
        .trim();
    let mut frame =
        String::with_capacity(run_json.len() + meta.len() + status.len() + id.len() + 80);
    frame.push_str("id: ");
    frame.push_str(id);
    frame.push_str("\nevent: message\ndata: {");
    if !meta.is_empty() {
        frame.push_str(meta);
        frame.push(',');
    }
    frame.push_str("\"run\":");
    frame.push_str(run_json);
    frame.push_str(",\"status\":");
    frame.push_str(&status);
    frame.push_str(",\"timestamp\":");
    frame.push_str(&timestamp.to_string());
    frame.push_str("}\n\n");
    frame
}

pub fn error_frame(id: &str, message: &str, code: &str) -> String {
    format!(
        "id: {id}\nevent: error\ndata: {}\n\n",
        json!({ "error": message, "code": code })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_carry_the_run() {
        assert_eq!(ResumeId::Run { run_id: 42, seq: 3 }.to_string(), "42:3");
        assert_eq!(parse_event_id("42:3"), Some((42, 3)));
        assert_eq!(parse_event_id(" 42:0 "), Some((42, 0)));
        for bad in [
            "", "42", ":3", "42:", "0:1", "-4:1", "a:1", "42:x", "42:-1", "1e3:1", "42:3:4",
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn spliced_update_frames_equal_serialized_ones() {
        let run = json!({"run_id": 7, "state": {"life_cycle_state": "RUNNING", "state_message": "a \"q\" \u{2028}"}, "tasks": [{"n": 1.5}]});
        let text = serde_json::to_string(&run).unwrap();
        for status in [
            Some("RUNNING".to_string()),
            Some("we\"ird\n".to_string()),
            None,
        ] {
            let spliced = update_frame("7:3", &text, "{}", &status, 1_700_000_000_123);
            let serialized = message_frame(
                "7:3",
                &json!({"status": status, "timestamp": 1_700_000_000_123i64, "run": run}),
            );
            assert_eq!(spliced, serialized);
            let meta =
                json!({"changes": {"tasks": [{"taskKey": "a"}]}, "progress": {"fraction": 0.5}});
            let spliced = update_frame("7:3", &text, &meta.to_string(), &status, 1);
            let serialized = message_frame(
                "7:3",
                &json!({"changes": meta["changes"], "progress": meta["progress"], "status": status, "timestamp": 1, "run": run}),
            );
            assert_eq!(spliced, serialized);
        }
    }

    #[test]
    fn frames_follow_appkit_framing() {
        let f = message_frame(
            "7:1",
            &json!({"status": "RUNNING", "timestamp": 1, "run": {"run_id": 7}}),
        );
        assert_eq!(f, "id: 7:1\nevent: message\ndata: {\"run\":{\"run_id\":7},\"status\":\"RUNNING\",\"timestamp\":1}\n\n");
        let e = error_frame("7:2", "Service Unavailable", "TEMPORARY_UNAVAILABLE");
        assert!(e.starts_with("id: 7:2\nevent: error\ndata: {"));
        let data: Value =
            serde_json::from_str(e.lines().nth(2).unwrap().trim_start_matches("data: ")).unwrap();
        assert_eq!(
            data,
            json!({"error": "Service Unavailable", "code": "TEMPORARY_UNAVAILABLE"})
        );
    }
}
