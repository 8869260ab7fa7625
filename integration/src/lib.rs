//! Whole-system tests of Switchboard, kept apart from the crates they
//! test (as linkerd keeps `app/integration`): they start edges, routers,
//! NATS and Redis as separate processes and read the deployment files and
//! the Helm chart, so they need the edge's and the router's types at once,
//! which the edge crate itself must not depend on.
//!
//! The tests live in `tests/`:
//! - `cluster`: 3 routers and 2 edges over gRPC and over NATS: ownership,
//!   failover, replay, tenant pools.
//! - `grpc_cluster`: one delivery frame per edge per message.
//! - `cluster_trust`: the internal plane refuses whoever cannot prove the
//!   cluster secret (or a certificate of the cluster's CA).
//! - `nats_session_queue`: a stalled NATS edge session is dropped at its
//!   queue bound while other edges go on.
//! - `deploy`: the compose file, Prometheus rules and dashboards against
//!   what running processes export.
//! - `helm`: the chart's schema, rendered objects and tools.
#![forbid(unsafe_code)]
