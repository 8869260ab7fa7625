//! Standalone mode: an edge and a router in one process, joined by the
//! in-process transport, with the in-memory store. What `make run` starts.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use switchboard_common::auth::{AuthSettings, Claims, Minter, claims};
use switchboard_common::net;
use switchboard_router::{HttpParts, RouterHttp, RouterNode};
use tokio_util::sync::CancellationToken;

use crate::settings::EdgeSettings;
use crate::transport::inproc::InProcess;
use switchboard_router::cluster::{DEFAULT_POOL, RouterInfo, TenantPools, View, membership};

/// How long sample tokens printed at start stay valid.
const SAMPLE_TTL_SECS: u64 = 24 * 3600;

pub async fn run(
    mut settings: EdgeSettings,
    shutdown: CancellationToken,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let generated = settings.auth.jwt_secret.is_none()
        && settings.auth.jwt_public_key.is_none()
        && settings.auth.jwt_jwks.is_none();
    if generated {
        settings.auth.jwt_secret = Some(random_secret());
    }
    let verifier = Arc::new(settings.auth.verifier().context("token settings")?);
    let store =
        switchboard_router::store_for(settings.redis_url.as_deref(), settings.presence.ttl_ms())
            .await?;
    let router_stop = CancellationToken::new();
    let mut config = settings.presence.node_config("standalone".to_owned());
    config.im = settings.im.config();
    let node = RouterNode::start(config, store.clone(), router_stop.clone());
    let api_listener = net::bind("router-api", &settings.router_api_listen_addr()).await?;
    let admin_listener = net::bind("router-admin", &settings.router_admin_listen_addr()).await?;
    let api_addr = api_listener.local_addr()?;
    let http = RouterHttp::spawn(
        HttpParts {
            node: node.clone(),
            store,
            verifier: Some(verifier.clone()),
            api_key: settings.api_key.clone(),
            http: settings.http.clone(),
            drain_timeout: settings.drain_timeout,
        },
        api_listener,
        admin_listener,
        router_stop.clone(),
    );
    let info = RouterInfo {
        id: node.id().to_owned(),
        grpc_addr: String::new(),
        api_addr: api_addr.to_string(),
        pool: DEFAULT_POOL.to_owned(),
        epoch: 0,
    };
    let in_process = node.clone();
    let routers = crate::Routers {
        edge_id: settings
            .edge_id
            .clone()
            .unwrap_or_else(|| "standalone".to_owned()),
        view: membership::fixed(View::new(vec![info])),
        pools: TenantPools::default(),
        connector: Arc::new(move |_: &RouterInfo| {
            Ok(Arc::new(InProcess::new(in_process.clone()))
                as Arc<dyn crate::transport::Transport>)
        }),
    };

    let welcome = Welcome {
        api: api_addr,
        im_path: settings.im_path(),
        secret: settings.auth.jwt_secret.clone().filter(|_| generated),
        minter: settings
            .auth
            .jwt_secret
            .as_deref()
            .map(|s| Minter::hs256(s.as_bytes())),
        auth: settings.auth.clone(),
    };
    let result = crate::serve(
        &settings,
        routers,
        verifier.clone(),
        shutdown,
        Some(welcome),
        metrics,
    )
    .await;
    router_stop.cancel();
    http.stop(settings.drain_timeout).await;
    result
}

fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What standalone mode prints after its listeners: URLs and sample tokens.
pub struct Welcome {
    api: SocketAddr,
    im_path: String,
    secret: Option<String>,
    minter: Option<Minter>,
    /// Sample tokens carry the audience and issuer these require, and live
    /// no longer than they allow.
    auth: AuthSettings,
}

fn local(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The sample principals, as the README's examples name them.
const GROUP_CLIENT: &str = "alice";
const USER: &str = "demo_user";
const APP: &str = "demo_app";
const DEVICE: &str = "demo_device";
const SERVICE: &str = "demo_backend";

impl Welcome {
    /// `export` lines for a shell: the secret (when this process made it)
    /// and a token per kind, under the names the README's examples use.
    fn exports(&self, minter: &Minter) -> String {
        let mut out = String::from(
            "\nPaste into a shell to run the README's examples (tenant `default`, tokens valid 24 h or the longest lifetime allowed):\n",
        );
        if let Some(secret) = &self.secret {
            out.push_str(&format!(
                "  export SWITCHBOARD_JWT_SECRET={secret}   # `edge token --sub … --kind …` mints more with it\n"
            ));
        }
        let mut device = self.sample(DEVICE, "device", None);
        device.owner = Some(USER.to_owned());
        let tokens = [
            (
                "TOKEN",
                self.sample(GROUP_CLIENT, "client", Some("broadcast")),
                format!("group client {GROUP_CLIENT}, scope broadcast"),
            ),
            (
                "USER_TOKEN",
                self.sample(USER, "user", Some("notice")),
                format!("user {USER}, scope notice: JSON-RPC, IoT, IM"),
            ),
            (
                "APP_TOKEN",
                self.sample(APP, "app", None),
                format!("app {APP}: JSON-RPC app sockets"),
            ),
            (
                "DEVICE_TOKEN",
                device,
                format!("device {DEVICE}, owner {USER}: JSON-RPC hardware sockets"),
            ),
            (
                "SERVICE",
                self.sample(SERVICE, "service", None),
                "service: the server API".to_owned(),
            ),
        ];
        for (name, claims, what) in tokens {
            out.push_str(&format!(
                "  export {name}={}   # {what}\n",
                minter.mint(&claims)
            ));
        }
        out
    }

    /// Claims of a sample token the edge accepts.
    fn sample(&self, sub: &str, kind: &str, scope: Option<&str>) -> Claims {
        let ttl = self
            .auth
            .jwt_max_lifetime
            .map_or(SAMPLE_TTL_SECS, |max| max.as_secs().min(SAMPLE_TTL_SECS));
        let mut claims = claims(sub, kind, "default", scope, ttl);
        self.auth.stamp(&mut claims);
        claims
    }

    pub fn print(&self, edge: SocketAddr, edge_admin: SocketAddr) {
        let edge = local(edge);
        let api = local(self.api);
        let mut out = String::new();
        out.push_str("\nSwitchboard standalone: edge + router in one process (in-memory store, no Redis or NATS)\n");
        out.push_str(&format!("  playground   http://{edge}/\n"));
        out.push_str(&format!(
            "  group (V3)   ws://{edge}/v3/ws/group/{{group_id}}/client/{{client_id}}?token=…\n"
        ));
        out.push_str(&format!(
            "  iot          ws://{edge}/api/v1/system/common/websocket/connect?app-code=…&token=…\n"
        ));
        out.push_str(&format!(
            "  jsonrpc      ws://{edge}/v3/wss?token=…  ws://{edge}/v3/wss/demo_app/{{toolId}}?token=…  ws://{edge}/v3/wss/demo_device?token=…\n"
        ));
        out.push_str(&format!(
            "  im login     http://{edge}/api/websocket/client/login/{{clientName}}?token=…  (app: /app/websocket/client/login/…)\n"
        ));
        out.push_str(&format!(
            "  im socket    ws://{edge}{}  (then register: type 1000 with the sessionId)\n",
            self.im_path
        ));
        out.push_str(&format!(
            "  server API   http://{api}/api/v1/openapi.json\n"
        ));
        out.push_str(&format!(
            "  metrics      http://{}/metrics\n",
            local(edge_admin)
        ));
        match &self.secret {
            Some(_) => out.push_str(
                "  dev secret   random each start (below); set SWITCHBOARD_JWT_SECRET to fix it\n",
            ),
            None => out.push_str("  secret       from SWITCHBOARD_JWT_SECRET / --jwt-secret\n"),
        }
        if let Some(minter) = &self.minter {
            out.push_str(&self.exports(minter));
            out.push_str(&format!(
                "\nTry it: open the playground, or with the lines above pasted\n  websocat \"ws://{edge}/v3/ws/group/team_1/client/{GROUP_CLIENT}?token=$TOKEN\"\n"
            ));
        }
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{out}");
        let _ = stdout.flush();
    }
}
