//! vivify's fused attention kernel (kernels/flash_attn.cu) compiled for the CPU against an
//! emulation of the CUDA features it uses (kernels/emulation/cuda_emulation.h: warp collectives,
//! ldmatrix, mma.sync, cp.async, barriers) and checked against attention in double precision.
//! This runs everywhere, CI included: every launched entry point (register, cp.async and
//! ldmatrix tiles, one- and four-warp blocks), f16 and bf16, head dims 64/80/128, strided heads,
//! partial tiles, with cp.async copies landing at issue and as late as their wait allows. The
//! real device runs the same kernels in tests/cuda_ops.rs (feature `cuda`).
//!
//! Needs a C++20 compiler: `CXX`, else `c++` (Debian: `apt-get install g++`; scripts/test.sh
//! installs it when missing).

use std::path::Path;
use std::process::Command;

#[test]
fn the_attention_kernels_match_a_reference_under_emulation() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("flash_attn_check");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let built = Command::new(&cxx)
        .args([
            "-std=c++20",
            "-O2",
            "-pthread",
            "-fno-strict-aliasing",
            "-DVIVIFY_KERNEL_EMULATION",
            "kernels/emulation/flash_attn_check.cpp",
            "-o",
        ])
        .arg(&exe)
        .current_dir(crate_dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("running the C++ compiler `{cxx}` (set CXX, or apt-get install g++): {e}")
        });
    assert!(
        built.status.success(),
        "{cxx} failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    println!("{report}");
    assert!(
        run.status.success(),
        "{}\n{}",
        report
            .lines()
            .filter(|l| l.contains("FAILED"))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(report.contains("ldmatrix f16 d64"), "{report}");
}
