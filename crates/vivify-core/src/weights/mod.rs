//! Weights: the tensor list a model expects, checkpoint checks against it, loading, and
//! deterministic random weights for tests and benchmarks.

mod checkpoint;
mod random;
mod spec;
mod tiny;

pub use checkpoint::{Checkpoint, StoredTensor, find_weight_files};
pub use random::random_weights;
pub use spec::{TensorSpec, spec_of, unet_spec};
pub use tiny::{
    TINY_SEED, random_unet, tiny_clip_tokenizer, tiny_configs, tiny_image_encoder, tiny_models,
    tiny_text_encoder, tiny_unet, tiny_unet_config, tiny_unet_host, tiny_vae,
};
