//! vivify's CUDA kernels (kernels/*.cu) compiled for the CPU against an emulation of the CUDA
//! features they use (kernels/emulation/cuda_emulation.h: a block's threads as fibers, warp
//! collectives, ldmatrix, mma.sync, cp.async, barriers) and checked against references computed in
//! double precision (kernels/emulation/*_check.cpp). This runs everywhere, CI included; the real
//! device runs the same kernels in tests/cuda_ops.rs (feature `cuda`).
//!
//! - flash_attn: every launched entry point (register, cp.async and ldmatrix tiles, one- and
//!   four-warp blocks), f16/bf16, head dims 64/80/128, strided heads, partial tiles, under thread
//!   orders and copy timings that expose a missing barrier or a tile read before its wait.
//! - group_norm, layer_norm, geglu, elementwise: the launch shapes the host uses, partial blocks,
//!   grid-stride loops, f32/f16/bf16.
//!
//! Needs a C++20 compiler: `CXX`, else `c++` (Debian: `apt-get install g++`; scripts/test.sh
//! installs it when missing).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const CHECKS: [&str; 5] = [
    "flash_attn",
    "group_norm",
    "layer_norm",
    "geglu",
    "elementwise",
];

fn compile(cxx: &str, check: &str, exe: &Path) -> Child {
    Command::new(cxx)
        .args([
            "-std=c++20",
            "-O2",
            "-fno-strict-aliasing",
            "-DVIVIFY_KERNEL_EMULATION",
        ])
        .arg(format!("kernels/emulation/{check}_check.cpp"))
        .arg("-o")
        .arg(exe)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("running the C++ compiler `{cxx}` (set CXX, or apt-get install g++): {e}")
        })
}

#[test]
fn the_cuda_kernels_match_their_references_under_emulation() {
    let dir = tempfile::tempdir().unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    // Compile all at once.
    let builds: Vec<(&str, PathBuf, Child)> = CHECKS
        .iter()
        .map(|check| {
            let exe = dir.path().join(check);
            let child = compile(&cxx, check, &exe);
            (*check, exe, child)
        })
        .collect();
    // Each check starts as soon as it is built, alongside the others (each runs on one core).
    let runs: Vec<(&str, Child)> = builds
        .into_iter()
        .map(|(check, exe, child)| {
            let built = child.wait_with_output().unwrap();
            assert!(
                built.status.success(),
                "{cxx} failed on {check}_check.cpp:\n{}",
                String::from_utf8_lossy(&built.stderr)
            );
            let run = Command::new(&exe)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (check, run)
        })
        .collect();
    let mut failed = Vec::new();
    for (check, run) in runs {
        let run = run.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&run.stdout);
        println!(
            "== {check}\n{report}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        if !run.status.success() || !report.contains("all cases match") {
            failed.push(check);
        }
    }
    assert!(
        failed.is_empty(),
        "kernels off their references: {failed:?}"
    );
}
