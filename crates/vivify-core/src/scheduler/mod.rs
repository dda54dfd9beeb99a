pub mod ddim;

pub use ddim::{
    BetaSchedule, DdimConfig, DdimScheduler, DdimStepOutput, PredictionType, TimestepSpacing,
    gaussian_noise,
};
