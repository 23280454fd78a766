//! Where every binary finds the files it needs at run time: the model presets (and the ONNX files they
//! name), the `image-validate` SmartModule, the ONNX Runtime library and the shipped data. One lookup order,
//! here and nowhere else, so an unpacked release archive runs anywhere and nothing depends on the source
//! tree or the cargo target directory a binary was built in.
//!
//! For each [`Resource`], the first of:
//! 1. a path given explicitly (a command-line flag or a config field), taken as is;
//! 2. the resource's environment variable ([`Resource::env`]), taken as is;
//! 3. `<exe dir>/../<installed path>`, if it exists: the release archive's layout, also that of an install
//!    under a prefix such as `/usr/local` (`bin/fvision` beside `share/fluvio-vision/...` and
//!    `lib/libonnxruntime.so`);
//! 4. `<exe dir>/<flat path>`, if it exists: everything copied into the binary's own folder.
//!
//! A path from steps 1 and 2 is not checked here: whoever reads it reports the file it could not read,
//! which names what the user asked for rather than a fallback they did not.

use std::fmt;
use std::path::{Path, PathBuf};

/// One kind of file the binaries look up, with where an installation keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    what: &'static str,
    env: &'static str,
    installed: &'static str,
    flat: &'static str,
}

/// The folder of preset manifests (`*.toml`); the ONNX files and labels sit in `../onnx` beside it.
pub const MODELS: Resource = Resource {
    what: "the model presets",
    env: "FVISION_MODELS_DIR",
    installed: "share/fluvio-vision/models/presets",
    flat: "models/presets",
};

/// The `image-validate` SmartModule (`image_validate.wasm`); other SmartModules of the project sit beside it.
pub const SMARTMODULE: Resource = Resource {
    what: "the image-validate SmartModule",
    env: "FVISION_SMARTMODULE_WASM",
    installed: "share/fluvio-vision/smartmodule/image_validate.wasm",
    flat: "image_validate.wasm",
};

/// The ONNX Runtime shared library (`ORT_DYLIB_PATH` is ort's own variable for it).
pub const ONNX_RUNTIME: Resource = Resource {
    what: "the ONNX Runtime library",
    env: "ORT_DYLIB_PATH",
    installed: "lib/libonnxruntime.so",
    flat: "libonnxruntime.so",
};

/// The model tools folder (`import_tf.py` and its pinned requirements, for `fvision models import`).
pub const MODEL_TOOLS: Resource = Resource {
    what: "the model tools (import_tf.py)",
    env: "FVISION_TOOLS_DIR",
    installed: "share/fluvio-vision/models/tools",
    flat: "models/tools",
};

/// The shipped data folder: `demo-images/`, `imagenet-sample/`, `bad-inputs/`.
pub const DATA: Resource = Resource {
    what: "the shipped data (demo images, ImageNet sample)",
    env: "FVISION_DATA_DIR",
    installed: "share/fluvio-vision/data",
    flat: "data",
};

impl Resource {
    /// The environment variable that names this resource.
    pub const fn env(&self) -> &'static str {
        self.env
    }

    /// Finds the resource by the module's lookup order, `explicit` first.
    pub fn locate(&self, explicit: Option<&Path>) -> Result<PathBuf, NotFound> {
        let exe_dir = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf));
        self.locate_from(explicit, std::env::var_os(self.env).map(PathBuf::from), exe_dir.as_deref())
    }

    /// [`Self::locate`] with the environment variable's value and the binary's folder given.
    fn locate_from(
        &self,
        explicit: Option<&Path>,
        from_env: Option<PathBuf>,
        exe_dir: Option<&Path>,
    ) -> Result<PathBuf, NotFound> {
        if let Some(path) = explicit {
            return Ok(path.to_path_buf());
        }
        if let Some(path) = from_env.filter(|p| !p.as_os_str().is_empty()) {
            return Ok(path);
        }
        let tried: Vec<PathBuf> = match exe_dir {
            Some(dir) => vec![dir.join("..").join(self.installed), dir.join(self.flat)],
            None => Vec::new(),
        };
        match tried.iter().find(|p| p.exists()) {
            Some(found) => Ok(found.canonicalize().unwrap_or_else(|_| found.clone())),
            None => Err(NotFound { what: self.what, env: self.env, tried }),
        }
    }
}

/// No step of the lookup order found the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    /// What was looked for.
    pub what: &'static str,
    /// The environment variable that would have named it.
    pub env: &'static str,
    /// The places beside the binary that were tried.
    pub tried: Vec<PathBuf>,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} not found: set {} to it", self.what, self.env)?;
        if !self.tried.is_empty() {
            let tried: Vec<String> = self.tried.iter().map(|p| p.display().to_string()).collect();
            write!(f, ", or install it at {}", tried.join(" or "))?;
        }
        Ok(())
    }
}

impl std::error::Error for NotFound {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_beats_the_environment_which_beats_the_installation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let bin = dir.join("bin");
        std::fs::create_dir_all(dir.join("share/fluvio-vision/models/presets")).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let explicit = Path::new("/given");
        let env = Some(PathBuf::from("/from-env"));
        assert_eq!(MODELS.locate_from(Some(explicit), env.clone(), Some(&bin)).unwrap(), explicit);
        assert_eq!(MODELS.locate_from(None, env, Some(&bin)).unwrap(), Path::new("/from-env"));
        let installed = MODELS.locate_from(None, Some(PathBuf::new()), Some(&bin)).unwrap();
        assert_eq!(installed, dir.join("share/fluvio-vision/models/presets"));
    }

    #[test]
    fn a_flat_copy_beside_the_binary_is_found_last() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap().join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("image_validate.wasm"), b"\0asm").unwrap();
        let found = SMARTMODULE.locate_from(None, None, Some(&dir)).unwrap();
        assert_eq!(found, dir.join("image_validate.wasm"));
        std::fs::create_dir_all(dir.join("../share/fluvio-vision/smartmodule")).unwrap();
        std::fs::write(dir.join("../share/fluvio-vision/smartmodule/image_validate.wasm"), b"\0asm").unwrap();
        let found = SMARTMODULE.locate_from(None, None, Some(&dir)).unwrap();
        assert_eq!(
            found,
            tmp.path().canonicalize().unwrap().join("share/fluvio-vision/smartmodule/image_validate.wasm")
        );
    }

    #[test]
    fn not_found_names_the_variable_and_every_place_tried() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("missing");
        let err = ONNX_RUNTIME.locate_from(None, None, Some(&dir)).unwrap_err().to_string();
        assert!(err.starts_with("the ONNX Runtime library not found: set ORT_DYLIB_PATH"), "{err}");
        assert!(err.contains("missing/../lib/libonnxruntime.so or "), "{err}");
        assert!(err.ends_with("missing/libonnxruntime.so"), "{err}");
    }
}
