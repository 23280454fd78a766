//! Runs the commands of `fluvio-config/RUNBOOK.md` section 11 (the fenced blocks tagged `bash runbook-test`),
//! in order, as a user would: `fvision dev up`, deploy twice, simulate, the watch commands, cleanup,
//! `fvision dev down`. So the test can run beside a user's own stand-ins and deployment, the fixed ports, the
//! state directory and the names are replaced by free ports, a private directory and unique names (the
//! table in `substitutions`); nothing else in a command changes. The SmartModule keeps its package name
//! (`fluvio-vision/image-validate@<version>`, as `smdk load` names it): deploy loads it unless the cluster
//! has it, and cleanup deletes it only if deploy loaded it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fvision_tests::cluster::{local_cluster, unique_name};
use fvision_tests::emulators::free_ports;
use fvision_tests::process::target_binary;
use fvision_tests::repo_root;

/// The commands of the `bash runbook-test` blocks, in order.
fn runbook_commands() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("fluvio-config/RUNBOOK.md")).unwrap();
    let mut commands = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("```") {
            inside = !inside && line.trim() == "```bash runbook-test";
            continue;
        }
        if inside && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            commands.push(line.trim().to_string());
        }
    }
    commands
}

/// Fixed ports and shared names of the runbook → this run's.
fn substitutions(dir: &Path, suffix: &str) -> Vec<(String, String)> {
    let [kafka, bigquery, gcs, pubsub, rest, sink, kafka_source, gcs_source] = free_ports();
    let dev = dir.join("dev");
    vec![
        ("fluvio-config/deploy/local.yaml".into(), dir.join("local.yaml").display().to_string()),
        (
            "fvision dev up".into(),
            format!(
                "fvision dev up --state-dir {} --kafka-port {kafka} --bigquery-port {bigquery} --gcs-port {gcs} --pubsub-port \
                 {pubsub} --pubsub-rest-port {rest} --no-fluvio",
                dev.display()
            ),
        ),
        ("fvision dev down".into(), format!("fvision dev down --state-dir {}", dev.display())),
        ("127.0.0.1:9092".into(), format!("127.0.0.1:{kafka}")),
        ("127.0.0.1:9050".into(), format!("127.0.0.1:{bigquery}")),
        ("127.0.0.1:9023".into(), format!("127.0.0.1:{gcs}")),
        ("127.0.0.1:8085".into(), format!("127.0.0.1:{pubsub}")),
        ("127.0.0.1:9464".into(), format!("127.0.0.1:{sink}")),
        ("metrics-port: 9464".into(), format!("metrics-port: {sink}")),
        ("metrics-port: 9465".into(), format!("metrics-port: {kafka_source}")),
        ("metrics-port: 9466".into(), format!("metrics-port: {gcs_source}")),
        ("fvision-local".into(), suffix.into()),
        ("fluvio consume predictions".into(), format!("fluvio consume {suffix}-predictions")),
        ("fluvio consume images-dlq".into(), format!("fluvio consume {suffix}-dlq")),
        ("fluvio consume images ".into(), format!("fluvio consume {suffix}-images ")),
        ("{name: images,".into(), format!("{{name: {suffix}-images,")),
        ("{name: predictions,".into(), format!("{{name: {suffix}-predictions,")),
        ("{name: images-dlq,".into(), format!("{{name: {suffix}-dlq,")),
        ("../".into(), format!("{}/fluvio-config/", repo_root().display())),
    ]
}

fn substitute(text: &str, table: &[(String, String)]) -> String {
    table.iter().fold(text.to_string(), |text, (from, to)| text.replace(from, to))
}

fn run(command: &str, path: &str) -> (bool, String) {
    let models = repo_root().join("models/presets");
    let out = Command::new("bash")
        .args(["-c", command])
        .current_dir(repo_root())
        .env("PATH", path)
        .env("FVISION_MODELS_DIR", models)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Stops what the runbook started when the test fails half-way.
struct Guard {
    commands: Vec<String>,
    path: String,
    done: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            for command in &self.commands {
                let (_, out) = run(command, &self.path);
                eprintln!("after a failure, {command}:\n{out}");
            }
        }
    }
}

#[test]
fn every_runbook_deploy_command_runs() {
    let test = "every_runbook_deploy_command_runs";
    let Some(cluster) = local_cluster(test) else { return };
    let commands = runbook_commands();
    assert!(commands.len() >= 15, "the runbook's tested commands: {commands:?}");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let suffix = unique_name("fvt-rb");
    let table = substitutions(dir, &suffix);
    let local = std::fs::read_to_string(repo_root().join("fluvio-config/deploy/local.yaml")).unwrap();
    let local = format!("{}state-dir: {}\n", substitute(&local, &table), dir.join("state").display());
    std::fs::write(dir.join("local.yaml"), local).unwrap();
    let bin: PathBuf = target_binary("fvision").parent().unwrap().to_path_buf();
    let fluvio_bin = fvision_tests::cluster::fluvio_cli().unwrap().parent().unwrap().to_path_buf();
    let path = format!("{}:{}:{}", bin.display(), fluvio_bin.display(), std::env::var("PATH").unwrap_or_default());
    let cleanup: Vec<String> = commands
        .iter()
        .filter(|c| c.starts_with("fvision cleanup") || c.starts_with("fvision dev down"))
        .map(|c| substitute(c, &table))
        .collect();
    let mut guard = Guard { commands: cleanup, path: path.clone(), done: false };

    let mut deploys = 0;
    for command in &commands {
        let actual = substitute(command, &table);
        if command.starts_with("fvision status") || command.starts_with("fluvio consume") {
            // Watch once the sink has written something.
            let deadline = Instant::now() + Duration::from_secs(180);
            while cluster.read_all(&format!("{suffix}-predictions")).len() < 3 {
                assert!(Instant::now() < deadline, "no predictions 180 s after the simulator");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        let (ok, out) = run(&actual, &path);
        let head: Vec<String> = out.lines().take(12).map(|l| l.chars().take(200).collect()).collect();
        eprintln!("$ {actual}\n{}", head.join("\n"));
        assert!(ok, "runbook command failed: {command}\n(run as: {actual})\n{out}");
        if command.starts_with("fvision deploy") {
            deploys += 1;
            if deploys == 2 {
                assert!(out.contains("deploy: nothing changed"), "the second deploy changes nothing:\n{out}");
            }
        }
        if command.starts_with("fvision cleanup") {
            assert!(out.contains(&format!("deleted  Fluvio topic {suffix}-images")), "{out}");
        }
        if command.starts_with("fluvio consume") && !command.contains("images-dlq") {
            assert!(!out.trim().is_empty(), "{command} printed records");
        }
        if command.starts_with("fvision dev down") {
            assert!(out.contains("stopped   kafka") && out.contains("left      the Fluvio cluster"), "{out}");
        }
    }
    guard.done = true;
    assert_eq!(deploys, 2);
    assert!(!cluster.cli_ok(&["topic", "list"]).contains(&suffix), "cleanup left no topic");
}
