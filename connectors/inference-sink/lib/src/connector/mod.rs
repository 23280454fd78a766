//! The Fluvio sink connector: consume `images` (validated by the SPU, or here with the same `.wasm`), run
//! the pipeline, deliver every outcome to the outputs, and commit the consumer offset only after every
//! output confirmed. SIGTERM/SIGINT stop the reading; what was read is delivered and committed before
//! [`Runner::run`] returns.
//!
//! Two steps: [`Connector::connect`] does all the I/O that can fail at start-up (cluster, topics, the
//! SmartModule, the model, the outputs, the metrics endpoint) and returns a wired [`Runner`] with a
//! [`HealthCheck`]; [`Runner::run`] only starts the threads and waits for them.

mod consume;
pub mod metrics;
mod replay;
mod status;
mod validation;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fluvio::metadata::smartmodule::SmartModuleSpec;
use fluvio::metadata::topic::TopicSpec;
use fluvio::{Fluvio, FluvioAdmin, SmartModuleInvocation, SmartModuleInvocationWasm, SmartModuleKind};
use fluvio_future::task::run_block_on;
pub use fvision_connector_common::image_producer_config;
use fvision_connector_common::{locate_smartmodule, ConfigError, Stop, WasmValidator};
use fvision_models::{Classifier, ClassifierOptions, Registry};
use fvision_records::RejectedImage;

use fvision_outputs::{DeliveryError, FluvioOutput, JsonlOutput, LocalOutputs, OutputHealth, OutputSet, TopicProducer};
use fvision_pipeline::stages::panic_message;
use fvision_pipeline::summary::SummaryWindow;
use fvision_pipeline::{run_pipeline_from, Outcome, PipelineSettings, PipelineStats, SourcePosition};
use fvision_sink_config::{BelowThreshold, SinkSettings, ValidateAt};
use fvision_status::dashboard::Dashboard;

use self::metrics as events;

pub use consume::{
    Barrier, BoxedStream, ClientError, ConsumeError, ConsumeReport, ConsumeSettings, FluvioSource, Position, Source,
    StreamStart, CRASH_BEFORE_COMMIT, DEFAULT_COMMIT_INTERVAL, DEFAULT_MAX_BYTES, DEFAULT_READ_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
};
pub use replay::replay_window;
pub use validation::{parse_spu_output, Validation};

/// Queue between the consumer and the validation stage, and between the pipeline's stages. Records are
/// whole images, so these bound the connector's memory: at most about 4 x 16 records are in flight.
const QUEUE: usize = 16;

/// A boxed error with its causes, for the client errors the connector wraps.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why the connector stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The YAML is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Fluvio call failed.
    #[error("{action}")]
    Fluvio {
        /// What was being done.
        action: String,
        /// The client's error, with its causes.
        #[source]
        source: Cause,
    },
    /// A topic the connector needs does not exist.
    #[error(
        "topic `{0}` does not exist; create it first (fluvio-config/topics/ has its config: \
         `fluvio topic create --config fluvio-config/topics/<name>.yaml`)"
    )]
    MissingTopic(String),
    /// `validate-at: cluster` but the cluster does not have the SmartModule.
    #[error(
        "validate-at is `cluster` but the cluster has no SmartModule `{0}`; load it with `smdk load --nowasi` \
         (in smartmodule/) or `fvision deploy`, or a bare copy with `fluvio smartmodule create {0} --wasm-file \
         image_validate.wasm`"
    )]
    MissingSmartModule(String),
    /// The SmartModule, the model or an output could not be loaded, or the metrics endpoint not started.
    #[error("{action}")]
    Setup {
        /// What was being done.
        action: String,
        /// Why it failed.
        #[source]
        source: Cause,
    },
    /// The pipeline stopped: an output failed.
    #[error(transparent)]
    Pipeline(#[from] fvision_pipeline::PipelineError),
    /// Consuming or committing failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
}

fn fluvio_error<E: Into<Cause>>(action: impl Into<String>) -> impl FnOnce(E) -> ConnectorError {
    let action = action.into();
    move |e| ConnectorError::Fluvio { action, source: e.into() }
}

fn setup_error<E: Into<Cause>>(action: impl Into<String>) -> impl FnOnce(E) -> ConnectorError {
    let action = action.into();
    move |e| ConnectorError::Setup { action, source: e.into() }
}

/// What a run did, for the exit log.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The pipeline's counts and latencies.
    pub pipeline: PipelineStats,
    /// Records read and commits made.
    pub consume: ConsumeReport,
    /// Where validation ran.
    pub validated: &'static str,
}

/// A configured connector, not yet connected.
pub struct Connector {
    settings: SinkSettings,
    stop: Arc<Stop>,
    drain: bool,
}

/// Builds a [`Connector`].
pub struct ConnectorBuilder {
    settings: SinkSettings,
    stop: Option<Arc<Stop>>,
    drain: bool,
}

impl ConnectorBuilder {
    /// The request that stops the connector gracefully (made by the signal handlers).
    pub fn stop(mut self, stop: Arc<Stop>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Stop (delivered and committed) once caught up with the end of the topic, instead of waiting for more:
    /// for replaying a backlog and for benchmarks.
    pub fn drain(mut self, drain: bool) -> Self {
        self.drain = drain;
        self
    }

    /// The connector; no I/O (the settings were checked when they were made).
    pub fn build(self) -> Connector {
        Connector { settings: self.settings, stop: self.stop.unwrap_or_default(), drain: self.drain }
    }
}

/// A connected connector: everything opened, loaded and checked; [`Runner::run`] starts the threads.
pub struct Runner {
    fluvio: Fluvio,
    consume: ConsumeSettings,
    partitions: Vec<u32>,
    smartmodule: Option<SmartModuleInvocation>,
    validation: Validation,
    classifier: Classifier,
    outputs: Arc<OutputSet>,
    pipeline: PipelineSettings,
    summary_interval: Duration,
    stop: Arc<Stop>,
    /// Whether progress is polled for the metrics and the page (when the endpoint is on).
    poll_status: bool,
    dashboard: Option<Dashboard>,
}

/// How the outputs of a connected connector are doing, for the summary and a status endpoint.
#[derive(Clone)]
pub struct HealthCheck {
    outputs: Arc<OutputSet>,
}

impl HealthCheck {
    /// Each output's name and health.
    pub fn outputs(&self) -> Vec<(String, OutputHealth)> {
        self.outputs.health()
    }
}

impl Connector {
    /// A builder for checked settings (see [`fvision_sink_config::load`]).
    pub fn builder(settings: SinkSettings) -> ConnectorBuilder {
        ConnectorBuilder { settings, stop: None, drain: false }
    }

    /// Starts the metrics endpoint (and the status page), connects to the cluster, checks the topics,
    /// resolves where validation runs, loads the model, opens the outputs (and prepares them with the replay
    /// window).
    pub fn connect(self) -> Result<(Runner, HealthCheck), ConnectorError> {
        let Self { settings, stop, drain } = self;
        let inference = &settings.inference;
        let consume = ConsumeSettings::new(&settings, drain);
        // First, so the metrics of the start-up (model load, outputs) are recorded.
        let dashboard = inference.dashboard.then(|| Dashboard::new("connector"));
        if let Some(port) = inference.metrics_port {
            let address = std::net::SocketAddr::new(inference.metrics_address, port);
            let options =
                fvision_status::EndpointOptions { hosts: inference.status_hosts.clone(), ..Default::default() };
            let bound = fvision_status::serve(address, dashboard.clone(), options)
                .map_err(setup_error(format!("starting the metrics endpoint on {address}")))?;
            events::register();
            tracing::info!(%bound, "metrics on /metrics");
            if dashboard.is_some() {
                tracing::info!("status page on http://{bound}/");
                if !bound.ip().is_loopback() {
                    tracing::warn!(%bound, "the status page shows the images to anyone who can reach this address");
                }
            }
        }
        let fluvio = run_block_on(Fluvio::connect()).map_err(fluvio_error("connecting to the Fluvio cluster"))?;
        let admin = run_block_on(fluvio.admin());
        let partitions = prepare_topics(&settings, &admin, &consume)?;
        let (validation, smartmodule) = validation(&settings, &admin)?;
        tracing::info!(
            topic = %consume.topic, ?partitions, consumer_id = %consume.consumer_id,
            validation = validation.describe(), "consuming"
        );

        let spec = Registry::open_default()
            .and_then(|registry| registry.resolve(&inference.model))
            .map_err(setup_error(format!("resolving model `{}`", inference.model)))?;
        let options = ClassifierOptions { fast_decode: inference.fast_decode, ..ClassifierOptions::default() };
        let mut classifier =
            Classifier::load(spec, &options).map_err(setup_error(format!("loading model `{}`", inference.model)))?;
        fvision_pipeline::metrics::model_loaded(
            classifier.spec().name(),
            &classifier.spec().manifest.version,
            classifier.load_time().as_secs_f64(),
        );
        tracing::info!(
            model = classifier.spec().name(), version = %classifier.spec().manifest.version,
            load_ms = classifier.load_time().as_millis() as u64, "model loaded"
        );

        let outputs = outputs(&settings, &consume, &fluvio)?;
        let window = run_block_on(replay_window(&fluvio, &admin, &consume.topic, &partitions, &consume.consumer_id))
            .map_err(fluvio_error(format!("reading the committed and end offsets of `{}`", consume.topic)))?;
        outputs.prepare(&window).map_err(setup_error("preparing the outputs"))?;
        tracing::info!(outputs = ?outputs.names(), replay = ?window.partitions, "outputs ready");

        // Fails early on a consumer config the client refuses.
        consume
            .consumer_config(&partitions, smartmodule.clone())
            .map_err(fluvio_error(format!("configuring the consumer of `{}`", consume.topic)))?;
        let mut pipeline = inference.pipeline();
        pipeline.dead_letter_payload_cap = settings.validation.dead_letter_payload_cap;
        // One record per call: the validator must never wait for more records than the consumer has read,
        // or the commit barrier (which waits for every read record) would wait forever.
        pipeline.validate_batch = 1;
        let outputs = Arc::new(outputs);
        let health = HealthCheck { outputs: Arc::clone(&outputs) };
        if let Some(dashboard) = &dashboard {
            dashboard.attach(&mut classifier, validation.describe(), Arc::clone(&outputs));
        }
        let runner = Runner {
            fluvio,
            consume,
            partitions,
            smartmodule,
            validation,
            classifier,
            outputs,
            pipeline,
            summary_interval: inference.summary_interval,
            stop,
            poll_status: inference.metrics_port.is_some(),
            dashboard,
        };
        Ok((runner, health))
    }
}

impl Runner {
    /// Runs the consumer and the pipeline until stopped (or an error); returns once what was read is
    /// delivered and committed.
    pub fn run(self) -> Result<RunReport, ConnectorError> {
        let Self {
            fluvio,
            consume,
            partitions,
            smartmodule,
            validation,
            classifier,
            outputs,
            pipeline,
            summary_interval,
            stop,
            poll_status,
            dashboard,
        } = self;
        let mut summary = SummaryWindow::new(summary_interval, Instant::now());
        let validated = validation.describe();
        let (items_tx, items_rx) = async_channel::bounded(QUEUE);
        let stop = &*stop;
        let done = Stop::default();

        let (stats, consumed) = std::thread::scope(|scope| {
            let outputs = &*outputs;
            let consume = &consume;
            let (fluvio, done, dashboard) = (&fluvio, &done, dashboard.as_ref());
            if poll_status {
                let poll = status::Poll {
                    fluvio,
                    topic: &consume.topic,
                    partitions: &partitions,
                    consumer_id: &consume.consumer_id,
                    outputs,
                    dashboard,
                };
                scope.spawn(move || poll.run(done));
            }
            let read = partitions.clone();
            let consumer = scope.spawn(move || {
                let mut source = FluvioSource::new(fluvio, consume, read, smartmodule);
                run_block_on(consume::consume(&mut source, items_tx, outputs, consume, stop))
            });
            let stats = run_pipeline_from(items_rx, validation, &classifier, &pipeline, |outcome: Outcome| {
                summary.record(&outcome);
                if let Some(dashboard) = dashboard {
                    dashboard.record(&outcome);
                }
                if let Some(line) = summary.close_if_due(Instant::now()) {
                    let retrying = fvision_outputs::toolkit::retrying_note(&outputs.reports(), Instant::now());
                    tracing::info!("{line}{retrying}");
                }
                events::delivered(outputs.deliver(&outcome, outcome.position())?.as_str());
                Ok::<_, DeliveryError>(())
            });
            let consumed = consumer.join().unwrap_or_else(|panic| Err(ConsumeError::Panicked(panic_message(&*panic))));
            done.request();
            (stats, consumed)
        });
        if let Some(line) = summary.finish(Instant::now()) {
            tracing::info!("{line}");
        }
        // The pipeline's own error says why; the consumer then only saw that the pipeline stopped.
        let pipeline = stats?;
        let consume = consumed?;
        Ok(RunReport { pipeline, consume, validated })
    }
}

/// Checks the output topics exist, creates the input topic if allowed, and resolves the partitions.
fn prepare_topics(
    sink: &SinkSettings,
    admin: &FluvioAdmin,
    consume: &ConsumeSettings,
) -> Result<Vec<u32>, ConnectorError> {
    let settings = &sink.inference;
    let list =
        |names: Vec<String>| run_block_on(admin.list::<TopicSpec, _>(names)).map_err(fluvio_error("listing topics"));
    let mut outputs = vec![settings.predictions_topic.clone(), settings.dlq_topic.clone()];
    if settings.below_threshold == BelowThreshold::Review {
        outputs.extend(settings.review_topic.clone());
    }
    for topic in outputs {
        if list(vec![topic.clone()])?.is_empty() {
            return Err(ConnectorError::MissingTopic(topic));
        }
    }
    let found = list(vec![consume.topic.clone()])?;
    if found.is_empty() {
        return Err(ConnectorError::MissingTopic(consume.topic.clone()));
    }
    let count = found.first().map(|t| t.spec.partitions()).unwrap_or(1);
    Ok(consume.partitions.clone().unwrap_or_else(|| (0..count).collect()))
}

/// Where `image-validate` runs, and the invocation the consumer sends to the SPU for that.
fn validation(
    sink: &SinkSettings,
    admin: &FluvioAdmin,
) -> Result<(Validation, Option<SmartModuleInvocation>), ConnectorError> {
    let params = sink.validation.params.clone();
    let name = sink.validation.smartmodule.clone();
    let at = sink.validation.at;
    let loaded = if at == ValidateAt::Connector {
        false
    } else {
        // Filtered by the SC as the SPU resolves `uses` (`group/name@version` matches the package).
        let found = run_block_on(admin.list::<SmartModuleSpec, _>(vec![name.clone()]))
            .map_err(fluvio_error("listing SmartModules"))?;
        !found.is_empty()
    };
    if at == ValidateAt::Cluster && !loaded {
        return Err(ConnectorError::MissingSmartModule(name));
    }
    if loaded {
        let invocation = SmartModuleInvocation {
            wasm: SmartModuleInvocationWasm::Predefined(name.clone()),
            kind: SmartModuleKind::FilterMap,
            params: params.into(),
            name: Some(name),
        };
        return Ok((Validation::AtSpu(sink.validation.dead_letter_payload_cap), Some(invocation)));
    }
    let wasm = locate_smartmodule().map_err(setup_error("finding image-validate"))?;
    let validator = WasmValidator::load(&wasm, params).map_err(setup_error(format!("loading {}", wasm.display())))?;
    Ok((Validation::InConnector(Box::new(validator)), None))
}

/// Every output of the connector: the Fluvio topics (which also take the dead letters of the other
/// outputs), then what the YAML configures, built by [`OutputSet::build`] as `fvision run --config` builds it.
fn outputs(sink: &SinkSettings, consume: &ConsumeSettings, fluvio: &Fluvio) -> Result<OutputSet, ConnectorError> {
    let settings = &sink.inference;
    let producer = sink.meta.producer.clone().unwrap_or_default();
    let config = image_producer_config(&producer).map_err(fluvio_error("configuring the producers"))?;
    let open = |topic: &String| -> Result<TopicProducer, ConnectorError> {
        let producer = run_block_on(fluvio.topic_producer_with_config(topic.clone(), config.clone()))
            .map_err(fluvio_error(format!("opening a producer for `{topic}`")))?;
        Ok(TopicProducer { topic: topic.clone(), producer })
    };
    let review = match (settings.below_threshold, &settings.review_topic) {
        (BelowThreshold::Review, Some(topic)) => Some(open(topic)?),
        _ => None,
    };
    let topics = FluvioOutput::new(open(&settings.predictions_topic)?, open(&settings.dlq_topic)?, review);
    let jsonl = match &settings.jsonl {
        Some(path) => Some(JsonlOutput::append(path).map_err(setup_error("opening the JSONL output"))?),
        None => None,
    };
    // BigQuery, Kafka, GCS: each connected and checked now, so a missing table or bucket stops the start.
    let local = LocalOutputs {
        topics: Some(Box::new(topics)),
        console: settings.console,
        jsonl,
        below: settings.below_threshold,
        source_topic: consume.topic.clone(),
    };
    Ok(OutputSet::build(&sink.path, settings.external(), local)?)
}

/// The outputs as the consumer's commit barrier.
impl Barrier for OutputSet {
    fn delivered(&self) -> u64 {
        OutputSet::delivered(self)
    }

    fn delivered_reach(&self, count: u64) -> impl std::future::Future<Output = ()> {
        OutputSet::delivered_reach(self, count)
    }

    fn acknowledge(&self) -> impl std::future::Future<Output = Result<(), DeliveryError>> {
        OutputSet::acknowledge(self)
    }

    fn dead_letter(&self, name: &str, position: SourcePosition, rejected: RejectedImage) -> Result<(), DeliveryError> {
        let position = Some(position);
        let outcome = Outcome::Rejected { name: name.to_string(), position, rejected: Box::new(rejected) };
        events::delivered(self.deliver(&outcome, position)?.as_str());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_thread_panic_is_reported_with_its_message() {
        let joined =
            std::thread::spawn(|| -> Result<ConsumeReport, ConsumeError> { panic!("offset {} is odd", 7) }).join();
        let error = joined.unwrap_or_else(|panic| Err(ConsumeError::Panicked(panic_message(&*panic)))).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the consumer thread panicked: offset 7 is odd; offsets were not committed past the last commit"
        );
        assert_eq!(panic_message(&"static"), "static");
    }
}
