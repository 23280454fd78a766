//! The project's binaries as child processes of a test: found in the cargo target directory that holds
//! the running test (where `cargo test --release` and `scripts/lib.sh` build them), started with their log
//! in a file, signalled by PID, and killed when the handle drops.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A binary of the workspace (`fvision`, `kafka-source`, `gcs-source`, `inference-sink`) in the target
/// directory of the running test.
pub fn target_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("locating the test binary: {e}"));
    exe.ancestors().skip(1).map(|dir| dir.join(name)).find(|candidate| candidate.is_file()).unwrap_or_else(|| {
        panic!(
            "`{name}` is not built next to {}: run `cargo build --release -p {name}` (or ./scripts/test.sh)",
            exe.display()
        )
    })
}

/// A running child process with its combined output in a log file.
pub struct Process {
    /// What it is, for messages.
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program args` with `env`, its stdout and stderr in `log`.
    pub fn start(program: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Self {
        let out = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let name = program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Self { name, child, log: log.to_owned() }
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`-TERM`, `-KILL`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("running kill: {e}"));
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    /// Waits for the exit, failing the test (with the log) after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not exit within {limit:?}; log:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `text` at least `times` times; fails if the process exits first or
    /// after `limit`.
    pub fn wait_log(&mut self, text: &str, times: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.log().matches(text).count() < times {
            if let Some(status) = self.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
                panic!("{} exited ({status}) before logging `{text}` x{times}; log:\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log `{text}` x{times} within {limit:?}; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Its exit status when it has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fails the test (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            panic!("{} exited ({status}); log:\n{}", self.name, self.log());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILLs a process the test did not start itself (a connector under `fvision deploy`'s supervisor);
/// false when there was no such process.
pub fn kill_pid(pid: u32) -> bool {
    signal_pid(pid, "-KILL")
}

/// Sends `signal` (`-KILL`, `-STOP`, `-CONT`) to `pid` with `kill`; false when there was no such process.
pub fn signal_pid(pid: u32, signal: &str) -> bool {
    Command::new("kill").args([signal, &pid.to_string()]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// One process of this machine, as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    /// Its id.
    pub pid: u32,
    /// Its parent's id.
    pub ppid: u32,
    /// Its command line, one argument per element.
    pub argv: Vec<String>,
}

/// Every process of this machine (those that exit while being read are left out).
pub fn processes() -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split after the last `)`.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv = cmdline
                .split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            Some(ProcessInfo { pid, ppid, argv })
        })
        .collect()
}

/// `pid` and every process below it (children, their children, ...), parents first: a server that forks
/// workers (the Python emulators, `fluvio run spu`) is stopped as a whole.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let all = processes();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        let children: Vec<u32> =
            all.iter().filter(|p| p.ppid == parent && !tree.contains(&p.pid)).map(|p| p.pid).collect();
        tree.extend(children);
        i += 1;
    }
    tree
}

/// The resident set size of `pid` in KiB (`VmRSS` of `/proc/PID/status`), `None` once it has exited.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Processes stopped with SIGSTOP: their sockets stay open and every request to them hangs, as when the
/// host is unreachable, and nothing they hold in memory is lost. They get SIGCONT from [`Frozen::thaw`], or
/// when this drops, so a failing test never leaves a server (a shared Fluvio SPU) stopped.
pub struct Frozen {
    /// What was stopped, for messages.
    pub what: String,
    pids: Vec<u32>,
}

impl Frozen {
    /// Stops `pids` (SIGSTOP), children first so no parent sees a child stop under it while running.
    pub fn freeze(what: &str, pids: Vec<u32>) -> Self {
        assert!(!pids.is_empty(), "nothing to stop for {what}");
        for pid in pids.iter().rev() {
            assert!(signal_pid(*pid, "-STOP"), "SIGSTOP {pid} ({what})");
        }
        Self { what: what.to_string(), pids }
    }

    /// The stopped processes.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Continues the processes (SIGCONT).
    pub fn thaw(self) {
        drop(self);
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.pids {
            signal_pid(*pid, "-CONT");
        }
    }
}
