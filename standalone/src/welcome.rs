//! What standalone mode prints once its listeners are bound: the URLs of
//! every route, the server API and metrics, and `export` lines with the
//! development secret and a sample token per client kind, named as the
//! README's examples use them.

use std::net::SocketAddr;

use switchboard_common::auth::{AuthSettings, Claims, Minter, claims};

/// How long sample tokens printed at start stay valid.
const SAMPLE_TTL_SECS: u64 = 24 * 3600;

/// What standalone mode prints after its listeners: URLs and sample tokens.
pub struct Welcome {
    /// The server API's bound address.
    pub api: SocketAddr,
    /// The IM WebSocket route.
    pub im_path: String,
    /// The JWT secret, when this process made it up (it is printed then).
    pub secret: Option<String>,
    /// Mints the sample tokens; none without an HS256 secret.
    pub minter: Option<Minter>,
    /// Sample tokens carry the audience and issuer these require, and live
    /// no longer than they allow.
    pub auth: AuthSettings,
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
