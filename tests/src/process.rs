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
    Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}
