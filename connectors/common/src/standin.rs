//! What `fvision dev` and the test harness share to start the local stand-in servers (the Google emulators):
//! where their virtualenvs are, how each is launched ([`Launch`]: program, arguments, environment and the
//! request that answers 200 once it serves), a free port and a readiness probe (the status of one `GET`,
//! with just enough HTTP to need no client library). The production binary cannot depend on the test
//! harness, so the harness takes them from here; each keeps its own process handling (`fvision dev`
//! detaches and records them, the harness kills them on drop).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The project id every stand-in is started with.
pub const PROJECT: &str = "test-project";

/// The duckdb version whose extensions bqemulator loads (pinned in `scripts/lib.sh`).
const DUCKDB_VERSION: &str = "v1.5.5";

/// The launcher that runs cloudbox (which asks for Python 3.12) on Python 3.11, written beside the process's
/// log so that `fvision dev` needs no source tree.
const CLOUDBOX_LAUNCHER: &str = include_str!("../../../tests/emulators/cloudbox311.py");

/// Why a stand-in could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandinError {
    /// Its virtualenv is missing.
    #[error(
        "the {name} emulator is not installed in {}: run ./scripts/test.sh once (it installs the emulators), or \
         set FVISION_EMULATORS",
        dir.display()
    )]
    NotInstalled {
        /// The virtualenv's name.
        name: &'static str,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// Preparing its files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StandinError {
    let what = what.into();
    move |source| StandinError::Io { what, source }
}

/// The folder holding the emulators' virtualenvs: `$FVISION_EMULATORS`, else `emulators/` of the cache.
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

fn venv(name: &'static str) -> Result<PathBuf, StandinError> {
    let dir = emulators_dir().join(name);
    if dir.join("bin/python").is_file() {
        Ok(dir)
    } else {
        Err(StandinError::NotInstalled { name, dir })
    }
}

fn site_packages(venv: &Path) -> Result<PathBuf, StandinError> {
    let lib = venv.join("lib");
    std::fs::read_dir(&lib)
        .map_err(io(lib.display().to_string()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("site-packages"))
        .find(|path| path.is_dir())
        .ok_or_else(|| io(lib.display().to_string())(std::io::ErrorKind::NotFound.into()))
}

/// How one stand-in server is started, and how to tell that it serves.
#[derive(Debug, Clone)]
pub struct Launch {
    /// What it is, for messages.
    pub name: &'static str,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to its environment.
    pub env: Vec<(String, String)>,
    /// Its working directory, when it matters (GCS on disk keeps its objects there).
    pub cwd: Option<PathBuf>,
    /// The port [`Launch::ready_path`] answers on (the REST port for Pub/Sub).
    pub port: u16,
    /// The `GET` that answers 200 once it serves.
    pub ready_path: String,
}

impl Launch {
    /// BigQuery (`bqemulator`) on `rest_port` and `grpc_port`, its home (where duckdb finds the extensions it
    /// installs, linked from their PyPI wheels) in `dir`; with `persistent`, its tables in `dir/data`,
    /// surviving a restart, else in memory.
    pub fn bigquery(dir: &Path, rest_port: u16, grpc_port: u16, persistent: bool) -> Result<Self, StandinError> {
        let venv = venv("bq")?;
        let extensions = dir.join(format!(".duckdb/extensions/{DUCKDB_VERSION}/linux_amd64"));
        std::fs::create_dir_all(&extensions).map_err(io(extensions.display().to_string()))?;
        for ext in ["spatial", "avro"] {
            let file = format!("{ext}.duckdb_extension");
            let source =
                site_packages(&venv)?.join(format!("duckdb_extension_{ext}/extensions/{DUCKDB_VERSION}/{file}"));
            let link = extensions.join(&file);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&source, &link).map_err(io(format!("linking {}", source.display())))?;
        }
        let mut args: Vec<String> = [
            "start",
            "--rest-host",
            "127.0.0.1",
            "--rest-port",
            &rest_port.to_string(),
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            &grpc_port.to_string(),
            "--project",
            PROJECT,
        ]
        .map(String::from)
        .into();
        if persistent {
            let data = dir.join("data");
            std::fs::create_dir_all(&data).map_err(io(data.display().to_string()))?;
            args.extend(["--persistent".into(), "--data-dir".into(), data.display().to_string()]);
        } else {
            args.push("--ephemeral".into());
        }
        Ok(Self {
            name: "bigquery",
            program: venv.join("bin/bqemulator"),
            args,
            env: vec![("HOME".into(), dir.display().to_string())],
            cwd: None,
            port: rest_port,
            ready_path: "/readyz".into(),
        })
    }

    /// GCS (`gcp-storage-emulator`) on `port`; `on_disk` keeps its objects in `dir` (surviving a restart),
    /// else in memory.
    pub fn gcs(dir: &Path, port: u16, on_disk: bool) -> Result<Self, StandinError> {
        let venv = venv("gcs")?;
        let mut args: Vec<String> =
            ["start", "--host", "127.0.0.1", "--port", &port.to_string(), "-q"].map(String::from).into();
        if !on_disk {
            args.push("--in-memory".into());
        }
        Ok(Self {
            name: "gcs",
            program: venv.join("bin/gcp-storage-emulator"),
            args,
            env: Vec::new(),
            cwd: on_disk.then(|| dir.to_path_buf()),
            port,
            ready_path: "/storage/v1/b".into(),
        })
    }

    /// Pub/Sub (`cloudbox`, through its Python 3.11 launcher written into `dir`): each of its
    /// [`CLOUDBOX_SERVICES`] on the port at the same place in `ports`; [`Launch::port`] is the REST port.
    /// Returns the gRPC port too (the `PUBSUB_EMULATOR_HOST` one).
    pub fn pubsub(dir: &Path, ports: [u16; 11]) -> Result<(Self, u16), StandinError> {
        let venv = venv("pubsub")?;
        let launcher = dir.join("cloudbox311.py");
        std::fs::write(&launcher, CLOUDBOX_LAUNCHER).map_err(io(launcher.display().to_string()))?;
        let mut env =
            vec![("CLOUDBOX_HOST".to_string(), "127.0.0.1".to_string()), ("CLOUDBOX_PROJECT".into(), PROJECT.into())];
        let (mut grpc, mut rest) = (0, 0);
        for (service, port) in CLOUDBOX_SERVICES.into_iter().zip(ports) {
            env.push((format!("CLOUDBOX_{service}_PORT"), port.to_string()));
            match service {
                "PUBSUB" => grpc = port,
                "PUBSUB_REST" => rest = port,
                _ => {}
            }
        }
        let launch = Self {
            name: "pubsub",
            program: venv.join("bin/python"),
            args: vec![launcher.display().to_string()],
            env,
            cwd: None,
            port: rest,
            ready_path: format!("/v1/projects/{PROJECT}/topics"),
        };
        Ok((launch, grpc))
    }

    /// Whether it serves: its ready `GET` answers 200.
    pub fn ready(&self) -> bool {
        http_get_status(self.port, &self.ready_path) == Some(200)
    }
}

/// The services of the cloudbox emulator, in the order its launcher reads their `CLOUDBOX_<SERVICE>_PORT`.
pub const CLOUDBOX_SERVICES: [&str; 11] = [
    "GCS",
    "PUBSUB",
    "PUBSUB_REST",
    "FIRESTORE",
    "SECRETMANAGER",
    "TASKS",
    "BIGQUERY",
    "SPANNER",
    "LOGGING",
    "SCHEDULER",
    "ADMIN",
];

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The status code of `GET path` on 127.0.0.1:`port`, or `None` when nothing answers.
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 16];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_of_a_server_and_none_where_nothing_listens() {
        let port = free_port().unwrap();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let n = stream.read(&mut request).unwrap();
            assert!(request[..n].starts_with(b"GET /readyz HTTP/1.0\r\n"));
            stream.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").unwrap();
        });
        assert_eq!(http_get_status(port, "/readyz"), Some(503));
        server.join().unwrap();
        assert_eq!(http_get_status(port, "/readyz"), None, "the listener is closed");
    }
}
