//! Connecting to NATS: authenticated (a creds file, a token, or user and
//! password in the URL), over TLS for `tls://` URLs, retried until the
//! server is up, reconnecting for ever, with every client event counted
//! (slow consumers drop messages silently otherwise). Credentials are never
//! logged: URLs are shown with user and password redacted.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::ServerAddr;

use crate::subjects::inbox_prefix;

/// How a process authenticates to NATS, besides user and password in the
/// URL (`nats://user:password@host:4222`).
#[derive(Clone, Default, clap::Args)]
pub struct NatsAuth {
    /// NATS creds file (user JWT and nkey seed, as `nsc` writes them).
    #[arg(long, env = "SWITCHBOARD_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// NATS token (the server's `authorization { token }`).
    #[arg(long, env = "SWITCHBOARD_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// PEM file of the CA that signs the NATS server's certificate, for
    /// `tls://` URLs (the system's roots otherwise).
    #[arg(long, env = "SWITCHBOARD_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate for NATS servers that verify clients
    /// (`tls { verify: true }`); needs SWITCHBOARD_NATS_TLS_KEY.
    #[arg(long, env = "SWITCHBOARD_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of SWITCHBOARD_NATS_TLS_CERT.
    #[arg(long, env = "SWITCHBOARD_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("nats_creds", &self.nats_creds)
            .field(
                "nats_token",
                &self.nats_token.as_ref().map(|_| "<redacted>"),
            )
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_tls_cert", &self.nats_tls_cert)
            .field("nats_tls_key", &self.nats_tls_key)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("NATS at {url}: {reason}")]
pub struct NatsError {
    /// The URL with user and password redacted.
    pub url: String,
    pub reason: String,
}

/// The servers of a `SWITCHBOARD_NATS_URL` (comma-separated), without the
/// credentials they carried, and the first user and password found.
struct Servers {
    addrs: Vec<ServerAddr>,
    user_password: Option<(String, String)>,
}

fn parse_servers(urls: &str) -> Result<Servers, String> {
    let mut addrs = Vec::new();
    let mut user_password = None;
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let addr: ServerAddr = url.parse().map_err(|e: std::io::Error| e.to_string())?;
        let mut inner = addr.into_inner();
        if !inner.username().is_empty() || inner.password().is_some() {
            let user = percent_decode(inner.username());
            let password = percent_decode(inner.password().unwrap_or_default());
            user_password.get_or_insert((user, password));
            // Url::set_* fail only for URLs that cannot have credentials,
            // which a NATS URL with a host always can.
            let _ = inner.set_username("");
            let _ = inner.set_password(None);
        }
        addrs.push(ServerAddr::from_url(inner).map_err(|e| e.to_string())?);
    }
    if addrs.is_empty() {
        return Err("no server URL".to_owned());
    }
    Ok(Servers {
        addrs,
        user_password,
    })
}

/// `urls` as they may be logged: any `user:password@` becomes `***@`.
pub fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return match url.rsplit_once('@') {
                    Some((_, host)) => format!("***@{host}"),
                    None => url.to_owned(),
                };
            };
            match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes `%XX` escapes, as URLs carry reserved characters of passwords.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connects as `name` to `urls` with `auth`, its inboxes under
/// [`inbox_prefix`]; returns at once and keeps retrying in the background
/// if the server is not up yet.
pub async fn connect(
    urls: &str,
    auth: &NatsAuth,
    subject_prefix: &str,
    name: &str,
) -> Result<async_nats::Client, NatsError> {
    let fail = |reason: String| NatsError {
        url: redact(urls),
        reason,
    };
    let servers = parse_servers(urls).map_err(fail)?;
    let mut options = async_nats::ConnectOptions::new();
    if let Some(path) = &auth.nats_creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| fail(format!("creds file {}: {e}", path.display())))?;
    }
    if let Some(token) = &auth.nats_token {
        options = options.token(token.clone());
    }
    if let Some((user, password)) = servers.user_password {
        options = options.user_and_password(user, password);
    }
    if let Some(ca) = &auth.nats_tls_ca {
        if !ca.is_file() {
            return Err(fail(format!("TLS CA file {} not found", ca.display())));
        }
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&auth.nats_tls_cert, &auth.nats_tls_key) {
        for file in [cert, key] {
            if !file.is_file() {
                return Err(fail(format!("TLS file {} not found", file.display())));
            }
        }
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options
        .name(name)
        .custom_inbox_prefix(inbox_prefix(subject_prefix))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(5))
        .subscription_capacity(65_536)
        .event_callback(|event| async move {
            let label = match &event {
                async_nats::Event::Connected => "connected",
                async_nats::Event::Disconnected => "disconnected",
                async_nats::Event::LameDuckMode => "lame_duck",
                async_nats::Event::Draining => "draining",
                async_nats::Event::Closed => "closed",
                async_nats::Event::SlowConsumer(_) => "slow_consumer",
                async_nats::Event::ServerError(_) => "server_error",
                async_nats::Event::ClientError(_) => "client_error",
            };
            metrics::counter!("switchboard_nats_events_total", "event" => label).increment(1);
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::SlowConsumer(_) => {
                    tracing::warn!("NATS slow consumer: messages were dropped")
                }
                other => tracing::warn!(event = %other, "NATS event"),
            }
        })
        .connect(servers.addrs)
        .await
        .map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_are_decoded() {
        let servers =
            parse_servers("nats://router:p%40ss%3Aw@nats:4222, tls://other:4443").unwrap();
        assert_eq!(
            servers.user_password,
            Some(("router".to_owned(), "p@ss:w".to_owned()))
        );
        let urls: Vec<_> = servers.addrs.iter().map(|a| a.as_url_str()).collect();
        assert_eq!(urls, ["nats://nats:4222", "tls://other:4443"]);
        assert!(servers.addrs[1].tls_required());
        assert!(parse_servers("nats:4222").unwrap().user_password.is_none());
        assert!(parse_servers(" , ").is_err());
        assert!(parse_servers("http://nats:4222").is_err());
    }

    #[test]
    fn logged_urls_never_show_credentials() {
        assert_eq!(
            redact("nats://router:secret@nats:4222,tls://u:p@x:1,nats://plain:4222"),
            "nats://***@nats:4222,tls://***@x:1,nats://plain:4222"
        );
        assert_eq!(redact("u:secret@host:4222"), "***@host:4222");
        let auth = NatsAuth {
            nats_token: Some("tok-secret".into()),
            ..NatsAuth::default()
        };
        assert!(!format!("{auth:?}").contains("tok-secret"));
    }

    #[tokio::test]
    async fn a_missing_creds_file_is_named_and_no_secret_is_shown() {
        let auth = NatsAuth {
            nats_creds: Some("/nonexistent/switchboard.creds".into()),
            ..NatsAuth::default()
        };
        let error = connect("nats://u:hunter2@127.0.0.1:1", &auth, "sb", "t")
            .await
            .expect_err("no creds file");
        let text = error.to_string();
        assert!(text.contains("/nonexistent/switchboard.creds"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
