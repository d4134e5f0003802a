//! `vllm-sim`: a vLLM-compatible model server simulator.
//!
//! [`engine`] is a pure, virtual-time model of vLLM V1's continuous batching
//! (usable by benchmarks without any I/O); the rest serves it over vLLM's
//! OpenAI-compatible HTTP API with vLLM's `/metrics`.

pub mod config;
pub mod engine;
pub mod faults;
pub mod metrics;
pub mod openai;
pub mod server;
