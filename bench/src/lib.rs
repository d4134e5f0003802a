//! `routing-bench`: how much faster users get their tokens under each routing
//! policy, measured in virtual time.
//!
//! A deterministic discrete-event simulation ([`des`]) of N pods, each the
//! simulator's own engine (`vllm_sim::engine`), a modelled collector
//! ([`collector`]) that scrapes them every 50 ms, and R gateway replicas that
//! route every request with a [`policy`]: random, round-robin, least-request,
//! GIE's picker in its shipped default profile and two opt-in profiles
//! ([`gie`], one shared picker per pool as deployed), the [`oracle`] (exact
//! engine state: the bound), or ours, the filter's own scheduler linked
//! natively ([`ours`]). [`workload`] generates the request streams, [`metrics`]
//! and [`report`] turn runs into tables, [`plot`] into SVG charts, and [`sweep`]
//! drives the load sweeps. See docs/ROUTING.md.

pub mod collector;
pub mod des;
pub mod gie;
pub mod metrics;
pub mod oracle;
pub mod ours;
pub mod plot;
pub mod policy;
pub mod report;
pub mod rng;
pub mod seeds;
pub mod simulation;
pub mod stats;
pub mod sweep;
pub mod text;
pub mod workload;
