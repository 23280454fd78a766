//! The Google Cloud emulators the sink and source tests talk to, each a real server process on a free
//! loopback port: BigQuery (`bqemulator`), GCS (`gcp-storage-emulator`) and Pub/Sub (`cloudbox`), launched
//! as `fvision dev` launches them ([`fvision_connector_common::standin::Launch`]). They come from the
//! virtualenvs that `scripts/lib.sh` installs (`$FVISION_EMULATORS`, default
//! `~/.cache/fluvio-vision/emulators`). A started emulator is killed when its handle drops, so no test
//! leaves a process behind; a missing virtualenv is a failure that says how to install it (these tests
//! are never skipped).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use fvision_connector_common::standin::{emulators_dir, PROJECT};
use fvision_connector_common::standin::{Launch, StandinError};

/// How long an emulator may take to answer after its start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A running emulator process; killed (and reaped) on drop.
pub struct Emulator {
    /// What it is, for messages.
    pub name: &'static str,
    /// Its port (the REST port for Pub/Sub).
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// How it was started, so [`Emulator::start`] can start it again on the same port.
    launch: Launch,
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

    fn spawn(launch: Result<Launch, StandinError>, dir: tempfile::TempDir) -> Emulator {
        let launch = launch.unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join(format!("{}.log", launch.name));
        let mut emulator = Emulator { name: launch.name, port: launch.port, child: None, log, launch, _dir: dir };
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
        let mut command = Command::new(&self.launch.program);
        command.args(&self.launch.args).envs(self.launch.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.launch.cwd {
            command.current_dir(cwd);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {} emulator: {e}", self.name));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.launch.ready() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("the {} emulator exited ({status}) before it answered:\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the {} emulator did not answer GET {} within {READY_TIMEOUT:?}:\n{}",
                self.name,
                self.launch.ready_path,
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
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let [port, grpc_port] = free_ports();
    Emulator::spawn(Launch::bigquery(dir.path(), port, grpc_port, persistent), dir)
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
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    Emulator::spawn(Launch::gcs(dir.path(), free_port(), on_disk), dir)
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
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (launch, grpc_port) = match Launch::pubsub(dir.path(), free_ports::<11>()) {
        Ok((launch, grpc_port)) => (Ok(launch), grpc_port),
        Err(e) => (Err(e), 0),
    };
    PubSub { emulator: Emulator::spawn(launch, dir), grpc_port }
}
