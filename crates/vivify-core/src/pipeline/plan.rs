//! The execution plan: how to run a request, chosen for speed within a memory budget. Every
//! choice here changes temporaries or where weights live, not results (beyond float rounding).

use crate::nn::compute::ComputeOptions;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct ExecutionPlan {
    /// Chunked attention and feed-forward inside the UNet.
    pub compute: ComputeOptions,
    /// Classifier-free guidance as two batch-1 UNet passes instead of one batch of two: half
    /// the UNet's activations, a little slower.
    pub sequential_guidance: bool,
    /// Which model weights stay on the device, and when. Absent in plans recorded before it
    /// existed, which ran everything resident.
    #[serde(default)]
    pub residency: Residency,
}

/// Where the weights of the four models live during a run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Residency {
    /// Every model loaded before the run and resident throughout (fastest; what a server that
    /// keeps its models warm does).
    #[default]
    AllResident,
    /// Each stage loads the models it runs and frees them after: the text and image encoders
    /// are gone before denoising, the VAE is held only while encoding and while decoding, the
    /// UNet only while denoising.
    Staged,
    /// Staged, and the UNet's down, mid and up blocks stay in host memory: each is copied to
    /// the device just before it runs and freed after, with at most `resident_blocks` blocks on
    /// the device at once (the running one and the next ones, prefetched).
    StreamedUnet { resident_blocks: usize },
}

/// The streaming window `streamed` means without a count: the running block and the next.
pub const DEFAULT_RESIDENT_BLOCKS: usize = 2;

impl Residency {
    /// Whether the run loads models per stage instead of holding all four.
    pub fn is_staged(self) -> bool {
        self != Residency::AllResident
    }

    /// The UNet blocks kept on the device when streaming (None: the whole UNet is resident).
    pub fn streamed_blocks(self) -> Option<usize> {
        match self {
            Residency::StreamedUnet { resident_blocks } => Some(resident_blocks.max(1)),
            _ => None,
        }
    }

    /// The short form plan summaries use: nothing for all resident, `staged`, `streamN`.
    pub fn code(self) -> Option<String> {
        match self {
            Residency::AllResident => None,
            Residency::Staged => Some("staged".into()),
            Residency::StreamedUnet { resident_blocks } => Some(format!("stream{resident_blocks}")),
        }
    }

    /// In words, for people.
    pub fn words(self) -> String {
        match self {
            Residency::AllResident => "all models resident".into(),
            Residency::Staged => "models loaded per stage".into(),
            Residency::StreamedUnet { resident_blocks } => format!(
                "models loaded per stage, UNet blocks streamed from host memory ({resident_blocks} on the device)"
            ),
        }
    }

    /// `all`, `staged`, `streamed` or `streamed:N` (N blocks on the device, at least 1), as
    /// `--plan residency=` takes it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "all" | "all-resident" => Some(Residency::AllResident),
            "staged" => Some(Residency::Staged),
            "streamed" => Some(Residency::StreamedUnet {
                resident_blocks: DEFAULT_RESIDENT_BLOCKS,
            }),
            t => {
                let n: usize = t.strip_prefix("streamed:")?.parse().ok()?;
                (n >= 1).then_some(Residency::StreamedUnet { resident_blocks: n })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residency_parses_and_round_trips() {
        assert_eq!(Residency::parse("all"), Some(Residency::AllResident));
        assert_eq!(Residency::parse("staged"), Some(Residency::Staged));
        assert_eq!(
            Residency::parse("streamed"),
            Some(Residency::StreamedUnet {
                resident_blocks: DEFAULT_RESIDENT_BLOCKS
            })
        );
        assert_eq!(
            Residency::parse("streamed:3"),
            Some(Residency::StreamedUnet { resident_blocks: 3 })
        );
        for bad in ["", "streamed:0", "streamed:x", "some"] {
            assert_eq!(Residency::parse(bad), None, "{bad}");
        }
        // Plans saved before residency existed read as all resident.
        let old: ExecutionPlan = serde_json::from_str(
            r#"{"compute": {"attention_query_chunk": null, "attention_head_chunk": null,
               "feed_forward_chunk": null, "spatial_frame_chunk": null,
               "temporal_pixel_chunk": null}, "sequential_guidance": false}"#,
        )
        .unwrap();
        assert_eq!(old.residency, Residency::AllResident);
        let plan = ExecutionPlan {
            residency: Residency::StreamedUnet { resident_blocks: 2 },
            ..Default::default()
        };
        let text = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<ExecutionPlan>(&text).unwrap(), plan);
    }
}
