//! Fetch a diffusers model repository from the Hugging Face hub into the standard Hugging Face
//! cache (the layout `huggingface_hub` uses, so both tools share downloads), and resolve it
//! offline.
//!
//! ```text
//! {cache}/models--{org}--{name}/
//!     blobs/{etag}                          file contents, named by ETag (sha256 for LFS files)
//!     refs/{revision}                       the commit sha the revision pointed to
//!     snapshots/{sha}/{path}                relative symlink to ../../blobs/{etag} (one ../ per level)
//! {cache}/.locks/models--{org}--{name}/{etag}.lock
//! ```
//!
//! The entry point is [`snapshot`]; [`HubConfig::from_env`] reads the same environment variables
//! as `huggingface_hub`; [`FileSelection`] picks what a diffusers pipeline needs;
//! [`indicatif_progress`] draws per-file bars from the [`DownloadEvent`]s.
//!
//! ```no_run
//! use vivify_hub::{FileSelection, HubConfig, indicatif_progress, snapshot};
//!
//! let config = HubConfig::from_env();
//! let bars = indicatif_progress(indicatif::MultiProgress::new());
//! let dir = snapshot(&config, "ali-vilab/i2vgen-xl", "main", &FileSelection::diffusers(true), &bars)?;
//! println!("{}", dir.join("model_index.json").display());
//! # Ok::<(), vivify_hub::HubError>(())
//! ```

mod config;
mod download;
mod error;
mod progress;
mod select;

pub use config::{HubConfig, cache_dir_from_vars, hf_home_from_vars};
pub use download::{repo_folder_name, snapshot};
pub use error::{HubError, Result};
pub use progress::{DownloadEvent, indicatif_progress};
pub use select::FileSelection;
