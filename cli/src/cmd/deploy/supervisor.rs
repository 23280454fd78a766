//! The supervisor `deploy` starts for each connector (`fvision supervise`, hidden): runs the connector,
//! restarts it when it exits without being asked (backoff 1 s doubling to 30 s, back to 1 s after 10 s
//! up), and on SIGTERM passes SIGTERM on and waits for the connector's drain. Its files, in the state
//! directory: `NAME.log` (the connector's output and the supervisor's own lines), `NAME.pid` (the running
//! connector), `NAME.supervisor.pid`, `NAME.restarts`.
//!
//! Also the process helpers `deploy`, `status`, `cleanup` and `dev` share: liveness from `/proc`, signals
//! by pid, detached starts.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

/// Run a connector and restart it when it crashes (started by `fvision deploy`).
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// Names the files in `--dir`.
    #[arg(long)]
    name: String,
    /// The state directory.
    #[arg(long)]
    dir: PathBuf,
    /// How long the connector may drain after SIGTERM before it is killed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stop_timeout: Duration,
    /// The connector and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// The delay before restart number `restarts` (1-based) of a connector that crashed right away.
pub fn backoff(restarts: u32) -> Duration {
    fvision_connector_common::backoff::delay(Duration::from_secs(1), Duration::from_secs(30), restarts)
}

/// How long a connector must stay up for its next exit to count as the first again: a connector killed
/// after working for a while comes back after 1 s; one that cannot start backs off to 30 s.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// The files of connector `name` in `dir`.
pub struct Files {
    /// Output of the connector and of its supervisor.
    pub log: PathBuf,
    /// The connector's pid.
    pub pid: PathBuf,
    /// The supervisor's pid.
    pub supervisor_pid: PathBuf,
    /// How many times it was restarted.
    pub restarts: PathBuf,
    /// The effective connector YAML.
    pub config: PathBuf,
}

impl Files {
    /// The files of `name` under `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            log: dir.join(format!("{name}.log")),
            pid: dir.join(format!("{name}.pid")),
            supervisor_pid: dir.join(format!("{name}.supervisor.pid")),
            restarts: dir.join(format!("{name}.restarts")),
            config: dir.join(format!("{name}.yaml")),
        }
    }
}

/// `fvision supervise`.
pub fn run(args: SuperviseArgs) -> Result<ExitCode> {
    let files = Files::new(&args.dir, &args.name);
    let stop = fvision_connector_common::binary::stop_on_signals()?;
    std::fs::write(&files.supervisor_pid, std::process::id().to_string())?;
    let (program, rest) = args.command.split_first().context("no connector command")?;
    let mut restarts = 0u32;
    let mut quick_crashes = 0u32;
    loop {
        let started = Instant::now();
        let mut child = spawn_logged(program, rest, &files.log)?;
        std::fs::write(&files.pid, child.id().to_string())?;
        note(&files.log, &format!("started {} (pid {})", args.name, child.id()));
        let status = loop {
            if stop.load(Ordering::Relaxed) {
                let code = drain(&mut child, args.stop_timeout, &files.log);
                let _ = std::fs::remove_file(&files.pid);
                let _ = std::fs::remove_file(&files.supervisor_pid);
                return Ok(code);
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        quick_crashes = if started.elapsed() >= HEALTHY_AFTER { 1 } else { quick_crashes + 1 };
        restarts += 1;
        std::fs::write(&files.restarts, restarts.to_string())?;
        let delay = backoff(quick_crashes);
        note(&files.log, &format!("{} exited ({status}); restart {restarts} in {delay:?}", args.name));
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&files.pid);
                let _ = std::fs::remove_file(&files.supervisor_pid);
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// SIGTERM, then the drain's wait; SIGKILL after `limit`. Exit 0 when the connector drained cleanly.
fn drain(child: &mut Child, limit: Duration, log: &Path) -> ExitCode {
    note(log, &format!("stopping pid {} (SIGTERM; drain up to {limit:?})", child.id()));
    signal(child.id(), "TERM");
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                note(log, &format!("stopped ({status})"));
                return if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                note(log, "did not drain in time: SIGKILL");
                let _ = child.kill();
                let _ = child.wait();
                return ExitCode::FAILURE;
            }
        }
    }
}

/// The log `log` for appending, readable by its owner only (0600, also when it existed): a connector's output
/// may name its endpoints and accounts even with every secret redacted.
fn open_log(log: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).mode(0o600).open(log)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Writes `contents` to `path`, readable by its owner only (0600): the rendered connector configs, which can
/// hold credentials written into them literally.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())
}

fn spawn_logged(program: &str, args: &[String], log: &Path) -> Result<Child> {
    let out = open_log(log).with_context(|| log.display().to_string())?;
    let err = out.try_clone()?;
    Command::new(program)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {program}"))
}

/// Appends one supervisor line to the log.
fn note(log: &Path, line: &str) {
    if let Ok(mut file) = open_log(log) {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let _ = writeln!(file, "{now} SUPERVISOR {line}");
    }
}

/// Starts `program args` in its own process group (a terminal's Ctrl-C does not reach it), output appended
/// to `log`, and leaves it running after this process exits. Returns its pid.
pub fn spawn_detached(program: &Path, args: &[String], env: &[(String, String)], log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let out = open_log(log).with_context(|| log.display().to_string())?;
    let err = out.try_clone()?;
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id();
    // Reaped by whoever inherits it once we exit; until then a thread reaps it so it never lingers as a zombie.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(pid)
}

/// Whether `pid` is a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// Whether `pid` is alive and its command line mentions `word` (a pid file may outlive its process and the
/// pid be reused).
pub fn alive_as(pid: u32, word: &str) -> bool {
    alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).replace('\0', " ").contains(word))
}

/// Sends `SIG<name>` to `pid` (`TERM`, `KILL`); false when no such process.
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The pid in a pid file, if any.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits until `pid` is gone; false after `limit`.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Stops a process: SIGTERM, then SIGKILL after `limit`. True when it is gone.
pub fn stop(pid: u32, limit: Duration) -> bool {
    if !alive(pid) {
        return true;
    }
    signal(pid, "TERM");
    if wait_gone(pid, limit) {
        return true;
    }
    signal(pid, "KILL");
    wait_gone(pid, Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 28: rendered configs and logs, which can carry credentials, are the owner's alone.
    #[test]
    fn configs_and_logs_are_written_for_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let (config, log) = (dir.path().join("c.yaml"), dir.path().join("c.log"));
        // Files that existed with wider modes are narrowed too.
        for path in [&config, &log] {
            std::fs::write(path, "old").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        write_private(&config, "sasl.password: p").unwrap();
        note(&log, "started");
        for path in [&config, &log] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "sasl.password: p");
        assert!(std::fs::read_to_string(&log).unwrap().contains("SUPERVISOR started"));
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_process_is_alive_until_it_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleep.log");
        let pid = spawn_detached(Path::new("sleep"), &["30".into()], &[], &log).unwrap();
        // Until the child has exec'd, its command line is still this test's.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !alive_as(pid, "sleep") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(alive_as(pid, "sleep"));
        assert!(!alive_as(pid, "kafka-source"));
        assert!(stop(pid, Duration::from_secs(5)));
        assert!(!alive(pid));
    }
}
