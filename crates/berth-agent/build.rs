//! Builds `shim/main.rs`, the per-task shim, as a freestanding static executable (no libc, no
//! std, `panic=abort`, size-optimised, non-PIE) with the same `rustc`, into
//! `$OUT_DIR/berth-shim`; `src/shim.rs` embeds it with `include_bytes!`. Cargo cannot give one
//! binary of a workspace its own panic strategy and link arguments, hence a direct `rustc` call.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = PathBuf::from("shim/main.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("berth-shim");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // Under `cargo clippy` the shim is linted too (clippy-driver takes rustc's path first).
    let mut cmd = match std::env::var("RUSTC_WORKSPACE_WRAPPER") {
        Ok(w) if w.contains("clippy") => {
            let mut c = Command::new(w);
            c.arg(&rustc);
            c
        }
        _ => Command::new(&rustc),
    };
    let status = cmd
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            "berth_shim",
        ])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "codegen-units=1",
        ])
        .args(["-C", "strip=symbols", "-C", "relocation-model=static"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static", "-D", "warnings"])
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running rustc for the shim");
    assert!(status.success(), "building shim/main.rs failed");
}
