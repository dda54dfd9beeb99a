//! safetensors checkpoints: read the headers, check every tensor against a model's spec, and
//! hand the files to candle for loading in the compute dtype.

use super::TensorSpec;
use crate::{Error, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A tensor as a safetensors header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub file: PathBuf,
}

/// The tensors of one model component, possibly spread over several shard files.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub files: Vec<PathBuf>,
    pub tensors: BTreeMap<String, StoredTensor>,
}

/// Upper bound on a safetensors header; real ones are well under 1 MiB.
const MAX_HEADER_BYTES: u64 = 100 << 20;
/// Storage dtypes that load into f32, f16 or bf16 without loss of meaning.
const FLOAT_DTYPES: [&str; 3] = ["F32", "F16", "BF16"];

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad_file(path: &Path, message: impl Into<String>) -> Error {
    Error::Weights {
        path: path.display().to_string(),
        message: message.into(),
    }
}

#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

fn read_header(path: &Path) -> Result<BTreeMap<String, StoredTensor>> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io_err(path))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(bad_file(
            path,
            format!("not a safetensors file (header of {len} bytes)"),
        ));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(io_err(path))?;
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad_file(path, format!("unreadable safetensors header: {e}")))?;
    let mut out = BTreeMap::new();
    // A download cut short keeps its header: the data must reach as far as the header says.
    let data_len = file
        .metadata()
        .map_err(io_err(path))?
        .len()
        .saturating_sub(8 + len);
    for (name, value) in raw {
        if name == "__metadata__" {
            continue;
        }
        let entry: HeaderEntry = serde_json::from_value(value)
            .map_err(|e| bad_file(path, format!("tensor {name}: {e}")))?;
        if entry.data_offsets[1] > data_len {
            return Err(bad_file(
                path,
                format!(
                    "truncated: tensor {name} ends at byte {} of the data, the file holds {data_len} (re-download it)",
                    entry.data_offsets[1]
                ),
            ));
        }
        out.insert(
            name,
            StoredTensor {
                dtype: entry.dtype,
                shape: entry.shape,
                file: path.to_path_buf(),
            },
        );
    }
    Ok(out)
}

/// The weight files of a component directory: `{stem}[.{variant}].safetensors`, or the shards
/// listed by `{stem}.safetensors.index[.{variant}].json`. With a variant, falls back to the
/// plain files when the variant is absent.
pub fn find_weight_files(dir: &Path, stem: &str, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut candidates = Vec::new();
    if let Some(v) = variant {
        candidates.push((
            format!("{stem}.{v}.safetensors"),
            format!("{stem}.safetensors.index.{v}.json"),
        ));
    }
    candidates.push((
        format!("{stem}.safetensors"),
        format!("{stem}.safetensors.index.json"),
    ));
    for (single, index) in &candidates {
        let single = dir.join(single);
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index = dir.join(index);
        if index.is_file() {
            return shards_of(&index);
        }
    }
    Err(bad_file(
        dir,
        format!(
            "no weights found: expected {}",
            candidates
                .iter()
                .map(|c| c.0.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    ))
}

fn shards_of(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let parsed: Index = crate::config::read_json(index)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = parsed.weight_map.values().map(|f| dir.join(f)).collect();
    files.sort();
    files.dedup();
    Ok(files)
}

impl Checkpoint {
    /// Reads the headers of `files` (no tensor data is read).
    pub fn open(files: &[PathBuf]) -> Result<Self> {
        if files.is_empty() {
            return Err(Error::InvalidArgument {
                field: "weights",
                message: "no checkpoint files given".into(),
            });
        }
        let mut tensors = BTreeMap::new();
        for file in files {
            for (name, t) in read_header(file)? {
                if let Some(previous) = tensors.insert(name.clone(), t) {
                    return Err(bad_file(
                        file,
                        format!(
                            "tensor {name} is also stored in {}",
                            previous.file.display()
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            files: files.to_vec(),
            tensors,
        })
    }

    /// Every way the checkpoint differs from `spec`: missing, unexpected and mis-shaped tensors,
    /// and tensors stored in a dtype that is not a float. Empty when they agree.
    pub fn mismatches(&self, spec: &[TensorSpec]) -> Vec<String> {
        let mut problems = Vec::new();
        let expected: BTreeMap<&str, &[usize]> = spec
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
            .collect();
        for (name, shape) in &expected {
            match self.tensors.get(*name) {
                None => problems.push(format!("missing tensor {name} (expected shape {shape:?})")),
                Some(t) if t.shape != *shape => problems.push(format!(
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    t.shape
                )),
                Some(t) if !FLOAT_DTYPES.contains(&t.dtype.as_str()) => problems.push(format!(
                    "tensor {name} is stored as {}, expected one of F32, F16, BF16",
                    t.dtype
                )),
                Some(_) => {}
            }
        }
        for (name, t) in &self.tensors {
            if !expected.contains_key(name.as_str()) {
                problems.push(format!("unexpected tensor {name} (shape {:?})", t.shape));
            }
        }
        problems
    }

    /// Checks the checkpoint against `spec` and returns a builder that loads its tensors
    /// converted to `dtype` on `device`.
    pub fn var_builder(
        &self,
        spec: &[TensorSpec],
        dtype: DType,
        device: &Device,
    ) -> Result<VarBuilder<'static>> {
        let problems = self.mismatches(spec);
        if !problems.is_empty() {
            return Err(Error::CheckpointMismatch(format!(
                "{} problem(s) in {}:\n  {}",
                problems.len(),
                self.files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                problems.join("\n  ")
            )));
        }
        // SAFETY: the files are memory-mapped read-only; vivify does not modify weight files
        // while a model is loaded from them.
        Ok(unsafe { VarBuilder::from_mmaped_safetensors(&self.files, dtype, device)? })
    }
}
