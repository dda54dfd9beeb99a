//! The planner: the fastest execution plan whose predicted peak fits a memory budget.
//!
//! Candidates are every combination of a small ladder per strategy; each has an expected
//! slowdown against the plain plan (a product of per-strategy factors, the constants below) and
//! a predicted peak (`estimate`). The planner takes the fastest candidate that fits
//! `budget · (1 − SAFETY_MARGIN)`; when none does, it reports the most frugal one and the
//! largest frames and square size that would fit.

use super::estimate::{
    Backend, MemoryEstimate, ModelConfigs, RequestShape, StageEstimate, StageKind, Weights,
    estimate_stage, estimate_with_weights, model_weights,
};
use super::residency::resident_weights;
use crate::nn::compute::ComputeOptions;
use crate::pipeline::plan::{DEFAULT_RESIDENT_BLOCKS, ExecutionPlan, Residency};
use crate::pipeline::request::{FRAMES_RANGE, SIZE_RANGE};
use crate::{Error, Result};
use candle_core::DType;
use std::collections::HashMap;

/// Share of the budget kept free for what the estimate does not see (fragmentation, other
/// processes' small allocations, kernels' own scratch).
pub const SAFETY_MARGIN: f64 = 0.05;

/// Two batch-1 UNet passes instead of one batch of two: smaller matmuls, twice the launches
/// (diffusers-measured classifier-free guidance batching gains are about 5%).
pub const SEQUENTIAL_GUIDANCE_SLOWDOWN: f64 = 1.05;
/// Cost of each doubling of the number of attention passes (query chunks × head slices): the
/// score matrices are memory-bound either way, so the cost is the extra launches and the lost
/// overlap, a guess until the CUDA timings.
pub const ATTENTION_SPLIT_SLOWDOWN_PER_DOUBLING: f64 = 0.01;
/// Feed-forward in token chunks: the same matmuls in slices.
pub const FEED_FORWARD_CHUNK_SLOWDOWN: f64 = 1.01;
/// Per doubling of spatial-transformer frame chunks or temporal-transformer pixel chunks.
pub const TRANSFORMER_CHUNK_SLOWDOWN_PER_DOUBLING: f64 = 0.005;
/// Per doubling of the number of frame chunks the per-frame convolutions run in: smaller GEMMs
/// and more launches; convolutions are most of a UNet step, so this weighs more than the
/// transformer chunks (a guess until the CUDA timings).
pub const CONV_CHUNK_SLOWDOWN_PER_DOUBLING: f64 = 0.01;
/// Share of a whole run spent decoding (anchors: 1.25 s of 43.6 s at 1280x704x16, 50 steps).
pub const DECODE_SHARE: f64 = 0.03;
/// Decoding one frame per call against all frames at once (anchors: 1.25 s vs 1.06 s).
pub const DECODE_ONE_FRAME_SLOWDOWN: f64 = 1.2;
/// Decoding in row bands: smaller convolutions, the GroupNorm statistics read twice, the bands
/// concatenated (a guess until the CUDA timings).
pub const DECODE_ROW_BAND_SLOWDOWN: f64 = 1.15;
/// Models loaded per stage: their loading moves into the run, and the VAE is read twice (for
/// encoding and for decoding); a few seconds against a run of a minute or more (a guess until
/// the CUDA timings).
pub const STAGED_SLOWDOWN: f64 = 1.02;
/// UNet blocks streamed from host memory: every UNet pass copies the blocks' weights to the
/// device again (2.8 GB at f16 over PCIe, against a pass of a second or so at large sizes), and
/// the loads are not overlapped with compute yet (a guess until the CUDA timings).
pub const STREAMED_UNET_SLOWDOWN: f64 = 1.3;

/// Query chunks, head slices, feed-forward token chunks, spatial frame chunks, temporal pixel
/// chunks and convolution frame chunks the planner tries (None: all at once).
const QUERY_CHUNKS: [Option<usize>; 5] = [None, Some(4096), Some(1024), Some(256), Some(64)];
const HEAD_CHUNKS: [Option<usize>; 3] = [None, Some(8), Some(1)];
const FF_CHUNKS: [Option<usize>; 3] = [None, Some(4096), Some(1024)];
const FRAME_CHUNKS: [Option<usize>; 3] = [None, Some(4), Some(1)];
const PIXEL_CHUNKS: [Option<usize>; 3] = [None, Some(4096), Some(1024)];
const CONV_FRAME_CHUNKS: [Option<usize>; 3] = [None, Some(4), Some(1)];
/// Rows per band of the VAE decoder's full-size layers.
const VAE_ROW_BANDS: [Option<usize>; 3] = [None, Some(128), Some(32)];
const DECODE_CHUNKS: [usize; 5] = [usize::MAX, 8, 4, 2, 1];
/// Weight residencies the planner tries, fastest first.
const RESIDENCIES: [Residency; 4] = [
    Residency::AllResident,
    Residency::Staged,
    Residency::StreamedUnet {
        resident_blocks: DEFAULT_RESIDENT_BLOCKS,
    },
    Residency::StreamedUnet { resident_blocks: 1 },
];

/// What would fit when the request does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Suggestion {
    /// The most frames that fit at the requested size (None: not even the fewest).
    pub max_frames: Option<usize>,
    /// The largest square size (a multiple of 64) that fits at the requested frames.
    pub max_square_size: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlanChoice {
    pub plan: ExecutionPlan,
    /// Frames per VAE decode call.
    pub decode_chunk: usize,
    pub estimate: MemoryEstimate,
    pub budget_bytes: u64,
    /// Whether the predicted peak fits the budget less the safety margin.
    pub fits: bool,
    /// Expected run time against the plain plan.
    pub slowdown: f64,
    /// When nothing fits: the largest settings that would.
    pub suggestion: Option<Suggestion>,
}

impl PlanChoice {
    pub fn predicted_peak_bytes(&self) -> u64 {
        self.estimate.peak()
    }

    /// The plan in one short line: `staged seq q1024 h8 ff4096 sf4 tp1024 dc2` (staged / streamN:
    /// models loaded per stage / also UNet blocks streamed, N on the device; seq: sequential
    /// guidance; q/h: attention query chunk / head slice; ff: feed-forward chunk; sf: spatial frame
    /// chunk; tp: temporal pixel chunk; cf: convolution frame chunk; vb: VAE row band; dc: decode
    /// chunk), `plain dcN` with no chunking.
    pub fn summary(&self) -> String {
        summary(&self.plan, self.decode_chunk)
    }
}

/// See [`PlanChoice::summary`].
pub fn summary(plan: &ExecutionPlan, decode_chunk: usize) -> String {
    let mut parts = Vec::new();
    parts.extend(plan.residency.code());
    if plan.sequential_guidance {
        parts.push("seq".to_string());
    }
    for choice in plan.compute.choices() {
        if let Some(n) = choice.value {
            parts.push(format!("{}{n}", choice.code));
        }
    }
    parts.push(format!("dc{}", decode_chunk));
    if parts.len() == 1 && *plan == ExecutionPlan::default() {
        parts.insert(0, "plain".into());
    }
    parts.join(" ")
}

/// Bytes a plan may use of `budget`.
pub fn usable(budget: u64) -> u64 {
    (budget as f64 * (1.0 - SAFETY_MARGIN)) as u64
}

fn doublings(n: usize) -> f64 {
    (n.max(1) as f64).log2()
}

/// Expected slowdown of `plan` and `decode_chunk` for `request` against the plain plan.
pub fn slowdown(
    models: &ModelConfigs,
    request: &RequestShape,
    plan: &ExecutionPlan,
    decode_chunk: usize,
) -> f64 {
    let (h, w, f) = (request.height / 8, request.width / 8, request.frames);
    let rows = if request.guidance && !plan.sequential_guidance {
        2
    } else {
        1
    };
    let c = plan.compute;
    let tokens = h * w;
    let heads = models.unet.block_out_channels[0] / models.unet.attention_head_dim.max(1);
    let passes = |n: usize, chunk: Option<usize>| chunk.map_or(1, |k| n.div_ceil(k.max(1)));
    let mut s = 1.0;
    if request.guidance && plan.sequential_guidance {
        s *= SEQUENTIAL_GUIDANCE_SLOWDOWN;
    }
    let attn =
        passes(tokens, c.attention_query_chunk) * passes(rows * f * heads, c.attention_head_chunk);
    s *= 1.0 + ATTENTION_SPLIT_SLOWDOWN_PER_DOUBLING * doublings(attn);
    if c.feed_forward_chunk.is_some_and(|k| k < tokens) {
        s *= FEED_FORWARD_CHUNK_SLOWDOWN;
    }
    let chunks =
        passes(f * rows, c.spatial_frame_chunk) * passes(rows * tokens, c.temporal_pixel_chunk);
    s *= 1.0 + TRANSFORMER_CHUNK_SLOWDOWN_PER_DOUBLING * doublings(chunks);
    s *= 1.0 + CONV_CHUNK_SLOWDOWN_PER_DOUBLING * doublings(passes(f * rows, c.conv_frame_chunk));
    let calls = f.div_ceil(decode_chunk.clamp(1, f));
    let mut decode =
        1.0 + (DECODE_ONE_FRAME_SLOWDOWN - 1.0) * (calls - 1) as f64 / (f - 1).max(1) as f64;
    if c.vae_row_band.is_some_and(|b| b < request.height) {
        decode *= DECODE_ROW_BAND_SLOWDOWN;
    }
    s * (1.0 - DECODE_SHARE + DECODE_SHARE * decode) * residency_slowdown(models, plan.residency)
}

/// Expected slowdown of a residency against all resident.
fn residency_slowdown(models: &ModelConfigs, residency: Residency) -> f64 {
    let blocks = 2 * models.unet.block_out_channels.len() + 1;
    match residency {
        Residency::AllResident => 1.0,
        // a window as long as the UNet streams nothing: staged
        Residency::StreamedUnet { resident_blocks } if resident_blocks < blocks => {
            STREAMED_UNET_SLOWDOWN
        }
        _ => STAGED_SLOWDOWN,
    }
}

struct Candidate {
    plan: ExecutionPlan,
    decode_chunk: usize,
    slowdown: f64,
}

fn candidates(models: &ModelConfigs, request: &RequestShape) -> Vec<Candidate> {
    let mut out = Vec::new();
    let seqs: &[bool] = if request.guidance {
        &[false, true]
    } else {
        &[false]
    };
    for residency in RESIDENCIES {
        for &sequential_guidance in seqs {
            for q in QUERY_CHUNKS {
                for hc in HEAD_CHUNKS {
                    for ff in FF_CHUNKS {
                        for sf in FRAME_CHUNKS {
                            for tp in PIXEL_CHUNKS {
                                for cf in CONV_FRAME_CHUNKS {
                                    for vb in VAE_ROW_BANDS {
                                        for dc in DECODE_CHUNKS {
                                            let plan = ExecutionPlan {
                                                compute: ComputeOptions {
                                                    attention_query_chunk: q,
                                                    attention_head_chunk: hc,
                                                    feed_forward_chunk: ff,
                                                    spatial_frame_chunk: sf,
                                                    temporal_pixel_chunk: tp,
                                                    conv_frame_chunk: cf,
                                                    vae_row_band: vb,
                                                },
                                                sequential_guidance,
                                                residency,
                                            };
                                            let decode_chunk = dc.min(request.frames);
                                            out.push(Candidate {
                                                slowdown: slowdown(
                                                    models,
                                                    request,
                                                    &plan,
                                                    decode_chunk,
                                                ),
                                                plan,
                                                decode_chunk,
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.slowdown.total_cmp(&b.slowdown));
    out
}

/// Stage peaks of one request, each stage's activations and workspace computed once per
/// distinct setting of the choices that stage depends on (the candidates share most of them),
/// its weights added by the candidate's residency.
struct StagePeaks<'a> {
    models: &'a ModelConfigs,
    weights: &'a Weights,
    request: &'a RequestShape,
    dtype: DType,
    backend: Backend,
    text: u64,
    denoise: HashMap<ExecutionPlan, StageEstimate>,
    vae: HashMap<VaeKey, (u64, u64)>,
}

/// What the VAE stages' (encode image, decode) peaks depend on: decode chunk, VAE row band,
/// attention query chunk and head slice (the VAE's mid-block attention).
type VaeKey = (usize, Option<usize>, Option<usize>, Option<usize>);

impl<'a> StagePeaks<'a> {
    fn new(
        models: &'a ModelConfigs,
        weights: &'a Weights,
        request: &'a RequestShape,
        dtype: DType,
        backend: Backend,
    ) -> Self {
        let mut peaks = Self {
            models,
            weights,
            request,
            dtype,
            backend,
            text: 0,
            denoise: HashMap::new(),
            vae: HashMap::new(),
        };
        peaks.text = peaks.stage(&ExecutionPlan::default(), 1, StageKind::EncodeText);
        peaks
    }

    fn estimate(
        &self,
        plan: &ExecutionPlan,
        decode_chunk: usize,
        stage: StageKind,
    ) -> StageEstimate {
        let r = RequestShape {
            decode_chunk,
            ..*self.request
        };
        estimate_stage(
            self.models,
            self.weights,
            &r,
            plan,
            self.dtype,
            self.backend,
            stage,
        )
    }

    /// The stage's peak less its weights.
    fn stage(&self, plan: &ExecutionPlan, decode_chunk: usize, stage: StageKind) -> u64 {
        self.estimate(plan, decode_chunk, stage).without_weights()
    }

    fn peak(&mut self, plan: &ExecutionPlan, decode_chunk: usize) -> u64 {
        // the denoiser ignores the VAE's choices; staging changes only weights, but a streamed
        // UNet's window depends on where the peak falls, so it is estimated on its own
        let mut unet_plan = *plan;
        unet_plan.compute.vae_row_band = None;
        if unet_plan.residency == Residency::Staged {
            unet_plan.residency = Residency::AllResident;
        }
        let denoise = match self.denoise.get(&unet_plan) {
            Some(&e) => e,
            None => {
                let e = self.estimate(&unet_plan, decode_chunk, StageKind::Denoise);
                self.denoise.insert(unet_plan, e);
                e
            }
        };
        let denoise = match plan.residency {
            Residency::StreamedUnet { .. } => denoise.peak(),
            r => denoise.without_weights() + resident_weights(self.weights, r, StageKind::Denoise),
        };
        let c = plan.compute;
        let key = (
            decode_chunk,
            c.vae_row_band,
            c.attention_query_chunk,
            c.attention_head_chunk,
        );
        let (encode_image, decode) = match self.vae.get(&key) {
            Some(&p) => p,
            None => {
                let p = (
                    self.stage(plan, decode_chunk, StageKind::EncodeImage),
                    self.stage(plan, decode_chunk, StageKind::Decode),
                );
                self.vae.insert(key, p);
                p
            }
        };
        let w = |stage| resident_weights(self.weights, plan.residency, stage);
        (self.text + w(StageKind::EncodeText))
            .max(denoise)
            .max(encode_image + w(StageKind::EncodeImage))
            .max(decode + w(StageKind::Decode))
    }
}

/// The most memory-frugal plan of the ladder.
pub fn frugal_plan(request: &RequestShape) -> (ExecutionPlan, usize) {
    (
        ExecutionPlan {
            compute: ComputeOptions {
                attention_query_chunk: QUERY_CHUNKS[QUERY_CHUNKS.len() - 1],
                attention_head_chunk: HEAD_CHUNKS[HEAD_CHUNKS.len() - 1],
                feed_forward_chunk: FF_CHUNKS[FF_CHUNKS.len() - 1],
                spatial_frame_chunk: FRAME_CHUNKS[FRAME_CHUNKS.len() - 1],
                temporal_pixel_chunk: PIXEL_CHUNKS[PIXEL_CHUNKS.len() - 1],
                conv_frame_chunk: CONV_FRAME_CHUNKS[CONV_FRAME_CHUNKS.len() - 1],
                vae_row_band: VAE_ROW_BANDS[VAE_ROW_BANDS.len() - 1],
            },
            sequential_guidance: request.guidance,
            residency: Residency::StreamedUnet { resident_blocks: 1 },
        },
        1,
    )
}

/// The fastest plan for `request` whose predicted peak (on CUDA, at `dtype`) fits `budget`.
pub fn choose_plan(
    models: &ModelConfigs,
    request: &RequestShape,
    dtype: DType,
    budget: u64,
) -> Result<PlanChoice> {
    choose_plan_on(models, request, dtype, budget, Backend::Cuda)
}

/// `choose_plan` for a given backend (the CPU's convolutions need other buffers than CUDA's).
pub fn choose_plan_on(
    models: &ModelConfigs,
    request: &RequestShape,
    dtype: DType,
    budget: u64,
    backend: Backend,
) -> Result<PlanChoice> {
    let weights = model_weights(models, dtype)?;
    let limit = usable(budget);
    let est = |r: &RequestShape, plan: &ExecutionPlan, dc: usize| {
        let r = RequestShape {
            decode_chunk: dc,
            ..*r
        };
        estimate_with_weights(models, &weights, &r, plan, dtype, backend)
    };
    let mut peaks = StagePeaks::new(models, &weights, request, dtype, backend);
    for c in candidates(models, request) {
        if peaks.peak(&c.plan, c.decode_chunk) <= limit {
            let e = est(request, &c.plan, c.decode_chunk);
            return Ok(PlanChoice {
                plan: c.plan,
                decode_chunk: c.decode_chunk,
                estimate: e,
                budget_bytes: budget,
                fits: true,
                slowdown: c.slowdown,
                suggestion: None,
            });
        }
    }
    let (plan, dc) = frugal_plan(request);
    let fits_with = |r: &RequestShape| est(r, &frugal_plan(r).0, 1).peak() <= limit;
    let max_frames = (FRAMES_RANGE.0..request.frames).rev().find(|&f| {
        fits_with(&RequestShape {
            frames: f,
            ..*request
        })
    });
    let max_square_size = (1..=SIZE_RANGE.1 / 64).rev().map(|k| k * 64).find(|&s| {
        fits_with(&RequestShape {
            width: s,
            height: s,
            ..*request
        })
    });
    Ok(PlanChoice {
        plan,
        decode_chunk: dc,
        estimate: est(request, &plan, dc),
        budget_bytes: budget,
        fits: false,
        slowdown: slowdown(models, request, &plan, dc),
        suggestion: Some(Suggestion {
            max_frames,
            max_square_size,
        }),
    })
}

/// `plan` with `decode_chunk` for `request` against `budget`: its estimate, whether it fits and
/// its slowdown (a plan set by hand, or the planner's with single choices overridden).
pub fn evaluate(
    models: &ModelConfigs,
    request: &RequestShape,
    dtype: DType,
    budget: u64,
    backend: Backend,
    plan: ExecutionPlan,
    decode_chunk: usize,
) -> Result<PlanChoice> {
    let r = RequestShape {
        decode_chunk,
        ..*request
    };
    let weights = model_weights(models, dtype)?;
    let estimate = estimate_with_weights(models, &weights, &r, &plan, dtype, backend);
    Ok(PlanChoice {
        plan,
        decode_chunk,
        fits: estimate.peak() <= usable(budget),
        estimate,
        budget_bytes: budget,
        slowdown: slowdown(models, request, &plan, decode_chunk),
        suggestion: None,
    })
}

/// "8GiB", "512MiB", "24GB", "1.5 GiB", "1000000" (bytes): binary units (KiB, MiB, GiB, TiB)
/// are powers of 1024, decimal ones (KB, MB, GB, TB) of 1000; case-insensitive, B optional.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let bad = |why: &str| Error::InvalidArgument {
        field: "memory-budget",
        message: format!("{text:?}: {why} (e.g. 8GiB, 512MiB, 24GB)"),
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim().to_ascii_lowercase());
    if num.is_empty() {
        return Err(bad("no number"));
    }
    let value: f64 = num.parse().map_err(|_| bad("not a number"))?;
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024f64.powi(2),
        "gi" | "gib" => 1024f64.powi(3),
        "ti" | "tib" => 1024f64.powi(4),
        _ => return Err(bad("unknown unit")),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad("out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn request(width: usize, height: usize, frames: usize) -> RequestShape {
        RequestShape {
            width,
            height,
            frames,
            guidance: true,
            decode_chunk: 1,
        }
    }

    #[test]
    fn a_big_budget_picks_the_plain_plan() {
        let m = ModelConfigs::i2vgen_xl();
        let c = choose_plan(&m, &request(512, 512, 16), DType::F16, 200 * GIB).unwrap();
        assert!(c.fits);
        assert_eq!(c.plan, ExecutionPlan::default());
        assert_eq!(c.decode_chunk, 16);
        assert!((c.slowdown - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_small_budget_picks_chunking() {
        let m = ModelConfigs::i2vgen_xl();
        let r = request(1280, 704, 16);
        // The plain plan needs 10+ GiB even decoding one frame at a time.
        let budget = 8 * GIB;
        let c = choose_plan(&m, &r, DType::F16, budget).unwrap();
        assert!(c.fits, "{c:?}");
        assert_ne!(c.plan, ExecutionPlan::default());
        assert!(c.predicted_peak_bytes() <= budget);
        assert!(c.slowdown > 1.0);
    }

    #[test]
    fn residency_is_paid_for_only_when_it_is_needed() {
        let m = ModelConfigs::i2vgen_xl();
        // Plenty of memory: every model stays resident.
        for (w, h, f) in [(512, 512, 16), (1024, 1024, 32)] {
            let c = choose_plan(&m, &request(w, h, f), DType::F16, 24 * GIB).unwrap();
            assert_eq!(c.plan.residency, Residency::AllResident, "{w}x{h}x{f}");
        }
        // 1024x1024x32 in 8 GiB: only with the encoders (and the UNet while decoding) freed.
        let c = choose_plan(&m, &request(1024, 1024, 32), DType::F16, 8 * GIB).unwrap();
        assert!(c.fits, "{c:?}");
        assert!(c.predicted_peak_bytes() <= 8 * GIB);
        assert!(c.plan.residency.is_staged(), "{}", c.summary());
        let resident = ExecutionPlan {
            residency: Residency::AllResident,
            ..c.plan
        };
        let all = evaluate(
            &m,
            &request(1024, 1024, 32),
            DType::F16,
            8 * GIB,
            Backend::Cuda,
            resident,
            c.decode_chunk,
        )
        .unwrap();
        assert!(!all.fits, "the same plan all resident: {all:?}");
        assert!(all.slowdown < c.slowdown);
    }

    #[test]
    fn an_impossible_budget_says_what_would_fit() {
        let m = ModelConfigs::i2vgen_xl();
        let c = choose_plan(&m, &request(1024, 1024, 32), DType::F16, 4 * GIB).unwrap();
        assert!(!c.fits);
        let s = c.suggestion.unwrap();
        assert!(s.max_frames.is_some_and(|f| f < 32), "{s:?}");
        assert!(s.max_square_size.is_some_and(|x| x < 1024), "{s:?}");
        let none = choose_plan(&m, &request(512, 512, 16), DType::F16, GIB).unwrap();
        assert!(!none.fits);
        assert_eq!(none.suggestion.unwrap().max_frames, None);
    }

    /// The README's table: `cargo test -p vivify-core --lib memory::planner -- --nocapture`.
    #[test]
    fn what_fits_table() {
        let m = ModelConfigs::i2vgen_xl();
        let cases = [
            (512, 512, 16),
            (768, 768, 24),
            (1280, 704, 16),
            (1024, 1024, 32),
        ];
        println!("| case | 6 GiB | 8 GiB | 12 GiB | 16 GiB | 24 GiB |");
        println!("|---|---|---|---|---|---|");
        for (w, h, f) in cases {
            let mut line = format!("| {w}x{h}x{f} |");
            for g in [6, 8, 12, 16, 24] {
                let c = choose_plan(&m, &request(w, h, f), DType::F16, g * GIB).unwrap();
                let cell = if c.fits {
                    format!(
                        " {:.1} GiB, {} ({:.2}x) |",
                        c.predicted_peak_bytes() as f64 / GIB as f64,
                        c.summary(),
                        c.slowdown
                    )
                } else {
                    let s = c.suggestion.unwrap();
                    format!(
                        " no ({:.1} GiB at best; ≤{} frames, ≤{}² px) |",
                        c.predicted_peak_bytes() as f64 / GIB as f64,
                        s.max_frames.map_or("-".into(), |v| v.to_string()),
                        s.max_square_size.map_or("-".into(), |v| v.to_string())
                    )
                };
                line.push_str(&cell);
            }
            println!("{line}");
        }
    }

    #[test]
    fn budgets_parse_with_units() {
        assert_eq!(parse_bytes("8GiB").unwrap(), 8 * GIB);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("24GB").unwrap(), 24_000_000_000);
        assert_eq!(parse_bytes("1.5 gib").unwrap(), 3 * GIB / 2);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        for bad in ["", "GiB", "8 parsecs", "-1GiB", "0"] {
            let e = parse_bytes(bad).unwrap_err().to_string();
            assert!(e.contains("memory-budget"), "{bad}: {e}");
        }
    }
}
