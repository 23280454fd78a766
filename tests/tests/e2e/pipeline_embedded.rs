//! The embedded pipeline end to end: real WASM validation, the real model, bounded queues.

use std::collections::BTreeMap;
use std::time::Duration;

use fvision_models::{Classifier, ClassifierOptions, Registry};
use fvision_pipeline::{run_pipeline, Item, Outcome, PipelineSettings};
use fvision_records::RejectReason;
use fvision_tests::{data_files, wasm_validator};

fn model() -> Classifier {
    let spec = Registry::open_default().unwrap().resolve("efficientnet-lite0").unwrap();
    Classifier::load(spec, &ClassifierOptions::default()).unwrap()
}

fn items() -> Vec<Item> {
    ["imagenet-sample", "bad-inputs"]
        .iter()
        .flat_map(|dir| data_files(dir).into_iter().map(move |(name, value)| Item::new(format!("{dir}/{name}"), value)))
        .collect()
}

#[test]
fn every_input_yields_exactly_one_outcome_even_with_tiny_queues() {
    let model = model();
    let inputs = items();
    let originals: BTreeMap<String, Vec<u8>> = inputs.iter().map(|i| (i.name.clone(), i.value.clone())).collect();
    let mut validator = wasm_validator(&[]);
    // Queues of 1 and batches of 3 force every stage to wait on the next: back-pressure, not buffering.
    let config = PipelineSettings {
        workers: 2,
        max_batch: 3,
        queue: 1,
        max_wait: Duration::from_millis(2),
        ..PipelineSettings::default()
    };
    let mut seen = BTreeMap::new();
    let stats = run_pipeline(
        inputs.into_iter(),
        |v: &[&[u8]]| validator.validate_batch(v),
        &model,
        &config,
        |outcome| {
            let (name, kind) = match outcome {
                Outcome::Classified { name, prediction, .. } => {
                    assert!(prediction.top_k.len() == 5 && prediction.confidence > 0.0);
                    (name, "classified".to_string())
                }
                Outcome::Rejected { name, rejected, .. } => {
                    assert_eq!(rejected.payload.to_bytes().unwrap(), originals[&name], "{name}: original payload kept");
                    (name, format!("{}@{}", rejected.reason, rejected.stage.as_str()))
                }
            };
            assert!(seen.insert(name.clone(), kind).is_none(), "{name} came out twice");
            Ok::<(), String>(())
        },
    )
    .unwrap();
    assert_eq!(seen.len(), originals.len(), "nothing lost");
    assert_eq!(stats.inputs, 120);
    assert_eq!(stats.tally.classified + stats.tally.rejected, 120);
    assert_eq!(stats.tally.rejected, 10);
    assert_eq!(seen["bad-inputs/truncated-40pct.jpg"], "truncated@validate");
    assert_eq!(
        seen["bad-inputs/png-corrupt-idat-bad-zlib-good-crc.png"],
        format!("{}@decode", RejectReason::DecodeError)
    );
    assert!(seen.iter().filter(|(n, _)| n.starts_with("imagenet")).all(|(_, k)| k == "classified"));
    assert!(stats.batches >= 110 / 3, "batches of at most 3: {}", stats.batches);
    assert!(stats.latency_ms(0.99) >= stats.latency_ms(0.5));
}

#[test]
fn a_failing_sink_stops_the_pipeline_instead_of_hanging() {
    let model = model();
    let mut validator = wasm_validator(&[]);
    let config = PipelineSettings { queue: 1, ..PipelineSettings::default() };
    let mut taken = 0;
    let err = run_pipeline(
        items().into_iter(),
        |v: &[&[u8]]| validator.validate_batch(v),
        &model,
        &config,
        |_| {
            taken += 1;
            if taken == 5 {
                Err("disk full")
            } else {
                Ok(())
            }
        },
    )
    .unwrap_err();
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(cause.as_deref(), Some("disk full"), "the sink's error is kept as the source: {err}");
    assert_eq!(taken, 5);
}

#[test]
fn metrics_count_every_outcome_by_status_reason_and_stage() {
    let model = model();
    let mut validator = wasm_validator(&[]);
    let recorder = fvision_status::prometheus().build_recorder();
    let handle = recorder.handle();
    let config = PipelineSettings { max_batch: 4, ..PipelineSettings::default() };
    let stats = metrics::with_local_recorder(&recorder, || {
        run_pipeline(
            items().into_iter(),
            |v: &[&[u8]]| validator.validate_batch(v),
            &model,
            &config,
            |_| Ok::<(), String>(()),
        )
    })
    .unwrap();
    let text = handle.render();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{text}"))
    };
    // Triton's labels: every per-image, stage and batch series names the model and its version.
    let (name, version) = (model.spec().name(), model.spec().manifest.version.as_str());
    let mv = format!("model=\"{name}\",version=\"{version}\"");
    assert_eq!(value(&format!("fvision_images_total{{status=\"classified\",reason=\"\",stage=\"\",{mv}}}")), 110.0);
    assert_eq!(
        value("fvision_images_total{status=\"rejected\",reason=\"too_many_pixels\",stage=\"validate\",model=\"\",version=\"\"}"),
        3.0
    );
    assert_eq!(
        value("fvision_images_total{status=\"rejected\",reason=\"decode_error\",stage=\"decode\",model=\"\",version=\"\"}"),
        1.0
    );
    assert_eq!(value(&format!("fvision_batch_size_count{{{mv}}}")), stats.batches as f64);
    assert_eq!(value(&format!("fvision_batch_size_sum{{{mv}}}")), 110.0, "every classified image was in one batch");
    assert_eq!(value(&format!("fvision_stage_seconds_count{{stage=\"inference\",{mv}}}")), 110.0);
    assert_eq!(value(&format!("fvision_processing_seconds_count{{{mv}}}")), 110.0);
    // Real histograms: every image falls under the last (+Inf) bucket.
    assert_eq!(value(&format!("fvision_processing_seconds_bucket{{{mv},le=\"+Inf\"}}")), 110.0);
    assert_eq!(value(&format!("fvision_batch_size_bucket{{{mv},le=\"+Inf\"}}")), stats.batches as f64);
}
