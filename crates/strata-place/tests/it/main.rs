//! Integration tests of the placement engine (one binary, modules by concern).

mod build;
mod explain;
mod plan;
mod props;
mod props_flows;
