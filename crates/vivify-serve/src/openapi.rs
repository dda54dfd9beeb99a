//! The API description served at `/api/openapi.json` (hand-written; a test checks it names
//! every route the router has).

pub const SPEC: &str = include_str!("../assets/openapi.json");
