//! The release archive runs anywhere: `scripts/package.sh --no-build` packs the built binaries, the archive
//! is unpacked into an empty folder, and everything runs from there with a clean environment (`env_clear`,
//! another `HOME`, `PATH=/usr/bin:/bin` without cargo, no `FVISION_*` or `ORT_DYLIB_PATH`, the working
//! directory outside the source tree): `fvision models list`, `fvision run` on the shipped demo images with
//! the same predictions as the build, and the archive's `inference-sink` classifying on the live cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use fvision_tests::cluster::{local_cluster, unique_name};
use fvision_tests::emulators::free_port;
use fvision_tests::process::target_binary;
use fvision_tests::{output_text, repo_root, target_dir};

/// Packs the archive into `out` from the binaries already built; returns its path.
fn pack(out: &Path) -> PathBuf {
    let run = Command::new("bash")
        .arg(repo_root().join("scripts/package.sh"))
        .args(["--no-build", "--out"])
        .arg(out)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(run.status.success(), "package.sh --no-build:\n{}", output_text(&run));
    let name = format!("fluvio-vision-{}-x86_64-unknown-linux-gnu.tar.gz", env!("CARGO_PKG_VERSION"));
    let archive = out.join(name);
    assert!(archive.is_file(), "package.sh wrote {}:\n{}", archive.display(), output_text(&run));
    archive
}

/// `program` with nothing of this environment: another HOME, the system's PATH only, run in `cwd`.
fn clean(program: &Path, home: &Path, cwd: &Path) -> Command {
    let mut command = Command::new(program);
    command.env_clear().env("HOME", home).env("PATH", "/usr/bin:/bin").env("NO_COLOR", "1").current_dir(cwd);
    command
}

/// file name → label, from `fvision run --output` JSON lines.
fn labels(jsonl: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(jsonl)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|v| {
            let file = v["file"].as_str().unwrap_or_default();
            let name = Path::new(file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name, v["label"].as_str().unwrap_or("(none)").to_string())
        })
        .collect()
}

/// The demo images the archive ships (every file but the licence notes).
fn shipped_demo_images(share: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(share.join("data/demo-images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn the_release_archive_runs_from_an_empty_folder_with_a_clean_environment() {
    assert!(!Path::new("/usr/bin/cargo").exists() && !Path::new("/bin/cargo").exists(), "the clean PATH has no cargo");
    let dir = tempfile::tempdir().unwrap();
    let archive = pack(&dir.path().join("dist"));
    let unpacked = dir.path().join("opt");
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    for d in [&unpacked, &home, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    let untar = Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(&unpacked).output().unwrap();
    assert!(untar.status.success(), "{}", output_text(&untar));
    let root = unpacked.join(archive.file_name().unwrap().to_string_lossy().trim_end_matches(".tar.gz"));
    let share = root.join("share/fluvio-vision");
    for file in [
        "bin/fvision",
        "bin/inference-sink",
        "bin/kafka-source",
        "bin/gcs-source",
        "lib/libonnxruntime.so",
        "README.md",
        "share/fluvio-vision/smartmodule/image_validate.wasm",
        "share/fluvio-vision/smartmodule/SmartModule.toml",
        "share/fluvio-vision/models/presets/efficientnet-lite0.toml",
        "share/fluvio-vision/models/onnx/efficientnet-lite0.onnx",
        "share/fluvio-vision/fluvio-config/connectors/inference-sink.yaml",
        "share/fluvio-vision/fluvio-config/topics/images.yaml",
        "share/fluvio-vision/fluvio-config/grafana/fluvio-vision.json",
    ] {
        assert!(root.join(file).is_file(), "the archive holds {file}");
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("## Install") && !readme.contains("@VERSION@"), "README with the install steps:\n{readme}");

    // fvision models list: every preset the archive ships.
    let fvision = root.join("bin/fvision");
    let out = clean(&fvision, &home, &work).args(["models", "list"]).output().unwrap();
    assert!(out.status.success(), "fvision models list:\n{}", output_text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    let presets: Vec<String> = std::fs::read_dir(share.join("models/presets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            std::fs::read_to_string(p).unwrap().parse::<toml::Table>().unwrap()["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(presets.len() >= 6, "{presets:?}");
    for preset in &presets {
        assert!(listed.lines().any(|l| l.split_whitespace().next() == Some(preset.as_str())), "{preset}:\n{listed}");
    }

    // fvision run on its own demo images: the build's predictions, image for image.
    let out = clean(&fvision, &home, &work).args(["run", "--output", "run.jsonl"]).output().unwrap();
    assert!(out.status.success(), "fvision run:\n{}", output_text(&out));
    let from_archive = labels(&work.join("run.jsonl"));
    let reference = dir.path().join("reference.jsonl");
    let out = Command::new(target_binary("fvision"))
        .arg("run")
        .arg(repo_root().join("data/demo-images"))
        .arg("--output")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(out.status.success(), "the build's fvision run:\n{}", output_text(&out));
    let demos = shipped_demo_images(&share);
    assert_eq!(from_archive.len(), demos.len(), "one prediction per shipped demo image: {from_archive:?}");
    assert_eq!(from_archive, labels(&reference), "the archive classifies as the build does");
    assert!(from_archive.values().all(|label| label != "(none)"), "{from_archive:?}");

    // The archive's sink on the live cluster, validating with the archive's .wasm in-process.
    let Some(cluster) = local_cluster("the_release_archive_runs_from_an_empty_folder_with_a_clean_environment") else {
        return;
    };
    let real_home = std::env::var_os("HOME").map(PathBuf::from).unwrap();
    std::fs::create_dir_all(home.join(".fluvio")).unwrap();
    std::fs::copy(real_home.join(".fluvio/config"), home.join(".fluvio/config")).expect("the Fluvio profile");
    let [images, predictions, dlq] = ["images", "predictions", "dlq"].map(|t| unique_name(&format!("fvt-pkg-{t}")));
    for topic in [&images, &predictions, &dlq] {
        cluster.create_topic(topic);
    }
    let records: Vec<(String, Vec<u8>)> = demos
        .iter()
        .take(3)
        .map(|(name, bytes)| {
            let data = base64::engine::general_purpose::STANDARD.encode(bytes);
            let event = serde_json::json!({"id": format!("pkg-{name}"), "source": "file", "uri": name, "data": data});
            (format!("pkg-{name}"), serde_json::to_vec(&event).unwrap())
        })
        .collect();
    cluster.produce(&images, &records);
    let consumer = unique_name("fvt-pkg-sink");
    let yaml = std::fs::read_to_string(share.join("fluvio-config/connectors/inference-sink.yaml"))
        .unwrap()
        .replace("  topic:\n    meta:\n      name: images\n", &format!("  topic:\n    meta:\n      name: {images}\n"))
        .replace("    id: inference-sink\n", &format!("    id: {consumer}\n"))
        .replace("predictions-topic: predictions\n", &format!("predictions-topic: {predictions}\n"))
        .replace("dlq-topic: images-dlq\n", &format!("dlq-topic: {dlq}\n"))
        .replace("metrics-port: 9464", &format!("metrics-port: {}", free_port()))
        .replace("validate-at: auto", "validate-at: connector");
    assert!(
        yaml.contains(&consumer)
            && yaml.contains(&format!("name: {images}\n"))
            && yaml.contains("validate-at: connector"),
        "the shipped YAML changed shape:\n{yaml}"
    );
    std::fs::write(work.join("sink.yaml"), yaml).unwrap();
    let log = std::fs::File::create(work.join("sink.log")).unwrap();
    let mut sink = clean(&root.join("bin/inference-sink"), &home, &work)
        .args(["--config", "sink.yaml", "--drain"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = sink.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = sink.kill();
            panic!("the sink did not drain within 180 s:\n{}", std::fs::read_to_string(work.join("sink.log")).unwrap());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let sink_log = std::fs::read_to_string(work.join("sink.log")).unwrap();
    assert!(status.success(), "the archive's sink:\n{sink_log}");
    assert!(sink_log.contains("in the connector (fluvio-smartengine)"), "validated in-process:\n{sink_log}");
    let written: BTreeMap<String, String> = cluster
        .read_all(&predictions)
        .into_iter()
        .map(|(key, value)| {
            let prediction: serde_json::Value = serde_json::from_slice(&value).unwrap();
            (key.trim_start_matches("pkg-").to_string(), prediction["label"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    let expected: BTreeMap<String, String> = records
        .iter()
        .map(|(key, _)| key.trim_start_matches("pkg-").to_string())
        .map(|n| (n.clone(), from_archive[&n].clone()))
        .collect();
    assert_eq!(written, expected, "one prediction per image, the same labels as fvision run");
    assert!(cluster.read_all(&dlq).is_empty(), "no dead letters");
}

/// The docs point only at what a clone or the archive holds: no document names a folder that sits beside
/// the repository on this machine (`../NAME/`), which a user's clone would not have.
#[test]
fn no_document_names_a_folder_outside_the_repository() {
    let root = repo_root().canonicalize().unwrap();
    let own = root.file_name().unwrap().to_owned();
    let beside: Vec<String> = std::fs::read_dir(root.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir() && e.file_name() != own)
        .map(|e| format!("../{}/", e.file_name().to_string_lossy()))
        .collect();
    let mut checked = 0;
    for entry in walk(&root) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        for outside in &beside {
            assert!(!text.contains(outside.as_str()), "{} names {outside}, outside the repository", entry.display());
        }
        checked += 1;
    }
    assert!(checked >= 10, "the Markdown files: {checked}");
}

/// Every Markdown file of the repository, outside build output and the fuzz corpus.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if entry.is_dir() && !name.starts_with('.') && !matches!(name.as_str(), "target" | "dist" | "corpus") {
            found.extend(walk(&entry));
        } else if name.ends_with(".md") {
            found.push(entry);
        }
    }
    found
}
