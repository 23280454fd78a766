//! `fvision models`: the registry of shipped and custom models.

mod import;

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use fvision_models::{Classifier, ClassifierOptions, Registry};

/// Inspect the model registry.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the shipped presets: which have real (trained) weights, and which are weight-free graphs for
    /// throughput measurements only.
    #[command(after_help = "Examples:\n  fvision models list")]
    List,
    /// Show a model's manifest and the tensor shapes read from its ONNX file.
    #[command(
        after_help = "Examples:\n  fvision models show efficientnet-lite0\n  fvision models show ./my-model/manifest.toml"
    )]
    Show {
        /// A preset name or a manifest path.
        name: String,
    },
    /// Convert a Keras (.keras, .h5) or TensorFlow SavedModel to ONNX plus a manifest, checked against TensorFlow.
    Import(Box<import::ImportArgs>),
    /// Install the TensorFlow importer now (`models import` installs it on first use).
    #[command(after_help = "Examples:\n  fvision models install-importer")]
    InstallImporter,
}

/// Entry point of `fvision models`.
pub fn run(command: ModelsCommand) -> Result<ExitCode> {
    let registry = Registry::open_default()?;
    match command {
        ModelsCommand::Import(args) => import::run(*args)?,
        ModelsCommand::InstallImporter => import::install()?,
        ModelsCommand::List => {
            println!("{:<20} {:<8} {:<6} {:<30} description", "name", "version", "layout", "weights");
            for spec in registry.list() {
                let m = &spec.manifest;
                let weights = if m.real_weights { "real (trained)" } else { "WEIGHT-FREE (throughput only)" };
                println!(
                    "{:<20} {:<8} {:<6} {:<30} {}",
                    m.name,
                    m.version,
                    format!("{:?}", m.input.layout).to_uppercase(),
                    weights,
                    m.description
                );
            }
        }
        ModelsCommand::Show { name } => {
            let spec = registry.resolve(&name)?;
            let model = Classifier::load(spec, &ClassifierOptions::default())?;
            let spec = model.spec();
            let m = &spec.manifest;
            println!("name:          {} (version {})", m.name, m.version);
            println!("manifest:      {}", spec.path.display());
            println!("onnx:          {}", spec.onnx_path.display());
            println!("labels:        {} ({} classes)", spec.labels_path.display(), model.labels().len());
            println!(
                "weights:       {}",
                if m.real_weights {
                    "real (trained)"
                } else {
                    "WEIGHT-FREE: real compute, meaningless outputs; use for throughput only"
                }
            );
            println!(
                "input:         `{}` {:?} {}x{} {:?}",
                m.input.name, m.input.layout, m.input.size, m.input.size, m.input.channel_order
            );
            println!(
                "preprocess:    {:?} to {} ({:?}, crop offset {:?}), normalize {:?} (mean {:?}, std {:?})",
                m.preprocess.resize,
                spec.resize_to,
                m.preprocess.filter,
                spec.crop_rounding,
                m.preprocess.normalize,
                spec.mean,
                spec.std
            );
            println!("output:        `{}` {:?}, max batch {}", m.output.name, m.output.kind, m.max_batch);
            for (kind, tensors) in [("onnx input", model.inputs()), ("onnx output", model.outputs())] {
                for t in tensors {
                    println!("{kind:<14} `{}` {} {:?}", t.name, t.element, t.shape);
                }
            }
            println!(
                "load time:     {} ms (warm-up {} ms)",
                model.load_time().as_millis(),
                model.warm_up_time().as_millis()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
