//! `fvision simulate`: an image stream at a given rate to Fluvio, Kafka, GCS (+ Pub/Sub notification), or
//! Kafka and GCS at once, as the job it replaces shipped. Open-loop pacing: image i is due at
//! start + i / rate whatever earlier sends cost, so slow sends show as a lower achieved rate, never as a
//! silently stretched schedule.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use fluvio::{Fluvio, ProduceOutput, RecordKey, TopicProducerPool};
use fluvio_future::task::run_block_on;
use fvision_connector_common::config::ProducerConfig;
use fvision_connector_common::image_producer_config;
use fvision_gcp::storage::BlockingClient;
use fvision_gcs_source::{finalize_message, ObjectRef};
use fvision_records::{EventMeta, ImageEvent, Source};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message};
use serde::Serialize;

use crate::data::{data_dir, imagenet_sample};
use crate::output::progress;

/// Where the images go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// ImageEvents straight to a Fluvio topic.
    Fluvio,
    /// ImageEvent JSON to a Kafka topic (read by kafka-source).
    Kafka,
    /// Uploads to a GCS bucket under the prefix (read by gcs-source through Pub/Sub).
    Gcs,
    /// Kafka and GCS at once, alternating image by image.
    Both,
}

/// Send images at a steady rate to Fluvio, Kafka, GCS (with the Pub/Sub notification), or Kafka and GCS
/// at once; print the achieved rate and the counts per destination at the end.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fvision simulate --mode kafka --rate 10 --duration 60 --kafka-servers 127.0.0.1:9092
  fvision simulate --mode gcs --rate 5 --duration 60 --gcs-bucket my-bucket --pubsub-project my-project
  fvision simulate --mode both --rate 20 --duration 300 --gcs-bucket b --gcs-endpoint http://127.0.0.1:9023 \\
      --pubsub-project test-project --pubsub-emulator-host 127.0.0.1:8085 --notify --gcs-create-bucket
  STORAGE_EMULATOR_HOST=127.0.0.1:9023 PUBSUB_EMULATOR_HOST=127.0.0.1:8085 fvision simulate --mode gcs \
      --count 50 --gcs-bucket b --pubsub-project test-project --notify --gcs-create-bucket
  fvision simulate --mode fluvio --count 1000 --rate 1000 --synthetic 640x480
  fvision simulate --mode kafka --count 200 --bad-ratio 0.1 --json     # 10% hostile inputs (images-dlq)")]
pub struct SimulateArgs {
    /// fluvio, kafka, gcs or both (kafka and gcs, alternating).
    #[arg(long, value_enum, default_value = "fluvio")]
    mode: Mode,
    /// Images per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds to run (the number of images is rate x duration).
    #[arg(long, value_name = "S", conflicts_with = "count")]
    duration: Option<f64>,
    /// Images to send [default: 10 seconds' worth].
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Images from this folder, cycled [default: the shipped ImageNet sample].
    #[arg(long, value_name = "DIR", conflicts_with = "synthetic")]
    images: Option<PathBuf>,
    /// Generated JPEG images of this size instead, e.g. 640x480.
    #[arg(long, value_name = "WxH")]
    synthetic: Option<String>,
    /// The share of images drawn from the hostile inputs, so a run exercises the DLQ: the files of
    /// data/bad-inputs in turn, then three hostile envelopes (a valid image with a 600 KB `uri`, `event_time`
    /// or attribute; on GCS a notification with a 600 KB `timeCreated`, with --notify), and again.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    bad_ratio: f64,
    /// Fluvio topic (mode fluvio).
    #[arg(long, default_value = "images")]
    fluvio_topic: String,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka_servers: String,
    /// Kafka topic.
    #[arg(long, default_value = "image-stream")]
    kafka_topic: String,
    /// GCS bucket (modes gcs and both).
    #[arg(long)]
    gcs_bucket: Option<String>,
    /// Object name prefix.
    #[arg(long, default_value = "input-images/")]
    gcs_prefix: String,
    /// GCS JSON API endpoint: an emulator's URL (no credentials); unset: `STORAGE_EMULATOR_HOST`, else
    /// Google's with the application default credentials.
    #[arg(long)]
    gcs_endpoint: Option<String>,
    /// Create the bucket first (emulators).
    #[arg(long)]
    gcs_create_bucket: bool,
    /// Publish the OBJECT_FINALIZE notification after each upload (for emulators without bucket
    /// notifications).
    #[arg(long)]
    notify: bool,
    /// Pub/Sub topic of the notifications (created if missing, with --notify).
    #[arg(long, default_value = "gcs-image-notifications")]
    pubsub_topic: String,
    /// Google Cloud project of the Pub/Sub topic.
    #[arg(long, default_value = "test-project")]
    pubsub_project: String,
    /// `host:port` of a Pub/Sub emulator [default: $PUBSUB_EMULATOR_HOST, else Google].
    #[arg(long)]
    pubsub_emulator_host: Option<String>,
    /// Parallel uploads to GCS.
    #[arg(long, default_value_t = 4)]
    gcs_workers: usize,
    /// Id prefix of the simulated images [default: sim-<unix ms>].
    #[arg(long)]
    run_id: Option<String>,
    /// Write the id of every image whose send was acknowledged to this file, one per line.
    #[arg(long, value_name = "FILE")]
    ids: Option<PathBuf>,
    /// Print the final report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// How large the hostile envelope fields are: above every cap on envelope fields (`max_envelope_field_bytes`,
/// at most 64 KiB), below Kafka's default 1 MB message limit with the image.
const HOSTILE_FIELD_BYTES: usize = 600_000;

/// The hostile envelopes of the `--bad-ratio` mix, after the hostile files: a valid image whose envelope has
/// one field of [`HOSTILE_FIELD_BYTES`], under its usual id. Each is a `malformed_envelope` dead letter (of
/// the source for Kafka and GCS, of the validator for Fluvio). On GCS only the notification can carry one (an
/// `timeCreated` that large, with `--notify`); without `--notify` the image is uploaded as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostileEnvelope {
    /// A huge `uri`.
    Uri,
    /// A huge `event_time`.
    EventTime,
    /// A huge attribute value.
    Attribute,
}

impl HostileEnvelope {
    const ALL: [Self; 3] = [Self::Uri, Self::EventTime, Self::Attribute];

    fn apply(self, meta: &mut EventMeta) {
        let huge = "9".repeat(HOSTILE_FIELD_BYTES);
        match self {
            Self::Uri => meta.uri = Some(format!("simulator://{huge}")),
            Self::EventTime => meta.event_time = Some(huge),
            Self::Attribute => {
                meta.attributes.insert("hostile".into(), huge.into());
            }
        }
    }
}

/// What the k-th hostile input (from 0) of a run is: file k mod (files + 3) of the sorted hostile folder, or
/// past the files, a hostile envelope around a valid image.
fn hostile_input(k: u64, files: usize) -> Result<usize, HostileEnvelope> {
    let at = (k % (files + HostileEnvelope::ALL.len()) as u64) as usize;
    if at < files {
        Ok(at)
    } else {
        Err(HostileEnvelope::ALL[at - files])
    }
}

/// One image to send.
#[derive(Clone)]
struct Image {
    name: String,
    bytes: Arc<Vec<u8>>,
    content_type: &'static str,
}

fn content_type(name: &str) -> &'static str {
    match Path::new(name).extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("bmp") => "image/bmp",
        _ => "application/octet-stream",
    }
}

fn read_folder(dir: &Path) -> Result<Vec<Image>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !matches!(p.extension().and_then(|e| e.to_str()), Some("md" | "tsv" | "txt")))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok(Image { content_type: content_type(&name), name, bytes: Arc::new(bytes) })
        })
        .collect()
}

/// A few distinct generated JPEGs of `spec` (`WxH`), cycled.
fn synthetic(spec: &str) -> Result<Vec<Image>> {
    let (w, h) = spec
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|&(w, h)| (1..=10_000).contains(&w) && (1..=10_000).contains(&h))
        .with_context(|| format!("--synthetic {spec}: expected WxH with sides from 1 to 10000, e.g. 640x480"))?;
    (0..8u32)
        .map(|k| {
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, (k * 32) as u8])
            });
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
                .encode_image(&img)
                .context("encoding a synthetic image")?;
            Ok(Image { name: format!("synthetic-{w}x{h}-{k}.jpg"), bytes: Arc::new(bytes), content_type: "image/jpeg" })
        })
        .collect()
}

/// Image `i` is hostile when the running share of hostile images would otherwise fall below `ratio`:
/// exactly `floor(n * ratio)` of the first n images are, spread evenly.
fn is_bad(i: u64, ratio: f64) -> bool {
    ratio > 0.0 && ((i + 1) as f64 * ratio).floor() > (i as f64 * ratio).floor()
}

/// An ImageEvent for image `i` (Fluvio and Kafka modes).
fn event(id: &str, image: &Image) -> ImageEvent {
    let mut attributes = serde_json::Map::new();
    attributes.insert("file".into(), image.name.clone().into());
    ImageEvent {
        meta: EventMeta {
            id: id.to_string(),
            source: Source::Simulator,
            uri: Some(format!("simulator://{}", image.name)),
            content_type: Some(image.content_type.to_string()),
            attributes,
            event_time: Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
        },
        data: base64::engine::general_purpose::STANDARD.encode(image.bytes.as_slice()),
    }
}

/// Counts of one destination.
#[derive(Debug, Default, Serialize)]
struct Counts {
    sent: u64,
    failed: u64,
    notifications: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    mode: String,
    requested_rate: f64,
    achieved_rate: f64,
    images: u64,
    bad_inputs: u64,
    dispatch_seconds: f64,
    total_seconds: f64,
    destinations: std::collections::BTreeMap<&'static str, Counts>,
    errors: Vec<String>,
}

/// Acknowledged ids and errors, shared with delivery callbacks and upload workers.
#[derive(Default)]
struct Tally {
    ids: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
    failed: AtomicU64,
    sent: AtomicU64,
    notified: AtomicU64,
}

impl Tally {
    fn ok(&self, id: String) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id);
        }
    }

    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut errors) = self.errors.lock() {
            if errors.len() < 20 {
                errors.push(error);
            }
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            notifications: self.notified.load(Ordering::Relaxed),
        }
    }
}

/// Kafka delivery reports land in the tally.
struct KafkaContext(Arc<Tally>);

impl ClientContext for KafkaContext {}

impl ProducerContext for KafkaContext {
    type DeliveryOpaque = Box<String>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Self::DeliveryOpaque) {
        match result {
            Ok(_) => self.0.ok(*id),
            Err((e, message)) => self.0.fail(format!("kafka {}: {id}: {e}", message.topic())),
        }
    }
}

struct FluvioDest {
    producer: TopicProducerPool,
    topic: String,
    pending: Vec<(String, ProduceOutput)>,
    tally: Arc<Tally>,
}

impl FluvioDest {
    /// Waits for the acknowledgement of everything sent so far.
    fn settle(&mut self) {
        if let Err(e) = run_block_on(self.producer.flush()) {
            self.tally.fail(format!("fluvio {}: flush: {e:#}", self.topic));
        }
        for (id, sent) in std::mem::take(&mut self.pending) {
            match run_block_on(sent.wait()) {
                Ok(_) => self.tally.ok(id),
                Err(e) => self.tally.fail(format!("fluvio {}: {id}: {e:#}", self.topic)),
            }
        }
    }
}

/// An object to upload: its name, the image, and the hostile envelope its notification carries.
type UploadJob = (String, Image, Option<HostileEnvelope>);

struct GcsDest {
    jobs: Option<mpsc::SyncSender<UploadJob>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// Runs the simulator.
pub fn run(args: SimulateArgs) -> Result<ExitCode> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate {}: expected images per second above 0", args.rate);
    }
    if !(0.0..=1.0).contains(&args.bad_ratio) {
        bail!("--bad-ratio {}: expected a share from 0 to 1", args.bad_ratio);
    }
    let count = match (args.count, args.duration) {
        (Some(n), _) => n,
        (None, Some(s)) if s > 0.0 => (s * args.rate).round().max(1.0) as u64,
        (None, Some(s)) => bail!("--duration {s}: expected seconds above 0"),
        (None, None) => (10.0 * args.rate).round().max(1.0) as u64,
    };
    let good = match (&args.synthetic, &args.images) {
        (Some(spec), _) => synthetic(spec)?,
        (None, Some(dir)) => read_folder(dir)?,
        (None, None) => read_folder(&imagenet_sample()?)?,
    };
    if good.is_empty() {
        bail!("no images to send");
    }
    let bad = if args.bad_ratio > 0.0 { read_folder(&data_dir()?.join("bad-inputs"))? } else { Vec::new() };
    let run_id = args.run_id.clone().unwrap_or_else(|| {
        let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        format!("sim-{ms}")
    });
    let (to_kafka, to_gcs) = match args.mode {
        Mode::Fluvio => (false, false),
        Mode::Kafka => (true, false),
        Mode::Gcs => (false, true),
        Mode::Both => (true, true),
    };

    let kafka_tally = Arc::new(Tally::default());
    let kafka: Option<ThreadedProducer<KafkaContext>> = if to_kafka {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &args.kafka_servers)
            .set("message.max.bytes", "33554432")
            .set("linger.ms", "5")
            .create_with_context(KafkaContext(Arc::clone(&kafka_tally)))
            .with_context(|| format!("creating a Kafka producer for {}", args.kafka_servers))?;
        Some(producer)
    } else {
        None
    };
    let fluvio_tally = Arc::new(Tally::default());
    let mut fluvio = if args.mode == Mode::Fluvio {
        let client = run_block_on(Fluvio::connect()).context("connecting to the Fluvio cluster")?;
        let config = image_producer_config(&ProducerConfig::default())?;
        let producer = run_block_on(client.topic_producer_with_config(args.fluvio_topic.clone(), config))
            .with_context(|| format!("opening a producer for `{}`", args.fluvio_topic))?;
        Some(FluvioDest {
            producer,
            topic: args.fluvio_topic.clone(),
            pending: Vec::new(),
            tally: Arc::clone(&fluvio_tally),
        })
    } else {
        None
    };
    let gcs_tally = Arc::new(Tally::default());
    let mut gcs = if to_gcs { Some(start_gcs(&args, Arc::clone(&gcs_tally))?) } else { None };

    let bar = progress(Some(count), "simulate");
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let mut bad_sent = 0;
    let mut gcs_turn = false;
    for i in 0..count {
        let due = start + period.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let (image, hostile) = if is_bad(i, args.bad_ratio) {
            bad_sent += 1;
            match hostile_input(bad_sent - 1, bad.len()) {
                Ok(file) => (&bad[file], None),
                Err(envelope) => (&good[i as usize % good.len()], Some(envelope)),
            }
        } else {
            (&good[i as usize % good.len()], None)
        };
        let event = |id: &str| {
            let mut event = event(id, image);
            if let Some(hostile) = hostile {
                hostile.apply(&mut event.meta);
            }
            event
        };
        let id = format!("{run_id}-{i:07}");
        let use_gcs = to_gcs && (!to_kafka || gcs_turn);
        gcs_turn = !gcs_turn;
        if use_gcs {
            if let Some(jobs) = gcs.as_ref().and_then(|g| g.jobs.as_ref()) {
                let name = format!("{}{id}-{}", args.gcs_prefix, image.name);
                if jobs.send((name, image.clone(), hostile)).is_err() {
                    gcs_tally.fail("gcs: the upload workers stopped".into());
                }
            }
        } else if let Some(producer) = &kafka {
            let value = serde_json::to_vec(&event(&id))?;
            let record = BaseRecord::with_opaque_to(&args.kafka_topic, Box::new(id.clone())).key(&id).payload(&value);
            if let Err((e, _)) = producer.send(record) {
                kafka_tally.fail(format!("kafka {}: {id}: {e}", args.kafka_topic));
            }
        } else if let Some(dest) = &mut fluvio {
            let value = serde_json::to_vec(&event(&id))?;
            match run_block_on(dest.producer.send(RecordKey::from(id.clone()), value)) {
                Ok(sent) => dest.pending.push((id, sent)),
                Err(e) => dest.tally.fail(format!("fluvio {}: {id}: {e:#}", dest.topic)),
            }
            if dest.pending.len() >= 256 {
                dest.settle();
            }
        }
        bar.inc(1);
    }
    let dispatch = start.elapsed();
    bar.finish_and_clear();

    // Everything dispatched: wait for every acknowledgement.
    if let Some(producer) = &kafka {
        if let Err(e) = producer.flush(Duration::from_secs(60)) {
            kafka_tally.fail(format!("kafka: flushing: {e}"));
        }
    }
    if let Some(dest) = &mut fluvio {
        dest.settle();
    }
    if let Some(dest) = &mut gcs {
        dest.jobs = None;
        for worker in dest.workers.drain(..) {
            let _ = worker.join();
        }
    }
    let total = start.elapsed();

    let mut destinations = std::collections::BTreeMap::new();
    let mut errors = Vec::new();
    let mut ids = Vec::new();
    for (name, tally, used) in [
        ("fluvio", &fluvio_tally, args.mode == Mode::Fluvio),
        ("kafka", &kafka_tally, to_kafka),
        ("gcs", &gcs_tally, to_gcs),
    ] {
        if used {
            destinations.insert(name, tally.counts());
            errors.extend(tally.errors.lock().map(|e| e.clone()).unwrap_or_default());
            ids.extend(tally.ids.lock().map(|i| i.clone()).unwrap_or_default());
        }
    }
    if let Some(path) = &args.ids {
        let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        for id in &ids {
            writeln!(file, "{id}")?;
        }
    }
    // The rate the schedule held: count images over the time to dispatch them, the last one's slot included.
    let achieved = count as f64 / (dispatch + period).as_secs_f64();
    let failed: u64 = destinations.values().map(|c| c.failed).sum();
    let report = Report {
        mode: format!("{:?}", args.mode).to_lowercase(),
        requested_rate: args.rate,
        achieved_rate: achieved,
        images: count,
        bad_inputs: bad_sent,
        dispatch_seconds: dispatch.as_secs_f64(),
        total_seconds: total.as_secs_f64(),
        destinations,
        errors,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "simulate: {} images ({} hostile) in {:.2} s: {:.2} images/s achieved, {:.2} requested; all acknowledged \
             after {:.2} s",
            report.images,
            report.bad_inputs,
            report.dispatch_seconds,
            report.achieved_rate,
            report.requested_rate,
            report.total_seconds
        );
        for (name, counts) in &report.destinations {
            let notes = if *name == "gcs" && args.notify {
                format!(", {} notifications published", counts.notifications)
            } else {
                String::new()
            };
            println!("  {name}: {} sent, {} failed{notes}", counts.sent, counts.failed);
        }
        for error in &report.errors {
            println!("  error: {error}");
        }
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Upload workers (and the Pub/Sub publisher for --notify).
fn start_gcs(args: &SimulateArgs, tally: Arc<Tally>) -> Result<GcsDest> {
    let bucket = args.gcs_bucket.clone().context("--mode gcs/both needs --gcs-bucket")?;
    let endpoint = fvision_gcp::emulator::storage_endpoint_from_env(args.gcs_endpoint.as_deref(), false);
    let scope = fvision_gcp::auth::SCOPE_STORAGE_FULL;
    let client = Arc::new(BlockingClient::new(&endpoint, None, None, scope, Duration::from_secs(60))?);
    if args.gcs_create_bucket {
        client.create_bucket(&args.pubsub_project, &bucket)?;
    }
    let notify = if args.notify {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let pubsub = runtime.block_on(fvision_gcp::pubsub::client(
            &args.pubsub_project,
            args.pubsub_emulator_host.as_deref(),
            None,
        ))?;
        runtime.block_on(fvision_gcp::pubsub::ensure_topic(&pubsub, &args.pubsub_topic))?;
        Some(Arc::new((runtime, pubsub, args.pubsub_topic.clone())))
    } else {
        None
    };
    let workers = args.gcs_workers.max(1);
    let (jobs, receiver) = mpsc::sync_channel::<UploadJob>(workers * 4);
    let receiver = Arc::new(Mutex::new(receiver));
    let handles = (0..workers)
        .map(|_| {
            let (receiver, client, tally, notify, bucket) =
                (Arc::clone(&receiver), Arc::clone(&client), Arc::clone(&tally), notify.clone(), bucket.clone());
            std::thread::spawn(move || loop {
                let job = match receiver.lock() {
                    Ok(receiver) => receiver.recv(),
                    Err(_) => return,
                };
                let Ok((name, image, hostile)) = job else { return };
                match client.upload(&bucket, &name, &image.bytes, image.content_type) {
                    Ok(generation) => {
                        let object = ObjectRef {
                            bucket: bucket.clone(),
                            name,
                            generation,
                            size: Some(image.bytes.len() as u64),
                            content_type: Some(image.content_type.to_string()),
                            event_time: Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
                        };
                        if let Some(notify) = &notify {
                            let (runtime, pubsub, topic) = &**notify;
                            let message: (HashMap<String, String>, Vec<u8>) = match hostile {
                                None => finalize_message(&object),
                                Some(_) => hostile_notification(&object),
                            };
                            match runtime.block_on(fvision_gcp::pubsub::publish(pubsub, topic, vec![message])) {
                                Ok(()) => {
                                    tally.notified.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    tally.fail(format!("pubsub {topic}: {}: {e}", object.id()));
                                    continue;
                                }
                            }
                        }
                        tally.ok(object.id());
                    }
                    Err(e) => tally.fail(format!("gcs: {e}")),
                }
            })
        })
        .collect();
    Ok(GcsDest { jobs: Some(jobs), workers: handles })
}

/// The notification of `object` with a `timeCreated` of [`HOSTILE_FIELD_BYTES`] (and no `eventTime`
/// attribute, which the source would read first): what a forged or broken notification can carry.
fn hostile_notification(object: &ObjectRef) -> (HashMap<String, String>, Vec<u8>) {
    let (attributes, payload) = finalize_message(&ObjectRef { event_time: None, ..object.clone() });
    let mut payload: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
    payload["timeCreated"] = "9".repeat(HOSTILE_FIELD_BYTES).into();
    (attributes, serde_json::to_vec(&payload).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hostile_mix_cycles_through_the_files_then_the_envelopes() {
        let kinds: Vec<Result<usize, HostileEnvelope>> = (0..7).map(|k| hostile_input(k, 2)).collect();
        assert_eq!(
            kinds,
            [
                Ok(0),
                Ok(1),
                Err(HostileEnvelope::Uri),
                Err(HostileEnvelope::EventTime),
                Err(HostileEnvelope::Attribute),
                Ok(0),
                Ok(1)
            ]
        );
        // Every kind is above the validator's cap and keeps the event's id.
        let image = Image { name: "a.png".into(), bytes: Arc::new(vec![1, 2, 3]), content_type: "image/png" };
        for kind in HostileEnvelope::ALL {
            let mut event = event("run-0000001", &image);
            kind.apply(&mut event.meta);
            let err = fvision_records::EnvelopeFieldCap::default().check_meta(&event.meta).unwrap_err();
            assert!(err.bytes >= HOSTILE_FIELD_BYTES, "{kind:?}: {err}");
            assert_eq!(event.meta.id, "run-0000001");
        }
        let object = ObjectRef {
            bucket: "b".into(),
            name: "input-images/x.png".into(),
            generation: 7,
            size: Some(3),
            content_type: Some("image/png".into()),
            event_time: Some("2026-12-07T10:00:00Z".into()),
        };
        let (attributes, data) = hostile_notification(&object);
        let fvision_gcs_source::Notice::Finalize(read) =
            fvision_gcs_source::read_notice(&attributes, &data, "input-images/", &[])
        else {
            panic!("still a finalize notification")
        };
        assert_eq!((read.id(), read.event_time.map(|t| t.len())), (object.id(), Some(HOSTILE_FIELD_BYTES)));
    }

    #[test]
    fn the_bad_share_is_exact_and_spread() {
        let bad: Vec<u64> = (0..20).filter(|&i| is_bad(i, 0.25)).collect();
        assert_eq!(bad, [3, 7, 11, 15, 19]);
        assert_eq!((0..1000).filter(|&i| is_bad(i, 0.1)).count(), 100);
        assert!(!(0..100).any(|i| is_bad(i, 0.0)));
        assert!((0..100).all(|i| is_bad(i, 1.0)));
    }

    #[test]
    fn synthetic_images_are_jpegs_of_the_size_asked() {
        let images = synthetic("64x48").unwrap();
        assert_eq!(images.len(), 8);
        let decoded = image::load_from_memory(&images[3].bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 48));
        assert!(synthetic("64").is_err() && synthetic("0x5").is_err());
    }
}
