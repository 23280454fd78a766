//! `fvision dev up` / `fvision dev down`: the local stand-ins the shipped `fluvio-config/deploy/local.yaml`
//! points at, on fixed loopback ports: the Fluvio cluster (a running one is reused and never stopped), a
//! Kafka-protocol broker (librdkafka's mock cluster, hosted by a background `fvision dev broker`), and the
//! BigQuery, GCS and Pub/Sub emulators from `$FVISION_EMULATORS` (installed by `scripts/lib.sh`). `up`
//! records what it started in its state directory; `down` stops exactly that.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::deploy::resources;
use super::deploy::supervisor;

use fvision_connector_common::standin::{Launch, CLOUDBOX_SERVICES, PROJECT};

/// Local stand-ins for the whole job: Fluvio, Kafka, BigQuery, GCS, Pub/Sub.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Start the stand-ins (a running Fluvio cluster is reused) and print their endpoints.
    Up(UpArgs),
    /// Stop what `dev up` started (never a Fluvio cluster it did not start).
    Down(DownArgs),
    /// Host a Kafka-protocol broker (librdkafka's mock cluster) until SIGTERM; started by `dev up`.
    #[command(hide = true)]
    Broker(BrokerArgs),
}

/// `dev up`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fvision dev up                 # Kafka 127.0.0.1:9092, BigQuery :9050, GCS :9023, Pub/Sub :8085 (REST :8086)
  fvision dev up --kafka-port 19092 --state-dir /tmp/fvdev")]
pub struct UpArgs {
    /// Where pids, logs and emulator data go [default: $FVISION_STATE_DIR/dev, else ~/.local/state/fluvio-vision/dev].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The Kafka broker's bootstrap port.
    #[arg(long, default_value_t = 9092)]
    kafka_port: u16,
    /// The BigQuery emulator's REST port.
    #[arg(long, default_value_t = 9050)]
    bigquery_port: u16,
    /// The GCS emulator's port.
    #[arg(long, default_value_t = 9023)]
    gcs_port: u16,
    /// The Pub/Sub emulator's gRPC port (PUBSUB_EMULATOR_HOST).
    #[arg(long, default_value_t = 8085)]
    pubsub_port: u16,
    /// The Pub/Sub emulator's REST port.
    #[arg(long, default_value_t = 8086)]
    pubsub_rest_port: u16,
    /// Do not start a Fluvio cluster when none answers (fail instead).
    #[arg(long)]
    no_fluvio: bool,
}

/// `dev down`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fvision dev down                         # stops what `fvision dev up` started
  fvision dev down --state-dir /tmp/fvdev  # the state directory given to `dev up`")]
pub struct DownArgs {
    /// The state directory given to `dev up`.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// `dev broker`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// The loopback port clients bootstrap from.
    #[arg(long, default_value_t = 9092)]
    port: u16,
}

/// What `dev up` started.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DevState {
    /// Whether `up` started the Fluvio cluster (then `down` deletes it).
    pub fluvio_started: bool,
    /// The processes, in start order.
    pub processes: Vec<DevProcess>,
}

/// One started process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevProcess {
    /// What it stands in for.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// A word of its command line, checked before it is signalled (pids are reused).
    pub word: String,
    /// Where it answers.
    pub endpoint: String,
}

fn default_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf).unwrap_or_else(|| {
        let base = std::env::var_os("FVISION_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            home.join(".local/state/fluvio-vision")
        });
        base.join("dev")
    })
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("dev.json")
}

/// Runs a `dev` subcommand.
pub fn run(command: DevCommand) -> Result<ExitCode> {
    match command {
        DevCommand::Up(args) => up(args),
        DevCommand::Down(args) => down(args),
        DevCommand::Broker(args) => broker(args),
    }
}

/// The folder holding the emulators' virtualenvs.
fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Starts `launch` detached, its log `<name>.log` in `dir`, and waits until it serves.
fn start(launch: &Launch, dir: &Path) -> Result<u32> {
    let log = dir.join(format!("{}.log", launch.name));
    let pid = supervisor::spawn_detached(&launch.program, &launch.args, &launch.env, &log)?;
    wait_for(&format!("the {} emulator", launch.name), pid, &log, || launch.ready())?;
    Ok(pid)
}

fn wait_for(name: &str, pid: u32, log: &Path, ready: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ready() {
        if !supervisor::alive(pid) {
            bail!(
                "{name} exited before it answered; its log {}:\n{}",
                log.display(),
                super::deploy::status::log_tail(log, 20)
            );
        }
        if Instant::now() > deadline {
            supervisor::stop(pid, Duration::from_secs(5));
            bail!(
                "{name} did not answer within 90 s; its log {}:\n{}",
                log.display(),
                super::deploy::status::log_tail(log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn up(args: UpArgs) -> Result<ExitCode> {
    let dir = default_dir(args.state_dir.as_deref());
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let mut state: DevState =
        std::fs::read_to_string(state_file(&dir)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    state.processes.retain(|p| supervisor::alive_as(p.pid, &p.word));
    let running = |state: &DevState, name: &str| state.processes.iter().any(|p| p.name == name);
    let save = |state: &DevState| -> Result<()> {
        std::fs::write(state_file(&dir), serde_json::to_string_pretty(state)?).context("writing dev.json")
    };

    // Fluvio: reuse a cluster that answers; otherwise start one (and remember to delete it).
    let answers = resources::fluvio(&["topic", "list"]).is_ok();
    let fluvio_line = if answers {
        let profile = resources::fluvio(&["profile", "current"]).unwrap_or_default();
        format!(
            "Fluvio    profile {} ({})",
            profile.trim(),
            if state.fluvio_started { "started by dev up" } else { "a running cluster, reused; dev down leaves it" }
        )
    } else if args.no_fluvio {
        bail!("no Fluvio cluster answers (`fluvio topic list` fails) and --no-fluvio was given");
    } else {
        println!("starting a local Fluvio cluster (fluvio cluster start --local)...");
        resources::fluvio(&["cluster", "start", "--local"])?;
        state.fluvio_started = true;
        save(&state)?;
        "Fluvio    profile local (started by dev up; dev down deletes it)".to_string()
    };

    let exe = std::env::current_exe()?;
    if !running(&state, "kafka") {
        if !port_free(args.kafka_port) {
            bail!("port {} (Kafka) is taken by another process: pass --kafka-port", args.kafka_port);
        }
        let log = dir.join("kafka.log");
        let pid = supervisor::spawn_detached(
            &exe,
            &["dev".into(), "broker".into(), "--port".into(), args.kafka_port.to_string()],
            &[],
            &log,
        )?;
        let address = format!("127.0.0.1:{}", args.kafka_port);
        wait_for("the Kafka broker", pid, &log, || resources::tcp_answers(&address))?;
        state.processes.push(DevProcess { name: "kafka".into(), pid, word: "broker".into(), endpoint: address });
        save(&state)?;
    }
    if !running(&state, "bigquery") {
        if !port_free(args.bigquery_port) {
            bail!("port {} (BigQuery) is taken by another process: pass --bigquery-port", args.bigquery_port);
        }
        let grpc = free_port()?;
        let launch = Launch::bigquery(&dir.join("bq-home"), args.bigquery_port, grpc, false)?;
        let pid = start(&launch, &dir)?;
        state.processes.push(DevProcess {
            name: "bigquery".into(),
            pid,
            word: "bqemulator".into(),
            endpoint: format!("http://127.0.0.1:{}", args.bigquery_port),
        });
        save(&state)?;
    }
    if !running(&state, "gcs") {
        if !port_free(args.gcs_port) {
            bail!("port {} (GCS) is taken by another process: pass --gcs-port", args.gcs_port);
        }
        let launch = Launch::gcs(&dir, args.gcs_port, false)?;
        let pid = start(&launch, &dir)?;
        state.processes.push(DevProcess {
            name: "gcs".into(),
            pid,
            word: "gcp-storage-emulator".into(),
            endpoint: format!("http://127.0.0.1:{}", args.gcs_port),
        });
        save(&state)?;
    }
    if !running(&state, "pubsub") {
        for port in [args.pubsub_port, args.pubsub_rest_port] {
            if !port_free(port) {
                bail!("port {port} (Pub/Sub) is taken by another process: pass --pubsub-port / --pubsub-rest-port");
            }
        }
        let mut ports = [0; 11];
        for (service, port) in CLOUDBOX_SERVICES.into_iter().zip(&mut ports) {
            *port = match service {
                "PUBSUB" => args.pubsub_port,
                "PUBSUB_REST" => args.pubsub_rest_port,
                _ => free_port()?,
            };
        }
        let (launch, _) = Launch::pubsub(&dir, ports)?;
        let pid = start(&launch, &dir)?;
        state.processes.push(DevProcess {
            name: "pubsub".into(),
            pid,
            word: "cloudbox311".into(),
            endpoint: format!(
                "127.0.0.1:{} (gRPC), http://127.0.0.1:{} (REST)",
                args.pubsub_port, args.pubsub_rest_port
            ),
        });
        save(&state)?;
    }

    println!("{fluvio_line}");
    for p in &state.processes {
        println!("{:<9} {} (pid {})", p.name, p.endpoint, p.pid);
    }
    println!("project   {PROJECT} (BigQuery, GCS, Pub/Sub)");
    println!("state     {} (logs: *.log)", dir.display());
    println!("export PUBSUB_EMULATOR_HOST=127.0.0.1:{}", args.pubsub_port);
    println!("next: fvision deploy fluvio-config/deploy/local.yaml; stop with: fvision dev down");
    Ok(ExitCode::SUCCESS)
}

fn free_port() -> Result<u16> {
    Ok(fvision_connector_common::standin::free_port()?)
}

fn down(args: DownArgs) -> Result<ExitCode> {
    let dir = default_dir(args.state_dir.as_deref());
    let text = match std::fs::read_to_string(state_file(&dir)) {
        Ok(text) => text,
        Err(_) => {
            println!("dev down: nothing recorded in {} (dev up was not run there)", dir.display());
            return Ok(ExitCode::SUCCESS);
        }
    };
    let state: DevState = serde_json::from_str(&text).context("dev.json")?;
    let mut failed = false;
    for p in state.processes.iter().rev() {
        if !supervisor::alive_as(p.pid, &p.word) {
            println!("gone      {} (pid {} had already exited)", p.name, p.pid);
        } else if supervisor::stop(p.pid, Duration::from_secs(10)) {
            println!("stopped   {} (pid {})", p.name, p.pid);
        } else {
            println!("FAILED    {} (pid {}) did not stop", p.name, p.pid);
            failed = true;
        }
    }
    if state.fluvio_started {
        match resources::fluvio(&["cluster", "delete", "--force"]) {
            Ok(_) => println!("stopped   the Fluvio cluster dev up started (deleted with its data)"),
            Err(e) => {
                println!("FAILED    deleting the Fluvio cluster: {e:#}");
                failed = true;
            }
        }
    } else {
        println!("left      the Fluvio cluster (dev up did not start it)");
    }
    if !failed {
        std::fs::remove_file(state_file(&dir))?;
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Copies bytes both ways between a client and the mock broker until either side closes.
fn forward(client: TcpStream, target: &str) {
    let Ok(upstream) = TcpStream::connect(target) else { return };
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone()) else { return };
    let (mut client_write, mut upstream_read) = (client, upstream);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut upstream_read, &mut client_write);
        let _ = client_write.shutdown(std::net::Shutdown::Write);
    });
}

/// librdkafka's mock cluster listens on a port of its choosing; clients bootstrap through `--port` (a
/// byte-for-byte forwarder) and then reach the broker at the address its metadata advertises.
fn broker(args: BrokerArgs) -> Result<ExitCode> {
    let stop = fvision_connector_common::binary::stop_on_signals()?;
    let mock = rdkafka::mocking::MockCluster::new(1).map_err(|e| anyhow!("starting the Kafka mock cluster: {e}"))?;
    let target = mock.bootstrap_servers();
    let listener =
        TcpListener::bind(("127.0.0.1", args.port)).with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    listener.set_nonblocking(true)?;
    println!("Kafka mock cluster: bootstrap 127.0.0.1:{} -> broker {target}", args.port);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                forward(client, &target);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.into()),
        }
    }
    println!("Kafka mock cluster: stopped");
    drop(mock);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_directory_defaults_under_the_state_home() {
        assert_eq!(default_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
        assert!(default_dir(None).ends_with("dev"));
    }
}
