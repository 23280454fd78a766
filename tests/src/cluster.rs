//! A real local Fluvio cluster for the live tests, found as users have Fluvio installed (`fluvio` on
//! PATH, else `~/.fluvio/bin/fluvio`). A running cluster is reused; otherwise one is started with
//! `fluvio cluster start --local` and deleted when the test ends. Topics and SmartModules a test creates
//! carry a unique suffix and are deleted at the end.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fluvio::consumer::ConsumerConfigExt;
use fluvio::{Fluvio, Offset, RecordKey, TopicProducerConfigBuilder};
use fluvio_future::task::run_block_on;
use futures_util::StreamExt;

/// One cluster per machine: tests that use it take turns.
static CLUSTER_LOCK: Mutex<()> = Mutex::new(());

/// Largest record the helpers produce and read.
const MAX_RECORD: usize = 32 << 20;

/// Producer batches of the helpers: several records per batch, as a busy producer writes them.
const PRODUCE_BATCH: usize = 1 << 20;

/// The `fluvio` CLI, where Fluvio's installer puts it.
pub fn fluvio_cli() -> Option<PathBuf> {
    fluvio_tool("fluvio")
}

/// One of Fluvio's command-line tools (`fluvio`, `cdk`, `smdk`): on PATH, else in `~/.fluvio/bin` where
/// Fluvio's installer puts them.
pub fn fluvio_tool(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        Some(Path::new(&home).join(".fluvio/bin").join(name)).filter(|p| p.is_file())
    })
}

/// A cluster a test may use until it drops this.
pub struct LocalCluster {
    cli: PathBuf,
    started: bool,
    topics: RefCell<Vec<String>>,
    smartmodules: RefCell<Vec<String>>,
    _turn: MutexGuard<'static, ()>,
}

/// The cluster, or `None` (with the reason printed) when Fluvio is not installed. In CI (`CI` set) a
/// missing Fluvio is a failure: `.ci/run` installs it.
pub fn local_cluster(test: &str) -> Option<LocalCluster> {
    let turn = CLUSTER_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(cli) = fluvio_cli() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: Fluvio is not installed, but CI must run the live tests (.ci/run installs it)"
        );
        report_skip(
            test,
            "Fluvio is not installed (no `fluvio` on PATH or in ~/.fluvio/bin); install it with Fluvio's installer \
             to run the live-cluster tests",
        );
        return None;
    };
    let mut cluster =
        LocalCluster { cli, started: false, topics: RefCell::default(), smartmodules: RefCell::default(), _turn: turn };
    if !cluster.answers() {
        eprintln!("{test}: starting a local Fluvio cluster");
        let mut out = cluster.cli(&["cluster", "start", "--local"]);
        if !out.status.success() && text(&out).contains("wasn't deleted") {
            // A cluster that was killed (not deleted) leaves its state behind and does not answer; Fluvio
            // refuses to start over it. Nothing answers on it, so it holds nothing a test could lose.
            eprintln!("{test}: a local cluster was left behind without running; deleting it and starting again");
            let deleted = cluster.cli(&["cluster", "delete", "--force"]);
            assert!(deleted.status.success(), "fluvio cluster delete --force failed:\n{}", text(&deleted));
            out = cluster.cli(&["cluster", "start", "--local"]);
        }
        assert!(out.status.success(), "fluvio cluster start --local failed:\n{}", text(&out));
        cluster.started = true;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster.answers() {
            assert!(Instant::now() < deadline, "the local cluster did not answer within 60 s");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Some(cluster)
}

impl LocalCluster {
    /// Runs the `fluvio` CLI.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.cli)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", self.cli.display()))
    }

    /// Runs the CLI and returns its stdout, failing the test if it fails.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "fluvio {args:?} failed:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn answers(&self) -> bool {
        self.cli(&["topic", "list"]).status.success()
    }

    /// Creates a topic (deleted when the cluster guard drops).
    pub fn create_topic(&self, name: &str) {
        self.create(name, &["topic", "create", name]);
    }

    /// Creates the topic a Fluvio topic config file describes, with `fluvio topic create --config` (deleted
    /// when the cluster guard drops); `name` is the `meta.name` the file gives.
    pub fn create_topic_from_file(&self, name: &str, file: &Path) {
        self.create(name, &["topic", "create", "--config", &file.display().to_string()]);
    }

    /// Creates a source's events topic and dead-letter topic, named uniquely from `prefix`.
    pub fn create_source_topics(&self, prefix: &str) -> (String, String) {
        let images = unique_name(&format!("{prefix}-images"));
        let dlq = unique_name(&format!("{prefix}-dlq"));
        self.create_topic(&images);
        self.create_topic(&dlq);
        (images, dlq)
    }

    /// Creates a topic with `partitions` partitions (deleted when the cluster guard drops).
    pub fn create_topic_with_partitions(&self, name: &str, partitions: u32) {
        self.create(name, &["topic", "create", name, "--partitions", &partitions.to_string()]);
    }

    /// Runs a `topic create`, once more when the SC's answer timed out (it can take over a minute while the
    /// SPU deletes the large topics an earlier test left); a topic that the timed-out call did create counts.
    fn create(&self, name: &str, args: &[&str]) {
        for attempt in 1..=3 {
            let out = self.cli(args);
            let said = text(&out);
            let created = out.status.success() || (attempt > 1 && said.contains("already exists"));
            if created {
                self.topics.borrow_mut().push(name.to_string());
                return;
            }
            assert!(said.contains("Timed out") && attempt < 3, "fluvio {args:?} failed:\n{said}");
            eprintln!("fluvio {args:?} timed out (attempt {attempt}); trying again");
        }
    }

    /// The offsets committed under `consumer_id`, by (topic, partition), read with the Rust client.
    pub fn committed_offsets(&self, consumer_id: &str) -> std::collections::BTreeMap<(String, u32), i64> {
        run_block_on(async {
            let fluvio = Fluvio::connect().await.unwrap_or_else(|e| panic!("connecting: {e:#}"));
            let offsets = fluvio.consumer_offsets().await.unwrap_or_else(|e| panic!("consumer offsets: {e:#}"));
            offsets
                .into_iter()
                .filter(|o| o.consumer_id == consumer_id)
                .map(|o| ((o.topic, o.partition), o.offset))
                .collect()
        })
    }

    /// Loads a SmartModule from a `.wasm` file (deleted when the cluster guard drops).
    pub fn create_smartmodule(&self, name: &str, wasm: &Path) {
        let wasm = wasm.to_string_lossy();
        self.cli_ok(&["smartmodule", "create", name, "--wasm-file", &wasm]);
        self.delete_smartmodule_on_drop(name);
    }

    /// Deletes SmartModule `name` (`group/name@version` or a bare name) when the cluster guard drops.
    pub fn delete_smartmodule_on_drop(&self, name: &str) {
        self.smartmodules.borrow_mut().push(name.to_string());
    }

    /// Produces `records` (key, value) to `topic` with the Rust client, sized for whole images.
    pub fn produce(&self, topic: &str, records: &[(String, Vec<u8>)]) {
        run_block_on(async {
            let fluvio = Fluvio::connect().await.unwrap_or_else(|e| panic!("connecting: {e:#}"));
            let config = TopicProducerConfigBuilder::default()
                .max_request_size(MAX_RECORD)
                .batch_size(PRODUCE_BATCH)
                .build()
                .unwrap_or_else(|e| panic!("producer config: {e}"));
            let producer = fluvio
                .topic_producer_with_config(topic, config)
                .await
                .unwrap_or_else(|e| panic!("producer for {topic}: {e:#}"));
            for (key, value) in records {
                producer
                    .send(RecordKey::from(key.clone()), value.clone())
                    .await
                    .unwrap_or_else(|e| panic!("producing to {topic}: {e:#}"));
            }
            producer.flush().await.unwrap_or_else(|e| panic!("flushing {topic}: {e:#}"));
        });
    }

    /// Every record of partition 0 of `topic`, from the beginning to its current end: (key, value).
    pub fn read_all(&self, topic: &str) -> Vec<(String, Vec<u8>)> {
        self.read_partition(topic, 0).into_iter().map(|(_, key, value)| (key, value)).collect()
    }

    /// Every record of one partition of `topic`, from the beginning to its current end: (offset, key, value).
    ///
    /// The Fluvio 0.50 client skips the rest of a batch that a fetch cut at `max-bytes` (docs/decisions.md):
    /// a record past the next expected offset starts a new read from that offset, until a read brings nothing new.
    pub fn read_partition(&self, topic: &str, partition: u32) -> Vec<(i64, String, Vec<u8>)> {
        run_block_on(async {
            let fluvio = Fluvio::connect().await.unwrap_or_else(|e| panic!("connecting: {e:#}"));
            let mut records: Vec<(i64, String, Vec<u8>)> = Vec::new();
            loop {
                let expected = records.last().map(|(offset, _, _)| offset + 1);
                let start = match expected {
                    Some(offset) => Offset::absolute(offset).unwrap_or_else(|e| panic!("offset {offset}: {e}")),
                    None => Offset::beginning(),
                };
                let config = ConsumerConfigExt::builder()
                    .topic(topic)
                    .partition(partition)
                    .offset_start(start)
                    .disable_continuous(true)
                    .max_bytes(MAX_RECORD as i32)
                    .build()
                    .unwrap_or_else(|e| panic!("consumer config: {e}"));
                let mut stream =
                    fluvio.consumer_with_config(config).await.unwrap_or_else(|e| panic!("consuming {topic}: {e:#}"));
                let mut progressed = false;
                while let Some(record) = stream.next().await {
                    let record = record.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
                    let expected = records.last().map(|(offset, _, _)| offset + 1);
                    match expected {
                        Some(next) if record.offset() < next => continue,
                        // The client skipped records: read again from the first one missing.
                        Some(next) if record.offset() > next => break,
                        _ => {}
                    }
                    let key = record.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                    records.push((record.offset(), key, record.value().to_vec()));
                    progressed = true;
                }
                if !progressed {
                    return records;
                }
            }
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.started {
            let _ = self.cli(&["cluster", "delete", "--force"]);
            return;
        }
        for name in self.smartmodules.borrow().iter() {
            let _ = self.cli(&["smartmodule", "delete", name]);
        }
        for name in self.topics.borrow().iter() {
            let _ = self.cli(&["topic", "delete", name]);
        }
    }
}

/// One SPU of the local cluster as processes: `fluvio run spu -i ID ...` and the `fluvio-run spu` it starts.
#[derive(Debug, Clone)]
pub struct SpuProcess {
    /// The SPU id (`-i`).
    pub id: i32,
    /// Its processes, the launcher first.
    pub pids: Vec<u32>,
    /// The launcher's command line, to start the SPU again after a kill.
    pub argv: Vec<String>,
    /// Where the launcher's output goes (its standard output), if it is a file.
    pub log: Option<PathBuf>,
}

impl SpuProcess {
    /// Starts this SPU again as its launcher did (same command line, output appended to the same log file),
    /// detached from the test: `fluvio cluster delete` stops it with the rest of the cluster.
    pub fn start_again(&self) -> Result<(), String> {
        use std::process::Stdio;
        let (program, args) = self.argv.split_first().ok_or("the SPU's command line is empty")?;
        let (out, err) = match &self.log {
            Some(path) => {
                let opening = |e: std::io::Error| format!("opening {}: {e}", path.display());
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(opening)?;
                let copy = file.try_clone().map_err(opening)?;
                (Stdio::from(file), Stdio::from(copy))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting SPU {} again ({}): {e}", self.id, self.argv.join(" ")))?;
        Ok(())
    }
}

/// The SPUs of the local cluster running on this machine, by id.
pub fn local_spus() -> Vec<SpuProcess> {
    let mut spus: Vec<SpuProcess> = Vec::new();
    let mut all = crate::process::processes();
    all.sort_by_key(|p| p.pid);
    for process in all {
        let argv = &process.argv;
        let program = argv.first().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or_default();
        let is_spu = match program {
            "fluvio" => {
                argv.get(1).map(String::as_str) == Some("run") && argv.get(2).map(String::as_str) == Some("spu")
            }
            "fluvio-run" => argv.get(1).map(String::as_str) == Some("spu"),
            _ => false,
        };
        let id = argv.iter().position(|a| a == "-i" || a == "--id").and_then(|i| argv.get(i + 1)?.parse().ok());
        if let (true, Some(id)) = (is_spu, id) {
            match spus.iter_mut().find(|s| s.id == id) {
                Some(spu) => spu.pids.push(process.pid),
                None => {
                    let log = std::fs::read_link(format!("/proc/{}/fd/1", process.pid)).ok().filter(|p| p.is_file());
                    spus.push(SpuProcess { id, pids: vec![process.pid], argv: argv.clone(), log })
                }
            }
        }
    }
    spus.sort_by_key(|s| s.id);
    spus
}

/// Replaces the local cluster with a fresh one of `spus` SPUs: `fluvio cluster delete --force` (every topic
/// of the running one is lost), `fluvio cluster start --local [--spu N]`, then waits until all N SPUs are
/// online. Only for tests run by hand while nothing else uses the cluster (the 3-SPU failover). An error
/// rather than a panic, so it can run from a guard's `drop` while a failed test unwinds.
pub fn replace_local_cluster(spus: u32) -> Result<(), String> {
    let cli = fluvio_cli().ok_or("Fluvio is not installed (no `fluvio` on PATH or in ~/.fluvio/bin)")?;
    let run = |args: &[&str]| -> Result<(bool, String), String> {
        let out = Command::new(&cli).args(args).output().map_err(|e| format!("running fluvio {args:?}: {e}"))?;
        Ok((out.status.success(), text(&out)))
    };
    let (_, said) = run(&["cluster", "delete", "--force"])?;
    eprintln!("fluvio cluster delete --force: {}", said.trim());
    let count = spus.to_string();
    let mut args = vec!["cluster", "start", "--local"];
    if spus > 1 {
        args.extend(["--spu", count.as_str()]);
    }
    let (ok, said) = run(&args)?;
    if !ok {
        return Err(format!("fluvio {args:?} failed:\n{said}"));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (ok, said) = run(&["cluster", "spu", "list"])?;
        let online = said.lines().filter(|l| l.contains("Online")).count();
        if ok && online == spus as usize && run(&["topic", "list"])?.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{spus} SPUs were not online within 120 s:\n{said}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl LocalCluster {
    /// The SPU leading `partition` of `topic`, from `fluvio partition list -O json` (with `--system` for
    /// the cluster's own topics, such as `consumer-offset`).
    pub fn partition_leader(&self, topic: &str, partition: u32) -> Option<i32> {
        self.partition_status(topic, partition)?["leader"]["spu"].as_i64().and_then(|id| i32::try_from(id).ok())
    }

    /// The high watermark of `partition` of `topic` on its leader: the last offset every replica holds + 1,
    /// up to which committed reads go.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<i64> {
        self.partition_status(topic, partition)?["leader"]["hw"].as_i64()
    }

    fn partition_status(&self, topic: &str, partition: u32) -> Option<serde_json::Value> {
        let name = format!("{topic}-{partition}");
        let found = |partitions: Vec<serde_json::Value>| partitions.into_iter().find(|p| p["name"] == name.as_str());
        let partition = found(self.list_partitions(false)).or_else(|| found(self.list_partitions(true)))?;
        Some(partition["status"].clone())
    }

    /// `fluvio partition list -O json`: the users' partitions, or with `system` the cluster's own.
    fn list_partitions(&self, system: bool) -> Vec<serde_json::Value> {
        let mut args = vec!["partition", "list", "-O", "json"];
        if system {
            args.push("--system");
        }
        let out = self.cli(&args);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits until the cluster answers and every partition of `topics` is online with a leader, after an SPU
    /// was stopped or killed; fails the test after `limit`. Returns how long it took.
    pub fn wait_online(&self, topics: &[&str], limit: Duration) -> Duration {
        let began = Instant::now();
        loop {
            let partitions = self.list_partitions(false);
            let ours: Vec<&serde_json::Value> = partitions
                .iter()
                .filter(|p| {
                    let name = p["name"].as_str().unwrap_or_default();
                    topics.iter().any(|t| name.rsplit_once('-').is_some_and(|(topic, _)| topic == *t))
                })
                .collect();
            let online = ours.len() >= topics.len()
                && ours.iter().all(|p| p["status"]["resolution"] == "Online" && p["status"]["leader"]["spu"].is_i64());
            if online && self.answers() {
                return began.elapsed();
            }
            assert!(began.elapsed() < limit, "the partitions of {topics:?} were not online within {limit:?}: {ours:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Environment variable naming a file where skipped tests are listed, so the test script can report them
/// (cargo hides what passing tests print).
pub const SKIP_LOG_ENV: &str = "FVISION_SKIP_LOG";

/// Says that `test` is skipped and why: on stderr, and in `$FVISION_SKIP_LOG` when set.
pub fn report_skip(test: &str, reason: &str) {
    let line = format!("SKIPPED {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        use std::io::Write;
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// A name no other test run uses.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
