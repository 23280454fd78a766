//! The consume loop against fake streams: a scripted partition log that behaves like the SPU and the 0.50
//! client (records larger than max-bytes skipped, a stream that waits for the records it skipped, silent
//! ends, SmartModule errors), and outputs that check every commit against what was delivered.

use super::reread::STALL_RETRIES;
use super::settings::tests::meta;
use super::*;
use bytesize::ByteSize;
use fvision_records::{RejectReason, Stage};
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use fluvio::consumer::ConsumerBoxFuture;
use fluvio::dataplane::record::{Batch, Record as DataRecord};

/// One stored record.
#[derive(Debug, Clone)]
enum Entry {
    /// A record that fits, with its value.
    Fits(&'static str),
    /// A record of this many bytes (more than the fake max-bytes).
    Big(usize),
    /// The SmartModule fails on it (the SPU reports an error).
    Trap,
    /// Nothing comes back for it, raw or not (a lost SPU).
    Lost,
    /// The main stream ends before it and re-reads bring nothing `Log::slow_rereads` times (a busy SPU);
    /// a probe reads it.
    Slow(&'static str),
}

const MAX_BYTES: usize = 1024;

#[derive(Default)]
struct Log {
    partitions: Vec<Vec<Entry>>,
    committed: HashMap<u32, i64>,
    /// The main stream skips these offsets once, as the 0.50 client does at a cut fetch.
    skip_once: Vec<(u32, i64)>,
    /// The main stream ends silently before this offset once.
    end_once: Option<(u32, i64)>,
    opened: Vec<StreamStart>,
    /// Set `stop` when a re-read opens.
    stop_on_reread: Option<Arc<Stop>>,
    /// A commit that covered an offset not delivered (partition, committed offset, missing offset).
    violations: Vec<(u32, i64, i64)>,
    commits: Vec<HashMap<u32, i64>>,
    /// Re-reads of a `Slow` entry that still bring nothing.
    slow_rereads: u32,
}

/// What the outputs got: records through the pipeline and dead letters by reference.
#[derive(Default)]
struct FakeOutputs {
    names: Mutex<Vec<String>>,
    dead: Mutex<Vec<RejectedImage>>,
    delivered: AtomicU64,
    delivered_changed: tokio::sync::Notify,
}

impl FakeOutputs {
    fn has(&self, name: &str) -> bool {
        self.names.lock().unwrap().iter().any(|n| n == name)
            || self.dead.lock().unwrap().iter().any(|d| d.record.as_deref() == Some(name))
    }
}

impl Barrier for Arc<FakeOutputs> {
    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }
    async fn delivered_reach(&self, count: u64) {
        loop {
            let changed = self.delivered_changed.notified();
            if self.delivered() >= count {
                return;
            }
            changed.await;
        }
    }
    async fn acknowledge(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
    fn dead_letter(&self, _name: &str, _at: SourcePosition, rejected: RejectedImage) -> Result<(), DeliveryError> {
        self.dead.lock().unwrap().push(rejected);
        self.delivered.fetch_add(1, Ordering::AcqRel);
        self.delivered_changed.notify_waiters();
        Ok(())
    }
}

enum Step {
    Yield(Record),
    Fail(ErrorCode),
    /// Waits for records that never come (the client counts the records it expects).
    Stall,
}

struct FakeStream {
    steps: VecDeque<Step>,
    seen: HashMap<u32, i64>,
    log: Arc<Mutex<Log>>,
    outputs: Arc<FakeOutputs>,
}

impl futures_util::Stream for FakeStream {
    type Item = Result<Record, ErrorCode>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.steps.pop_front() {
            None => Poll::Ready(None),
            Some(Step::Stall) => {
                self.steps.push_front(Step::Stall);
                Poll::Pending // the loop's timer polls again
            }
            Some(Step::Fail(code)) => Poll::Ready(Some(Err(code))),
            Some(Step::Yield(record)) => {
                self.seen.insert(record.partition(), record.offset());
                Poll::Ready(Some(Ok(record)))
            }
        }
    }
}

impl ConsumerStream for FakeStream {
    fn offset_commit(&mut self) -> ConsumerBoxFuture<'_> {
        let mut log = self.log.lock().unwrap();
        for (&partition, &offset) in &self.seen {
            let first = log.commits.last().and_then(|c| c.get(&partition)).map_or(0, |c| c + 1);
            for missing in (first..=offset).filter(|&o| !self.outputs.has(&format!("t/{partition}@{o}"))) {
                log.violations.push((partition, offset, missing));
            }
            log.committed.insert(partition, offset);
        }
        let committed = log.committed.clone();
        log.commits.push(committed);
        Box::pin(async { Ok(()) })
    }
    fn offset_flush(&mut self) -> ConsumerBoxFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

fn record(partition: u32, offset: i64, value: Vec<u8>) -> Record {
    let mut batch = Batch::default();
    batch.add_record(DataRecord::new(value));
    batch.set_base_offset(offset);
    batch.into_consumer_records_iter(partition).next().unwrap()
}

struct FakeSource {
    log: Arc<Mutex<Log>>,
    outputs: Arc<FakeOutputs>,
}

impl FakeSource {
    /// The steps of a stream over `partition` from `from`, as the SPU (with the SmartModule) sends them.
    fn steps(log: &mut Log, partition: u32, from: i64, main: bool) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut skipped = false;
        let entries = log.partitions[partition as usize].clone();
        for (offset, entry) in entries.iter().enumerate().skip(from.max(0) as usize) {
            let offset = offset as i64;
            if main && log.end_once == Some((partition, offset)) {
                log.end_once = None;
                return steps;
            }
            if main && log.skip_once.contains(&(partition, offset)) {
                log.skip_once.retain(|&s| s != (partition, offset));
                continue;
            }
            match entry {
                Entry::Fits(value) => steps.push(Step::Yield(record(partition, offset, value.as_bytes().to_vec()))),
                Entry::Big(_) => skipped = true,
                Entry::Trap => {
                    steps.push(Step::Fail(ErrorCode::Other("SmartModule trapped".into())));
                    return steps;
                }
                Entry::Lost => return steps,
                Entry::Slow(_) if main => return steps,
                Entry::Slow(_) if log.slow_rereads > 0 => {
                    log.slow_rereads -= 1;
                    steps.push(Step::Stall);
                    return steps;
                }
                Entry::Slow(value) => steps.push(Step::Yield(record(partition, offset, value.as_bytes().to_vec()))),
            }
        }
        if skipped {
            steps.push(Step::Stall);
        }
        steps
    }
}

impl Source for FakeSource {
    async fn open(&mut self, start: StreamStart) -> Result<BoxedStream, ConsumeError> {
        let mut log = self.log.lock().unwrap();
        log.opened.push(start);
        let steps = match start {
            StreamStart::Committed => {
                let mut steps = Vec::new();
                for partition in 0..log.partitions.len() as u32 {
                    let from = log.committed.get(&partition).map_or(0, |c| c + 1);
                    steps.extend(Self::steps(&mut log, partition, from, true));
                }
                steps
            }
            StreamStart::At { partition, offset } => {
                if let Some(stop) = &log.stop_on_reread {
                    stop.request();
                }
                Self::steps(&mut log, partition, offset, false)
            }
            StreamStart::Probe { partition, offset } => match &log.partitions[partition as usize][offset as usize] {
                Entry::Fits(value) | Entry::Slow(value) => {
                    vec![Step::Yield(record(partition, offset, value.as_bytes().to_vec()))]
                }
                Entry::Big(size) => vec![Step::Yield(record(partition, offset, vec![b'x'; *size]))],
                Entry::Trap => vec![Step::Yield(record(partition, offset, b"trap".to_vec()))],
                Entry::Lost => vec![],
            },
        };
        let stream = FakeStream {
            steps: steps.into(),
            seen: HashMap::new(),
            log: Arc::clone(&self.log),
            outputs: Arc::clone(&self.outputs),
        };
        Ok(Box::pin(stream))
    }

    async fn positions(&mut self, committed: bool) -> Result<BTreeMap<u32, Position>, ConsumeError> {
        let log = self.log.lock().unwrap();
        Ok((0..log.partitions.len() as u32)
            .map(|p| {
                let committed = log.committed.get(&p).copied().filter(|_| committed);
                (p, Position { start: 0, end: log.partitions[p as usize].len() as i64, committed })
            })
            .collect())
    }
}

fn fake_settings() -> ConsumeSettings {
    let mut settings =
        ConsumeSettings::from_meta(&meta("  {version: 0.1.0, name: s, type: t, topic: {meta: {name: t}}}"));
    settings.max_bytes = ByteSize::b(MAX_BYTES as u64);
    settings.read_timeout = Duration::from_millis(200);
    settings.commit_interval = Duration::ZERO; // a barrier after every record: commit order is checked each time
    settings.drain = true;
    settings
}

/// Runs the loop over `log` with a pipeline that delivers every item; returns the result, the log and the
/// outputs.
fn run(
    log: Log,
    settings: &ConsumeSettings,
    stop: Arc<Stop>,
) -> (Result<ConsumeReport, ConsumeError>, Log, Arc<FakeOutputs>) {
    run_with(log, settings, stop, true)
}

/// [`run`], with a pipeline that delivers nothing unless `deliver`.
fn run_with(
    log: Log,
    settings: &ConsumeSettings,
    stop: Arc<Stop>,
    deliver: bool,
) -> (Result<ConsumeReport, ConsumeError>, Log, Arc<FakeOutputs>) {
    let log = Arc::new(Mutex::new(log));
    let outputs = Arc::new(FakeOutputs::default());
    let (tx, rx) = async_channel::bounded::<Item>(4);
    let pipeline = {
        let outputs = Arc::clone(&outputs);
        std::thread::spawn(move || {
            while let Ok(item) = rx.recv_blocking() {
                if !deliver {
                    continue;
                }
                std::thread::sleep(Duration::from_millis(1));
                outputs.names.lock().unwrap().push(item.name);
                outputs.delivered.fetch_add(1, Ordering::AcqRel);
                outputs.delivered_changed.notify_waiters();
            }
        })
    };
    let mut source = FakeSource { log: Arc::clone(&log), outputs: Arc::clone(&outputs) };
    let result = fluvio_future::task::run_block_on(consume(&mut source, tx, &outputs, settings, &stop));
    pipeline.join().unwrap();
    let log = std::mem::take(&mut *log.lock().unwrap());
    (result, log, outputs)
}

fn fits(n: usize) -> Vec<Entry> {
    const VALUES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
    VALUES.iter().take(n).map(|v| Entry::Fits(v)).collect()
}

fn delivered(outputs: &FakeOutputs) -> Vec<String> {
    outputs.names.lock().unwrap().clone()
}

#[test]
fn a_gap_is_reread_before_the_record_after_it_and_commits_follow_delivery() {
    let log = Log { partitions: vec![fits(6)], skip_once: vec![(0, 2), (0, 3)], ..Log::default() };
    let (result, log, outputs) = run(log, &fake_settings(), Arc::default());
    let report = result.unwrap();
    assert_eq!(delivered(&outputs), ["t/0@0", "t/0@1", "t/0@2", "t/0@3", "t/0@4", "t/0@5"], "in order, once each");
    assert!(log.opened.contains(&StreamStart::At { partition: 0, offset: 2 }), "{:?}", log.opened);
    assert_eq!(log.violations, vec![], "no commit covered an undelivered record");
    assert_eq!(log.commits.len(), 4, "a barrier after every record the stream yielded: {:?}", log.commits);
    assert_eq!(log.committed.get(&0), Some(&5));
    assert_eq!(report.consumed, 6);
}

#[test]
fn an_error_mid_stream_stops_without_committing_past_it() {
    let mut entries = fits(2);
    entries.extend([Entry::Trap, Entry::Fits("d")]);
    let (result, log, outputs) =
        run(Log { partitions: vec![entries], ..Log::default() }, &fake_settings(), Arc::default());
    let error = result.unwrap_err();
    assert!(
        matches!(&error, ConsumeError::Stream { source, .. } if source.to_string().contains("SmartModule trapped")),
        "{error}"
    );
    assert_eq!(delivered(&outputs), ["t/0@0", "t/0@1"]);
    assert!(log.committed.get(&0).is_none_or(|&c| c < 2), "committed {:?}", log.committed);
    assert_eq!(log.violations, vec![]);
}

#[test]
fn a_record_larger_than_max_bytes_before_the_first_record_is_a_dead_letter_by_reference() {
    let entries = vec![Entry::Big(4 * MAX_BYTES), Entry::Fits("image")];
    let (result, log, outputs) =
        run(Log { partitions: vec![entries], ..Log::default() }, &fake_settings(), Arc::default());
    let report = result.unwrap();
    let dead = outputs.dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (reason, stage) = (dead[0].reason, dead[0].stage);
    assert_eq!((reason, stage), (RejectReason::TooLarge, Stage::Ingest));
    assert_eq!(dead[0].record.as_deref(), Some("t/0@0"));
    assert_eq!(dead[0].payload_size, Some(4 * MAX_BYTES as u64));
    assert!(dead[0].payload_truncated && dead[0].payload.to_bytes().unwrap().is_empty());
    assert!(dead[0].detail.contains("max-bytes"), "{}", dead[0].detail);
    assert_eq!(delivered(&outputs), ["t/0@1"]);
    assert_eq!(log.committed.get(&0), Some(&1));
    assert_eq!(log.violations, vec![]);
    assert_eq!((report.consumed, report.too_large), (2, 1));
}

#[test]
fn a_record_that_fits_is_read_again_when_a_busy_spu_brings_nothing_for_a_while() {
    let entries = vec![Entry::Fits("a"), Entry::Slow("late"), Entry::Fits("b")];
    let log = Log { partitions: vec![entries], slow_rereads: STALL_RETRIES, ..Log::default() };
    let (result, log, outputs) = run(log, &fake_settings(), Arc::default());
    result.unwrap();
    assert_eq!(outputs.dead.lock().unwrap().len(), 0, "a record that fits is never a dead letter for a slow read");
    assert_eq!(delivered(&outputs), ["t/0@0", "t/0@1", "t/0@2"]);
    assert_eq!(log.violations, vec![]);
}

#[test]
fn a_record_that_fits_but_never_comes_is_a_dead_letter_after_the_retries() {
    let entries = vec![Entry::Fits("a"), Entry::Slow("never"), Entry::Fits("b")];
    let log = Log { partitions: vec![entries], slow_rereads: u32::MAX, ..Log::default() };
    let (result, log, outputs) = run(log, &fake_settings(), Arc::default());
    result.unwrap();
    let dead = outputs.dead.lock().unwrap().clone();
    assert_eq!(dead.iter().map(|d| d.record.clone().unwrap()).collect::<Vec<_>>(), ["t/0@1"]);
    assert!(dead[0].detail.contains("its record batch"), "{}", dead[0].detail);
    let rereads = log.opened.iter().filter(|s| **s == StreamStart::At { partition: 0, offset: 1 }).count();
    assert_eq!(rereads as u32, STALL_RETRIES + 1, "{:?}", log.opened);
    assert_eq!(delivered(&outputs), ["t/0@0", "t/0@2"]);
    assert_eq!(log.violations, vec![]);
}

#[test]
fn a_record_larger_than_max_bytes_at_the_end_is_found_when_the_stream_waits() {
    let mut entries = fits(2);
    entries.push(Entry::Big(2 * MAX_BYTES));
    let (result, log, outputs) =
        run(Log { partitions: vec![entries], ..Log::default() }, &fake_settings(), Arc::default());
    result.unwrap();
    let dead = outputs.dead.lock().unwrap().clone();
    assert_eq!(dead.iter().map(|d| d.record.clone().unwrap()).collect::<Vec<_>>(), ["t/0@2"]);
    assert_eq!(delivered(&outputs), ["t/0@0", "t/0@1"]);
    assert_eq!(log.violations, vec![]);
    assert_eq!(log.committed.get(&0), Some(&1), "the commit stays before the record it could not read");
}

#[test]
fn an_ended_stream_behind_the_end_offset_is_reread_before_the_drain_ends() {
    let log = Log { partitions: vec![fits(6), fits(3)], end_once: Some((0, 3)), ..Log::default() };
    let (result, log, outputs) = run(log, &fake_settings(), Arc::default());
    result.unwrap();
    let mut names = delivered(&outputs);
    names.sort();
    assert_eq!(names, ["t/0@0", "t/0@1", "t/0@2", "t/0@3", "t/0@4", "t/0@5", "t/1@0", "t/1@1", "t/1@2"]);
    assert!(log.opened.contains(&StreamStart::At { partition: 0, offset: 3 }), "{:?}", log.opened);
    assert_eq!((log.committed.get(&0), log.committed.get(&1)), (Some(&5), Some(&2)));
    assert_eq!(log.violations, vec![]);
}

#[test]
fn an_offset_nothing_can_read_stops_the_drain_with_an_error_naming_it() {
    let mut entries = fits(2);
    entries.extend([Entry::Lost, Entry::Fits("d")]);
    let (result, log, outputs) =
        run(Log { partitions: vec![entries], ..Log::default() }, &fake_settings(), Arc::default());
    let error = result.unwrap_err();
    assert!(matches!(error, ConsumeError::Unreadable { partition: 0, offset: 2, end: 4, .. }), "{error}");
    assert!(error.to_string().contains("max-bytes is 1.0 KiB"), "{error}");
    assert_eq!(delivered(&outputs), ["t/0@0", "t/0@1"]);
    assert_eq!(log.committed.get(&0), Some(&1));
    assert_eq!(log.violations, vec![]);
}

#[test]
fn a_stop_during_a_reread_finishes_it_and_commits() {
    let stop = Arc::new(Stop::default());
    let log = Log {
        partitions: vec![fits(5)],
        skip_once: vec![(0, 1), (0, 2)],
        stop_on_reread: Some(Arc::clone(&stop)),
        ..Log::default()
    };
    let mut settings = fake_settings();
    settings.drain = false;
    let (result, log, outputs) = run(log, &settings, stop);
    result.unwrap();
    let names = delivered(&outputs);
    assert_eq!(&names[..4], ["t/0@0", "t/0@1", "t/0@2", "t/0@3"], "the re-read delivered the gap first");
    assert_eq!(log.violations, vec![]);
    assert!(log.committed.get(&0).is_some_and(|&c| c >= 3), "{:?}", log.committed);
}

#[test]
fn a_stop_with_records_not_delivered_within_the_stop_timeout_is_an_error_without_commit() {
    let stop = Arc::new(Stop::default());
    let log = Log {
        partitions: vec![fits(4)],
        skip_once: vec![(0, 1)],
        stop_on_reread: Some(Arc::clone(&stop)),
        ..Log::default()
    };
    let mut settings = fake_settings();
    settings.stop_timeout = Duration::from_millis(300);
    settings.commit_interval = Duration::from_secs(3600); // the first barrier comes with the stop
    let (result, log, _) = run_with(log, &settings, stop, false);
    let error = result.unwrap_err();
    assert!(matches!(error, ConsumeError::StopTimeout { undelivered: 3, .. }), "{error}");
    assert!(error.to_string().contains("inference.stop-timeout (300ms)"), "{error}");
    assert_eq!(log.commits, Vec::<HashMap<u32, i64>>::new(), "nothing delivered, nothing committed");
}
