//! Which weights are on the device during each stage, as the plan's residency has it: all four
//! models throughout; each stage's own models (staged); or, while denoising, the UNet's trunk
//! and a window of its blocks (streamed).

use super::estimate::{StageKind, Weights};
use crate::pipeline::plan::Residency;

/// Weight bytes resident during `stage` under `residency`. For a streamed UNet's denoising this
/// is the bound (the trunk and the largest window); `estimate_stage` counts the window the
/// streamer holds at the moment of the stage's peak instead.
pub fn resident_weights(weights: &Weights, residency: Residency, stage: StageKind) -> u64 {
    let own = match stage {
        StageKind::EncodeText => weights.text,
        StageKind::EncodeImage => weights.vision + weights.vae,
        StageKind::Denoise => weights.unet,
        StageKind::Decode => weights.vae,
    };
    match (residency, stage) {
        (Residency::AllResident, _) => weights.all(),
        (Residency::StreamedUnet { resident_blocks }, StageKind::Denoise) => {
            weights.unet_trunk + weights.unet_window(resident_blocks)
        }
        _ => own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{ModelConfigs, model_weights};
    use candle_core::DType;

    #[test]
    fn each_residency_holds_less() {
        let w = model_weights(&ModelConfigs::i2vgen_xl(), DType::F16).unwrap();
        // the trunk and the blocks add up to the UNet
        assert_eq!(w.unet_trunk + w.unet_blocks.iter().sum::<u64>(), w.unet);
        let mib = |b: u64| b >> 20;
        println!(
            "f16 MiB: unet {}, trunk {}, blocks {:?}, vae {}, text {}, vision {}",
            mib(w.unet),
            mib(w.unet_trunk),
            w.unet_blocks.iter().map(|&b| mib(b)).collect::<Vec<_>>(),
            mib(w.vae),
            mib(w.text),
            mib(w.vision)
        );
        let at = |r, s| resident_weights(&w, r, s);
        let streamed = |n| Residency::StreamedUnet { resident_blocks: n };
        for stage in [
            StageKind::EncodeText,
            StageKind::EncodeImage,
            StageKind::Denoise,
            StageKind::Decode,
        ] {
            assert_eq!(at(Residency::AllResident, stage), w.all());
            assert!(at(Residency::Staged, stage) < w.all());
        }
        assert_eq!(at(Residency::Staged, StageKind::Decode), w.vae);
        assert_eq!(at(Residency::Staged, StageKind::Denoise), w.unet);
        let (one, two) = (
            at(streamed(1), StageKind::Denoise),
            at(streamed(2), StageKind::Denoise),
        );
        assert!(one < two && two < w.unet, "{one} {two} {}", w.unet);
        // a window as long as the UNet holds all of it
        assert_eq!(at(streamed(100), StageKind::Denoise), w.unet);
    }
}
