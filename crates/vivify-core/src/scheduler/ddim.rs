//! DDIM scheduler (Song et al. 2020), a from-scratch port of diffusers 0.42.1
//! `DDIMScheduler` as used by I2VGen-XL.
//!
//! Parity notes: every scalar coefficient is computed in `f32` in the same
//! order as diffusers does with 0-d `float32` torch tensors, and the schedule
//! tables reproduce torch's CPU kernels (see [`DdimScheduler::new`]), so the
//! outputs match diffusers to the last few ulps rather than "approximately".

use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use serde::Deserialize;

use crate::{Error, Result};

/// How the training betas are laid out over `num_train_timesteps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BetaSchedule {
    #[serde(rename = "linear")]
    Linear,
    /// Linear in `sqrt(beta)`, then squared (latent-diffusion models).
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// The Glide / improved-DDPM cosine schedule, betas capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// What the denoising model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PredictionType {
    /// The added noise.
    #[serde(rename = "epsilon")]
    Epsilon,
    /// The clean sample `x_0`.
    #[serde(rename = "sample")]
    Sample,
    /// The velocity `sqrt(a) * eps - sqrt(1 - a) * x_0` (Imagen Video, section 2.4).
    #[serde(rename = "v_prediction")]
    VPrediction,
}

/// How inference timesteps are picked (table 2 of arXiv:2305.08891).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TimestepSpacing {
    #[serde(rename = "leading")]
    Leading,
    #[serde(rename = "trailing")]
    Trailing,
    #[serde(rename = "linspace")]
    Linspace,
}

/// The `scheduler/scheduler_config.json` of a diffusers `DDIMScheduler`.
///
/// Unknown keys (`_class_name`, `dynamic_thresholding_ratio`, ...) are ignored
/// and missing keys take diffusers' constructor defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct DdimConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Explicit betas; when set, `beta_schedule`, `beta_start` and `beta_end` are unused.
    pub trained_betas: Option<Vec<f64>>,
    pub clip_sample: bool,
    pub set_alpha_to_one: bool,
    pub steps_offset: i64,
    pub prediction_type: PredictionType,
    pub clip_sample_range: f64,
    /// Dynamic thresholding is not implemented; `true` is refused.
    pub thresholding: bool,
    pub timestep_spacing: TimestepSpacing,
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            clip_sample: true,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            clip_sample_range: 1.0,
            thresholding: false,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: false,
        }
    }
}

impl DdimConfig {
    /// The scheduler config published with `ali-vilab/i2vgen-xl`.
    pub fn i2vgen_xl() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            trained_betas: None,
            clip_sample: false,
            set_alpha_to_one: true,
            steps_offset: 1,
            prediction_type: PredictionType::VPrediction,
            clip_sample_range: 1.0,
            thresholding: false,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: true,
        }
    }

    /// Reads and validates a diffusers `scheduler_config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config_error = |message: String| Error::Config {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        config
            .check()
            .map_err(|(field, message)| config_error(format!("`{field}`: {message}")))?;
        Ok(config)
    }

    /// Checks the settings this port can honour; returns the offending field.
    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.thresholding {
            return Err((
                "thresholding",
                "dynamic thresholding is not supported by this DDIM port; set it to false".into(),
            ));
        }
        if self.num_train_timesteps == 0 {
            return Err(("num_train_timesteps", "must be at least 1".into()));
        }
        if self.rescale_betas_zero_snr && self.num_train_timesteps < 2 {
            return Err((
                "num_train_timesteps",
                "rescale_betas_zero_snr needs at least 2 training timesteps".into(),
            ));
        }
        if let Some(betas) = &self.trained_betas
            && betas.len() != self.num_train_timesteps
        {
            return Err((
                "trained_betas",
                format!(
                    "has {} values but num_train_timesteps is {}",
                    betas.len(),
                    self.num_train_timesteps
                ),
            ));
        }
        if self.clip_sample && !(self.clip_sample_range.is_finite() && self.clip_sample_range > 0.0)
        {
            return Err((
                "clip_sample_range",
                format!(
                    "must be finite and positive, got {}",
                    self.clip_sample_range
                ),
            ));
        }
        Ok(())
    }
}

/// Result of one DDIM step.
#[derive(Debug, Clone)]
pub struct DdimStepOutput {
    /// `x_{t-1}`, the next model input.
    pub prev_sample: Tensor,
    /// The (clipped, if configured) prediction of `x_0`, for previews.
    pub pred_original_sample: Tensor,
}

/// The DDIM sampler. Build it, call [`set_timesteps`](Self::set_timesteps),
/// then [`step`](Self::step) once per returned timestep.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: DdimConfig,
    betas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    num_inference_steps: Option<usize>,
    timesteps: Vec<i64>,
}

impl DdimScheduler {
    /// Builds the beta / alpha tables exactly as diffusers does on CPU:
    /// `squaredcos_cap_v2` in `f64` then cast to `f32`; `linear` and
    /// `scaled_linear` via torch's `f32` linspace kernel; the zero-SNR rescale
    /// in `f32`; and `alphas_cumprod` as torch's CPU cumprod, which
    /// accumulates `f32` inputs in `f64` and rounds each output to `f32`.
    pub fn new(config: DdimConfig) -> Result<Self> {
        config
            .check()
            .map_err(|(field, message)| Error::InvalidArgument { field, message })?;
        let n = config.num_train_timesteps;
        let mut betas = match &config.trained_betas {
            Some(betas) => betas.iter().map(|&b| b as f32).collect(),
            None => match config.beta_schedule {
                BetaSchedule::Linear => {
                    torch_linspace_f32(config.beta_start as f32, config.beta_end as f32, n)
                }
                BetaSchedule::ScaledLinear => torch_linspace_f32(
                    config.beta_start.sqrt() as f32,
                    config.beta_end.sqrt() as f32,
                    n,
                )
                .into_iter()
                .map(|b| b * b)
                .collect(),
                BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(n),
            },
        };
        if config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        if let Some(i) = betas
            .iter()
            .position(|b| !(b.is_finite() && (0.0..=1.0).contains(b)))
        {
            return Err(Error::InvalidArgument {
                field: "betas",
                message: format!(
                    "beta[{i}] = {} is outside [0, 1]; check beta_start, beta_end or trained_betas",
                    betas[i]
                ),
            });
        }
        let alphas: Vec<f32> = betas.iter().map(|&b| 1.0 - b).collect();
        let alphas_cumprod = torch_cumprod_f32(&alphas);
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        // Like diffusers before `set_timesteps`: every training step, descending.
        let timesteps = (0..n as i64).rev().collect();
        Ok(Self {
            config,
            betas,
            alphas_cumprod,
            final_alpha_cumprod,
            num_inference_steps: None,
            timesteps,
        })
    }

    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// `alpha_prod` used for the step past timestep 0.
    pub fn final_alpha_cumprod(&self) -> f32 {
        self.final_alpha_cumprod
    }

    /// Standard deviation of the initial latent noise.
    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The descending timesteps set by [`set_timesteps`](Self::set_timesteps)
    /// (all training steps before that).
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    pub fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    /// Chooses `num_inference_steps` timesteps, descending, with the
    /// configured spacing, reproducing numpy's float arithmetic and
    /// round-half-to-even. Returns a copy of them.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<Vec<i64>> {
        let train = self.config.num_train_timesteps;
        if num_inference_steps == 0 || num_inference_steps > train {
            return Err(Error::InvalidArgument {
                field: "steps",
                message: format!(
                    "must be between 1 and num_train_timesteps = {train}, got {num_inference_steps}"
                ),
            });
        }
        let timesteps = match self.config.timestep_spacing {
            TimestepSpacing::Linspace => {
                numpy_linspace(0.0, (train - 1) as f64, num_inference_steps)
                    .into_iter()
                    .rev()
                    .map(|x| x.round_ties_even() as i64)
                    .collect()
            }
            TimestepSpacing::Leading => {
                let ratio = (train / num_inference_steps) as i64;
                (0..num_inference_steps as i64)
                    .rev()
                    .map(|i| i * ratio + self.config.steps_offset)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                // np.round(np.arange(T, 0, -T / n)) - 1
                let ratio = train as f64 / num_inference_steps as f64;
                numpy_arange(train as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|x| x.round_ties_even() as i64 - 1)
                    .collect()
            }
        };
        self.num_inference_steps = Some(num_inference_steps);
        self.timesteps = timesteps;
        Ok(self.timesteps.clone())
    }

    /// One deterministic DDIM step; returns `x_{t-1}`.
    ///
    /// With `eta > 0`, `variance_noise` (standard normal, shaped like
    /// `sample`) is required; use [`step_with_rng`](Self::step_with_rng) to
    /// draw it from a seeded generator instead.
    pub fn step(
        &self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        eta: f64,
        variance_noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        Ok(self
            .step_full(model_output, timestep, sample, eta, variance_noise)?
            .prev_sample)
    }

    /// Like [`step`](Self::step), drawing the `eta > 0` noise from `rng`
    /// (Box-Muller). The generator is not advanced when `eta == 0`.
    pub fn step_with_rng<R: rand::Rng + ?Sized>(
        &self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        eta: f64,
        rng: &mut R,
    ) -> Result<DdimStepOutput> {
        let noise = if eta > 0.0 {
            Some(gaussian_noise(rng, sample.shape(), sample.device())?)
        } else {
            None
        };
        self.step_full(model_output, timestep, sample, eta, noise.as_ref())
    }

    /// One DDIM step returning both `x_{t-1}` and the predicted `x_0`
    /// (formulas 12 and 16 of arXiv:2010.02502, as in diffusers).
    ///
    /// Tensors are computed in `f32` (`f64` stays `f64`) and returned in
    /// `sample`'s dtype.
    pub fn step_full(
        &self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
        eta: f64,
        variance_noise: Option<&Tensor>,
    ) -> Result<DdimStepOutput> {
        let steps = self
            .num_inference_steps
            .ok_or_else(|| Error::InvalidArgument {
                field: "num_inference_steps",
                message: "call set_timesteps before step".into(),
            })?;
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(invalid(
                "eta",
                format!("must be finite and >= 0, got {eta}"),
            ));
        }
        let train = self.alphas_cumprod.len();
        let t = usize::try_from(timestep)
            .ok()
            .filter(|&t| t < train)
            .ok_or_else(|| invalid("timestep", format!("must be in 0..{train}, got {timestep}")))?;
        if model_output.shape() != sample.shape() {
            return Err(invalid(
                "model_output",
                format!(
                    "shape {:?} differs from sample shape {:?}",
                    model_output.dims(),
                    sample.dims()
                ),
            ));
        }
        let out_dtype = sample.dtype();
        let compute = match out_dtype {
            DType::F64 => DType::F64,
            DType::F32 | DType::F16 | DType::BF16 => DType::F32,
            other => {
                return Err(invalid(
                    "sample",
                    format!("must be a float tensor, got {other:?}"),
                ));
            }
        };
        if !model_output.dtype().is_float() {
            return Err(invalid(
                "model_output",
                format!("must be a float tensor, got {:?}", model_output.dtype()),
            ));
        }

        // diffusers uses T // n as the stride whatever the spacing.
        let prev_t = timestep - (train / steps) as i64;
        let alpha_prod_t = self.alphas_cumprod[t];
        let alpha_prod_t_prev = match usize::try_from(prev_t) {
            Ok(p) => self.alphas_cumprod[p],
            Err(_) => self.final_alpha_cumprod,
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let sqrt_alpha_t = alpha_prod_t.sqrt();
        let sqrt_beta_t = beta_prod_t.sqrt();

        let x = sample.to_dtype(compute)?;
        let m = model_output.to_dtype(compute)?;
        let device = x.device();
        let (pred_x0, pred_eps) = match self.config.prediction_type {
            PredictionType::Epsilon => {
                if sqrt_alpha_t == 0.0 {
                    return Err(invalid(
                        "timestep",
                        format!(
                            "alpha_prod is 0 at timestep {timestep} (zero terminal SNR): \
                             epsilon prediction cannot recover x_0 there"
                        ),
                    ));
                }
                // (x - sqrt(b) * eps) / sqrt(a); a true division, as torch does.
                let denom = scalar(sqrt_alpha_t, compute, device)?;
                let x0 = x.sub(&scale(&m, sqrt_beta_t)?)?.broadcast_div(&denom)?;
                (x0, m)
            }
            PredictionType::Sample => {
                if sqrt_beta_t == 0.0 {
                    return Err(invalid(
                        "timestep",
                        format!("beta_prod is 0 at timestep {timestep}: cannot recover the noise"),
                    ));
                }
                let denom = scalar(sqrt_beta_t, compute, device)?;
                let eps = x.sub(&scale(&m, sqrt_alpha_t)?)?.broadcast_div(&denom)?;
                (m, eps)
            }
            PredictionType::VPrediction => {
                let x0 = scale(&x, sqrt_alpha_t)?.sub(&scale(&m, sqrt_beta_t)?)?;
                let eps = scale(&m, sqrt_alpha_t)?.add(&scale(&x, sqrt_beta_t)?)?;
                (x0, eps)
            }
        };
        let pred_x0 = if self.config.clip_sample {
            let r = self.config.clip_sample_range as f32 as f64;
            pred_x0.clamp(-r, r)?
        } else {
            pred_x0
        };

        // sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).
        // Skipped at eta == 0 so a degenerate variance cannot poison the result.
        let std_dev_t = if eta > 0.0 {
            let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
            let variance =
                (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
            eta as f32 * variance.sqrt()
        } else {
            0.0
        };
        // Clamped at 0: rounding with eta near 1 can go slightly negative,
        // where torch would produce NaN.
        let dir_coeff = (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t)
            .max(0.0)
            .sqrt();
        let mut prev =
            scale(&pred_x0, alpha_prod_t_prev.sqrt())?.add(&scale(&pred_eps, dir_coeff)?)?;
        if eta > 0.0 {
            let noise = variance_noise.ok_or_else(|| {
                invalid(
                    "variance_noise",
                    "eta > 0 needs noise: pass variance_noise or use step_with_rng".into(),
                )
            })?;
            if noise.shape() != sample.shape() {
                return Err(invalid(
                    "variance_noise",
                    format!(
                        "shape {:?} differs from sample shape {:?}",
                        noise.dims(),
                        sample.dims()
                    ),
                ));
            }
            prev = prev.add(&scale(&noise.to_dtype(compute)?, std_dev_t)?)?;
        }
        Ok(DdimStepOutput {
            prev_sample: prev.to_dtype(out_dtype)?,
            pred_original_sample: pred_x0.to_dtype(out_dtype)?,
        })
    }
}

/// Standard normal `f32` noise from `rng` (Box-Muller), for seeded sampling
/// independent of the device's own generator.
pub fn gaussian_noise<R: rand::Rng + ?Sized>(
    rng: &mut R,
    shape: impl Into<Shape>,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let n = shape.elem_count();
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        // 1 - U(0,1) lies in (0, 1], so the log is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        values.push((r * theta.cos()) as f32);
        values.push((r * theta.sin()) as f32);
    }
    values.truncate(n);
    Ok(Tensor::from_vec(values, shape, device)?)
}

fn invalid(field: &'static str, message: String) -> Error {
    Error::InvalidArgument { field, message }
}

/// `t * c` in `t`'s dtype; `c` is an `f32`, so the multiply is exactly torch's
/// `0-d f32 tensor * tensor`.
fn scale(t: &Tensor, c: f32) -> Result<Tensor> {
    Ok(t.affine(c as f64, 0.0)?)
}

fn scalar(c: f32, dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::new(c, device)?.to_dtype(dtype)?)
}

/// diffusers' `betas_for_alpha_bar` (cosine), in `f64` like Python, then cast.
fn betas_for_alpha_bar(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powf(2.0)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// torch's CPU `linspace` for `float32`: an `f32` step, each value a single
/// fused multiply-add from whichever end is nearer.
fn torch_linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// torch's CPU `cumprod` for `float32`: the running product is kept in `f64`.
fn torch_cumprod_f32(xs: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    xs.iter()
        .map(|&x| {
            acc *= x as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv:2305.08891, algorithm 1),
/// op for op in `f32`.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|&b| 1.0 - b).collect();
    let mut sqrt_bar: Vec<f32> = torch_cumprod_f32(&alphas)
        .into_iter()
        .map(f32::sqrt)
        .collect();
    let first = sqrt_bar[0];
    let last = sqrt_bar[sqrt_bar.len() - 1];
    let factor = first / (first - last);
    for s in &mut sqrt_bar {
        *s = (*s - last) * factor;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|s| s * s).collect();
    std::iter::once(bar[0])
        .chain(bar.windows(2).map(|w| w[1] / w[0]))
        .map(|a| 1.0 - a)
        .collect()
}

/// `np.linspace(start, stop, num)` (endpoint included) in `f64`.
fn numpy_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    y[num - 1] = stop;
    y
}

/// `np.arange(start, stop, step)` for floats: the length is
/// `ceil((stop - start) / step)` and elements past the second are
/// `start + i * ((start + step) - start)`, as numpy's fill does.
fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len < 1.0 {
        return Vec::new();
    }
    let len = len as usize;
    let second = start + step;
    let delta = second - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}
