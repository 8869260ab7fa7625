//! Connecting to NATS: retried until the server is up, reconnecting for
//! ever, with every client event counted (slow consumers drop messages
//! silently otherwise).

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("NATS at {url}: {reason}")]
pub struct NatsError {
    pub url: String,
    pub reason: String,
}

/// Connects as `name`; returns at once and keeps retrying in the background
/// if the server is not up yet.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, NatsError> {
    async_nats::ConnectOptions::new()
        .name(name)
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
        .connect(url)
        .await
        .map_err(|e| NatsError {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}
