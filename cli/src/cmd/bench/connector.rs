//! `fvision bench connector`: the `inference-sink` connector on a live Fluvio cluster against the embedded
//! pipeline, on the same records with the same model and batching, in one run. The ratio is what the
//! cluster path costs: consuming, SPU or in-process validation, producing, and the commit barriers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use fluvio::metadata::topic::TopicSpec;
use fluvio::{Fluvio, RecordKey};
use fluvio_future::task::run_block_on;
use fvision_connector_common::config::ProducerConfig;
use fvision_connector_common::{locate_smartmodule, WasmValidator};
use fvision_inference_sink::connector::{image_producer_config, Connector};
use fvision_models::{Classifier, ClassifierOptions, Registry};
use fvision_pipeline::{run_pipeline, Item, PipelineSettings};
use serde::Serialize;

use super::shared::{record_values, sample_or};
use crate::output::progress;

/// Options of `fvision bench connector`.
#[derive(Debug, Args)]
pub struct BenchConnectorArgs {
    /// Images to use [default: the shipped ImageNet sample]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// How many times the images are produced.
    #[arg(long, default_value_t = 3)]
    repeat: usize,

    /// A preset or a manifest path.
    #[arg(long, short = 'm', default_value = fvision_models::DEFAULT_MODEL)]
    model: String,

    /// Where the connector validates: auto, cluster (the SPU) or connector.
    #[arg(long, default_value = "connector", value_parser = ["auto", "cluster", "connector"])]
    validate_at: String,

    /// Seconds between the connector's offset commits (`meta.consumer.offset.flush-period`).
    #[arg(long, default_value_t = 2)]
    flush_period: u64,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Batching shared by both sides (the shipped YAML's values).
const MAX_BATCH: usize = 4;
const MAX_WAIT: Duration = Duration::from_millis(5);

#[derive(Debug, Serialize)]
struct ConnectorReport {
    model: String,
    records: usize,
    consumed: u64,
    validate_at: String,
    embedded_images_per_sec: f64,
    connector_images_per_sec: f64,
    connector_p50_ms: f64,
    connector_p99_ms: f64,
    commits: u64,
    flush_period_secs: u64,
    ratio_connector_vs_embedded: f64,
}

/// Topics created for the run, deleted when it ends (also on errors).
struct Topics<'a> {
    fluvio: &'a Fluvio,
    names: Vec<String>,
}

impl Drop for Topics<'_> {
    fn drop(&mut self) {
        let admin = run_block_on(self.fluvio.admin());
        for name in &self.names {
            if let Err(e) = run_block_on(admin.delete::<TopicSpec>(name.clone())) {
                eprintln!("could not delete benchmark topic {name}: {e:#}");
            }
        }
    }
}

/// Runs the benchmark.
pub fn run(args: BenchConnectorArgs) -> Result<ExitCode> {
    let BenchConnectorArgs { paths, repeat, model, validate_at, flush_period, json } = args;
    let model = model.as_str();
    let paths = sample_or(&paths)?;
    let values = record_values(&paths, false)?;
    let records: Vec<Vec<u8>> = (0..repeat.max(1)).flat_map(|_| values.iter().map(|(v, _)| v.clone())).collect();

    // The embedded pipeline on the same records: the reference.
    let spec = Registry::open_default()?.resolve(model)?;
    let classifier = Classifier::load(spec, &ClassifierOptions::default())?;
    let mut validator = WasmValidator::load(&locate_smartmodule()?, Default::default())?;
    let items = records.iter().enumerate().map(|(i, value)| Item::new(i.to_string(), value.clone()));
    let config = PipelineSettings::new(MAX_BATCH, MAX_WAIT, 0.0, None);
    let embedded =
        run_pipeline(items, |v: &[&[u8]]| validator.validate_batch(v), &classifier, &config, |_| Ok::<_, String>(()))?;
    drop(classifier);

    // The connector on a live cluster.
    let fluvio = run_block_on(Fluvio::connect())
        .context("connecting to the Fluvio cluster of the current profile (see fluvio-config/RUNBOOK.md)")?;
    let admin = run_block_on(fluvio.admin());
    let suffix = format!("{}-{}", std::process::id(), embedded.elapsed.as_nanos() % 1_000_000);
    let topics = Topics {
        fluvio: &fluvio,
        names: ["images", "predictions", "dlq"].iter().map(|t| format!("fvbench-{t}-{suffix}")).collect(),
    };
    for name in &topics.names {
        run_block_on(admin.create(name.clone(), false, TopicSpec::new_computed(1, 1, None)))
            .with_context(|| format!("creating topic {name}"))?;
    }
    let producer_config = image_producer_config(&ProducerConfig::default())?;
    let producer = run_block_on(fluvio.topic_producer_with_config(topics.names[0].clone(), producer_config))?;
    let bar = progress(Some(records.len() as u64), "producing");
    for (i, value) in records.iter().enumerate() {
        run_block_on(producer.send(RecordKey::from(i.to_string()), value.clone()))?;
        bar.inc(1);
    }
    run_block_on(producer.flush())?;
    bar.finish_and_clear();

    let yaml = format!(
        "apiVersion: 0.2.0
meta:
  {{version: 0.1.0, name: fvbench-{suffix}, type: inference-sink, topic: {{meta: {{name: {images}}}}},
   consumer: {{id: fvbench-{suffix}, max-bytes: 16 MiB, offset: {{start: beginning, strategy: manual, flush-period: {{secs: {flush_period}, nanos: 0}}}}}}}}
inference:
  {{model: {model}, max-batch: {MAX_BATCH}, max-wait: {wait}ms, predictions-topic: {predictions},
   dlq-topic: {dlq}, validate-at: {validate_at}}}
",
        images = topics.names[0],
        predictions = topics.names[1],
        dlq = topics.names[2],
        wait = MAX_WAIT.as_millis(),
    );
    let path = std::env::temp_dir().join(format!("fvbench-{suffix}.yaml"));
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    let loaded = fvision_sink_config::load(&path, None);
    let _ = std::fs::remove_file(&path);
    eprintln!("running the connector over {} records ...", records.len());
    let (runner, _health) = Connector::builder(loaded?).drain(true).build().connect()?;
    let report = runner.run()?;

    let stats = &report.pipeline;
    anyhow::ensure!(
        report.consume.consumed >= records.len() as u64,
        "the connector read {} of {} records",
        report.consume.consumed,
        records.len()
    );
    let result = ConnectorReport {
        model: model.to_string(),
        records: records.len(),
        consumed: report.consume.consumed,
        validate_at: report.validated.to_string(),
        embedded_images_per_sec: embedded.images_per_sec(),
        connector_images_per_sec: stats.images_per_sec(),
        connector_p50_ms: stats.latency_ms(0.5),
        connector_p99_ms: stats.latency_ms(0.99),
        commits: report.consume.commits,
        flush_period_secs: flush_period,
        ratio_connector_vs_embedded: stats.images_per_sec() / embedded.images_per_sec(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("{} records, model {}, validation {}", result.records, result.model, result.validate_at);
        println!("  embedded pipeline  {:>8.1} images/s", result.embedded_images_per_sec);
        println!(
            "  connector          {:>8.1} images/s, latency p50 {:.1} ms, p99 {:.1} ms, {} commits",
            result.connector_images_per_sec, result.connector_p50_ms, result.connector_p99_ms, result.commits
        );
        println!("  ratio: connector / embedded = {:.2}", result.ratio_connector_vs_embedded);
    }
    Ok(ExitCode::SUCCESS)
}
