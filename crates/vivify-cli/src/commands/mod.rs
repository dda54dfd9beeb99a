pub mod bench_unet;
pub mod check_model;
pub mod download;
pub mod generate;
