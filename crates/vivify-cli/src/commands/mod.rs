pub mod bench_unet;
pub mod check_model;
pub mod download;
pub mod generate;
// Wired into args.rs / main.rs separately; until then nothing calls it.
pub mod plan;
pub mod serve;
