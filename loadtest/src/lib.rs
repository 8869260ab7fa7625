//! Switchboard's load harness: k6-style scenarios read from TOML files,
//! run by virtual users over real sockets, summarised with HDR latency
//! histograms and judged by thresholds.
//!
//! - [`scenario`]: the scenario file format; [`threshold`]: pass/fail rules.
//! - [`plan`]: a scenario as sockets to open and publishers to run.
//! - [`run`]: runs a plan in this process; [`procs`]: across processes.
//! - [`client`]: the WebSocket client; [`http`]: the HTTP client.
//! - [`deflate`]: the client's side of permessage-deflate.
//! - [`wire`]: each dialect's messages and how replies are read.
//! - [`stats`], [`summary`]: counters, histograms, the end summary.
//! - [`rss`]: memory of the server under test.
//! - [`recovery`]: sockets that drop and come back with their history
//!   position, and what they missed and got replayed.
//! - [`abuse`]: abusers that run beside a scenario, and runs with and
//!   without them compared.
//! - [`report`]: the benchmark table written into `docs/BENCHMARKS.md`.
//! - [`limits`]: the open-file limit.
//! - [`bench`]: `loadtest bench`, the standard suite against the baseline,
//!   standalone mode and a local cluster.
#![forbid(unsafe_code)]

pub mod abuse;
pub mod bench;
pub mod client;
pub mod deflate;
pub mod http;
pub use switchboard_common::fd_limit as limits;
pub mod plan;
pub mod procs;
pub mod recovery;
pub mod report;
pub mod rss;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod summary;
pub mod threshold;
pub mod wire;
