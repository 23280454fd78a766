//! The connectors' package metadata (`connectors/*/Connector.toml`, in the layout of Fluvio's connector
//! development kit) names the real binary, the crate, the YAML section the connector reads and exactly the
//! settings its config parser accepts.

use std::collections::BTreeSet;
use std::path::Path;

use fvision_tests::process::target_binary;
use fvision_tests::repo_root;

/// The keys a connector's section accepts, read from its own parser's answer to an unknown key.
fn accepted_keys(kind: &str, section: &str, load: impl Fn(&Path) -> String) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: 0.2.0\nmeta: {{version: 0.1.0, name: probe, type: {kind}, topic: {{meta: {{name: images}}}}}}\n{section}:\n  zz-not-a-key: 1\n"),
    )
    .unwrap();
    let error = load(&path);
    let list = error.split("expected one of ").nth(1).unwrap_or_else(|| panic!("{kind}: {error}"));
    list.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

fn check(crate_dir: &str, section: &str, load: impl Fn(&Path) -> String) {
    let dir = repo_root().join(crate_dir);
    let package: toml::Table = std::fs::read_to_string(dir.join("Connector.toml")).unwrap().parse().unwrap();
    let cargo: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap().parse().unwrap();
    let name = package["package"]["name"].as_str().unwrap();
    assert_eq!(Some(name), cargo["package"]["name"].as_str(), "{crate_dir}: the crate's name");
    let binary = package["deployment"]["binary"].as_str().unwrap();
    let bins: Vec<&str> = cargo["bin"].as_array().unwrap().iter().filter_map(|b| b["name"].as_str()).collect();
    assert!(bins.contains(&binary), "{crate_dir}: [deployment] binary `{binary}` is one of {bins:?}");
    assert!(target_binary(binary).is_file());
    let direction = package["direction"].as_table().unwrap();
    let expected = if name.ends_with("-sink") { "dest" } else { "source" };
    assert_eq!(direction.keys().collect::<Vec<_>>(), [expected], "{crate_dir}: direction");
    let custom = package["custom"].as_table().unwrap();
    assert_eq!(custom["name"].as_str(), Some(section), "{crate_dir}: [custom] name is the YAML section");
    let properties: BTreeSet<String> = custom["properties"].as_table().unwrap().keys().cloned().collect();
    let accepted = accepted_keys(name, section, load);
    assert_eq!(properties, accepted, "{crate_dir}: [custom.properties] are exactly what the parser accepts");
    // The keys the shipped YAML sets in the section (two-space indented lines under it).
    let shipped: Vec<String> = {
        let yaml = std::fs::read_to_string(repo_root().join(format!("fluvio-config/connectors/{name}.yaml"))).unwrap();
        yaml.lines()
            .skip_while(|l| !l.starts_with(&format!("{section}:")))
            .skip(1)
            .take_while(|l| l.starts_with("  ") || l.trim().is_empty() || l.trim_start().starts_with('#'))
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.trim().split(':').next().map(str::to_string))
            .collect()
    };
    for required in custom["required"].as_array().unwrap() {
        let key = required.as_str().unwrap();
        assert!(properties.contains(key), "{crate_dir}: required `{key}` is a property");
        assert!(shipped.iter().any(|k| k == key), "{crate_dir}: the shipped YAML sets `{key}`: {shipped:?}");
    }
}

#[test]
fn connector_packages_name_their_binaries_sections_and_settings() {
    check("connectors/inference-sink", fvision_sink_config::SECTION, |p| {
        fvision_sink_config::load(p, None).map(|_| ()).unwrap_err().to_string()
    });
    check("connectors/kafka-source", fvision_kafka_source::config::SECTION, |p| {
        fvision_kafka_source::config::load(p, None).map(|_| ()).unwrap_err().to_string()
    });
    check("connectors/gcs-source", fvision_gcs_source::config::SECTION, |p| {
        fvision_gcs_source::config::load(p, None).map(|_| ()).unwrap_err().to_string()
    });
}
