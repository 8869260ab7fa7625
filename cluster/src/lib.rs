//! What Switchboard edges and routers share about the cluster: who the
//! live routers are and which owns a topic, how to reach NATS, how the
//! internal plane proves the cluster secret, and what every NATS subject
//! is called.
//!
//! - [`view`]: live routers, tenant pools, rendezvous ownership.
//! - [`membership`]: routers announce themselves on NATS; everyone watches.
//! - [`nats`]: connecting to NATS, authenticated, with the events counted.
//! - [`subjects`]: every NATS subject, internal and API, in one place.
//! - [`nats_session`]: the NATS transport's session protocol (verdicts,
//!   sealed frames), both ends.
//! - [`trust`]: cluster proofs checked and made, mutual TLS configuration.
//! - [`settings`]: the cluster flags and env vars edges and routers share.
//! - [`metrics`]: the cluster machinery's metrics, registered by both.
//! - [`local`]: a router in this process, as the in-process transport
//!   sees it.
#![forbid(unsafe_code)]

pub mod local;
pub mod membership;
pub mod metrics;
pub mod nats;
pub mod nats_session;
pub mod settings;
pub mod subjects;
pub mod trust;
pub mod view;

pub use local::{LocalAttachError, LocalRouter};
pub use settings::{ClusterSettings, TransportKind};
pub use view::{DEFAULT_POOL, PoolsError, RouterInfo, TenantPools, View};
