//! The memory estimator: predicted peak bytes of each stage of a generation, split into weights,
//! activations (the live set at the peak: skip connections, the current hidden state,
//! conditioning) and workspace (the worst layer's transients: attention scores, the GEGLU hidden,
//! GroupNorm temporaries, convolution buffers, cat buffers).
//!
//! The model walks each network layer by layer as vivify runs it (same shapes, same chunking,
//! same order of allocation and release, as far as a tensor's lifetime is visible in the code)
//! and records the largest `live + transient`. Nothing here allocates a tensor.

use super::residency::resident_weights;
use crate::config::TRANSFORMER_IN_HEADS;
use crate::config::UNetConfig;
use crate::models::clip::{
    ClipTextConfig, ClipTextModel, ClipVisionConfig, ClipVisionModelWithProjection,
};
use crate::models::unet::streaming::block_weight_elements;
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::pipeline::plan::ExecutionPlan;
use crate::weights::{TensorSpec, unet_spec};
use candle_core::DType;

/// Tokens of the text context (CLIP's 77).
pub const TEXT_TOKENS: usize = 77;
/// Tokens the UNet adds to the context: the image latents' (32/4)² = 64 (ContextEmbedding) and
/// the image embedding's `in_channels` tokens.
const IMAGE_LATENT_CONTEXT_TOKENS: usize = 64;
/// Allocator slack: CUDA's caching allocator rounds blocks and keeps freed blocks for reuse, so a
/// device peak sits a little above the sum of live tensors. Applied to activations and workspace
/// on `Backend::Cuda` only (the CPU test measures exact `malloc` bytes).
pub const CUDA_ALLOCATOR_SLACK: f64 = 1.10;
/// Fixed per-process device overhead on CUDA (context, cuBLAS handles and workspace), bytes.
pub const CUDA_CONTEXT_BYTES: u64 = 512 << 20;
/// nn::feed_forward's limit on the projection's output per pass (elements).
const FF_MAX_HIDDEN_ELEMENTS: usize = 1 << 30;
/// Tokens per tile of candle's CPU tiled im2col convolution (`conv2d_tiled`'s TILE_SIZE).
const CPU_CONV_TILE: usize = 512;

/// The models of a pipeline, by config.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfigs {
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
}

impl ModelConfigs {
    /// The published `ali-vilab/i2vgen-xl` configs.
    pub fn i2vgen_xl() -> Self {
        Self {
            unet: UNetConfig::i2vgen_xl(),
            vae: VaeConfig::i2vgen_xl(),
            text: ClipTextConfig::i2vgen_xl(),
            vision: ClipVisionConfig::i2vgen_xl(),
        }
    }
}

/// The sizes of a request that memory depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RequestShape {
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    /// Classifier-free guidance on (two conditioning rows) or off (one).
    pub guidance: bool,
    /// Frames per VAE decode call.
    pub decode_chunk: usize,
}

/// How the device allocates: what a convolution needs besides its input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// candle's CPU kernels: tiled im2col (an NHWC copy of the input and 512-pixel column
    /// tiles), exact `malloc` accounting.
    Cpu,
    /// vivify's CUDA build: cuDNN convolutions (implicit GEMM, no im2col buffer), 1x1 convolutions
    /// and the temporal convolution as GEMMs, GroupNorm(+SiLU) and LayerNorm as single kernels,
    /// fused attention for half types at head dims 64, 80 and 128; a stream-ordered pool and a
    /// context.
    Cuda,
}

/// Predicted peak of one stage, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageEstimate {
    /// Weights resident during the stage, as the plan's residency has it.
    pub weights: u64,
    /// The weights of the models this stage runs.
    pub stage_weights: u64,
    /// Live tensors at the peak: hidden states, skip connections, conditioning, outputs so far.
    pub activations: u64,
    /// Transients of the worst operation at the peak.
    pub workspace: u64,
    /// Fixed device overhead (CUDA context), 0 on the CPU.
    pub overhead: u64,
}

impl StageEstimate {
    /// weights + activations + workspace + overhead.
    pub fn peak(&self) -> u64 {
        self.weights + self.activations + self.workspace + self.overhead
    }
    /// The peak with only this stage's models resident.
    pub fn peak_own_weights(&self) -> u64 {
        self.stage_weights + self.without_weights()
    }
    /// activations + workspace + overhead: what the residency does not change.
    pub fn without_weights(&self) -> u64 {
        self.activations + self.workspace + self.overhead
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryEstimate {
    pub encode_text: StageEstimate,
    pub encode_image: StageEstimate,
    pub denoise: StageEstimate,
    pub decode: StageEstimate,
    /// Bytes of each model's weights: unet, vae, text encoder, image encoder.
    pub unet_weights: u64,
    pub vae_weights: u64,
    pub text_weights: u64,
    pub vision_weights: u64,
}

impl MemoryEstimate {
    /// The largest stage peak.
    pub fn peak(&self) -> u64 {
        self.stages()
            .iter()
            .map(|(_, s)| s.peak())
            .max()
            .unwrap_or(0)
    }
    pub fn stages(&self) -> [(&'static str, StageEstimate); 4] {
        [
            ("encode text", self.encode_text),
            ("encode image", self.encode_image),
            ("denoise", self.denoise),
            ("decode", self.decode),
        ]
    }
    /// Bytes of all four models' weights (what an all-resident plan holds).
    pub fn weights(&self) -> u64 {
        self.unet_weights + self.vae_weights + self.text_weights + self.vision_weights
    }
}

/// Bytes of every tensor in `spec` at `dtype`.
pub fn spec_bytes(spec: &[TensorSpec], dtype: DType) -> u64 {
    spec.iter().map(|t| t.numel() as u64).sum::<u64>() * dtype.size_in_bytes() as u64
}

/// `estimate_for` on CUDA, the device plans are made for.
pub fn estimate(
    models: &ModelConfigs,
    request: &RequestShape,
    plan: &ExecutionPlan,
    dtype: DType,
) -> crate::Result<MemoryEstimate> {
    estimate_for(models, request, plan, dtype, Backend::Cuda)
}

/// Predicted peaks of every stage of `request` run with `plan` at `dtype` on `backend`.
pub fn estimate_for(
    models: &ModelConfigs,
    request: &RequestShape,
    plan: &ExecutionPlan,
    dtype: DType,
    backend: Backend,
) -> crate::Result<MemoryEstimate> {
    let weights = model_weights(models, dtype)?;
    Ok(estimate_with_weights(
        models, &weights, request, plan, dtype, backend,
    ))
}

/// Bytes of each model's weights at a dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights {
    pub unet: u64,
    pub vae: u64,
    pub text: u64,
    pub vision: u64,
    /// The UNet's parts outside its blocks (embeddings, conv_in/out, transformer_in).
    pub unet_trunk: u64,
    /// Each UNet block, in the order a forward pass runs them (down, mid, up).
    pub unet_blocks: Vec<u64>,
}

impl Weights {
    pub fn all(&self) -> u64 {
        self.unet + self.vae + self.text + self.vision
    }

    /// The most block bytes a streaming window of `n` blocks holds at once: the largest sum of
    /// `n` consecutive blocks in run order, wrapping into the next pass as the streamer does.
    pub fn unet_window(&self, n: usize) -> u64 {
        let b = &self.unet_blocks;
        if n >= b.len() {
            return b.iter().sum();
        }
        (0..b.len())
            .map(|k| (0..n.max(1)).map(|j| b[(k + j) % b.len()]).sum())
            .max()
            .unwrap_or(0)
    }
}

/// The weight bytes of every model, from their tensor specs.
pub fn model_weights(models: &ModelConfigs, dtype: DType) -> crate::Result<Weights> {
    let unet = unet_spec(&models.unet)?;
    let (trunk, blocks) = block_weight_elements(&unet, &models.unet);
    let bytes = |n: usize| (n * dtype.size_in_bytes()) as u64;
    Ok(Weights {
        unet: spec_bytes(&unet, dtype),
        unet_trunk: bytes(trunk),
        unet_blocks: blocks.into_iter().map(bytes).collect(),
        vae: spec_bytes(&AutoencoderKL::spec(&models.vae)?, dtype),
        text: spec_bytes(&ClipTextModel::spec(&models.text, true)?, dtype),
        vision: spec_bytes(
            &ClipVisionModelWithProjection::spec(&models.vision, true)?,
            dtype,
        ),
    })
}

/// `estimate_for` with the weight bytes already known (the planner estimates many plans).
pub fn estimate_with_weights(
    models: &ModelConfigs,
    weights: &Weights,
    request: &RequestShape,
    plan: &ExecutionPlan,
    dtype: DType,
    backend: Backend,
) -> MemoryEstimate {
    let stage = |s| estimate_stage(models, weights, request, plan, dtype, backend, s);
    MemoryEstimate {
        encode_text: stage(StageKind::EncodeText),
        encode_image: stage(StageKind::EncodeImage),
        denoise: stage(StageKind::Denoise),
        decode: stage(StageKind::Decode),
        unet_weights: weights.unet,
        vae_weights: weights.vae,
        text_weights: weights.text,
        vision_weights: weights.vision,
    }
}

/// The stages of a run, as the estimator sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    EncodeText,
    EncodeImage,
    Denoise,
    Decode,
}

/// The predicted peak of one stage (the planner estimates each stage only for the plan choices
/// that stage depends on).
pub fn estimate_stage(
    models: &ModelConfigs,
    weights: &Weights,
    request: &RequestShape,
    plan: &ExecutionPlan,
    dtype: DType,
    backend: Backend,
    stage: StageKind,
) -> StageEstimate {
    let mut sim = Sim::new(dtype, backend);
    let rows = if request.guidance { 2 } else { 1 };
    let own = match stage {
        StageKind::EncodeText => {
            sim.clip_text(&models.text, rows);
            weights.text
        }
        StageKind::EncodeImage => {
            sim.encode_image(models, request, rows, plan.compute);
            weights.vision + weights.vae
        }
        StageKind::Denoise => {
            if let Some(n) = plan.residency.streamed_blocks() {
                let blocks = weights.unet_blocks.iter().map(|&b| b as f64).collect();
                sim.stream = Some((blocks, n));
            }
            sim.denoise(models, request, plan);
            weights.unet
        }
        StageKind::Decode => {
            sim.decode(&models.vae, request, plan.compute);
            weights.vae
        }
    };
    let slack = match backend {
        Backend::Cpu => 1.0,
        Backend::Cuda => CUDA_ALLOCATOR_SLACK,
    };
    StageEstimate {
        // a streamed UNet: its trunk and the window the streamer held at the peak
        weights: match (stage, &sim.stream) {
            (StageKind::Denoise, Some(_)) => weights.unet_trunk + sim.peak_resident as u64,
            _ => resident_weights(weights, plan.residency, stage),
        },
        stage_weights: own,
        activations: (sim.peak_live * slack) as u64,
        workspace: (sim.peak_transient * slack) as u64,
        overhead: match backend {
            Backend::Cpu => 0,
            Backend::Cuda => CUDA_CONTEXT_BYTES,
        },
    }
}

/// A running account of live bytes and the largest `live + transient` seen.
#[derive(Debug, Clone)]
struct Sim {
    /// Bytes per element of the model dtype.
    e: f64,
    /// Bytes per element of the normalisations' and softmax's internal type (f32 at least).
    ie: f64,
    half: bool,
    backend: Backend,
    live: f64,
    peak_live: f64,
    peak_transient: f64,
    /// A streamed UNet: each block's weight bytes in run order and the window length.
    stream: Option<(Vec<f64>, usize)>,
    /// Streamed blocks on the device now, and at the peak (part of the weights, not the live
    /// set: the peak is where live + resident blocks + transient is largest).
    resident: f64,
    peak_resident: f64,
}

impl Sim {
    fn new(dtype: DType, backend: Backend) -> Self {
        let e = dtype.size_in_bytes() as f64;
        Self {
            e,
            ie: e.max(4.0),
            half: e < 4.0,
            backend,
            live: 0.0,
            peak_live: 0.0,
            peak_transient: 0.0,
            stream: None,
            resident: 0.0,
            peak_resident: 0.0,
        }
    }

    /// A moment where `transient` bytes exist on top of the live set.
    fn at(&mut self, transient: f64) {
        if self.live + self.resident + transient
            > self.peak_live + self.peak_resident + self.peak_transient
        {
            self.peak_live = self.live;
            self.peak_transient = transient;
            self.peak_resident = self.resident;
        }
    }

    /// A streamed UNet about to run block `k` of its run order (None: outside the blocks,
    /// where the next pass's first N-1 blocks are already prefetched): the window the
    /// streamer holds then. Nothing when the UNet is resident.
    fn stream_at(&mut self, k: Option<usize>) {
        let Some((blocks, n)) = &self.stream else {
            return;
        };
        let b = blocks.len();
        self.resident = if *n >= b {
            blocks.iter().sum()
        } else {
            match k {
                Some(k) => (0..*n).map(|j| blocks[(k + j) % b]).sum(),
                None => blocks[..n - 1].iter().sum(),
            }
        };
    }
    fn hold(&mut self, bytes: f64) {
        self.live += bytes;
        self.at(0.0);
    }
    fn free(&mut self, bytes: f64) {
        self.live -= bytes;
    }
    /// The SiLU after a GroupNorm: a new tensor of `bytes`, held (returned, for the caller to
    /// free), except on CUDA where it runs inside the GroupNorm kernel (0).
    fn silu_after_norm(&mut self, bytes: f64) -> f64 {
        if self.backend == Backend::Cuda {
            return 0.0;
        }
        self.hold(bytes);
        bytes
    }

    /// Whether vivify's fused CUDA kernels for half types run: bias in the GEMM's epilogue,
    /// one-pass per-channel adds, GEGLU, attention reading the heads in place.
    fn fused(&self) -> bool {
        self.backend == Backend::Cuda && self.half
    }

    /// Whether the transformers take the CUDA channels-last handoff (any dtype): GroupNorm writes
    /// the tokens (no token copy), and one pass adds proj_out's bias and x while writing NCHW.
    fn transformer_handoff(&self) -> bool {
        self.backend == Backend::Cuda
    }

    /// Tensors of the output's size a transformer's way back from tokens to NCHW creates: the
    /// transposed copy and the sum with x, or with the handoff one pass.
    fn back_to_nchw(&self) -> f64 {
        if self.transformer_handoff() { 1.0 } else { 2.0 }
    }

    /// Bytes of `n` elements of the model dtype.
    fn b(&self, n: usize) -> f64 {
        n as f64 * self.e
    }

    /// GroupNorm / LayerNorm of `n` elements (input live): centred and normalised copies in the
    /// internal type, the half-type cast, the affine product; output `n` held on return.
    fn norm(&mut self, n: usize, extra: f64) {
        let n = n as f64;
        let internal = if self.backend == Backend::Cuda {
            // one kernel: input in, output out
            0.0
        } else if self.half {
            // f32 copy of x, centred, normalised (f32), cast back, product
            3.0 * n * self.ie + 2.0 * n * self.e
        } else {
            // centred, normalised, product (x itself is not copied)
            3.0 * n * self.e
        };
        self.at(extra + internal + n * self.e);
        self.hold(n * self.e);
    }

    /// A convolution (input live, `extra` other temporaries), output held on return.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        n: usize,
        c_in: usize,
        hw_in: usize,
        c_out: usize,
        hw_out: usize,
        k: usize,
        extra: f64,
    ) {
        let inp = self.b(n * c_in * hw_in);
        let out = self.b(n * c_out * hw_out);
        let work = match self.backend {
            Backend::Cpu if k == 1 => inp,
            Backend::Cpu => {
                inp + self.b(c_out * c_in * k * k)
                    + self.b(c_in * k * k * CPU_CONV_TILE) * rayon_threads()
            }
            // 1x1: one cuBLAS matmul over the contiguous input
            Backend::Cuda if k == 1 => 0.0,
            // half types: the channels-last copy of the input (cuDNN's implicit GEMM needs no
            // workspace there)
            Backend::Cuda if self.half => inp,
            // cuDNN's implicit GEMM: a workspace of a few MiB at most
            Backend::Cuda => 0.0,
        };
        self.at(extra + work + out);
        // the bias add (on CUDA for half types: the channels-last output and its transpose, the
        // bias added in one pass after)
        self.at(extra + 2.0 * out);
        self.hold(out);
    }

    /// A resnet block's 3x3 convolution of its GroupNorm's output (live), output held on return.
    /// On CUDA for half types the GroupNorm wrote channels last (the channels-last handoff): no
    /// copy of the input, and the bias pass writes NCHW from the channels-last output.
    fn conv_after_norm(&mut self, n: usize, c_in: usize, c_out: usize, hw: usize) {
        if !self.fused() {
            return self.conv(n, c_in, hw, c_out, hw, 3, 0.0);
        }
        let out = self.b(n * c_out * hw);
        self.at(2.0 * out);
        self.hold(out);
    }

    /// A linear layer on `tokens` rows, output held on return.
    fn linear(&mut self, tokens: usize, d_out: usize, extra: f64) {
        let out = self.b(tokens * d_out);
        // product + bias add, or one GEMM with the bias in its epilogue
        let passes = if self.fused() { 1.0 } else { 2.0 };
        self.at(extra + passes * out);
        self.hold(out);
    }

    /// `body(self, k)` over frame chunks of `k` of `n` frames (`per_frame_chunks`): each chunk's
    /// output (`out_per_frame` bytes a frame) is held until the parts are concatenated. `body`
    /// must leave its output held. Modelled at the worst chunk: a full one with all other
    /// parts done.
    fn per_frame(
        &mut self,
        n: usize,
        chunk: Option<usize>,
        out_per_frame: f64,
        body: impl FnOnce(&mut Self, usize),
    ) {
        let k = chunk.filter(|&c| c > 0 && c < n).unwrap_or(n);
        if k == n {
            return body(self, n);
        }
        let (all, part) = (out_per_frame * n as f64, out_per_frame * k as f64);
        self.hold(all - part);
        body(self, k);
        // the cat allocates the result while the parts are alive
        self.at(all);
        self.free(all);
        self.hold(all);
    }

    /// A resnet block over frame chunks (`conv_frame_chunk`).
    fn resnet_chunked(
        &mut self,
        n: usize,
        c_in: usize,
        c_out: usize,
        hw: usize,
        chunk: Option<usize>,
    ) {
        let per = self.b(c_out * hw);
        self.per_frame(n, chunk, per, |s, k| s.resnet(k, c_in, c_out, hw));
    }

    /// A 3x3 convolution over frame chunks (`conv_frame_chunk`).
    #[allow(clippy::too_many_arguments)]
    fn conv_chunked(
        &mut self,
        n: usize,
        c_in: usize,
        hw_in: usize,
        c_out: usize,
        hw_out: usize,
        chunk: Option<usize>,
    ) {
        let per = self.b(c_out * hw_out);
        self.per_frame(n, chunk, per, |s, k| {
            s.conv(k, c_in, hw_in, c_out, hw_out, 3, 0.0)
        });
    }

    /// ResnetBlock2D on (n, c_in, hw) -> (n, c_out, hw); input live, output held on return.
    fn resnet(&mut self, n: usize, c_in: usize, c_out: usize, hw: usize) {
        let (ni, no) = (n * c_in * hw, n * c_out * hw);
        // norm1 + silu are temporaries of the conv1 statement
        self.norm(ni, 0.0);
        let silu = self.silu_after_norm(self.b(ni));
        self.conv_after_norm(n, c_in, c_out, hw);
        self.free(self.b(ni) + silu);
        // + temb (the conv1 output stays alive under the shadowed name; fused into the bias pass
        // on CUDA)
        let temb_sum = if self.fused() { 0.0 } else { self.b(no) };
        self.hold(temb_sum);
        self.norm(no, 0.0);
        let silu = self.silu_after_norm(self.b(no));
        self.conv_after_norm(n, c_out, c_out, hw);
        self.free(self.b(no) + silu);
        let mut held = 2.0 * self.b(no) + temb_sum;
        if c_in != c_out {
            self.conv(n, c_in, hw, c_out, hw, 1, 0.0);
            held += self.b(no);
        }
        // shortcut + h (on CUDA the residual joins conv2's bias pass, so conv2's output is it)
        if !self.fused() {
            self.at(self.b(no));
        }
        self.free(held);
        self.hold(self.b(no));
    }

    /// TemporalConvLayer on (n = b·f, c, hw); input live, output held on return.
    fn temp_conv(
        &mut self,
        frames: usize,
        n: usize,
        c: usize,
        hw: usize,
        pixel_chunk: Option<usize>,
    ) {
        if let Some(k) = pixel_chunk.filter(|&k| k > 0 && k < hw) {
            return self.temp_conv_chunked(frames, n, c, hw, k);
        }
        let x = self.b(n * c * hw);
        let pad = x * (frames + 2) as f64 / frames as f64;
        let mut hs_live = 0.0; // the previous stage's output (the input itself for stage 1)
        for _ in 0..4 {
            if self.backend == Backend::Cuda {
                // GroupNorm + SiLU in one kernel (h), padded, the GEMM's output, the bias add
                self.norm(n * c * hw, 0.0);
                self.hold(pad);
                self.at(2.0 * x);
                self.free(pad + x);
                self.free(hs_live);
                self.hold(x);
                hs_live = x;
                continue;
            }
            // GroupNorm output is freed after silu; h, padded, shifted, acc, term, sum
            self.norm(n * c * hw, 0.0);
            self.hold(x); // silu
            self.free(x); // the norm output
            self.hold(pad);
            // shifted + acc + term + sum, then the bias add (out + sum)
            self.at(4.0 * x);
            self.free(pad + x);
            self.free(hs_live);
            self.hold(x);
            hs_live = x;
        }
        // input + hs
        self.at(x);
        self.free(x);
        self.hold(x);
    }

    /// TemporalConvLayer over chunks of `k` pixels of every video: per stage, the statistics
    /// pass, then each chunk's norm, SiLU, padding and taps, the outputs concatenated.
    fn temp_conv_chunked(&mut self, frames: usize, n: usize, c: usize, hw: usize, k: usize) {
        let x = self.b(n * c * hw);
        let xc = self.b(n * c * k);
        let pad = xc * (frames + 2) as f64 / frames as f64;
        let mut hs_live = 0.0;
        for _ in 0..4 {
            self.group_stats(n * c * k);
            // the chunks done (the worst chunk comes last)
            self.hold(x - xc);
            self.norm(n * c * k, 0.0);
            self.hold(xc); // silu
            self.free(xc); // the norm output
            self.hold(pad);
            self.at(4.0 * xc);
            self.free(pad + xc);
            self.hold(xc); // the chunk's output
            // the cat of the chunks replaces the previous stage's output
            self.at(x);
            self.free(x + hs_live);
            self.hold(x);
            hs_live = x;
        }
        // input + hs
        self.at(x);
        self.free(x);
        self.hold(x);
    }

    /// Scaled dot-product attention over `bh` batch·head rows of `l` queries and `s` keys.
    /// Returns the transient of the score matrices (q, k, v and the parts are counted by the
    /// caller).
    fn scores(
        &self,
        bh: usize,
        l: usize,
        s: usize,
        head_chunk: Option<usize>,
        q_chunk: Option<usize>,
    ) -> f64 {
        let hc = head_chunk.filter(|&c| c > 0).map_or(bh, |c| c.min(bh));
        let qc = q_chunk.filter(|&c| c > 0).map_or(l, |c| c.min(l));
        let m = (hc * qc * s) as f64;
        if self.half {
            // scores (half), f32 copy, f32 softmax (the half probs follow the f32 copy's release)
            m * (self.e + 2.0 * self.ie)
        } else {
            // scores, probs
            2.0 * m * self.e
        }
    }

    /// diffusers' Attention: x (rows, l, d) live, context (rows, s, d_ctx); output held.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        rows: usize,
        l: usize,
        s: usize,
        inner: usize,
        heads: usize,
        opts: crate::nn::compute::ComputeOptions,
        extra: f64,
    ) {
        let q = self.b(rows * l * inner);
        let kv = self.b(rows * s * inner);
        let d = inner / heads;
        // vivify's fused kernel: no score matrix, no chunks, one output, heads read in place
        let fused = self.fused() && matches!(d, 64 | 80 | 128);
        // q (to_q output + the head-split copy), then k, v
        let copies = if fused { 1.0 } else { 2.0 };
        self.at(extra + copies * q);
        self.hold(q);
        self.at(extra + copies * kv);
        self.hold(2.0 * kv);
        let chunks =
            !fused && (opts.attention_query_chunk.is_some() || opts.attention_head_chunk.is_some());
        let parts_max = if chunks { q } else { 0.0 };
        let sc = if fused {
            0.0
        } else {
            self.scores(
                rows * heads,
                l,
                s,
                opts.attention_head_chunk,
                opts.attention_query_chunk,
            )
        };
        let chunk_out = if fused {
            q
        } else {
            let hc = opts
                .attention_head_chunk
                .map_or(rows * heads, |c| c.min(rows * heads));
            let qc = opts.attention_query_chunk.map_or(l, |c| c.min(l));
            self.b(hc * qc * d)
        };
        // parts so far + scores + the chunk's output
        self.at(extra + parts_max + sc + chunk_out);
        // parts and their concatenation (or the one output)
        self.at(extra + q + if chunks { q } else { 0.0 });
        self.hold(q);
        // transposed copy, to_out (product + bias); q, k, v live until the return. The fused
        // kernel writes the token layout and the bias joins the GEMM: just to_out's output.
        self.at(extra + if fused { 2.0 } else { 3.0 } * q);
        self.free(2.0 * q + 2.0 * kv);
        self.hold(q);
    }

    /// BasicTransformerBlock on (rows, l, d) with a context of `ctx` tokens (None: self).
    #[allow(clippy::too_many_arguments)]
    fn basic_block(
        &mut self,
        rows: usize,
        l: usize,
        d: usize,
        heads: usize,
        ctx: Option<usize>,
        opts: crate::nn::compute::ComputeOptions,
    ) {
        let x = self.b(rows * l * d);
        // attn1: norm1 output lives through the attention
        self.norm(rows * l * d, 0.0);
        self.attention(rows, l, l, d, heads, opts, 0.0);
        self.at(x); // + x
        self.free(2.0 * x);
        self.hold(x); // x1
        self.norm(rows * l * d, 0.0);
        self.attention(rows, l, ctx.unwrap_or(l), d, heads, opts, 0.0);
        self.at(x);
        self.free(2.0 * x);
        self.hold(x); // x2 (x1 freed at the end: both live until the block returns)
        // feed-forward: norm3, then per token chunk: proj (8d), gelu(gate) (4d), product (4d)
        self.norm(rows * l * d, 0.0);
        let chunk = opts.feed_forward_chunk.filter(|&c| c > 0 && c < l);
        let t = chunk.unwrap_or(l);
        let (h, parts) = if rows * l * d * 8 > FF_MAX_HIDDEN_ELEMENTS {
            // FeedForward's guard: token runs across rows, the hidden under 2^30 elements
            let run = (FF_MAX_HIDDEN_ELEMENTS / (d * 8)).min(chunk.unwrap_or(usize::MAX));
            (self.b(run * d * 8), x)
        } else {
            (
                self.b(rows * t * d * 8),
                if chunk.is_some() { x } else { 0.0 },
            )
        };
        if self.fused() {
            // proj (bias in the GEMM), the GEGLU kernel's output, the out projection's
            self.at(parts + h + h / 2.0);
            self.at(parts + h / 2.0 + self.b(rows * t * d));
        } else {
            self.at(parts + 2.0 * h); // proj product + bias
            self.at(parts + h + h / 2.0 + h / 2.0 + self.b(rows * t * d) * 2.0);
        }
        // cat of the parts, then + x
        self.at(2.0 * x);
        self.free(x); // norm3
        self.free(2.0 * x); // x1, x2
        self.hold(x);
    }

    /// Transformer2DModel on (n frames of b·f, c, hw) with `ctx` context tokens.
    fn spatial(
        &mut self,
        n: usize,
        c: usize,
        hw: usize,
        heads: usize,
        ctx: usize,
        opts: crate::nn::compute::ComputeOptions,
    ) {
        let x = self.b(n * c * hw);
        let fc = opts
            .spatial_frame_chunk
            .filter(|&k| k > 0 && k < n)
            .unwrap_or(n);
        let chunked = fc < n;
        let chunk_x = self.b(fc * c * hw);
        // parts of the chunks before the last
        if chunked {
            self.hold(x - chunk_x);
        }
        // norm (a temporary), the token copy (on CUDA the GroupNorm writes the tokens), proj_in:
        // tokens and proj_in output both live
        self.norm(fc * c * hw, 0.0);
        if !self.transformer_handoff() {
            self.at(chunk_x);
        }
        self.free(chunk_x);
        self.hold(chunk_x); // tokens
        self.linear(fc * hw, c, 0.0);
        self.basic_block(fc, hw, c, heads, Some(ctx), opts);
        // proj_out, permute copy, + x (on CUDA one pass: bias and x added while writing NCHW)
        self.linear(fc * hw, c, 0.0);
        self.at(self.back_to_nchw() * chunk_x);
        self.free(4.0 * chunk_x);
        self.hold(chunk_x);
        if chunked {
            // cat of the parts
            self.at(x);
            self.free(x);
            self.hold(x);
        }
    }

    /// TransformerTemporalModel on (b·f, c, hw): tokens (b·hw, f, inner).
    #[allow(clippy::too_many_arguments)]
    fn temporal(
        &mut self,
        b: usize,
        frames: usize,
        c: usize,
        hw: usize,
        inner: usize,
        heads: usize,
        opts: crate::nn::compute::ComputeOptions,
    ) {
        let n = b * frames * c * hw;
        let x = self.b(n);
        // norm output (temporary) and the permuted token copy; on CUDA the GroupNorm writes the
        // tokens, over all pixels at once
        match opts.temporal_pixel_chunk.filter(|&k| k > 0 && k < hw) {
            _ if self.transformer_handoff() => self.norm(n, 0.0),
            Some(k) => {
                // statistics pass, then the chunks normalised and concatenated
                let chunk = b * frames * c * k;
                self.group_stats(chunk);
                self.hold(x - self.b(chunk));
                self.norm(chunk, 0.0);
                self.at(x);
                self.free(x);
                self.hold(x);
            }
            None => self.norm(n, 0.0),
        }
        if !self.transformer_handoff() {
            self.at(x);
        }
        self.free(x);
        self.hold(x); // tokens
        let seqs = b * hw;
        let pc = opts
            .temporal_pixel_chunk
            .filter(|&k| k > 0 && k < seqs)
            .unwrap_or(seqs);
        let chunked = pc < seqs;
        let out_all = self.b(seqs * frames * c);
        let chunk_out = self.b(pc * frames * c);
        if chunked {
            self.hold(out_all - chunk_out);
        }
        let t_in = self.b(pc * frames * inner);
        self.linear(pc * frames, inner, 0.0);
        self.basic_block(pc, frames, inner, heads, None, opts);
        self.linear(pc * frames, c, 0.0);
        self.free(2.0 * t_in);
        if chunked {
            self.at(out_all);
            self.free(out_all);
        } else {
            self.free(chunk_out);
        }
        self.hold(out_all);
        // reshape/permute copy, + x (on CUDA one pass)
        self.at(self.back_to_nchw() * x);
        self.free(x + out_all);
        self.hold(x);
    }

    /// One UNet call on `b` rows.
    fn unet(
        &mut self,
        u: &UNetConfig,
        b: usize,
        frames: usize,
        h: usize,
        w: usize,
        opts: crate::nn::compute::ComputeOptions,
    ) {
        let ch = &u.block_out_channels;
        let n = b * frames;
        let hw = h * w;
        let ctx = TEXT_TOKENS + IMAGE_LATENT_CONTEXT_TOKENS + u.in_channels;
        let c_lat = u.in_channels;
        self.stream_at(None);
        // context repeated per frame and the time embedding
        self.hold(self.b(n * ctx * u.cross_attention_dim));
        // image latents through ProjIn (4x-wide convs) and the temporal encoder
        self.at(self.b(n * c_lat * 4 * hw) * 3.0);
        self.hold(self.b(n * c_lat * hw) * 2.0);
        // the sample in the model dtype, their cat, conv_in (freed after transformer_in)
        let cat_in = self.b(n * 2 * c_lat * hw);
        self.hold(cat_in);
        let cf = opts.conv_frame_chunk;
        self.conv_chunked(n, 2 * c_lat, hw, ch[0], hw, cf);
        let heads_in = TRANSFORMER_IN_HEADS;
        self.temporal(
            b,
            frames,
            ch[0],
            hw,
            heads_in * u.attention_head_dim,
            heads_in,
            opts,
        );
        self.free(cat_in + self.b(n * ch[0] * hw));
        let mut skips: Vec<(f64, usize)> = vec![(self.b(n * ch[0] * hw), ch[0])];
        let mut sizes = vec![(h, w)];
        let mut c_prev = ch[0];
        let levels = ch.len();
        for (i, &c) in ch.iter().enumerate() {
            self.stream_at(Some(i));
            let attn = u.down_block_types[i] == crate::config::DownBlockType::CrossAttnDownBlock3D;
            let (lh, lw) = sizes[i];
            for _ in 0..u.layers_per_block {
                let out = self.layer(u, b, frames, c_prev, c, lh * lw, attn, ctx, opts, 0.0);
                skips.push((out, c));
                c_prev = c;
            }
            if i + 1 < levels {
                let next = (lh.div_ceil(2), lw.div_ceil(2));
                self.conv_chunked(n, c, lh * lw, c, next.0 * next.1, cf);
                sizes.push(next);
                skips.push((self.b(n * c * next.0 * next.1), c));
            }
        }
        // mid block: each intermediate is freed once the next exists
        self.stream_at(Some(levels));
        let c = ch[levels - 1];
        let (lh, lw) = sizes[levels - 1];
        let mhw = lh * lw;
        let x = self.b(n * c * mhw);
        let mid_heads = c / u.attention_head_dim;
        self.resnet_chunked(n, c, c, mhw, cf);
        self.temp_conv(frames, n, c, mhw, opts.temporal_pixel_chunk);
        self.free(x);
        self.spatial(n, c, mhw, mid_heads, ctx, opts);
        self.free(x);
        self.temporal(b, frames, c, mhw, c, mid_heads, opts);
        self.free(x);
        self.resnet_chunked(n, c, c, mhw, cf);
        self.free(x);
        self.temp_conv(frames, n, c, mhw, opts.temporal_pixel_chunk);
        self.free(x);
        let mut x = x;
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut c_cur = reversed[0];
        for (i, &c_out) in reversed.iter().enumerate() {
            self.stream_at(Some(levels + 1 + i));
            let attn = u.up_block_types[i] == crate::config::UpBlockType::CrossAttnUpBlock3D;
            let level = levels - 1 - i;
            let lhw = sizes[level].0 * sizes[level].1;
            let mut used = 0.0;
            for _ in 0..=u.layers_per_block {
                let (skip, c_skip) = skips.pop().expect("skip");
                used += skip;
                // cat: the new x replaces the old one
                let cat = self.b(n * (c_cur + c_skip) * lhw);
                self.hold(cat);
                self.free(x);
                let out = self.layer(
                    u,
                    b,
                    frames,
                    c_cur + c_skip,
                    c_out,
                    lhw,
                    attn,
                    ctx,
                    opts,
                    cat,
                );
                x = out;
                c_cur = c_out;
            }
            // the block's skips are released after it
            self.free(used);
            if i + 1 < levels {
                let (uh, uw) = sizes[level - 1];
                let per = self.b(c_out * uh * uw);
                self.per_frame(n, cf, per, |s, k| {
                    let up = s.b(k * c_out * uh * uw);
                    s.hold(up); // nearest upsampling
                    s.conv(k, c_out, uh * uw, c_out, uh * uw, 3, 0.0);
                    s.free(up);
                });
                self.free(x);
                x = self.b(n * c_out * uh * uw);
            }
        }
        self.stream_at(None);
        // conv_norm_out, silu (temporaries of the statement), conv_out, the permuted copy
        let per = self.b(u.out_channels * hw);
        self.per_frame(n, cf, per, |s, k| {
            let normed = s.b(k * ch[0] * hw);
            s.norm(k * ch[0] * hw, 0.0);
            let silu = s.silu_after_norm(normed);
            s.conv(k, ch[0], hw, u.out_channels, hw, 3, 0.0);
            s.free(normed + silu);
        });
        self.at(self.b(n * u.out_channels * hw));
    }

    /// One down or up layer: resnet, temporal conv, optionally both transformers. `x_in` bytes
    /// (an up block's cat; 0 on the way down, where the input is a skip) are live on entry and
    /// released after the resnet; returns the output bytes (held).
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &mut self,
        u: &UNetConfig,
        b: usize,
        frames: usize,
        c_in: usize,
        c: usize,
        hw: usize,
        attn: bool,
        ctx: usize,
        opts: crate::nn::compute::ComputeOptions,
        x_in: f64,
    ) -> f64 {
        let n = b * frames;
        let out = self.b(n * c * hw);
        // the input (an up block's cat) is freed once the resnet has read it, each
        // intermediate once the next exists
        self.resnet_chunked(n, c_in, c, hw, opts.conv_frame_chunk);
        self.free(x_in);
        self.temp_conv(frames, n, c, hw, opts.temporal_pixel_chunk);
        self.free(out);
        if attn {
            let heads = c / u.attention_head_dim;
            self.spatial(n, c, hw, heads, ctx, opts);
            self.free(out);
            self.temporal(b, frames, c, hw, c, heads, opts);
            self.free(out);
        }
        out
    }

    fn denoise(&mut self, m: &ModelConfigs, r: &RequestShape, plan: &ExecutionPlan) {
        let (h, w) = (r.height / 8, r.width / 8);
        let rows = if r.guidance { 2 } else { 1 };
        let u = &m.unet;
        // conditioning kept for the whole loop: text states, image embeddings, image latents;
        // the latents and the scheduler's copies (f32)
        self.hold(self.b(rows * TEXT_TOKENS * u.cross_attention_dim));
        self.hold(self.b(rows * u.in_channels * r.frames * h * w));
        self.hold(3.0 * (u.in_channels * r.frames * h * w) as f64 * 4.0);
        let batch = if r.guidance && !plan.sequential_guidance {
            2
        } else {
            1
        };
        if batch == 2 {
            // the latents concatenated for the batch of two
            self.hold(self.b(2 * u.in_channels * r.frames * h * w));
        } else if r.guidance {
            // the first pass's prediction is held through the second
            self.hold(self.b(u.in_channels * r.frames * h * w));
        }
        self.unet(u, batch, r.frames, h, w, plan.compute);
    }

    /// CLIP text encoder on `rows` prompts of 77 tokens.
    fn clip_text(&mut self, t: &ClipTextConfig, rows: usize) {
        self.clip_encoder(
            rows,
            TEXT_TOKENS,
            t.hidden_size,
            t.intermediate_size,
            t.num_attention_heads,
        );
    }

    fn clip_encoder(&mut self, rows: usize, l: usize, d: usize, inter: usize, heads: usize) {
        let x = self.b(rows * l * d);
        self.hold(x);
        self.norm(rows * l * d, 0.0);
        // q, k, v, scores (f32 for half), probs, the mlp's hidden
        let sc = (rows * heads * l * l) as f64
            * if self.half {
                self.e + 2.0 * self.ie
            } else {
                2.0 * self.e
            };
        self.at(3.0 * x + sc);
        self.at(2.0 * self.b(rows * l * inter) + x);
    }

    fn encode_image(
        &mut self,
        m: &ModelConfigs,
        r: &RequestShape,
        rows: usize,
        opts: crate::nn::compute::ComputeOptions,
    ) {
        let v = &m.vision;
        let s = v.image_size / v.patch_size;
        self.clip_encoder(
            1,
            1 + s * s,
            v.hidden_size,
            v.intermediate_size,
            v.num_attention_heads,
        );
        let mut enc = Sim {
            live: 0.0,
            peak_live: 0.0,
            peak_transient: 0.0,
            ..self.clone()
        };
        enc.hold(self.b(rows * m.unet.cross_attention_dim));
        enc.vae_encoder(&m.vae, r, opts);
        if enc.peak_live + enc.peak_transient > self.peak_live + self.peak_transient {
            self.peak_live = enc.peak_live;
            self.peak_transient = enc.peak_transient;
        }
    }

    /// VAE attention (one head over all pixels) on (n, c, hw).
    fn vae_attention(
        &mut self,
        n: usize,
        c: usize,
        hw: usize,
        tile_opts: crate::nn::compute::ComputeOptions,
    ) {
        let x = self.b(n * c * hw);
        self.norm(n * c * hw, 0.0);
        self.at(x);
        self.free(x);
        self.hold(x); // tokens
        self.attention(n, hw, hw, c, 1, tile_opts, 0.0);
        self.free(x);
        self.at(2.0 * x);
        self.free(x);
        self.hold(x);
    }

    fn vae_encoder(
        &mut self,
        v: &VaeConfig,
        r: &RequestShape,
        opts: crate::nn::compute::ComputeOptions,
    ) {
        let ch = &v.block_out_channels;
        let (mut h, mut w) = (r.height, r.width);
        self.hold(self.b(v.in_channels * h * w));
        self.conv(1, v.in_channels, h * w, ch[0], h * w, 3, 0.0);
        let mut x = self.b(ch[0] * h * w);
        let mut c_prev = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            for _ in 0..v.layers_per_block {
                match opts.vae_row_band {
                    Some(band) => self.resnet_banded(1, c_prev, c, h, w, band),
                    None => self.resnet(1, c_prev, c, h * w),
                }
                self.free(x);
                x = self.b(c * h * w);
                c_prev = c;
            }
            if i + 1 < ch.len() {
                let padded = self.b(c * (h + 1) * (w + 1));
                self.hold(padded);
                let (oh, ow) = (h / 2, w / 2);
                self.conv(1, c, (h + 1) * (w + 1), c, oh * ow, 3, 0.0);
                self.free(padded + x);
                (h, w) = (oh, ow);
                x = self.b(c * h * w);
            }
        }
        let c = c_prev;
        self.vae_mid(v, 1, c, h * w, opts);
        self.free(x);
        self.norm(c * h * w, 0.0);
        self.conv(1, c, h * w, 2 * v.latent_channels, h * w, 3, 0.0);
    }

    fn vae_mid(
        &mut self,
        v: &VaeConfig,
        n: usize,
        c: usize,
        hw: usize,
        opts: crate::nn::compute::ComputeOptions,
    ) {
        let x = self.b(n * c * hw);
        self.resnet(n, c, c, hw);
        if v.mid_block_add_attention {
            self.vae_attention(n, c, hw, opts);
            self.free(x);
        }
        self.resnet(n, c, c, hw);
        self.free(x);
    }

    /// VAE decoder over the frames in chunks, the frames gathered as they come.
    fn decode(
        &mut self,
        v: &VaeConfig,
        r: &RequestShape,
        opts: crate::nn::compute::ComputeOptions,
    ) {
        let (h, w) = (r.height / 8, r.width / 8);
        let f = r.frames;
        let lat = v.latent_channels;
        // final latents (f32), the scaled and permuted copies in the model dtype
        self.hold((lat * f * h * w) as f64 * 4.0);
        self.hold(2.0 * self.b(lat * f * h * w));
        let out_frame = self.b(v.out_channels * r.height * r.width);
        let chunk = r.decode_chunk.clamp(1, f);
        // the decoded frames of earlier chunks
        let done = out_frame * (f - chunk) as f64;
        self.hold(done);
        self.vae_decoder(v, chunk, h, w, opts);
        // cat of every decoded frame, then the f32 and u8 copies of to_frames
        self.free(self.live);
        let all = out_frame * f as f64;
        self.hold((lat * f * h * w) as f64 * 4.0);
        self.at(2.0 * all + all * 4.0 / self.e * 2.0);
    }

    fn vae_decoder(
        &mut self,
        v: &VaeConfig,
        n: usize,
        h: usize,
        w: usize,
        opts: crate::nn::compute::ComputeOptions,
    ) {
        let band = opts.vae_row_band;
        let reversed: Vec<usize> = v.block_out_channels.iter().rev().copied().collect();
        let (mut h, mut w) = (h, w);
        self.hold(self.b(n * v.latent_channels * h * w)); // post_quant_conv out
        self.conv(n, v.latent_channels, h * w, reversed[0], h * w, 3, 0.0);
        let mut x = self.b(n * reversed[0] * h * w);
        self.vae_mid(v, n, reversed[0], h * w, opts);
        self.free(x);
        let mut c_prev = reversed[0];
        let levels = reversed.len();
        for (i, &c) in reversed.iter().enumerate() {
            for _ in 0..=v.layers_per_block {
                match band {
                    Some(b) => self.resnet_banded(n, c_prev, c, h, w, b),
                    None => self.resnet(n, c_prev, c, h * w),
                }
                self.free(x);
                x = self.b(n * c * h * w);
                c_prev = c;
            }
            if i + 1 < levels {
                let up = self.b(n * c * h * w * 4);
                self.hold(up);
                match band {
                    Some(b) => self.banded_conv(n, c, c, 2 * h, 2 * w, b, false),
                    None => self.conv(n, c, h * w * 4, c, h * w * 4, 3, 0.0),
                }
                self.free(up + x);
                (h, w) = (h * 2, w * 2);
                x = self.b(n * c * h * w);
            }
        }
        match band {
            Some(b) => {
                self.group_stats(n * c_prev * b.min(h) * w);
                self.banded_conv(n, c_prev, v.out_channels, h, w, b, true);
            }
            None => {
                self.norm(n * c_prev * h * w, 0.0);
                self.silu_after_norm(x);
                self.conv(n, c_prev, h * w, v.out_channels, h * w, 3, 0.0);
            }
        }
    }

    /// The statistics pass of a banded GroupNorm over bands of `band_elems` elements: the
    /// internal-type copy, its deviations and their squares.
    fn group_stats(&mut self, band_elems: usize) {
        self.at(3.0 * band_elems as f64 * self.ie);
    }

    /// `conv3x3_in_row_bands` on (n, c_in, rows, w) -> (n, c_out, rows, w), `normed`: with a
    /// GroupNorm (whole-frame statistics) and SiLU applied per band; output held on return.
    #[allow(clippy::too_many_arguments)]
    fn banded_conv(
        &mut self,
        n: usize,
        c_in: usize,
        c_out: usize,
        rows: usize,
        w: usize,
        band: usize,
        normed: bool,
    ) {
        let b = band.clamp(1, rows);
        let halo = (b + 2).min(rows);
        let in_band = n * c_in * halo * w;
        let (all, part) = (self.b(n * c_out * rows * w), self.b(n * c_out * b * w));
        let chunked = b < rows;
        if chunked {
            self.hold(all - part);
        }
        let mut temps = 0.0;
        if normed {
            self.norm(in_band, 0.0);
            self.hold(self.b(in_band)); // silu
            temps += 2.0 * self.b(in_band);
        }
        let padded = self.b(n * c_in * (b + 2) * (w + 2));
        self.hold(padded);
        temps += padded;
        self.conv(n, c_in, (b + 2) * (w + 2), c_out, b * w, 3, 0.0);
        self.free(temps);
        if chunked {
            // the cat of the bands
            self.at(all);
            self.free(all);
            self.hold(all);
        }
    }

    /// `forward_without_time_in_row_bands` on (n, c_in, rows·w) -> (n, c_out, rows·w); input
    /// live, output held on return.
    fn resnet_banded(
        &mut self,
        n: usize,
        c_in: usize,
        c_out: usize,
        rows: usize,
        w: usize,
        band: usize,
    ) {
        let b = band.clamp(1, rows);
        let out = self.b(n * c_out * rows * w);
        self.group_stats(n * c_in * b * w);
        self.banded_conv(n, c_in, c_out, rows, w, band, true);
        self.group_stats(n * c_out * b * w);
        self.banded_conv(n, c_out, c_out, rows, w, band, true);
        // the first conv's output lives until the block returns (a shadowed name)
        let mut held = 2.0 * out;
        if c_in != c_out {
            self.conv(n, c_in, rows * w, c_out, rows * w, 1, 0.0);
            held += out;
        }
        self.at(out);
        self.free(held);
        self.hold(out);
    }
}

/// Threads of candle's CPU kernels, each with its own convolution tile.
fn rayon_threads() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}
