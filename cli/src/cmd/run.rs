//! `fvision run`: the pipeline embedded in one process, no cluster.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use fluvio_future::task::run_block_on;
use fvision_outputs::{BelowThreshold, Destination, JsonlOutput, LocalOutputs, OutputSet};
use fvision_status::dashboard::Dashboard;

use crate::args::{ModelArgs, PipelineArgs, ValidatorArgs};
use crate::data::demo_images;
use crate::feed::run_inputs;
use crate::inputs::InputSource;
use crate::report::Table;

/// Run the pipeline embedded in this process: validation through the same WASM SmartModule a cluster
/// runs, parallel decode workers, a micro-batcher and one shared model, predictions and rejections to
/// the console (and optionally a JSONL file), and a summary.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fvision run                                  # the shipped demo images, efficientnet-lite0
  fvision run ~/photos --confidence-threshold 0.5 --output predictions.jsonl
  fvision run --model resnet50 --max-batch 8 --max-wait-ms 20 data/imagenet-sample
  fvision run --config fluvio-config/connectors/inference-sink.yaml data/imagenet-sample
  fvision run --dashboard 8080 data/imagenet-sample   # then open http://127.0.0.1:8080/")]
pub struct RunArgs {
    /// Files, directories or `-` (one record per line) [default: the shipped demo images]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    validator: ValidatorArgs,

    #[command(flatten)]
    pipeline: PipelineArgs,

    /// Also write every outcome as a JSON line to this file.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Read the inference sink's connector YAML: its model, threshold, batching and image-validate
    /// params replace the corresponding options here, and its outputs (`jsonl`, `bigquery`, `kafka`,
    /// `gcs`) are written as the connector writes them.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Serve Prometheus metrics on ADDRESS:PORT/metrics while running.
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,

    /// Serve the live status page (images, labels, rates, latencies, rejects) and /metrics on
    /// 127.0.0.1:PORT; the page stays up after the run until Ctrl-C. Port 0 picks a free port.
    #[arg(long, value_name = "PORT")]
    dashboard: Option<u16>,

    /// The address the metrics endpoint and the status page bind [default: 127.0.0.1, or the config's
    /// `metrics-address`]. The page shows the images: 0.0.0.0 shows them to the whole network.
    #[arg(long, value_name = "IP")]
    metrics_address: Option<IpAddr>,

    /// A host name, besides localhost and IP addresses, that the status page answers to (the name you reach
    /// it by; repeat for more). Any other name in `Host` is refused, against DNS rebinding.
    #[arg(long = "status-host", value_name = "NAME")]
    status_hosts: Vec<String>,

    /// Secrets for `${{ secrets.NAME }}` references in --config (NAME=value lines).
    #[arg(long, value_name = "FILE", requires = "config")]
    secrets: Option<PathBuf>,
}

/// Entry point of `fvision run`.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let paths = if args.paths.is_empty() { vec![demo_images()?] } else { args.paths };
    let source = InputSource::from_args(&paths)?;
    let mut below = BelowThreshold::Flag;
    let mut metrics_port = args.metrics_port;
    let mut address = args.metrics_address;
    let mut dashboard_on = args.dashboard.is_some();
    let mut status_hosts = args.status_hosts.clone();
    let mut sink_settings = None;
    let (mut validator, mut classifier, pipeline, output) = match &args.config {
        Some(path) => {
            let settings = fvision_sink_config::load(path, args.secrets.as_deref())?;
            sink_settings = Some(settings.clone());
            let config = &settings.inference;
            let model = ModelArgs {
                model: config.model.clone(),
                threads: args.model.threads,
                fast_decode: args.model.fast_decode || config.fast_decode,
            };
            let output = args.output.clone().or_else(|| config.jsonl.clone());
            below = config.below_threshold;
            metrics_port = metrics_port.or(config.metrics_port);
            address = address.or(Some(config.metrics_address));
            dashboard_on |= config.dashboard;
            status_hosts.extend(config.status_hosts.iter().cloned());
            if below == BelowThreshold::Review {
                eprintln!(
                    "fvision: below-threshold `review` needs the review topic of the connector; run flags them instead"
                );
                below = BelowThreshold::Flag;
            }
            let mut pipeline = config.pipeline();
            pipeline.dead_letter_payload_cap = settings.validation.dead_letter_payload_cap;
            (args.validator.load_with(settings.validation.params.clone())?, model.load()?, pipeline, output)
        }
        None => (args.validator.load()?, args.model.load()?, args.pipeline.config(), args.output.clone()),
    };
    // One listener serves /metrics and the page.
    let port = match (args.dashboard, args.metrics_port) {
        (Some(page), Some(metrics)) if page != metrics => {
            anyhow::bail!("--dashboard {page} and --metrics-port {metrics}: one listener serves both, give one port")
        }
        (Some(page), _) => Some(page),
        (None, _) => metrics_port,
    };
    let dashboard = dashboard_on.then(|| Dashboard::new("embedded"));
    let mut page_url = None;
    if let Some(port) = port {
        let address = SocketAddr::new(address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), port);
        let options = fvision_status::EndpointOptions { hosts: status_hosts, ..Default::default() };
        let bound = fvision_status::serve(address, dashboard.clone(), options)
            .with_context(|| format!("starting the HTTP endpoint on {address}"))?;
        eprintln!("metrics on http://{bound}/metrics");
        if dashboard.is_some() {
            eprintln!("status page on http://{bound}/");
            if !bound.ip().is_loopback() {
                eprintln!("fvision: warning: the status page shows the images to anyone who can reach {bound}");
            }
            // Asked for on the command line: keep showing the finished run. (A config's `dashboard: true`
            // serves the page while the run lasts, like its metrics.)
            if args.dashboard.is_some() {
                page_url = Some(format!("http://{bound}/"));
            }
        }
    } else if dashboard_on {
        anyhow::bail!("the config's `dashboard: true` needs a port: set `metrics-port` or pass --dashboard PORT");
    }
    fvision_pipeline::metrics::model_loaded(
        classifier.spec().name(),
        &classifier.spec().manifest.version,
        classifier.load_time().as_secs_f64(),
    );
    // The outputs are the connector's own, built from the same YAML (its BigQuery, Kafka and GCS sections
    // too), without the Fluvio topics; the table is this command's console.
    let jsonl = match &output {
        Some(path) => Some(JsonlOutput::create(path)?),
        None => None,
    };
    let outputs = match &sink_settings {
        Some(settings) => {
            let local = LocalOutputs { topics: None, console: false, jsonl, below, source_topic: String::new() };
            OutputSet::build(&settings.path, settings.inference.external(), local)?
        }
        None => {
            let outputs = OutputSet::new(below);
            match jsonl {
                Some(jsonl) => outputs.with_dead_letters(Box::new(jsonl)),
                None => outputs,
            }
        }
    };
    if sink_settings.is_some() && !outputs.names().is_empty() {
        eprintln!("outputs: {}", outputs.names().join(", "));
    }
    let outputs = Arc::new(outputs);
    if let Some(dashboard) = &dashboard {
        dashboard.attach(&mut classifier, "in this process (WASM)", Arc::clone(&outputs));
    }
    let mut out = io::stdout().lock();
    let mut table = Table::new(false);
    let wasm = |values: &[&[u8]]| validator.validate_batch(values);
    let mut dropped = 0u64;
    let (unreadable, stats) = run_inputs(source, wasm, &classifier, &pipeline, |outcome| {
        if let Some(dashboard) = &dashboard {
            dashboard.record(&outcome);
        }
        if outputs.deliver(&outcome, None)? == Destination::Dropped {
            dropped += 1;
            return Ok(());
        }
        table.write(&mut out, &outcome)
    })?;
    run_block_on(outputs.acknowledge())?;
    let tally = &stats.tally;
    writeln!(
        out,
        "\n{} images in {:.2} s ({:.1} images/s): {} classified ({:.0}% success), {} rejected, {} below the \
         confidence threshold ({dropped} of them dropped as configured); latency p50 {:.1} ms, p99 {:.1} ms; {} \
         inference batches",
        tally.total(),
        stats.elapsed.as_secs_f64(),
        tally.images_per_sec(stats.elapsed),
        tally.classified,
        tally.success_percent(),
        tally.rejected,
        tally.below_threshold,
        tally.latency_ms(0.5),
        tally.latency_ms(0.99),
        stats.batches,
    )?;
    if let Some(url) = page_url {
        out.flush()?;
        eprintln!("the run is over; the status page stays up on {url} until Ctrl-C");
        loop {
            std::thread::park();
        }
    }
    Ok(if unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
