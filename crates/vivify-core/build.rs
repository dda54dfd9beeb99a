//! With the `cuda` feature, compiles vivify's own CUDA kernels to PTX (loaded at run time by the
//! driver, which JIT-compiles them for the card). Without it, nothing happens.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &[&str] = &[
    "elementwise",
    "flash_attn",
    "geglu",
    "group_norm",
    "layer_norm",
];

fn main() {
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    for name in KERNELS {
        println!("cargo::rerun-if-changed=kernels/{name}.cu");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        println!("cargo::rustc-env=VIVIFY_CUDA_TOOLKIT=");
        return;
    }
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|home| PathBuf::from(home).join("bin").join("nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    // "Cuda compilation tools, release 13.0, V13.0.88" -> "13.0", reported by `vivify doctor`.
    let version = Command::new(&nvcc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let release = version
        .split("release ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("unknown");
    println!("cargo::rustc-env=VIVIFY_CUDA_TOOLKIT={release}");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in KERNELS {
        let ptx = out_dir.join(format!("{name}.ptx"));
        // compute_80: mma.sync with bf16 needs Ampere; the driver JIT-compiles for newer cards.
        let status = Command::new(&nvcc)
            .args(["--ptx", "-arch=compute_80", "-O3", "-o"])
            .arg(&ptx)
            .arg(format!("kernels/{name}.cu"))
            .status()
            .unwrap_or_else(|e| {
                panic!("running {nvcc:?} (set CUDA_HOME or put nvcc on PATH): {e}")
            });
        assert!(status.success(), "nvcc failed on kernels/{name}.cu");
    }
}
