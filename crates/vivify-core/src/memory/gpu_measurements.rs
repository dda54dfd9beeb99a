//! Peaks measured on a GPU (bench/gpu/run.sh, recorded in bench/gpu/RESULTS.md), held against
//! the estimator: each case's prediction must stay within ±15% of what the device counted.

/// One measured run: the published I2VGen-XL at f16, guidance on, decode chunk 1, the plain plan,
/// all four models resident; `peak_bytes` from the CUDA pool's high-water mark over the whole
/// `vivify generate` (encoders, denoising, decoding).
pub(crate) struct MeasuredPeak {
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub peak_bytes: u64,
}

/// NVIDIA H200, driver 580.159.04, CUDA 13.0, cuDNN 9 (2026-11-27, the build with the
/// channels-last handoff around GroupNorm, cuDNN's graph API and the ldmatrix attention kernel;
/// `results.json` of bench/gpu/run.sh, `e2e_peak_bytes`).
pub(crate) const H200_GENERATE_PEAKS: [MeasuredPeak; 3] = [
    MeasuredPeak {
        width: 512,
        height: 512,
        frames: 16,
        peak_bytes: 7_479_688_606,
    },
    MeasuredPeak {
        width: 1280,
        height: 704,
        frames: 16,
        peak_bytes: 11_697_844_382,
    },
    MeasuredPeak {
        width: 1024,
        height: 1024,
        frames: 32,
        peak_bytes: 16_205_033_374,
    },
];

const GIB: f64 = (1u64 << 30) as f64;

mod tests {
    use super::*;
    use crate::memory::estimate::{ModelConfigs, RequestShape, estimate};
    use crate::pipeline::plan::ExecutionPlan;
    use candle_core::DType;

    #[test]
    fn predictions_are_within_15_percent_of_the_h200_peaks() {
        let models = ModelConfigs::i2vgen_xl();
        let mut worst: f64 = 0.0;
        println!("case | predicted GiB | measured GiB | ratio | stages (GiB)");
        for m in &H200_GENERATE_PEAKS {
            let request = RequestShape {
                width: m.width,
                height: m.height,
                frames: m.frames,
                guidance: true,
                decode_chunk: 1,
            };
            let e = estimate(&models, &request, &ExecutionPlan::default(), DType::F16).unwrap();
            let ratio = e.peak() as f64 / m.peak_bytes as f64;
            let stages: Vec<String> = e
                .stages()
                .iter()
                .map(|(name, s)| format!("{name} {:.2}", s.peak() as f64 / GIB))
                .collect();
            println!(
                "{}x{}x{} | {:.2} | {:.2} | {ratio:.3} | {}",
                m.width,
                m.height,
                m.frames,
                e.peak() as f64 / GIB,
                m.peak_bytes as f64 / GIB,
                stages.join(", ")
            );
            worst = worst.max((ratio - 1.0).abs());
        }
        assert!(worst <= 0.15, "worst relative error {worst:.3}");
    }
}
