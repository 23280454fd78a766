//! The connectors through Fluvio's own connector development kit, `cdk` 0.50.2, on the live cluster, the
//! way a Fluvio user runs them: `cdk deploy start --config X.yaml` from the connector's crate (cdk builds
//! it with cargo and reads the YAML and `Connector.toml` with upstream's own parser before it starts
//! anything), `cdk deploy list`, `cdk deploy log`, `cdk deploy shutdown`; and `cdk publish --pack` to an
//! `.ipkg` per connector, started with `cdk deploy start --ipkg` outside the source tree. Each run feeds
//! the shipped YAMLs, with only names, endpoints and ports made unique to the run, and checks that records
//! move from Kafka and GCS through `images` to `predictions` and that each connector stops cleanly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use fvision_gcp::pubsub;
use fvision_gcp::storage::BlockingClient;
use fvision_records::{ImageEvent, Prediction};
use fvision_tests::cluster::{fluvio_tool, local_cluster, report_skip, unique_name, LocalCluster};
use fvision_tests::emulators::{self, free_port, PROJECT};
use fvision_tests::process::{target_binary, Process};
use fvision_tests::repo_root;
use rdkafka::mocking::MockCluster;
use serde_yaml::Value;

const KAFKA_TOPIC: &str = "image-stream";
const BUCKET: &str = "fvt-cdk";
const PUBSUB_TOPIC: &str = "fvt-cdk-notifications";
const SUBSCRIPTION: &str = "fvt-cdk-sub";
/// Images sent through each source.
const IMAGES: usize = 3;
/// The connector crates: directory under `connectors/`, shipped YAML, section.
const CONNECTORS: [(&str, &str); 3] = [
    ("kafka-source", "kafka-source.yaml"),
    ("gcs-source", "gcs-source.yaml"),
    ("inference-sink", "inference-sink.yaml"),
];

/// The variables `cargo test` sets for a test process (not the ones a user sets, such as `CARGO_TARGET_DIR`).
fn set_by_cargo_test(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `cdk`, with its deployment index (in the temporary directory) kept apart from other runs.
struct Cdk {
    bin: PathBuf,
    tmp: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Connectors started and not yet shut down, with their log file: shut down and removed on drop.
    started: Vec<(String, PathBuf)>,
    /// One cdk test at a time: each makes cdk run cargo on the suite's target directory, and two cargo
    /// builds of different packages at once would each find the other's work in progress.
    _serial: std::sync::MutexGuard<'static, ()>,
}

static CDK_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cdk {
    fn new(test: &str) -> Option<Self> {
        let Some(bin) = fluvio_tool("cdk") else {
            assert!(std::env::var_os("CI").is_none(), "{test}: cdk is not installed, but CI installs it");
            report_skip(test, "Fluvio's cdk is not installed (no `cdk` on PATH or in ~/.fluvio/bin)");
            return None;
        };
        let wasm = fvision_connector_common::validator::locate_smartmodule().expect("image_validate.wasm is built");
        let env = vec![(fvision_connector_common::validator::SMARTMODULE_ENV.to_string(), wasm.display().to_string())];
        let serial = CDK_TESTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(Self { bin, tmp: tempfile::tempdir().unwrap(), env, started: Vec::new(), _serial: serial })
    }

    fn command(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(&self.bin);
        // What `cargo test` sets for this test process, a user's shell does not have; ring's build script
        // watches CARGO_MANIFEST_DIR, so with it cdk's cargo would rebuild ring and all that depends on it.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(set_by_cargo_test) {
                command.env_remove(&name);
            }
        }
        command
            .args(args)
            .current_dir(cwd)
            .env("TMPDIR", self.tmp.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied());
        command
    }

    fn ok(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.command(cwd, args, env).output().unwrap_or_else(|e| panic!("running cdk {args:?}: {e}"));
        assert!(out.status.success(), "cdk {args:?} in {} failed:\n{}", cwd.display(), text(&out));
        text(&out)
    }

    /// `cdk deploy start ARGS` in `cwd`: the connector's process id; its log is `cwd/<name>.log`. Started from
    /// the crate (no `--ipkg`), cdk first runs `cargo build --profile release --target <host> -p <crate>`;
    /// under scripts/test.sh (which exports CARGO_BUILD_TARGET) that is the build the suite already made, so
    /// cargo must compile nothing (scripts/feature-union.py keeps a connector built alone identical).
    fn start(&mut self, cwd: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> u32 {
        let mut all = vec!["deploy", "start"];
        all.extend_from_slice(args);
        // cdk names the log by the canonical path (without the `tests/..` of `repo_root()`).
        let log = cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf()).join(format!("{name}.log"));
        self.started.push((name.to_string(), log.clone()));
        let said = self.ok(cwd, &all, env);
        assert!(said.contains(&format!("Log file: {}", log.display())), "{said}");
        assert!(said.contains(&format!("Started connector `{name}`")), "{said}");
        if !args.contains(&"--ipkg") && std::env::var_os("CARGO_BUILD_TARGET").is_some() {
            assert!(said.contains("Finished `release` profile"), "cdk built the connector with cargo:\n{said}");
            assert!(
                !said.contains("Compiling "),
                "cdk's cargo build compiled again what the suite had built: run scripts/feature-union.py\n{said}"
            );
        }
        said.lines()
            .find_map(|l| l.strip_prefix("Connector runs with process id: "))
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("cdk names the process id:\n{said}"))
    }

    /// `cdk deploy list`: name -> status.
    fn list(&self) -> Vec<(String, String)> {
        self.ok(self.tmp.path(), &["deploy", "list"], &[])
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                Some((words.next()?.to_string(), words.next()?.to_string()))
            })
            .collect()
    }

    fn log(&self, name: &str) -> String {
        self.ok(self.tmp.path(), &["deploy", "log", "--name", name], &[])
    }

    /// `cdk deploy shutdown --name NAME`: cdk sends SIGTERM to `pid` and forgets the connector. Returns its
    /// log file, for the caller to read once the process exited (and remove).
    fn shutdown(&mut self, name: &str, pid: u32) -> Option<PathBuf> {
        let said = self.ok(self.tmp.path(), &["deploy", "shutdown", "--name", name], &[]);
        assert!(
            said.contains(&format!("Shutting down connector: {name}")) && said.contains(&format!("pid: {pid}")),
            "{said}"
        );
        let at = self.started.iter().position(|(n, _)| n == name)?;
        Some(self.started.remove(at).1)
    }
}

impl Drop for Cdk {
    fn drop(&mut self) {
        for (name, log) in std::mem::take(&mut self.started) {
            let _ = self.command(self.tmp.path(), &["deploy", "shutdown", "--name", &name], &[]).output();
            if let Ok(text) = std::fs::read_to_string(&log) {
                eprintln!("--- {name} ({}):\n{text}", log.display());
            }
            let _ = std::fs::remove_file(&log);
        }
    }
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Everything one run needs: topics, a Kafka mock with images, GCS and Pub/Sub emulators with images.
struct World {
    images: String,
    dlq: String,
    predictions: String,
    servers: String,
    gcs_url: String,
    grpc: String,
    simulated: BTreeSet<String>,
    _mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    _emulators: (emulators::Emulator, emulators::PubSub),
    _runtime: tokio::runtime::Runtime,
}

fn world(cluster: &LocalCluster, dir: &Path) -> World {
    let (images, dlq, predictions) =
        (unique_name("fvt-cdk-images"), unique_name("fvt-cdk-dlq"), unique_name("fvt-cdk-predictions"));
    for topic in [&images, &dlq, &predictions] {
        cluster.create_topic(topic);
    }
    let mock = MockCluster::new(1).unwrap_or_else(|e| panic!("starting the Kafka mock cluster: {e}"));
    mock.create_topic(KAFKA_TOPIC, 1, 1).unwrap();
    let servers = mock.bootstrap_servers();
    let gcs = emulators::gcs();
    let pubsub_emulator = emulators::pubsub();
    let (gcs_url, grpc) = (gcs.url(), pubsub_emulator.grpc_host());
    BlockingClient::anonymous(&gcs_url, Duration::from_secs(30)).unwrap().create_bucket(PROJECT, BUCKET).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(pubsub::client(PROJECT, Some(&grpc), None)).unwrap();
    runtime.block_on(pubsub::ensure_subscription(&client, PUBSUB_TOPIC, SUBSCRIPTION, 10)).unwrap();
    let count = IMAGES.to_string();
    let common = ["--count", count.as_str(), "--rate", "50", "--synthetic", "64x48", "--json"];
    let mut simulated = BTreeSet::new();
    for (run, mode, args) in [
        ("cdkk", "kafka", vec!["--kafka-servers", &servers, "--kafka-topic", KAFKA_TOPIC]),
        (
            "cdkg",
            "gcs",
            vec![
                "--gcs-bucket",
                BUCKET,
                "--gcs-endpoint",
                &gcs_url,
                "--pubsub-project",
                PROJECT,
                "--pubsub-emulator-host",
                &grpc,
                "--pubsub-topic",
                PUBSUB_TOPIC,
                "--notify",
            ],
        ),
    ] {
        let ids = dir.join(format!("{run}.ids"));
        let mut all = vec!["simulate", "--mode", mode, "--run-id", run, "--ids", ids.to_str().unwrap()];
        all.extend_from_slice(&common);
        all.extend(args);
        let mut process = Process::start(&target_binary("fvision"), &all, &[], &dir.join(format!("{run}.log")));
        assert!(process.wait(Duration::from_secs(60)).success(), "simulate {mode}:\n{}", process.log());
        simulated.extend(std::fs::read_to_string(&ids).unwrap().lines().map(str::to_string));
    }
    assert_eq!(simulated.len(), 2 * IMAGES, "{simulated:?}");
    World {
        images,
        dlq,
        predictions,
        servers,
        gcs_url,
        grpc,
        simulated,
        _mock: mock,
        _emulators: (gcs, pubsub_emulator),
        _runtime: runtime,
    }
}

fn set(doc: &mut Value, path: &[&str], value: impl Into<Value>) {
    let (last, parents) = path.split_last().unwrap();
    let mut node = doc;
    for key in parents {
        node = node.get_mut(*key).unwrap_or_else(|| panic!("the shipped YAML has `{key}` in {path:?}"));
    }
    node.as_mapping_mut().unwrap().insert((*last).into(), value.into());
}

/// The shipped `file`, with only what must be unique to this run changed; written to `dir`. Returns the path.
fn shipped(file: &str, name: &str, world: &World, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("fluvio-config/connectors").join(file)).unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["apiVersion"].as_str(), Some("0.2.0"), "{file}: the form Fluvio's docs show");
    set(&mut doc, &["meta", "name"], name);
    set(&mut doc, &["meta", "topic", "meta", "name"], world.images.as_str());
    let kind = doc["meta"]["type"].as_str().unwrap().to_string();
    let section = match kind.as_str() {
        "kafka-source" => {
            set(&mut doc, &["kafka", "bootstrap-servers"], world.servers.as_str());
            set(&mut doc, &["kafka", "topics"], Value::Sequence(vec![KAFKA_TOPIC.into()]));
            set(&mut doc, &["kafka", "group-id"], unique_name("fvt-cdk-group"));
            "kafka"
        }
        "gcs-source" => {
            set(&mut doc, &["gcs", "project"], PROJECT);
            set(&mut doc, &["gcs", "subscription"], SUBSCRIPTION);
            set(&mut doc, &["gcs", "buckets"], Value::Sequence(vec![BUCKET.into()]));
            set(&mut doc, &["gcs", "pubsub-emulator-host"], world.grpc.as_str());
            set(&mut doc, &["gcs", "gcs-endpoint"], world.gcs_url.as_str());
            "gcs"
        }
        _ => {
            set(&mut doc, &["meta", "consumer", "id"], unique_name("fvt-cdk-sink"));
            set(&mut doc, &["inference", "predictions-topic"], world.predictions.as_str());
            // The shared cluster may hold another build's `image-validate`: validate in the connector.
            set(&mut doc, &["inference", "validate-at"], "connector");
            "inference"
        }
    };
    set(&mut doc, &[section, "dlq-topic"], world.dlq.as_str());
    set(&mut doc, &[section, "metrics-port"], u64::from(free_port()));
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    path
}

/// How a connector is started: from its crate, or from its package.
enum Launch<'a> {
    Crate,
    Ipkg(&'a [(String, PathBuf)]),
}

/// Starts the three connectors with `cdk deploy start`, checks `list` and `log`, waits until every simulated
/// image has a prediction, and shuts each down with `cdk deploy shutdown`: it exits after its drain.
fn run_the_pipeline(cdk: &mut Cdk, cluster: &LocalCluster, world: &World, dir: &Path, from: Launch<'_>) {
    let mut running = Vec::new();
    for (krate, file) in CONNECTORS {
        let name = unique_name(&format!("fvt-cdk-{krate}"));
        let config = shipped(file, &name, world, dir);
        let config = config.to_str().unwrap();
        let pid = match &from {
            Launch::Crate => cdk.start(&repo_root().join("connectors").join(krate), &name, &["--config", config], &[]),
            Launch::Ipkg(packages) => {
                let ipkg = &packages.iter().find(|(k, _)| k == krate).unwrap().1;
                cdk.start(dir, &name, &["--ipkg", ipkg.to_str().unwrap(), "--config", config], &[])
            }
        };
        running.push((name, pid));
    }
    let listed = cdk.list();
    for (name, _) in &running {
        assert!(listed.contains(&(name.clone(), "Running".into())), "cdk deploy list: {listed:?}");
    }

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let predictions: BTreeSet<String> = cluster
            .read_all(&world.predictions)
            .into_iter()
            .map(|(_, v)| serde_json::from_slice::<Prediction>(&v).unwrap().image_id)
            .collect();
        if world.simulated.iter().all(|id| predictions.contains(id)) {
            break;
        }
        for (name, pid) in &running {
            assert!(!exited(*pid), "{name} exited:\n{}", cdk.log(name));
        }
        assert!(Instant::now() < deadline, "not every image classified after 180 s: {predictions:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let events: Vec<ImageEvent> =
        cluster.read_all(&world.images).into_iter().map(|(_, v)| serde_json::from_slice(&v).unwrap()).collect();
    let kafka = events.iter().filter(|e| !e.meta.id.starts_with("gs://")).count();
    assert_eq!((kafka, events.len() - kafka), (IMAGES, IMAGES), "each source moved its images once");

    for (name, pid) in running {
        let log = cdk.log(&name);
        assert!(log.contains("starting") && log.contains(&name), "cdk deploy log --name {name}:\n{log}");
        let log_file = cdk.shutdown(&name, pid);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !exited(pid) {
            assert!(Instant::now() < deadline, "{name} still runs 60 s after cdk deploy shutdown");
            std::thread::sleep(Duration::from_millis(200));
        }
        // A clean stop: the connector's exit line (everything read was delivered and committed or acked), not
        // a crash on SIGTERM.
        let log = log_file
            .map(|file| {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let _ = std::fs::remove_file(&file);
                text
            })
            .unwrap_or_default();
        assert!(log.contains("stopped:") && !log.contains(" ERROR "), "{name} did not stop cleanly:\n{log}");
        assert!(!cdk.list().iter().any(|(n, _)| *n == name), "shut down connectors leave the list");
    }
}

#[test]
fn every_shipped_connector_runs_under_cdk_deploy_from_its_crate() {
    let test = "every_shipped_connector_runs_under_cdk_deploy_from_its_crate";
    let Some(cluster) = local_cluster(test) else { return };
    let Some(mut cdk) = Cdk::new(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let world = world(&cluster, dir.path());
    run_the_pipeline(&mut cdk, &cluster, &world, dir.path(), Launch::Crate);
}

/// The sink's shipped variants with external outputs pass cdk's checks and the sink's own parser, their
/// `${{ secrets.NAME }}` filled from the environment (no `--secrets`: Fluvio's `EnvSecretStore`) or from
/// `--secrets FILE`; each reaches "starting" and is shut down.
#[test]
fn the_sinks_output_variants_pass_cdk_with_secrets_from_the_environment_or_a_file() {
    let test = "the_sinks_output_variants_pass_cdk_with_secrets_from_the_environment_or_a_file";
    let Some(cluster) = local_cluster(test) else { return };
    let Some(mut cdk) = Cdk::new(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let images = unique_name("fvt-cdk-variant-images");
    cluster.create_topic(&images);
    let secrets: [(&str, &str); 7] = [
        ("GCP_PROJECT", PROJECT),
        ("BIGQUERY_KEY_FILE", "/nonexistent/bq.json"),
        ("KAFKA_BROKERS", "127.0.0.1:1"),
        ("KAFKA_USERNAME", "u"),
        ("KAFKA_PASSWORD", "0x1F2E"),
        ("GCS_BUCKET", "fvt-secret-bucket"),
        ("GCS_KEY_FILE", "/nonexistent/gcs.json"),
    ];
    let file = dir.path().join("secrets.env");
    std::fs::write(&file, secrets.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>()).unwrap();
    let krate = repo_root().join("connectors/inference-sink");
    for (variant, with_file) in [
        ("inference-sink-bigquery.yaml", false),
        ("inference-sink-kafka.yaml", true),
        ("inference-sink-gcs.yaml", false),
        ("inference-sink-all.yaml", true),
    ] {
        let name = unique_name("fvt-cdk-variant");
        let text = std::fs::read_to_string(repo_root().join("fluvio-config/connectors").join(variant)).unwrap();
        let mut doc: Value = serde_yaml::from_str(&text).unwrap();
        set(&mut doc, &["meta", "name"], name.as_str());
        set(&mut doc, &["meta", "topic", "meta", "name"], images.as_str());
        set(&mut doc, &["meta", "consumer", "id"], name.as_str());
        set(&mut doc, &["inference", "metrics-port"], u64::from(free_port()));
        let config = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&config, serde_yaml::to_string(&doc).unwrap()).unwrap();
        let config = config.to_str().unwrap().to_string();
        let pid = if with_file {
            cdk.start(&krate, &name, &["--config", &config, "--secrets", file.to_str().unwrap()], &[])
        } else {
            cdk.start(&krate, &name, &["--config", &config], &secrets)
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let log = loop {
            let log = cdk.log(&name);
            if log.contains("starting") || exited(pid) {
                break log;
            }
            assert!(Instant::now() < deadline, "{variant}: no start within 60 s:\n{log}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(log.contains("starting") && !log.contains("field `"), "{variant}: the config was read:\n{log}");
        for (_, value) in secrets.iter().filter(|(_, v)| v.len() > 1) {
            assert!(!log.contains(value), "{variant}: a secret in the log:\n{log}");
        }
        if let Some(file) = cdk.shutdown(&name, pid) {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// `cdk publish --pack` in the crate: its package, `.hub/<name>-<version>.ipkg`, moved out of the tree.
fn pack(cdk: &Cdk, krate: &str, out: &Path) -> PathBuf {
    // Canonical: cdk prints the package's path without the `tests/..` of `repo_root()`.
    let dir = repo_root().join("connectors").join(krate).canonicalize().unwrap();
    let hub = dir.join(".hub");
    // Signing keys are made on first use under $HOME/.fluvio/hub: a home of the test's own.
    let home = tempfile::tempdir().unwrap();
    // A Fluvio user's home has ~/.fluvio (the installer made it); cdk creates only `hub/` inside it.
    std::fs::create_dir(home.path().join(".fluvio")).unwrap();
    let real_home = std::env::var("HOME").unwrap();
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{real_home}/.cargo"));
    let rustup_home = std::env::var("RUSTUP_HOME").unwrap_or_else(|_| format!("{real_home}/.rustup"));
    let home_env = [
        ("HOME", home.path().to_str().unwrap()),
        ("CARGO_HOME", cargo_home.as_str()),
        ("RUSTUP_HOME", rustup_home.as_str()),
    ];
    let said = cdk.ok(&dir, &["publish", "--pack"], &home_env);
    let version = toml_version(&dir.join("Connector.toml"));
    let package = hub.join(format!("{krate}-{version}.ipkg"));
    assert!(said.contains(&format!("Package {} created", package.display())), "{krate}:\n{said}");
    assert!(package.is_file(), "{}:\n{said}", package.display());
    let moved = out.join(package.file_name().unwrap());
    std::fs::copy(&package, &moved).unwrap();
    std::fs::remove_dir_all(&hub).unwrap();
    moved
}

fn toml_version(path: &Path) -> String {
    let table: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    table["package"]["version"].as_str().unwrap().to_string()
}

#[test]
fn every_connector_packs_to_an_ipkg_that_cdk_deploys_outside_the_tree() {
    let test = "every_connector_packs_to_an_ipkg_that_cdk_deploys_outside_the_tree";
    let Some(cluster) = local_cluster(test) else { return };
    // Before `cdk`, so that it outlives it: the connectors' logs are in it, and cdk's drop prints them.
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cdk) = Cdk::new(test) else { return };
    let packages: Vec<(String, PathBuf)> =
        CONNECTORS.iter().map(|(krate, _)| (krate.to_string(), pack(&cdk, krate, dir.path()))).collect();
    let world = world(&cluster, dir.path());
    run_the_pipeline(&mut cdk, &cluster, &world, dir.path(), Launch::Ipkg(&packages));
}
