//! A keep-alive HTTP/1.1 client for the server API and the IM login.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::client::Target;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HTTP: {0}")]
    Hyper(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// One HTTP connection, reused for every request.
pub struct HttpClient {
    target: Target,
    sender: SendRequest<Full<Bytes>>,
}

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl HttpClient {
    pub async fn connect(target: &Target) -> Result<Self, HttpError> {
        let stream = tokio::net::TcpStream::connect(target.addr)
            .await
            .map_err(|e| HttpError::Connect(target.host.clone(), e))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            target: target.clone(),
            sender,
        })
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, HttpError> {
        self.sender.ready().await?;
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.target.host);
        if !body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = self
            .sender
            .send_request(builder.body(Full::new(body))?)
            .await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }
}
