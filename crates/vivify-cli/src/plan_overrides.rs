//! `--plan KEY=VALUE`: single execution-plan choices set by hand, over what the planner picks.

use anyhow::{Context, Result, bail};
use vivify_core::pipeline::plan::{ExecutionPlan, Residency};

/// The keys `--plan` accepts, with what they set.
pub const KEYS: [(&str, &str); 9] = [
    (
        "attention-query-chunk",
        "queries per attention score matrix",
    ),
    ("attention-head-chunk", "batch·head rows per attention pass"),
    ("ff-chunk", "tokens per feed-forward pass"),
    ("frame-chunk", "frames per spatial-transformer pass"),
    ("pixel-chunk", "pixel columns per temporal-transformer pass"),
    (
        "conv-frame-chunk",
        "frames per pass of the resnet blocks and 2-D convolutions",
    ),
    (
        "vae-row-band",
        "rows per band of the VAE decoder's full-size layers",
    ),
    (
        "sequential-guidance",
        "true: guidance as two batch-1 passes",
    ),
    (
        "residency",
        "all: every model resident; staged: models loaded per stage; streamed[:N]: also the UNet's blocks streamed from host memory, N on the device (default 2)",
    ),
];

/// A chunk size: a positive count, or `off`/`none` for no chunking.
fn chunk(key: &str, value: &str) -> Result<Option<usize>> {
    match value {
        "off" | "none" => Ok(None),
        v => {
            let n: usize = v.parse().with_context(|| {
                format!("--plan {key}={v}: expected a positive number or `off`")
            })?;
            if n == 0 {
                bail!("--plan {key}=0: a chunk must be at least 1 (or `off`)");
            }
            Ok(Some(n))
        }
    }
}

/// Applies `KEY=VALUE` overrides in order.
pub fn apply(plan: &mut ExecutionPlan, overrides: &[String]) -> Result<()> {
    for item in overrides {
        let (key, value) = item
            .split_once('=')
            .with_context(|| format!("--plan {item}: expected KEY=VALUE"))?;
        let c = &mut plan.compute;
        match key {
            "attention-query-chunk" => c.attention_query_chunk = chunk(key, value)?,
            "attention-head-chunk" => c.attention_head_chunk = chunk(key, value)?,
            "ff-chunk" => c.feed_forward_chunk = chunk(key, value)?,
            "frame-chunk" => c.spatial_frame_chunk = chunk(key, value)?,
            "pixel-chunk" => c.temporal_pixel_chunk = chunk(key, value)?,
            "conv-frame-chunk" => c.conv_frame_chunk = chunk(key, value)?,
            "vae-row-band" => c.vae_row_band = chunk(key, value)?,
            "sequential-guidance" => {
                plan.sequential_guidance = value
                    .parse()
                    .with_context(|| format!("--plan {item}: expected true or false"))?
            }
            "residency" => {
                plan.residency = Residency::parse(value).with_context(|| {
                    format!("--plan {item}: expected all, staged, streamed or streamed:N (N >= 1)")
                })?
            }
            other => {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                bail!(
                    "--plan {other}: unknown key; known keys: {}",
                    known.join(", ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(items: &[&str]) -> Result<ExecutionPlan> {
        let mut plan = ExecutionPlan::default();
        apply(
            &mut plan,
            &items.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )?;
        Ok(plan)
    }

    #[test]
    fn sets_each_choice() {
        let plan = overrides(&[
            "attention-query-chunk=1024",
            "attention-head-chunk=8",
            "ff-chunk=512",
            "frame-chunk=4",
            "pixel-chunk=off",
            "conv-frame-chunk=2",
            "vae-row-band=16",
            "sequential-guidance=true",
            "residency=streamed:3",
        ])
        .unwrap();
        assert_eq!(
            plan.residency,
            Residency::StreamedUnet { resident_blocks: 3 }
        );
        assert_eq!(
            overrides(&["residency=staged"]).unwrap().residency,
            Residency::Staged
        );
        assert_eq!(plan.compute.attention_query_chunk, Some(1024));
        assert_eq!(plan.compute.attention_head_chunk, Some(8));
        assert_eq!(plan.compute.feed_forward_chunk, Some(512));
        assert_eq!(plan.compute.spatial_frame_chunk, Some(4));
        assert_eq!(plan.compute.temporal_pixel_chunk, None);
        assert_eq!(plan.compute.conv_frame_chunk, Some(2));
        assert_eq!(plan.compute.vae_row_band, Some(16));
        assert!(plan.sequential_guidance);
    }

    #[test]
    fn bad_items_are_named() {
        for (item, expected) in [
            ("nonsense", "expected KEY=VALUE"),
            ("warp-drive=on", "unknown key"),
            ("ff-chunk=0", "at least 1"),
            ("ff-chunk=many", "positive number"),
            ("sequential-guidance=maybe", "true or false"),
            ("residency=streamed:0", "streamed:N"),
            ("residency=some", "expected all, staged"),
        ] {
            let err = overrides(&[item]).unwrap_err().to_string();
            assert!(err.contains(expected), "{item}: {err}");
        }
    }
}
