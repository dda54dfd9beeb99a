pub mod bench_unet;
pub mod check_model;
pub mod generate;
