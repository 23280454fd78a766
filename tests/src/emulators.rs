//! The Google Cloud emulators the sink and source tests talk to, each a real server process on a free
//! loopback port: BigQuery (`bqemulator`), GCS (`gcp-storage-emulator`) and Pub/Sub (`cloudbox`). They
//! come from the virtualenvs that `scripts/lib.sh` installs (`$FVISION_EMULATORS`, default
//! `~/.cache/fluvio-vision/emulators`). A started emulator is killed when its handle drops, so no test
//! leaves a process behind; a missing virtualenv is a failure that says how to install it (these tests
//! are never skipped).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The project id every emulator is started with.
pub const PROJECT: &str = "test-project";

/// How long an emulator may take to answer after its start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The duckdb version whose extensions bqemulator loads (pinned in `scripts/lib.sh`).
const DUCKDB_VERSION: &str = "v1.5.5";

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    fvision_connector_common::standin::free_port().unwrap_or_else(|e| panic!("finding a free loopback port: {e}"))
}

/// `N` distinct free loopback ports: every listener is held until all are found, so the OS cannot hand the
/// same port out twice (one emulator process listening on several ports needs them all different).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("finding a free loopback port: {e}")))
        .collect();
    std::array::from_fn(|i| {
        listeners[i].local_addr().map(|addr| addr.port()).unwrap_or_else(|e| panic!("reading a bound port: {e}"))
    })
}

/// The folder holding the emulators' virtualenvs.
pub fn emulators_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FVISION_EMULATORS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("FLUVIO_VISION_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache/fluvio-vision")
    });
    cache.join("emulators")
}

fn venv(name: &str) -> PathBuf {
    let dir = emulators_dir().join(name);
    assert!(
        dir.join("bin/python").is_file(),
        "the {name} emulator is not installed in {}: run ./scripts/test.sh (it installs the emulators)",
        dir.display()
    );
    dir
}

/// A running emulator process; killed (and reaped) on drop.
pub struct Emulator {
    /// What it is, for messages.
    pub name: &'static str,
    /// Its port (the REST port for Pub/Sub).
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// How it was started, so [`Emulator::start`] can start it again on the same port.
    command: Command,
    ready_path: String,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the process printed so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, for tests that stop the server under the code being tested (0 while stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the process (SIGKILL) and reaps it: the port stops answering. What the emulator stored survives
    /// only for the persistent ones ([`bigquery_persistent`], [`gcs_on_disk`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the emulator and every process it started (SIGSTOP) until the handle is thawed or dropped:
    /// its port still accepts connections but nothing answers, as when its host is unreachable, and
    /// what it holds in memory survives (cloudbox's Pub/Sub topics, subscriptions and unacked messages).
    pub fn freeze(&self) -> crate::process::Frozen {
        assert!(self.pid() != 0, "the {} emulator is not running", self.name);
        crate::process::Frozen::freeze(self.name, crate::process::process_tree(self.pid()))
    }

    /// Starts the stopped emulator again on the same port and waits until it answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the {} emulator is already running", self.name);
        // The killed process's socket may linger for a moment; the new one binds once it is free.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(("127.0.0.1", self.port)).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.launch();
    }

    fn spawn(name: &'static str, port: u16, command: Command, ready_path: &str, dir: tempfile::TempDir) -> Emulator {
        let log = dir.path().join(format!("{name}.log"));
        let mut emulator =
            Emulator { name, port, child: None, log, command, ready_path: ready_path.to_string(), _dir: dir };
        emulator.launch();
        emulator
    }

    fn launch(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = self
            .command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {} emulator: {e}", self.name));
        self.child = Some(child);
        let path = self.ready_path.clone();
        self.wait_ready(&path);
    }

    fn wait_ready(&mut self, path: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if http_get_status(self.port, path) == Some(200) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("the {} emulator exited ({status}) before it answered:\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the {} emulator did not answer GET {path} within {READY_TIMEOUT:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

pub use fvision_connector_common::standin::http_get_status;

/// BigQuery (`bqemulator`), in memory; its REST API is at [`bigquery_base_url`].
pub fn bigquery() -> Emulator {
    bigquery_with(false)
}

/// BigQuery backed by a DuckDB file in the emulator's temporary folder, so its tables survive
/// [`Emulator::stop`] and [`Emulator::start`].
pub fn bigquery_persistent() -> Emulator {
    bigquery_with(true)
}

fn bigquery_with(persistent: bool) -> Emulator {
    let venv = venv("bq");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // bqemulator runs `INSTALL spatial/avro`; the extensions come from PyPI wheels, linked where duckdb
    // looks for them under $HOME.
    let extensions = dir.path().join(format!(".duckdb/extensions/{DUCKDB_VERSION}/linux_amd64"));
    std::fs::create_dir_all(&extensions).unwrap_or_else(|e| panic!("{e}"));
    for ext in ["spatial", "avro"] {
        let file = format!("{ext}.duckdb_extension");
        let source = site_packages(&venv).join(format!("duckdb_extension_{ext}/extensions/{DUCKDB_VERSION}/{file}"));
        std::os::unix::fs::symlink(&source, extensions.join(&file))
            .unwrap_or_else(|e| panic!("linking {}: {e}", source.display()));
    }
    let [port, grpc_port] = free_ports();
    let mut command = Command::new(venv.join("bin/bqemulator"));
    command.env("HOME", dir.path()).args([
        "start",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        &port.to_string(),
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        &grpc_port.to_string(),
        "--project",
        PROJECT,
    ]);
    if persistent {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
        command.arg("--persistent").arg("--data-dir").arg(data);
    } else {
        command.arg("--ephemeral");
    }
    Emulator::spawn("bigquery", port, command, "/readyz", dir)
}

/// The base URL of the BigQuery v2 REST API of `emulator`, as `gcp-bigquery-client` takes it.
pub fn bigquery_base_url(emulator: &Emulator) -> String {
    format!("{}/bigquery/v2", emulator.url())
}

/// GCS (`gcp-storage-emulator`), in memory; the JSON API is at `url()/storage/v1`.
pub fn gcs() -> Emulator {
    gcs_with(false)
}

/// GCS storing its objects in the emulator's temporary folder, so they survive [`Emulator::stop`] and
/// [`Emulator::start`].
pub fn gcs_on_disk() -> Emulator {
    gcs_with(true)
}

fn gcs_with(on_disk: bool) -> Emulator {
    let venv = venv("gcs");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let mut command = Command::new(venv.join("bin/gcp-storage-emulator"));
    command.args(["start", "--host", "127.0.0.1", "--port", &port.to_string(), "-q"]);
    if on_disk {
        command.current_dir(dir.path());
    } else {
        command.arg("--in-memory");
    }
    Emulator::spawn("gcs", port, command, "/storage/v1/b", dir)
}

/// Pub/Sub (`cloudbox`): `port` is its REST port; [`PubSub::grpc_host`] is the `PUBSUB_EMULATOR_HOST`
/// value for gRPC clients.
pub struct PubSub {
    /// The process, REST port.
    pub emulator: Emulator,
    /// The gRPC port.
    pub grpc_port: u16,
}

impl PubSub {
    /// `127.0.0.1:PORT` of the gRPC server (the `PUBSUB_EMULATOR_HOST` convention).
    pub fn grpc_host(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:PORT` of the REST API.
    pub fn rest_url(&self) -> String {
        self.emulator.url()
    }
}

/// Pub/Sub (`cloudbox`, run on Python 3.11 by `tests/emulators/cloudbox311.py`). cloudbox starts eleven
/// servers; each gets its own free port.
pub fn pubsub() -> PubSub {
    let venv = venv("pubsub");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let launcher = crate::repo_root().join("tests/emulators/cloudbox311.py");
    let mut command = Command::new(venv.join("bin/python"));
    command.arg(launcher).env("CLOUDBOX_HOST", "127.0.0.1").env("CLOUDBOX_PROJECT", PROJECT);
    let mut grpc_port = 0;
    let mut rest_port = 0;
    for (service, port) in fvision_connector_common::standin::CLOUDBOX_SERVICES.into_iter().zip(free_ports::<11>()) {
        command.env(format!("CLOUDBOX_{service}_PORT"), port.to_string());
        match service {
            "PUBSUB" => grpc_port = port,
            "PUBSUB_REST" => rest_port = port,
            _ => {}
        }
    }
    let ready = format!("/v1/projects/{PROJECT}/topics");
    let emulator = Emulator::spawn("pubsub", rest_port, command, &ready, dir);
    PubSub { emulator, grpc_port }
}

fn site_packages(venv: &Path) -> PathBuf {
    let lib = venv.join("lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("site-packages"))
        .find(|path| path.is_dir())
        .unwrap_or_else(|| panic!("no site-packages under {}", lib.display()))
}
