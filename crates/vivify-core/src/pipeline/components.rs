//! What a run takes its models from: models the caller holds, or a store that loads each
//! component when its stage starts and frees it when the stage ends (or, for an all-resident
//! plan, all of them up front, until a step down to staged weights frees them).

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

pub enum Components<'a> {
    /// Models the caller keeps loaded: every stage borrows them, whatever the plan's residency
    /// (what the caller holds stays held, so the run has no rungs that change residency).
    Resident(&'a I2VGenXLModels),
    /// Components from a store: an all-resident plan loads them all when the run starts, other
    /// plans load each stage's models as the plan's residency says.
    Store(&'a ModelStore),
    /// The caller's warm, all-resident models (loaded from `store` if None) and the store they
    /// came from: a plan that loads models per stage, from the start or after a step down,
    /// frees them (leaving None) so the memory they held is there for the run.
    Warm {
        models: &'a mut Option<I2VGenXLModels>,
        store: &'a ModelStore,
    },
}

impl<'a> Components<'a> {
    fn configs(&self) -> Result<ModelConfigs> {
        match self {
            Components::Resident(m) => Ok(m.configs()),
            Components::Store(store) | Components::Warm { store, .. } => store.configs(),
        }
    }

    /// Checks that the components fit together before any work.
    pub(super) fn check_compatible(&self) -> Result<()> {
        check_compatible(&self.configs()?)
    }

    /// The models a run of `residency` starts with: from a store, all four loaded (into `own`
    /// unless the caller lent a slot) for an all-resident plan, none otherwise.
    pub(super) fn open(
        self,
        residency: Residency,
        own: &'a mut Option<I2VGenXLModels>,
    ) -> Result<RunModels<'a>> {
        let (store, resident) = match self {
            Components::Resident(m) => return Ok(RunModels::Fixed(m)),
            Components::Store(store) => (store, own),
            Components::Warm { models, store } => (store, models),
        };
        if residency.is_staged() {
            *resident = None;
        } else if resident.is_none() {
            *resident = Some(store.load_all()?);
        }
        Ok(RunModels::Store { store, resident })
    }
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

/// The models of a run as it goes.
pub(super) enum RunModels<'a> {
    /// The caller's: every stage borrows them.
    Fixed(&'a I2VGenXLModels),
    /// From `store`: all four held in `resident` while the plan keeps them resident, otherwise
    /// each stage loads its own.
    Store {
        store: &'a ModelStore,
        resident: &'a mut Option<I2VGenXLModels>,
    },
}

impl RunModels<'_> {
    /// The component `pick` chooses from resident models, or `load`s from the store.
    fn component<T>(
        &self,
        pick: impl FnOnce(&I2VGenXLModels) -> &T,
        load: impl FnOnce(&ModelStore) -> Result<T>,
    ) -> Result<Held<'_, T>> {
        Ok(match self {
            RunModels::Fixed(m) => Held::Borrowed(pick(m)),
            RunModels::Store { resident, store } => match resident.as_ref() {
                Some(m) => Held::Borrowed(pick(m)),
                None => Held::Loaded(Box::new(load(store)?)),
            },
        })
    }

    /// Whether the run can change where its weights live: only models it can reload can be
    /// freed or streamed.
    pub(super) fn can_change_residency(&self) -> bool {
        matches!(self, RunModels::Store { .. })
    }

    pub(super) fn scheduler(&self) -> Result<DdimConfig> {
        match self {
            RunModels::Fixed(m) => Ok(m.scheduler.clone()),
            RunModels::Store { store, .. } => store.scheduler(),
        }
    }

    pub(super) fn tokenizer(&self) -> Result<Held<'_, ClipTokenizer>> {
        self.component(|m| &m.tokenizer, ModelStore::tokenizer)
    }

    pub(super) fn text_encoder(&self) -> Result<Held<'_, ClipTextModel>> {
        self.component(|m| &m.text_encoder, ModelStore::text_encoder)
    }

    pub(super) fn image_encoder(&self) -> Result<Held<'_, ClipVisionModelWithProjection>> {
        self.component(|m| &m.image_encoder, ModelStore::image_encoder)
    }

    pub(super) fn vae(&self) -> Result<Held<'_, AutoencoderKL>> {
        self.component(|m| &m.vae, ModelStore::vae)
    }

    /// The VAE for a decode call of `residency`. While the run holds its models, the resident
    /// one; a staged (or lower) plan frees the others and keeps their VAE in `loaded`, or loads
    /// it from the store when the run holds none.
    pub(super) fn decoder<'s>(
        &'s mut self,
        residency: Residency,
        loaded: &'s mut Option<AutoencoderKL>,
    ) -> Result<&'s AutoencoderKL> {
        let (store, resident) = match self {
            RunModels::Fixed(m) => return Ok(&m.vae),
            RunModels::Store { store, resident } => (*store, resident),
        };
        if residency.is_staged()
            && let Some(models) = resident.take()
        {
            // A step down to staged weights: the UNet and the encoders go, the VAE stays.
            *loaded = Some(models.vae);
        }
        if let Some(m) = resident.as_ref() {
            return Ok(&m.vae);
        }
        if loaded.is_none() {
            *loaded = Some(store.vae()?);
        }
        Ok(loaded.as_ref().expect("loaded above"))
    }

    /// The UNet for a denoising step of `residency`. While the run holds its models, the
    /// resident one; the first step of a staged (or lower) plan frees them and keeps their UNet
    /// in `loaded`, where the store's UNet is reloaded whenever `residency` changes (the old one
    /// dropped first, so the two are never on the device together).
    pub(super) fn unet<'s>(
        &'s mut self,
        residency: Residency,
        loaded: &'s mut LoadedUnet,
    ) -> Result<&'s dyn UNetModel> {
        let (store, resident) = match self {
            RunModels::Fixed(m) => return Ok(&m.unet),
            RunModels::Store { store, resident } => (*store, resident),
        };
        if residency.is_staged()
            && let Some(models) = resident.take()
        {
            // A step down to staged weights: the encoders and the VAE go, the UNet stays.
            *loaded = Some((Residency::Staged, Box::new(models.unet)));
        }
        if let Some(m) = resident.as_ref() {
            return Ok(&m.unet);
        }
        if loaded.as_ref().map(|(r, _)| *r) != Some(residency) {
            *loaded = None;
            let unet: Box<dyn UNetModel> = match residency.streamed_blocks() {
                None => Box::new(store.unet()?),
                Some(n) => Box::new(store.streamed_unet(n)?),
            };
            *loaded = Some((residency, unet));
        }
        Ok(&*loaded.as_ref().expect("loaded above").1)
    }
}

/// The UNet a run loaded for denoising, and the residency it was loaded for.
pub(super) type LoadedUnet = Option<(Residency, Box<dyn UNetModel>)>;
