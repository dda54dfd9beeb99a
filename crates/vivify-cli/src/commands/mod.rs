pub mod bench_ops;
pub mod bench_unet;
pub mod check_model;
pub mod doctor;
pub mod download;
pub mod generate;
pub mod plan;
pub mod serve;
