//! Builds the default plugins and the test fixtures for `wasm32-wasip2` with a nested
//! cargo, as wasmtime's `crates/test-programs` does, so `cargo build`, `cargo run` and
//! `cargo test` need no extra step. The default plugins are embedded in the binary
//! (`src/builtin.rs`); fixture paths are exported for the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, env var suffix). Default plugins first; fixtures are only used by tests.
const GUESTS: &[&str] = &[
    "promoter-webhook",
    "promoter-pull-request",
    "promoter-notification",
    "promoter-plugin-template",
    "fixture-noop",
    "fixture-echo",
    "fixture-looping",
    "fixture-memory-hog",
    "fixture-forbidden-http",
    "fixture-trapping",
    "fixture-no-export",
    "fixture-wrong-version",
    "fixture-git-editor",
    "fixture-snoop",
    "fixture-unknown-import",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for dir in ["wit", "sdk", "plugins", "tests/fixtures"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = wasm_target_dir(&out_dir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
        .arg("--target-dir")
        .arg(&target_dir);
    for guest in GUESTS {
        cmd.args(["-p", guest]);
    }
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
        "CARGO_LLVM_COV_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the wasm plugins");
    if !status.success() {
        panic!(
            "building the wasm plugins failed (see above). Is the target installed? \
             Run: rustup target add wasm32-wasip2"
        );
    }
    let wasm_dir = target_dir.join("wasm32-wasip2").join("plugin");
    for guest in GUESTS {
        let file = wasm_dir.join(format!("{}.wasm", guest.replace('-', "_")));
        assert!(file.exists(), "{} was not built", file.display());
        let var = format!("PROMOTER_WASM_{}", guest.to_uppercase().replace('-', "_"));
        println!("cargo:rustc-env={var}={}", file.display());
    }
}

/// `<target>/<profile>/build/promoter-<hash>/out` -> `<target>/wasm-plugins`: one guest
/// build shared by every host profile.
fn wasm_target_dir(out_dir: &Path) -> PathBuf {
    let build = out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .expect("OUT_DIR lies under a build directory");
    build
        .parent()
        .and_then(Path::parent)
        .expect("the build directory lies under the target directory")
        .join("wasm-plugins")
}
