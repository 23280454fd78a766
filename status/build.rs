//! Puts the git commit the binaries are built from into `FVISION_GIT_COMMIT`, for the `fvision_build_info`
//! series. Outside a git checkout (a source archive) it stays unset and the series says `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=FVISION_GIT_COMMIT");
    if let Ok(commit) = std::env::var("FVISION_GIT_COMMIT") {
        println!("cargo:rustc-env=FVISION_GIT_COMMIT={commit}");
        return;
    }
    // Rebuilt when HEAD moves: a commit, a checkout, or a branch updated in place. Only paths that exist are
    // named: cargo takes a missing one as changed on every build, and would rebuild this crate (and every
    // binary) each time. The branch's loose ref may not exist yet (a fresh clone packs it), so the folder of
    // loose branch refs is watched, not the one file.
    for file in ["HEAD", "packed-refs", "refs/heads"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file]).filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=FVISION_GIT_COMMIT={commit}");
    }
}
