//! A cluster for tests: private redis-server and nats-server, routers and
//! edges as separate processes on ephemeral ports, over gRPC or NATS.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http::{self, metric};
use crate::nats::NatsServer;
use crate::process::Process;
use crate::redis::RedisServer;

pub struct Cluster {
    pub redis: RedisServer,
    pub nats: NatsServer,
    /// The NATS URL every process gets (with the cluster user's
    /// credentials on a secured server).
    nats_url: String,
    pub routers: Vec<Process>,
    pub edges: Vec<Process>,
    transport: String,
    tenant_pools: String,
    /// Variables every process of the cluster gets besides the shared ones.
    extra_env: Vec<(&'static str, String)>,
    next_router: usize,
}

impl Cluster {
    /// Starts Redis, NATS, `routers` routers and `edges` edges, and waits
    /// until every edge has a link to every router.
    pub async fn start(transport: &str, routers: usize, edges: usize) -> Self {
        Self::with_pools(transport, &vec!["default"; routers], "", edges).await
    }

    /// Like [`Cluster::start`], with one router per entry of `pools` and
    /// `tenant_pools` (`tenant=pool,…`) on every process.
    pub async fn with_pools(
        transport: &str,
        pools: &[&str],
        tenant_pools: &str,
        edges: usize,
    ) -> Self {
        Self::with_env(transport, pools, tenant_pools, edges, &[]).await
    }

    /// Like [`Cluster::with_pools`], with `env` set on every process (for
    /// example raised rate limits for benchmarks).
    pub async fn with_env(
        transport: &str,
        pools: &[&str],
        tenant_pools: &str,
        edges: usize,
        env: &[(&'static str, String)],
    ) -> Self {
        let nats = NatsServer::start().await;
        let nats_url = nats.url();
        Self::on_nats(nats, nats_url, transport, pools, tenant_pools, edges, env).await
    }

    /// Like [`Cluster::start`], on a NATS server run from the shipped
    /// configuration (`deploy/nats/nats-server.conf`): every router and
    /// edge connects as its cluster user; backends must use theirs.
    pub async fn secured(transport: &str, routers: usize, edges: usize) -> Self {
        let nats = NatsServer::shipped().await;
        let nats_url = nats.cluster_url();
        let pools = vec!["default"; routers];
        Self::on_nats(nats, nats_url, transport, &pools, "", edges, &[]).await
    }

    async fn on_nats(
        nats: NatsServer,
        nats_url: String,
        transport: &str,
        pools: &[&str],
        tenant_pools: &str,
        edges: usize,
        env: &[(&'static str, String)],
    ) -> Self {
        let mut cluster = Self {
            redis: RedisServer::start().await,
            nats,
            nats_url,
            routers: Vec::new(),
            edges: Vec::new(),
            transport: transport.to_owned(),
            tenant_pools: tenant_pools.to_owned(),
            extra_env: env.to_vec(),
            next_router: 0,
        };
        for pool in pools {
            cluster.add_router(pool);
        }
        for i in 0..edges {
            cluster.add_edge(i);
        }
        cluster.wait_links(pools.len()).await;
        cluster.wait_views(pools.len()).await;
        cluster
    }

    /// Waits until every router that answers, and every edge, counts
    /// `routers` live routers, so all of them agree on who owns what.
    pub async fn wait_views(&self, routers: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        for admin in self.admins() {
            loop {
                let text = scrape(admin).await;
                let live = metric(&text, "switchboard_live_routers");
                if text.is_empty() || live as usize == routers {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a router never saw {routers} routers ({live} live)"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// What every process of the cluster shares (the secret and API key
    /// come from the process helpers).
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("SWITCHBOARD_NATS_URL", self.nats_url.clone()),
            ("SWITCHBOARD_TRANSPORT", self.transport.clone()),
            ("SWITCHBOARD_TENANT_POOLS", self.tenant_pools.clone()),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// Starts one more router in `pool`; its id is `router-<n>`.
    pub fn add_router(&mut self, pool: &str) -> &Process {
        let process = self.router_process(self.next_router, pool);
        self.next_router += 1;
        self.routers.push(process);
        self.routers.last().expect("just pushed")
    }

    /// Starts router `router-<i>` of the default pool again (after it
    /// exited or was killed), as a new process with the same id.
    pub fn restart_router(&mut self, i: usize) -> &Process {
        self.routers[i] = self.router_process(i, "default");
        &self.routers[i]
    }

    fn router_process(&self, i: usize, pool: &str) -> Process {
        let mut env = self.env();
        env.push(("SWITCHBOARD_REDIS_URL", self.redis.url()));
        env.push(("SWITCHBOARD_ROUTER_ID", format!("router-{i}")));
        env.push(("SWITCHBOARD_POOL", pool.to_owned()));
        crate::switchboard::router(&[], &env)
    }

    fn add_edge(&mut self, i: usize) {
        let mut env = self.env();
        env.push(("SWITCHBOARD_EDGE_ID", format!("edge-{i}")));
        let process = crate::switchboard::edge_with_env(&[], &env);
        self.edges.push(process);
    }

    /// The admin listeners of every router, then every edge.
    pub fn admins(&self) -> Vec<SocketAddr> {
        self.routers
            .iter()
            .map(|r| r.addr("router-admin"))
            .chain(self.edges.iter().map(|e| e.addr("edge-admin")))
            .collect()
    }

    pub fn edge(&self, i: usize) -> SocketAddr {
        self.edges[i].addr("edge")
    }

    pub fn router_api(&self, i: usize) -> SocketAddr {
        self.routers[i].addr("router-api")
    }

    /// Waits until every live edge has `routers` router links up.
    pub async fn wait_links(&self, routers: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        for edge in &self.edges {
            loop {
                let text = scrape(edge.addr("edge-admin")).await;
                let up = metric(&text, "switchboard_edge_router_links_up");
                if up as usize == routers {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "edge never linked to {routers} routers ({up} up)"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Index `n` of the router (`router-<n>`, as [`Cluster`] names them) that
/// owns `topic` while routers `0..routers` of one pool are alive: what
/// every edge and router computes from that view.
pub fn owner_of(topic: &switchboard_proto::Topic, routers: usize) -> usize {
    let ids: Vec<String> = (0..routers).map(|i| format!("router-{i}")).collect();
    switchboard_proto::ownership::owner_index(&ids, topic.stable_hash())
        .expect("at least one router")
}

/// Polls the metrics of admin listener `admin` until `series` reads
/// `value`; returns that text. Panics after 60 s.
pub async fn wait_metric(admin: SocketAddr, series: &str, value: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(admin).await;
        if metric(&text, series) == value {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{admin}: {series} = {} never became {value}",
            metric(&text, series)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Prometheus text of an admin listener ("" when it does not answer).
pub async fn scrape(admin: SocketAddr) -> String {
    if tokio::net::TcpStream::connect(admin).await.is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&http::get(admin, "/metrics", &[]).await.body).into_owned()
}
