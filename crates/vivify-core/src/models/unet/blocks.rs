//! The 3-D down, mid and up blocks: each layer is resnet -> temporal conv, and in the
//! cross-attention blocks also spatial transformer -> temporal transformer.

use crate::nn::compute::{ComputeOptions, per_frame_chunks};
use crate::nn::resample::{Downsample2D, Upsample2D};
use crate::nn::resnet::ResnetBlock2D;
use crate::nn::temporal_conv::TemporalConvLayer;
use crate::nn::transformer::{Transformer2DModel, TransformerTemporalModel};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// ResnetBlock2D eps of every UNet block.
const RESNET_EPS: f64 = 1e-5;

/// What every block needs to know besides its own channel counts.
#[derive(Debug, Clone, Copy)]
pub struct BlockShape {
    pub temb_channels: usize,
    pub groups: usize,
    pub head_dim: usize,
    pub cross_attention_dim: usize,
}

/// Per-call inputs shared by all blocks.
#[derive(Debug, Clone, Copy)]
pub struct BlockInputs<'a> {
    pub temb: &'a Tensor,
    pub context: &'a Tensor,
    pub frames: usize,
    pub opts: ComputeOptions,
}

/// One layer of a block: resnet, temporal conv, and the optional attention pair.
#[derive(Debug, Clone)]
pub struct Layer {
    pub resnet: ResnetBlock2D,
    pub temp_conv: TemporalConvLayer,
    /// Spatial then temporal transformer, in the cross-attention blocks.
    pub attention: Option<(Transformer2DModel, TransformerTemporalModel)>,
}

impl Layer {
    fn new(
        vb: &VarBuilder,
        i: usize,
        c_in: usize,
        c_out: usize,
        s: BlockShape,
        attn: bool,
    ) -> Result<Self> {
        let idx = i.to_string();
        let attention = if attn {
            let heads = c_out / s.head_dim;
            Some((
                Transformer2DModel::new(
                    vb.pp("attentions").pp(&idx),
                    c_out,
                    heads,
                    s.head_dim,
                    s.groups,
                    s.cross_attention_dim,
                )?,
                TransformerTemporalModel::new(
                    vb.pp("temp_attentions").pp(&idx),
                    c_out,
                    heads,
                    s.head_dim,
                    s.groups,
                )?,
            ))
        } else {
            None
        };
        Ok(Self {
            resnet: ResnetBlock2D::new(
                vb.pp("resnets").pp(&idx),
                c_in,
                c_out,
                s.temb_channels,
                s.groups,
                RESNET_EPS,
            )?,
            temp_conv: TemporalConvLayer::new(vb.pp("temp_convs").pp(&idx), c_out, s.groups)?,
            attention,
        })
    }

    /// Takes `x` by value: it is freed once the resnet has read it, and each intermediate once
    /// the next exists (shadowed bindings would keep them all alive to the end).
    pub fn forward(&self, x: Tensor, inputs: BlockInputs) -> Result<Tensor> {
        let mut h = resnet_in_frame_chunks(&self.resnet, &x, inputs)?;
        drop(x);
        let pixel_chunk = inputs.opts.temporal_pixel_chunk;
        h = self
            .temp_conv
            .forward_chunked(&h, inputs.frames, pixel_chunk)?;
        if let Some((spatial, temporal)) = &self.attention {
            h = spatial.forward(&h, inputs.context, inputs.opts)?;
            h = temporal.forward(&h, inputs.frames, inputs.opts)?;
        }
        Ok(h)
    }
}

/// A resnet block over `inputs.opts.conv_frame_chunk` frames at a time (it works per frame).
fn resnet_in_frame_chunks(
    resnet: &ResnetBlock2D,
    x: &Tensor,
    inputs: BlockInputs,
) -> Result<Tensor> {
    per_frame_chunks(x, inputs.opts.conv_frame_chunk, |x, start, len| {
        resnet.forward(x, &inputs.temb.narrow(0, start, len)?)
    })
}

/// `CrossAttnDownBlock3D` (with attention) or `DownBlock3D`.
#[derive(Debug, Clone)]
pub struct DownBlock {
    pub layers: Vec<Layer>,
    pub downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        num_layers: usize,
        shape: BlockShape,
        attention: bool,
        downsample: bool,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|i| {
                Layer::new(
                    &vb,
                    i,
                    if i == 0 { c_in } else { c_out },
                    c_out,
                    shape,
                    attention,
                )
            })
            .collect::<Result<_>>()?;
        let downsampler = if downsample {
            Some(Downsample2D::new(vb.pp("downsamplers.0"), c_out)?)
        } else {
            None
        };
        Ok(Self {
            layers,
            downsampler,
        })
    }

    /// Returns the output and the skip states (one per layer, plus the downsampled output).
    pub fn forward(&self, x: &Tensor, inputs: BlockInputs) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = x.clone();
        let mut skips = Vec::with_capacity(self.layers.len() + 1);
        for layer in &self.layers {
            x = layer.forward(x, inputs)?;
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = per_frame_chunks(&x, inputs.opts.conv_frame_chunk, |x, _, _| down.forward(x))?;
            skips.push(x.clone());
        }
        Ok((x, skips))
    }
}

/// `UNetMidBlock3DCrossAttn` with one attention layer: resnet, temporal conv, spatial and
/// temporal transformers, resnet, temporal conv.
#[derive(Debug, Clone)]
pub struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    temp_convs: [TemporalConvLayer; 2],
    attention: Transformer2DModel,
    temp_attention: TransformerTemporalModel,
}

impl MidBlock {
    pub fn new(vb: VarBuilder, channels: usize, s: BlockShape) -> Result<Self> {
        let resnet = |i: &str| {
            ResnetBlock2D::new(
                vb.pp("resnets").pp(i),
                channels,
                channels,
                s.temb_channels,
                s.groups,
                RESNET_EPS,
            )
        };
        let temp_conv =
            |i: &str| TemporalConvLayer::new(vb.pp("temp_convs").pp(i), channels, s.groups);
        let heads = channels / s.head_dim;
        Ok(Self {
            resnets: [resnet("0")?, resnet("1")?],
            temp_convs: [temp_conv("0")?, temp_conv("1")?],
            attention: Transformer2DModel::new(
                vb.pp("attentions.0"),
                channels,
                heads,
                s.head_dim,
                s.groups,
                s.cross_attention_dim,
            )?,
            temp_attention: TransformerTemporalModel::new(
                vb.pp("temp_attentions.0"),
                channels,
                heads,
                s.head_dim,
                s.groups,
            )?,
        })
    }

    /// Each intermediate is freed once the next exists.
    pub fn forward(&self, x: &Tensor, inputs: BlockInputs) -> Result<Tensor> {
        let pixel_chunk = inputs.opts.temporal_pixel_chunk;
        let mut x = resnet_in_frame_chunks(&self.resnets[0], x, inputs)?;
        x = self.temp_convs[0].forward_chunked(&x, inputs.frames, pixel_chunk)?;
        x = self.attention.forward(&x, inputs.context, inputs.opts)?;
        x = self
            .temp_attention
            .forward(&x, inputs.frames, inputs.opts)?;
        x = resnet_in_frame_chunks(&self.resnets[1], &x, inputs)?;
        self.temp_convs[1].forward_chunked(&x, inputs.frames, pixel_chunk)
    }
}

/// `CrossAttnUpBlock3D` (with attention) or `UpBlock3D`: each layer first concatenates one skip.
#[derive(Debug, Clone)]
pub struct UpBlock {
    pub layers: Vec<Layer>,
    pub upsampler: Option<Upsample2D>,
}

/// Channel counts of an up block, as diffusers' `get_up_block` receives them.
#[derive(Debug, Clone, Copy)]
pub struct UpChannels {
    /// Channels of the matching down block's input (the last skip's width).
    pub input: usize,
    pub output: usize,
    /// Channels arriving from the previous up block.
    pub prev_output: usize,
}

impl UpBlock {
    pub fn new(
        vb: VarBuilder,
        ch: UpChannels,
        num_layers: usize,
        shape: BlockShape,
        attention: bool,
        upsample: bool,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|i| {
                let skip = if i == num_layers - 1 {
                    ch.input
                } else {
                    ch.output
                };
                let from_below = if i == 0 { ch.prev_output } else { ch.output };
                Layer::new(&vb, i, from_below + skip, ch.output, shape, attention)
            })
            .collect::<Result<_>>()?;
        let upsampler = if upsample {
            Some(Upsample2D::new(vb.pp("upsamplers.0"), ch.output)?)
        } else {
            None
        };
        Ok(Self { layers, upsampler })
    }

    /// `skips` in the order the down path produced them; they are consumed from the back.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        inputs: BlockInputs,
        upsample_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        if skips.len() != self.layers.len() {
            candle_core::bail!(
                "up block expects {} skip states, got {}",
                self.layers.len(),
                skips.len()
            );
        }
        let mut x = x.clone();
        for (layer, skip) in self.layers.iter().zip(skips.iter().rev()) {
            x = Tensor::cat(&[&x, skip], 1)?;
            x = layer.forward(x, inputs)?;
        }
        match &self.upsampler {
            Some(up) => per_frame_chunks(&x, inputs.opts.conv_frame_chunk, |x, _, _| {
                up.forward(x, upsample_size)
            }),
            None => Ok(x),
        }
    }
}
