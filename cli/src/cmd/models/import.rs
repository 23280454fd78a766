//! `fvision models import`: a Keras or TensorFlow model becomes an ONNX file and a manifest, checked against
//! TensorFlow on the shipped sample images. The conversion itself is tf2onnx's, run by
//! `models/tools/import_tf.py` in a virtualenv this command installs into the cache on first use; this side
//! validates the options, preprocesses the sample images exactly as `fvision classify` will, and writes the
//! manifest only when the check passed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use fvision_models::{Classifier, ClassifierOptions, ModelSpec, PreparedBatch};
use fvision_records::resources::{MODELS, MODEL_TOOLS};
use fvision_records::EventMeta;
use indicatif::ProgressBar;
use serde::Deserialize;

const SCRIPT: &str = "import_tf.py";
const REQUIREMENTS: &str = "importer-requirements.txt";
const REQUIREMENTS_NO_DEPS: &str = "importer-requirements-no-deps.txt";
const STAMP: &str = ".fvision-installed";

/// Convert a Keras model (.keras, legacy .h5) or a TensorFlow SavedModel directory to ONNX plus a manifest,
/// and check the ONNX against TensorFlow on the shipped sample images.
#[derive(Debug, Args)]
#[command(after_help = "\
The first run installs the converter (tensorflow-cpu 2.21, tf2onnx 1.17, onnxruntime; about 355 MiB from
PyPI, 1.7 GiB on disk) into $FLUVIO_VISION_CACHE/importer-tf (default ~/.cache/fluvio-vision). Then it
converts, runs TensorFlow and ONNX Runtime on the sample images preprocessed as the manifest says, and fails
if the largest output difference is above --tolerance. Writes DIR/model.onnx, DIR/labels.txt,
DIR/manifest.toml and DIR/import.log (the converter's own log).

Examples:
  fvision models import my_model.keras                    # Keras `tf` preprocessing (x / 127.5 - 1), NHWC
  fvision models import resnet.h5 --preprocess caffe --labels classes.txt --out models/resnet
  fvision models import export_dir/ --preprocess torch --output-kind probabilities
  fvision models import m.keras --preprocess custom --mean 0.5,0.5,0.5 --std 0.25,0.25,0.25 --size 160
  fvision classify --model my_model/manifest.toml photos/")]
pub struct ImportArgs {
    /// The model: a `.keras` file, a legacy Keras `.h5` file or a SavedModel directory.
    #[arg(value_name = "MODEL")]
    model: PathBuf,

    /// Output folder [default: ./NAME].
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,

    /// Registry name of the imported model [default: the file or folder name].
    #[arg(long)]
    name: Option<String>,

    /// Model version, part of every prediction id.
    #[arg(long, default_value = "1")]
    version: String,

    /// The pixel normalisation the model was trained with: Keras `preprocess_input` styles `tf` (x / 127.5 - 1,
    /// MobileNetV2), `caffe` (BGR minus the ImageNet means, ResNet50/VGG16), `torch` (ImageNet mean/std on
    /// x / 255), `tf127` ((x - 127) / 128), or `custom` with --mean and --std.
    #[arg(long, value_enum, default_value_t = Convention::Tf)]
    preprocess: Convention,

    /// Per-channel mean, RGB, in 0..1 units (with --preprocess custom): input = (x / 255 - mean) / std.
    #[arg(long, value_delimiter = ',', num_args = 1, value_name = "R,G,B")]
    mean: Option<Vec<f32>>,

    /// Per-channel std, RGB, in 0..1 units (with --preprocess custom).
    #[arg(long, value_delimiter = ',', num_args = 1, value_name = "R,G,B")]
    std: Option<Vec<f32>>,

    /// Input side in pixels [default: the model's; required when the model leaves it open].
    #[arg(long)]
    size: Option<u32>,

    /// Input layout of the ONNX file: NHWC as Keras has it, or NCHW (tf2onnx transposes inside the graph).
    #[arg(long, value_enum, default_value_t = LayoutArg::Nhwc)]
    layout: LayoutArg,

    /// How images reach the input size: shorter side to --resize-to then centre crop, or squash.
    #[arg(long, value_enum, default_value_t = ResizeArg::ShorterSideCrop)]
    resize: ResizeArg,

    /// Shorter side before the centre crop [default: size x 256 / 224, rounded].
    #[arg(long)]
    resize_to: Option<u32>,

    /// Resampling filter (Pillow's, antialiased).
    #[arg(long, value_enum, default_value_t = FilterArg::Bilinear)]
    filter: FilterArg,

    /// Class names, one a line (`name` or `synset<TAB>name`), as many as the model has outputs
    /// [default: class_0, class_1, ...].
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,

    /// Whether the model's output is logits (softmax applied by fvision) or probabilities [default: auto,
    /// probabilities when every output row of the check is non-negative and sums to 1].
    #[arg(long, value_enum, default_value_t = OutputKindArg::Auto)]
    output_kind: OutputKindArg,

    /// Largest batch the model is run with.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    max_batch: u16,

    /// Largest accepted |TensorFlow - ONNX| over every output of every sample image.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,

    /// Images for the check [default: the shipped ImageNet sample, data/imagenet-sample].
    #[arg(long, value_name = "DIR")]
    check_images: Option<PathBuf>,

    /// Also write the check's input tensor (the sample images preprocessed as fvision does, float32, in the
    /// ONNX layout) as a NumPy .npy file, to run the original model on exactly what the ONNX file sees.
    #[arg(long, value_name = "FILE.npy")]
    save_check_inputs: Option<PathBuf>,

    /// Replace the files of an earlier import in the output folder.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Convention {
    Tf,
    Caffe,
    Torch,
    Tf127,
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LayoutArg {
    #[value(name = "NHWC", alias = "nhwc")]
    Nhwc,
    #[value(name = "NCHW", alias = "nchw")]
    Nchw,
}

impl LayoutArg {
    /// As the manifest and the converter spell it.
    fn manifest_value(self) -> &'static str {
        match self {
            Self::Nhwc => "NHWC",
            Self::Nchw => "NCHW",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ResizeArg {
    ShorterSideCrop,
    Squash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FilterArg {
    Nearest,
    Bilinear,
    CatmullRom,
    Lanczos3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputKindArg {
    Auto,
    Logits,
    Probabilities,
}

/// One line of the converter's protocol (`FVISION {json}`).
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
enum Event {
    Converted { input: ConvertedInput, output: ConvertedOutput, seconds: f64, total_seconds: f64 },
    Checked(Check),
    Error { kind: String, message: String },
}

#[derive(Debug, Deserialize)]
struct ConvertedInput {
    name: String,
    size: u32,
}

#[derive(Debug, Deserialize)]
struct ConvertedOutput {
    name: String,
    classes: usize,
}

#[derive(Debug, Deserialize)]
struct Check {
    images: usize,
    max_abs_diff: f64,
    max_abs_output: f64,
    top1_agree: usize,
    finite: bool,
    looks_like_probabilities: bool,
    tensorflow_seconds: f64,
    onnx_seconds: f64,
}

/// What kind of TensorFlow model a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Keras,
    H5,
    SavedModel,
}

impl Format {
    fn of(path: &Path) -> Result<Self> {
        if path.is_dir() {
            if path.join("saved_model.pb").is_file() {
                return Ok(Self::SavedModel);
            }
            bail!("{} is a folder without saved_model.pb, so not a TensorFlow SavedModel", path.display());
        }
        if !path.is_file() {
            bail!("{} does not exist", path.display());
        }
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("keras") => Ok(Self::Keras),
            Some("h5" | "hdf5") => Ok(Self::H5),
            _ => bail!(
                "{}: not a model this command reads; expected a .keras file, a legacy Keras .h5 file or a SavedModel \
                 folder (an ONNX model needs no import: write its manifest as in models/README.md)",
                path.display()
            ),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Keras => "Keras .keras",
            Self::H5 => "Keras .h5",
            Self::SavedModel => "TensorFlow SavedModel",
        }
    }
}

/// Entry point of `fvision models import`.
pub fn run(args: ImportArgs) -> Result<()> {
    let format = Format::of(&args.model)?;
    let normalize = Normalization::from_args(&args)?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&args.model)?,
    };
    if name.trim().is_empty() || name.contains(char::is_whitespace) {
        bail!("--name {name:?}: expected a non-empty name without spaces");
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(&name));
    let files = OutputFiles::new(&out);
    files.prepare(args.force)?;
    let importer = Importer::ready()?;

    let converting = spinner(&format!("converting {} with tf2onnx", args.model.display()));
    let mut session = importer.start(&args, &files)?;
    let converted = session.next_event();
    converting.finish_and_clear();
    let (input, output, convert_seconds, total_seconds) = match converted {
        Ok(Event::Converted { input, output, seconds, total_seconds }) => (input, output, seconds, total_seconds),
        other => return Err(session.failure(other, &args.model, format)),
    };
    write_labels(args.labels.as_deref(), output.classes, &files.labels)?;
    let draft = Draft { args: &args, name: &name, format, normalize: &normalize, input: &input, output: &output };
    let kind = if args.output_kind == OutputKindArg::Probabilities { "probabilities" } else { "logits" };
    let spec = ModelSpec::parse(&draft.manifest(kind, None), &files.manifest)
        .with_context(|| format!("the manifest for {}", args.model.display()))?;
    let classifier = Classifier::load(spec, &ClassifierOptions::default())
        .with_context(|| format!("fvision cannot load the ONNX file converted from {}", args.model.display()))?;

    let sample = match args.check_images.clone() {
        Some(dir) => dir,
        None => crate::data::imagenet_sample().context("the sample images to check the conversion on")?,
    };
    let checking = spinner(&format!("checking ONNX against TensorFlow on {}", sample.display()));
    let inputs = preprocess_sample(&classifier, &sample)?;
    let check_path = args.save_check_inputs.clone().unwrap_or_else(|| files.dir.join(".check-inputs.npy"));
    write_npy(&check_path, &inputs.shape, &inputs.values)?;
    let checked = session.send(&check_path).and_then(|()| session.next_event());
    if args.save_check_inputs.is_none() {
        let _ = std::fs::remove_file(&check_path);
    }
    checking.finish_and_clear();
    let check = match checked {
        Ok(Event::Checked(check)) => check,
        other => return Err(session.failure(other, &args.model, format)),
    };
    session.finish();
    if !check.finite || check.max_abs_diff > args.tolerance {
        bail!(
            "the ONNX file converted from {} does not compute what TensorFlow computes: the largest output \
             difference on {} sample images is {:.3e} (tolerance {:.0e}){}; {} is kept for inspection, no manifest \
             was written",
            args.model.display(),
            check.images,
            check.max_abs_diff,
            args.tolerance,
            if check.finite { "" } else { ", and some outputs are not finite" },
            files.onnx.display()
        );
    }
    let kind = match args.output_kind {
        OutputKindArg::Auto if check.looks_like_probabilities => "probabilities",
        OutputKindArg::Auto | OutputKindArg::Logits => "logits",
        OutputKindArg::Probabilities => "probabilities",
    };
    let text = draft.manifest(kind, Some((&check, &sample)));
    ModelSpec::parse(&text, &files.manifest).with_context(|| format!("the manifest for {}", args.model.display()))?;
    std::fs::write(&files.manifest, text).with_context(|| format!("writing {}", files.manifest.display()))?;

    println!("imported {} ({}) as `{name}` version {}", args.model.display(), format.describe(), args.version);
    println!(
        "  onnx:     {} (input `{}` {} {s}x{s}, output `{}` {} classes, {kind})",
        files.onnx.display(),
        input.name,
        args.layout.manifest_value(),
        output.name,
        output.classes,
        s = input.size
    );
    println!(
        "  convert:  {convert_seconds:.2} s in tf2onnx ({total_seconds:.1} s with loading TensorFlow and the model)"
    );
    println!(
        "  check:    {} images of {} preprocessed as `{}`: largest |TensorFlow - ONNX| = {:.2e} (tolerance {:.0e}, \
         largest output {:.3}), same top-1 on {}/{}; TensorFlow {:.2} s, ONNX Runtime {:.2} s",
        check.images,
        sample.display(),
        normalize.label(),
        check.max_abs_diff,
        args.tolerance,
        check.max_abs_output,
        check.top1_agree,
        check.images,
        check.tensorflow_seconds,
        check.onnx_seconds
    );
    println!("  manifest: {}", files.manifest.display());
    println!("  use it:   fvision classify --model {} IMAGES", files.manifest.display());
    Ok(())
}

/// `fvision models install-importer`: the converter's virtualenv, now rather than on first import.
pub fn install() -> Result<()> {
    let importer = Importer::ready()?;
    println!("the TensorFlow importer is installed: {}", importer.python.display());
    Ok(())
}

/// The file name without its extension, or the SavedModel folder's name.
fn default_name(model: &Path) -> Result<String> {
    let absolute = model.canonicalize().unwrap_or_else(|_| model.to_owned());
    let base = if absolute.is_dir() { absolute.file_name() } else { absolute.file_stem() };
    let name = base.and_then(|b| b.to_str()).map(|s| s.replace(char::is_whitespace, "_"));
    name.filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow!("cannot name the model after {}: give --name", model.display()))
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The manifest's normalisation, from --preprocess, --mean and --std.
#[derive(Debug)]
struct Normalization {
    convention: Convention,
    custom: Option<([f32; 3], [f32; 3])>,
}

impl Normalization {
    fn from_args(args: &ImportArgs) -> Result<Self> {
        let three = |flag: &str, v: &Option<Vec<f32>>| -> Result<Option<[f32; 3]>> {
            match v {
                None => Ok(None),
                Some(v) => {
                    let values: [f32; 3] = v.as_slice().try_into().map_err(|_| {
                        anyhow!("--{flag}: expected three comma-separated numbers (R,G,B), got {}", v.len())
                    })?;
                    if values.iter().any(|x| !x.is_finite()) || (flag == "std" && values.iter().any(|x| *x <= 0.0)) {
                        bail!("--{flag}: expected finite numbers{}", if flag == "std" { " above 0" } else { "" });
                    }
                    Ok(Some(values))
                }
            }
        };
        let mean = three("mean", &args.mean)?;
        let std = three("std", &args.std)?;
        let custom = match (args.preprocess, mean, std) {
            (Convention::Custom, Some(mean), Some(std)) => Some((mean, std)),
            (Convention::Custom, _, _) => bail!("--preprocess custom needs both --mean and --std"),
            (_, None, None) => None,
            (_, _, _) => bail!("--mean and --std go with --preprocess custom"),
        };
        Ok(Self { convention: args.preprocess, custom })
    }

    /// The manifest's `normalize` value.
    fn label(&self) -> &'static str {
        match self.convention {
            Convention::Tf => "tf",
            Convention::Caffe => "caffe",
            Convention::Torch => "torch",
            Convention::Tf127 => "tf127",
            Convention::Custom => "custom",
        }
    }
}

/// The files one import writes.
#[derive(Debug)]
struct OutputFiles {
    dir: PathBuf,
    onnx: PathBuf,
    labels: PathBuf,
    manifest: PathBuf,
    log: PathBuf,
}

impl OutputFiles {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            onnx: dir.join("model.onnx"),
            labels: dir.join("labels.txt"),
            manifest: dir.join("manifest.toml"),
            log: dir.join("import.log"),
        }
    }

    fn prepare(&self, force: bool) -> Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        for file in [&self.onnx, &self.labels, &self.manifest] {
            if file.exists() {
                if !force {
                    bail!(
                        "{} exists (an earlier import?): give --force to replace it, or another --out",
                        file.display()
                    );
                }
                std::fs::remove_file(file).with_context(|| format!("removing {}", file.display()))?;
            }
        }
        Ok(())
    }
}

/// The manifest of the imported model, from the options and what the converter found.
struct Draft<'a> {
    args: &'a ImportArgs,
    name: &'a str,
    format: Format,
    normalize: &'a Normalization,
    input: &'a ConvertedInput,
    output: &'a ConvertedOutput,
}

impl Draft<'_> {
    fn manifest(&self, kind: &str, checked: Option<(&Check, &Path)>) -> String {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let args = self.args;
        let size = self.input.size;
        let mut text = String::new();
        let source = args.model.canonicalize().unwrap_or_else(|_| args.model.clone());
        text.push_str(&format!("# Imported by `fvision models import` from {}", source.display()));
        if let Some((check, sample)) = checked {
            text.push_str(&format!(
                ";\n# checked on {} images of {}: largest |TensorFlow - ONNX| = {:.2e}",
                check.images,
                sample.display(),
                check.max_abs_diff
            ));
        }
        text.push_str(".\n");
        text.push_str(&format!("name = {}\nversion = {}\n", quote(self.name), quote(&args.version)));
        let file = source.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        text.push_str(&format!(
            "description = {}\n",
            quote(&format!("imported from {file} ({})", self.format.describe()))
        ));
        text.push_str("real_weights = true\nonnx = \"model.onnx\"\nlabels = \"labels.txt\"\n");
        text.push_str(&format!("max_batch = {}\n\n", args.max_batch));
        let layout = args.layout.manifest_value();
        let order = if self.normalize.convention == Convention::Caffe { "BGR" } else { "RGB" };
        text.push_str(&format!(
            "[input]\nname = {}\nlayout = \"{layout}\"\nsize = {size}\nchannel_order = \"{order}\"\n\n",
            quote(&self.input.name)
        ));
        let (resize, resize_to) = match args.resize {
            ResizeArg::ShorterSideCrop => {
                let to = args.resize_to.unwrap_or_else(|| ((f64::from(size) * 256.0 / 224.0).round()) as u32);
                ("shorter-side-crop", format!("resize_to = {to}\n"))
            }
            ResizeArg::Squash => ("squash", String::new()),
        };
        let filter = match args.filter {
            FilterArg::Nearest => "nearest",
            FilterArg::Bilinear => "bilinear",
            FilterArg::CatmullRom => "catmull-rom",
            FilterArg::Lanczos3 => "lanczos3",
        };
        text.push_str(&format!(
            "[preprocess]\nresize = \"{resize}\"\n{resize_to}filter = \"{filter}\"\nnormalize = \"{}\"\n",
            self.normalize.label()
        ));
        if let Some((mean, std)) = self.normalize.custom {
            text.push_str(&format!("mean = {mean:?}\nstd = {std:?}\n"));
        }
        text.push_str(&format!("\n[output]\nname = {}\nkind = \"{kind}\"\n", quote(&self.output.name)));
        text
    }
}

fn write_labels(given: Option<&Path>, classes: usize, dest: &Path) -> Result<()> {
    let text = match given {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading the labels {}", path.display()))?;
            let count = text.lines().filter(|l| !l.trim().is_empty()).count();
            if count != classes {
                bail!(
                    "{}: {count} labels, but the model has {classes} outputs (expected one label a line)",
                    path.display()
                );
            }
            text
        }
        None => (0..classes).map(|i| format!("class_{i}\n")).collect(),
    };
    std::fs::write(dest, text).with_context(|| format!("writing {}", dest.display()))
}

/// The check's input: every image of the sample folder, preprocessed by fvision's own preprocessor.
struct Tensor {
    shape: [usize; 4],
    values: Vec<f32>,
}

fn preprocess_sample(classifier: &Classifier, dir: &Path) -> Result<Tensor> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the check images in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .jpg, .jpeg or .png image for the check", dir.display());
    }
    let pre = classifier.preprocessor();
    let mut batch = PreparedBatch::with_capacity(pre, files.len());
    for file in &files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        batch.push(pre, &bytes, EventMeta::default()).with_context(|| format!("preprocessing {}", file.display()))?;
    }
    let size = pre.size() as usize;
    let shape = match classifier.spec().manifest.input.layout {
        fvision_models::Layout::Nhwc => [files.len(), size, size, 3],
        fvision_models::Layout::Nchw => [files.len(), 3, size, size],
    };
    Ok(Tensor { shape, values: batch.tensor(0..files.len()).to_vec() })
}

/// A little-endian float32 array in NumPy's .npy format (version 1.0).
fn write_npy(path: &Path, shape: &[usize; 4], values: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", dims.join(", "));
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64, ending in \n.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + values.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The converter's Python and script, installed.
#[derive(Debug)]
struct Importer {
    python: PathBuf,
    script: PathBuf,
}

impl Importer {
    /// Finds the script and installs its virtualenv if it is missing or pinned differently.
    fn ready() -> Result<Self> {
        let tools = tools_dir()?;
        let venv = cache_dir().join("importer-tf");
        let python = venv.join("bin/python");
        let read = |name: &str| {
            let path = tools.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        // The same stamp as scripts/lib.sh `ensure_importer` writes: both requirement files, trailing newlines cut.
        let want = format!("{}{}", read(REQUIREMENTS)?, read(REQUIREMENTS_NO_DEPS)?);
        let want = want.trim_end_matches('\n');
        let installed = std::fs::read_to_string(venv.join(STAMP)).unwrap_or_default();
        if installed != want || !python.is_file() {
            install_venv(&venv, &tools).with_context(|| {
                format!(
                    "cannot install the TensorFlow importer into {} (needs python3 with venv and access to PyPI, \
                     or PIP_INDEX_URL for a mirror); only `fvision models import` needs it",
                    venv.display()
                )
            })?;
            std::fs::write(venv.join(STAMP), want)
                .with_context(|| format!("writing {}", venv.join(STAMP).display()))?;
        }
        Ok(Self { python, script: tools.join(SCRIPT) })
    }

    fn start(&self, args: &ImportArgs, files: &OutputFiles) -> Result<Session> {
        let log = std::fs::File::create(&files.log).with_context(|| format!("creating {}", files.log.display()))?;
        let mut command = Command::new(&self.python);
        command
            .arg(&self.script)
            .arg("--source")
            .arg(&args.model)
            .arg("--onnx")
            .arg(&files.onnx)
            .args(["--layout", args.layout.manifest_value()])
            .env("TF_CPP_MIN_LOG_LEVEL", "2")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(size) = args.size {
            command.arg("--size").arg(size.to_string());
        }
        let mut child = command.spawn().with_context(|| format!("starting {}", self.python.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("the converter's stdout is not a pipe"))?;
        Ok(Session { child, stdout: BufReader::new(stdout), log: files.log.clone(), started: Instant::now() })
    }
}

/// One running converter.
struct Session {
    child: Child,
    stdout: BufReader<ChildStdout>,
    log: PathBuf,
    started: Instant,
}

impl Session {
    fn next_event(&mut self) -> Result<Event> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("the converter stopped without an answer");
            }
            if let Some(json) = line.trim_end().strip_prefix("FVISION ") {
                return serde_json::from_str(json).with_context(|| format!("the converter's answer {json}"));
            }
        }
    }

    fn send(&mut self, npy: &Path) -> Result<()> {
        let stdin = self.child.stdin.as_mut().ok_or_else(|| anyhow!("the converter's stdin is closed"))?;
        writeln!(stdin, "{}", npy.display())?;
        stdin.flush()?;
        Ok(())
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }

    /// The error for an event that is not the expected one, naming the model file.
    fn failure(mut self, event: Result<Event>, model: &Path, format: Format) -> anyhow::Error {
        drop(self.child.stdin.take());
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        let what = match event {
            Ok(Event::Error { kind, message }) => {
                let what = match kind.as_str() {
                    "load" => "cannot be loaded",
                    "unsupported-layer" => "has a layer the importer cannot convert",
                    "input" => "has an input this project cannot feed",
                    "output-shape" => "has the wrong output shape",
                    "convert" => "cannot be converted to ONNX by tf2onnx",
                    _ => "failed the conversion check",
                };
                return anyhow!("{} ({}) {what}: {message}", model.display(), format.describe());
            }
            Ok(other) => format!("answered out of turn: {other:?}"),
            Err(e) => format!("{e:#}"),
        };
        let tail = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow!(
            "importing {} ({}): the converter {what} ({status} after {:.1} s); the end of its log {}:\n{}",
            model.display(),
            format.describe(),
            self.started.elapsed().as_secs_f64(),
            self.log.display(),
            tail.join("\n")
        )
    }
}

/// Where `import_tf.py` is: the project's one lookup order for [`MODEL_TOOLS`] (`$FVISION_TOOLS_DIR`, then
/// beside the executable as a release archive lays it out), else `tools/` beside the presets folder.
fn tools_dir() -> Result<PathBuf> {
    let located = MODEL_TOOLS.locate(None);
    if std::env::var_os(MODEL_TOOLS.env()).is_some() {
        let dir = located?;
        if dir.join(SCRIPT).is_file() {
            return Ok(dir);
        }
        bail!("{}={}: that folder has no {SCRIPT}", MODEL_TOOLS.env(), dir.display());
    }
    let beside_presets = MODELS.locate(None).ok().and_then(|d| d.parent().map(|p| p.join("tools")));
    located.ok().into_iter().chain(beside_presets).find(|d| d.join(SCRIPT).is_file()).ok_or_else(|| {
        anyhow!(
            "cannot find the importer script {SCRIPT}: set {} to the repository's models/tools folder \
             (or {} to its models/presets)",
            MODEL_TOOLS.env(),
            MODELS.env()
        )
    })
}

fn cache_dir() -> PathBuf {
    std::env::var_os("FLUVIO_VISION_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache/fluvio-vision")
    })
}

/// `python3 -m venv`, then pip with its own progress output.
fn install_venv(venv: &Path, tools: &Path) -> Result<()> {
    eprintln!(
        "installing the TensorFlow importer (first use only) into {}: tensorflow-cpu 2.21.0, tf2onnx 1.17.0, \
         onnxruntime 1.32.0 and their dependencies from PyPI, pinned in {}: about 355 MiB to download, 1.7 GiB on \
         disk",
        venv.display(),
        tools.join(REQUIREMENTS).display()
    );
    if venv.exists() {
        std::fs::remove_dir_all(venv).with_context(|| format!("removing the old {}", venv.display()))?;
    }
    let started = Instant::now();
    let python = std::env::var_os("FVISION_PYTHON").unwrap_or_else(|| "python3".into());
    run_step(Command::new(&python).args(["-m", "venv"]).arg(venv), "python3 -m venv")?;
    let pip = venv.join("bin/pip");
    run_step(
        Command::new(&pip)
            .args(["install", "--disable-pip-version-check", "--progress-bar", "on", "-r"])
            .arg(tools.join(REQUIREMENTS)),
        "pip install",
    )?;
    run_step(
        Command::new(&pip)
            .args(["install", "--disable-pip-version-check", "--no-deps", "-r"])
            .arg(tools.join(REQUIREMENTS_NO_DEPS)),
        "pip install --no-deps",
    )?;
    eprintln!("installed the TensorFlow importer in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn run_step(command: &mut Command, what: &str) -> Result<()> {
    // pip's progress goes to the terminal; its stdout joins stderr so this command's stdout stays its report.
    use std::os::fd::AsFd;
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = command.stdout(Stdio::from(stderr)).status();
    let status = status.with_context(|| format!("{what} did not start"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
