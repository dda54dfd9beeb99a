use std::collections::{BTreeMap, BTreeSet};

/// Which files of a diffusers repository to fetch.
///
/// Always: `model_index.json`, every `{component}/config.json`, `*/scheduler_config.json`,
/// `*/preprocessor_config.json`, tokenizer files (`tokenizer*/*.json`, `tokenizer*/merges.txt`,
/// `tokenizer*/vocab.txt`), and per component with a `config.json` its safetensors weights:
/// the `fp16` variant (`*.fp16.safetensors`, or a sharded `*.safetensors.index.fp16.json` /
/// `*.safetensors.fp16.index.json` with its shards) when the repo has it and `prefer_fp16` is
/// set, else the plain `*.safetensors` (or `*.safetensors.index.json` with its shards). A
/// component that only has the fp16 variant gets it either way. Never `.bin`, `.ckpt`, `.onnx`,
/// `.msgpack`. Shards are read from the index's `weight_map` once the index is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSelection {
    pub prefer_fp16: bool,
    /// More repo paths to fetch as they are (e.g. a README); they must exist in the repo.
    pub extra: Vec<String>,
}

impl Default for FileSelection {
    fn default() -> Self {
        Self::diffusers(true)
    }
}

/// Weights of one component, in one form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Weights {
    Single(Vec<String>),
    Index(Vec<String>),
}

impl Weights {
    pub(crate) fn files(&self) -> &[String] {
        match self {
            Weights::Single(f) | Weights::Index(f) => f,
        }
    }
}

impl FileSelection {
    /// What a diffusers pipeline needs.
    pub fn diffusers(prefer_fp16: bool) -> Self {
        Self {
            prefer_fp16,
            extra: Vec::new(),
        }
    }

    /// The selected paths among `files` (the repo's file list), sorted; index files are
    /// included, their shards are not (they come from the index).
    pub fn select<'a>(&self, files: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let files: BTreeSet<&str> = files
            .into_iter()
            .filter(|f| crate::download::is_safe_repo_path(f))
            .collect();
        let mut out: BTreeSet<String> = BTreeSet::new();
        for f in &files {
            if is_non_weight_needed(f) {
                out.insert(f.to_string());
            }
        }
        for (_, w) in self.weights_by_component(&files) {
            out.extend(w.files().iter().cloned());
        }
        for e in &self.extra {
            if files.contains(e.as_str()) {
                out.insert(e.clone());
            }
        }
        out.into_iter().collect()
    }

    /// The chosen weights per component directory (only directories with a `config.json`).
    pub(crate) fn weights_by_component(&self, files: &BTreeSet<&str>) -> BTreeMap<String, Weights> {
        let mut by_dir: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for f in files {
            if let Some((dir, name)) = f.split_once('/')
                && !name.contains('/')
            {
                by_dir.entry(dir).or_default().push(name);
            }
        }
        let mut out = BTreeMap::new();
        for (dir, names) in by_dir {
            if !names.contains(&"config.json") {
                continue;
            }
            let mut plain = Vec::new();
            let mut plain_index = Vec::new();
            let mut fp16 = Vec::new();
            let mut fp16_index = Vec::new();
            for n in names {
                let full = format!("{dir}/{n}");
                if let Some(stem) = n.strip_suffix(".safetensors") {
                    if is_shard(stem) {
                        continue;
                    }
                    match stem.split_once('.') {
                        None => plain.push(full),
                        Some((base, "fp16")) if !base.is_empty() => fp16.push(full),
                        Some(_) => {}
                    }
                } else if let Some(stem) = n.strip_suffix(".json") {
                    match stem.split_once(".safetensors.") {
                        Some((_, "index")) => plain_index.push(full),
                        Some((_, "index.fp16" | "fp16.index")) => fp16_index.push(full),
                        _ => {}
                    }
                }
            }
            let fp16 = pick(fp16, fp16_index);
            let plain = pick(plain, plain_index);
            let chosen = match (fp16, plain) {
                (Some(f), _) if self.prefer_fp16 => Some(f),
                (_, Some(p)) => Some(p),
                (f, None) => f,
            };
            if let Some(w) = chosen {
                out.insert(dir.to_string(), w);
            }
        }
        out
    }
}

fn pick(single: Vec<String>, index: Vec<String>) -> Option<Weights> {
    if !single.is_empty() {
        Some(Weights::Single(single))
    } else if !index.is_empty() {
        Some(Weights::Index(index))
    } else {
        None
    }
}

/// `name-00001-of-00002` or `name.fp16-00001-of-00002` (also with the variant after the shard).
fn is_shard(stem: &str) -> bool {
    let b = stem.as_bytes();
    // Look for "-DDDDD-of-DDDDD" anywhere.
    b.windows(15).any(|w| {
        w[0] == b'-'
            && w[1..6].iter().all(u8::is_ascii_digit)
            && &w[6..10] == b"-of-"
            && w[10..15].iter().all(u8::is_ascii_digit)
    })
}

/// Config, scheduler, tokenizer and feature-extractor files.
pub(crate) fn is_non_weight_needed(f: &str) -> bool {
    if f == "model_index.json" {
        return true;
    }
    let Some((dir, name)) = f.split_once('/') else {
        return false;
    };
    if name.contains('/') {
        return false;
    }
    if matches!(
        name,
        "config.json" | "scheduler_config.json" | "preprocessor_config.json"
    ) {
        return true;
    }
    dir.starts_with("tokenizer")
        && (name.ends_with(".json") || name == "merges.txt" || name == "vocab.txt")
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &[&str] = &[
        "README.md",
        "model_index.json",
        "i2vgen_xl.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.onnx",
        "text_encoder/config.json",
        "text_encoder/model.safetensors.index.json",
        "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model-00002-of-00002.safetensors",
        "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
        "image_encoder/config.json",
        "image_encoder/model.fp16.safetensors",
        "image_encoder/flax_model.msgpack",
        "scheduler/scheduler_config.json",
        "tokenizer/merges.txt",
        "tokenizer/vocab.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
        "feature_extractor/preprocessor_config.json",
        "assets/demo.safetensors",
        "../config.json",
        "../evil/config.json",
        "../evil/x.safetensors",
    ];

    #[test]
    fn fp16_preferred() {
        let got = FileSelection::diffusers(true).select(REPO.iter().copied());
        let want = [
            "feature_extractor/preprocessor_config.json",
            "image_encoder/config.json",
            "image_encoder/model.fp16.safetensors",
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.safetensors.index.fp16.json",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json",
            "tokenizer/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn plain_when_not_preferred() {
        let got = FileSelection::diffusers(false).select(REPO.iter().copied());
        assert!(got.contains(&"unet/diffusion_pytorch_model.safetensors".to_string()));
        assert!(!got.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".to_string()));
        assert!(got.contains(&"text_encoder/model.safetensors.index.json".to_string()));
        // Only the fp16 variant exists for the image encoder: take it.
        assert!(got.contains(&"image_encoder/model.fp16.safetensors".to_string()));
        assert!(
            got.iter()
                .all(|f| !f.ends_with(".bin") && !f.ends_with(".onnx") && !f.ends_with(".msgpack"))
        );
    }

    #[test]
    fn shard_names() {
        assert!(is_shard("model-00001-of-00002"));
        assert!(is_shard("model.fp16-00001-of-00002"));
        assert!(!is_shard("model.fp16"));
    }
}
