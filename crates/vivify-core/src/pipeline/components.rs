//! What a run takes its models from: models the caller holds (all resident), or a store that
//! loads each component when its stage starts and frees it when the stage ends.

use super::models::{I2VGenXLModels, check_compatible};
use super::plan::Residency;
use super::store::ModelStore;
use crate::Result;
use crate::memory::ModelConfigs;
use crate::models::clip::{ClipTextModel, ClipVisionModelWithProjection};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::unet::UNetModel;
use crate::models::vae::AutoencoderKL;
use crate::scheduler::DdimConfig;
use std::ops::Deref;

#[derive(Clone, Copy)]
pub enum Components<'a> {
    /// Models the caller keeps loaded: every stage borrows them, whatever the plan's residency
    /// (what the caller holds stays held).
    Resident(&'a I2VGenXLModels),
    /// Components loaded per stage, as the plan's residency says.
    Store(&'a ModelStore),
}

/// A component for one stage: borrowed from resident models, or loaded for the stage and
/// freed when dropped.
pub enum Held<'a, T: ?Sized> {
    Borrowed(&'a T),
    Loaded(Box<T>),
}

impl<T: ?Sized> Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Held::Borrowed(t) => t,
            Held::Loaded(t) => t,
        }
    }
}

impl<'a> Components<'a> {
    pub fn configs(&self) -> Result<ModelConfigs> {
        match self {
            Components::Resident(m) => Ok(m.configs()),
            Components::Store(s) => s.configs(),
        }
    }

    /// Checks that the components fit together before any work.
    pub fn check_compatible(&self) -> Result<()> {
        check_compatible(&self.configs()?)
    }

    pub fn scheduler(&self) -> Result<DdimConfig> {
        match self {
            Components::Resident(m) => Ok(m.scheduler.clone()),
            Components::Store(s) => s.scheduler(),
        }
    }

    pub fn tokenizer(&self) -> Result<Held<'a, ClipTokenizer>> {
        Ok(match self {
            Components::Resident(m) => Held::Borrowed(&m.tokenizer),
            Components::Store(s) => Held::Loaded(Box::new(s.tokenizer()?)),
        })
    }

    pub fn text_encoder(&self) -> Result<Held<'a, ClipTextModel>> {
        Ok(match self {
            Components::Resident(m) => Held::Borrowed(&m.text_encoder),
            Components::Store(s) => Held::Loaded(Box::new(s.text_encoder()?)),
        })
    }

    pub fn image_encoder(&self) -> Result<Held<'a, ClipVisionModelWithProjection>> {
        Ok(match self {
            Components::Resident(m) => Held::Borrowed(&m.image_encoder),
            Components::Store(s) => Held::Loaded(Box::new(s.image_encoder()?)),
        })
    }

    pub fn vae(&self) -> Result<Held<'a, AutoencoderKL>> {
        Ok(match self {
            Components::Resident(m) => Held::Borrowed(&m.vae),
            Components::Store(s) => Held::Loaded(Box::new(s.vae()?)),
        })
    }

    /// The UNet for the denoising stage: whole, or streamed block by block when `residency`
    /// asks for it and the components come from a store.
    pub fn unet(&self, residency: Residency) -> Result<Held<'a, dyn UNetModel + 'a>> {
        Ok(match (self, residency.streamed_blocks()) {
            (Components::Resident(m), _) => Held::Borrowed(&m.unet),
            (Components::Store(s), None) => Held::Loaded(Box::new(s.unet()?)),
            (Components::Store(s), Some(n)) => Held::Loaded(Box::new(s.streamed_unet(n)?)),
        })
    }
}
