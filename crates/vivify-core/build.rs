//! With the `cuda` feature, compiles vivify's own CUDA kernels to fatbins: machine code for sm_80
//! (Ampere, and Ada, which runs sm_80 code) and sm_90 (Hopper), and compute_80 PTX that the driver
//! compiles for newer cards (src/nn/cuda/kernel_module.rs loads them). Without it, nothing
//! happens.

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
    // Included by elementwise.cu and group_norm.cu.
    println!("cargo::rerun-if-changed=kernels/pair_tile.cuh");
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
    // mma.sync with bf16 needs Ampere (compute 8.0). The modules compile in parallel (ptxas on
    // the attention kernels takes most of a minute).
    let builds: Vec<_> = KERNELS
        .iter()
        .map(|name| {
            let child = Command::new(&nvcc)
                .args(["--fatbin", "-O3"])
                .args(["-gencode", "arch=compute_80,code=sm_80"])
                .args(["-gencode", "arch=compute_90,code=sm_90"])
                .args(["-gencode", "arch=compute_80,code=compute_80"])
                .arg("-o")
                .arg(out_dir.join(format!("{name}.fatbin")))
                .arg(format!("kernels/{name}.cu"))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("running {nvcc:?} (set CUDA_HOME or put nvcc on PATH): {e}")
                });
            (name, child)
        })
        .collect();
    for (name, mut child) in builds {
        let status = child.wait().expect("waiting for nvcc");
        assert!(status.success(), "nvcc failed on kernels/{name}.cu");
    }
}
