//! The SmartModule the way Fluvio's `smdk` handles one: `SmartModule.toml` beside the crate, `smdk build`
//! (profile `release-lto`, `--nowasi`: wasm32-unknown-unknown), `smdk test` on the shipped sample records,
//! `smdk load` under the package name `fluvio-vision/image-validate@<version>`, a consumer through it on the
//! live cluster; and every shipped file that names the SmartModule names that package.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fvision_connector_common::SmartModuleRunner;
use fvision_tests::cluster::{fluvio_cli, local_cluster, unique_name};
use fvision_tests::{output_text, repo_root, target_dir, WASM_DIR_IN_TARGET};

/// `group/name@version` from `smartmodule/SmartModule.toml`, as `smdk load` and the SC compose it.
fn package_name() -> String {
    let text = std::fs::read_to_string(repo_root().join("smartmodule/SmartModule.toml")).unwrap();
    let package: toml::Table = text.parse().unwrap();
    let package = package["package"].as_table().unwrap();
    let field = |key: &str| package[key].as_str().unwrap().to_string();
    format!("{}/{}@{}", field("group"), field("name"), field("version"))
}

/// The sample records of `smdk test`, one ImageEvent (or broken record) per line.
fn sample() -> PathBuf {
    repo_root().join("smartmodule/test-data/sample.jsonl")
}

/// Runs `smdk ARGS` in `smartmodule/`, building into this test's target directory.
fn smdk(smdk: &Path, args: &[&str]) -> Output {
    Command::new(smdk)
        .args(args)
        .current_dir(repo_root().join("smartmodule"))
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", smdk.display()))
}

/// The JSON records a command printed, one per line (other lines, such as smdk's own, are not JSON).
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line.trim()).ok()).collect()
}

/// What the same `.wasm`, run in-process by `fluvio-smartengine`, makes of the sample: the expected output.
fn expected_outputs(wasm: &Path) -> Vec<serde_json::Value> {
    let mut runner = SmartModuleRunner::builder(image_validate::SMARTMODULE_NAME)
        .load(wasm)
        .unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let text = std::fs::read_to_string(sample()).unwrap();
    let lines: Vec<&[u8]> = text.lines().map(str::as_bytes).collect();
    let outputs = runner.process(&lines).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outputs.len(), lines.len(), "one output per sample record");
    outputs.iter().map(|record| serde_json::from_slice(record.value.as_ref()).unwrap()).collect()
}

#[test]
fn smdk_builds_tests_and_loads_the_smartmodule_under_its_package_name() {
    let test = "smdk_builds_tests_and_loads_the_smartmodule_under_its_package_name";
    let Some(cluster) = local_cluster(test) else { return };
    let smdk_bin = fluvio_cli().unwrap().with_file_name("smdk");
    assert!(smdk_bin.is_file(), "Fluvio's installer puts smdk beside fluvio: {}", smdk_bin.display());
    let name = package_name();

    // smdk build: cargo build --profile release-lto --lib -p image-validate --target wasm32-unknown-unknown.
    let out = smdk(&smdk_bin, &["build", "--nowasi"]);
    assert!(out.status.success(), "smdk build --nowasi:\n{}", output_text(&out));
    let wasm = target_dir().join(WASM_DIR_IN_TARGET).join("image_validate.wasm");
    assert!(wasm.is_file(), "smdk build wrote {}", wasm.display());

    // smdk test on the sample: what the SPU would emit, record for record.
    let out = smdk(&smdk_bin, &["test", "--nowasi", "--file", sample().to_str().unwrap()]);
    assert!(out.status.success(), "smdk test:\n{}", output_text(&out));
    let tested = json_lines(&String::from_utf8_lossy(&out.stdout));
    let expected = expected_outputs(&wasm);
    assert_eq!(tested, expected, "smdk test prints what the in-process engine emits for the sample");
    let statuses: Vec<(&str, &str)> = tested
        .iter()
        .map(|r| (r["status"].as_str().unwrap_or(""), r["reason"].as_str().or(r["format"].as_str()).unwrap_or("")))
        .collect();
    assert_eq!(statuses, [("ok", "png"), ("rejected", "too_many_pixels"), ("rejected", "invalid_base64")]);
    let out = smdk(&smdk_bin, &["test", "--nowasi", "--file", sample().to_str().unwrap(), "-e", "max_pixels=0"]);
    assert!(!out.status.success(), "a bad param fails the module's init:\n{}", output_text(&out));

    // smdk load: SmartModule.toml's group/name@version, on the live cluster. A copy someone loaded before is
    // replaced by this build's and left loaded; one this test loaded is deleted at the end.
    let listed_before = cluster.cli_ok(&["smartmodule", "list"]);
    if listed_before.contains(&name) {
        cluster.cli_ok(&["smartmodule", "delete", &name]);
    } else {
        cluster.delete_smartmodule_on_drop(&name);
    }
    let out = smdk(&smdk_bin, &["load", "--nowasi"]);
    assert!(out.status.success(), "smdk load --nowasi:\n{}", output_text(&out));
    let listed = cluster.cli_ok(&["smartmodule", "list"]);
    assert!(listed.lines().any(|l| l.split_whitespace().next() == Some(name.as_str())), "{name} listed:\n{listed}");

    // A consumer through it: the SPU validates the sample records as smdk test did.
    let topic = unique_name("fvt-smdk");
    cluster.create_topic(&topic);
    let records: Vec<(String, Vec<u8>)> = std::fs::read_to_string(sample())
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| (format!("sample-{i}"), line.as_bytes().to_vec()))
        .collect();
    cluster.produce(&topic, &records);
    let consumed = cluster.cli_ok(&["consume", &topic, "-B", "-d", "--smartmodule", &name]);
    assert_eq!(json_lines(&consumed), expected, "the SPU's output through {name}");
}

#[test]
fn every_shipped_file_names_the_smartmodule_by_its_package() {
    let name = package_name();
    assert!(name.starts_with("fluvio-vision/image-validate@"), "{name}");
    assert!(name.ends_with(&format!("@{}", env!("CARGO_PKG_VERSION"))), "SmartModule.toml follows the crate version");
    let connectors = repo_root().join("fluvio-config/connectors");
    let mut sinks = 0;
    for entry in std::fs::read_dir(&connectors).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(file.starts_with("inference-sink") && file.ends_with(".yaml")) {
            continue;
        }
        let doc = yaml(&path);
        assert_eq!(doc["transforms"][0]["uses"].as_str(), Some(name.as_str()), "{file}: transforms[0].uses");
        sinks += 1;
    }
    assert!(sinks >= 5, "the sink YAMLs: {sinks}");
    for file in ["local.yaml", "gcp.yaml"] {
        let doc = yaml(&repo_root().join("fluvio-config/deploy").join(file));
        assert_eq!(doc["smartmodule"]["name"].as_str(), Some(name.as_str()), "{file}: smartmodule.name");
    }
}

fn yaml(path: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
