//! End-to-end orchestration: real processes (simulated pods, the collector,
//! Envoy 1.40 with the filter) on loopback, for the `envoy_*` tests, the demo and
//! the overhead benchmark.

pub mod artifacts;
pub mod components;
pub mod edge;
pub mod envoy_config;
pub mod http;
pub mod load;
pub mod pods;
pub mod ports;
pub mod process;
pub mod recipes;
pub mod scenarios;
pub mod stack;
pub mod wait;
