//! Small helpers for hyper services: JSON responses, bounded bodies, query strings.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Response, StatusCode};

/// The body type every Switchboard HTTP response uses.
pub type Body = Full<Bytes>;

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    bytes_response(status, "application/json", Bytes::from(value.to_string()))
}

pub fn bytes_response(status: StatusCode, content_type: &str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

pub fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    bytes_response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("body could not be read: {0}")]
    Read(String),
    /// The listener's body timeout ([`crate::http_server`]) passed first.
    #[error("body did not arrive within {} s", .0.as_secs_f64())]
    TimedOut(std::time::Duration),
}

/// Reads a whole request body, refusing bodies over `limit` bytes and,
/// when served by [`crate::http_server`], bodies that have not arrived by
/// the request's deadline.
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let collect = Limited::new(body, limit).collect();
    let collected = match crate::http_server::body_deadline() {
        Some(deadline) => match tokio::time::timeout_at(deadline.at, collect).await {
            Ok(collected) => collected,
            Err(_) => {
                metrics::counter!("switchboard_http_body_timeouts_total", "listener" => deadline.listener)
                    .increment(1);
                return Err(BodyError::TimedOut(deadline.timeout));
            }
        },
        None => collect.await,
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// The first value of `name` in a URL query string, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Every parameter of a URL query string, percent-decoded; the first
/// value of a repeated name wins.
pub fn query_map(query: &str) -> std::collections::HashMap<String, String> {
    let mut map = std::collections::HashMap::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        map.entry(key.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    map
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use hyper::body::Frame;

    use super::*;
    use crate::http_server::with_body_deadline;

    /// A body whose sender went quiet: it never sends another byte.
    struct Stalled;

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_under_a_deadline() {
        let timeout = Duration::from_millis(50);
        let read = with_body_deadline("test", timeout, read_body(Stalled, 1024)).await;
        assert!(
            matches!(read, Err(BodyError::TimedOut(t)) if t == timeout),
            "{read:?}"
        );
    }

    #[tokio::test]
    async fn a_whole_body_is_read_under_a_deadline() {
        let body = Full::new(Bytes::from_static(b"{}"));
        let read = with_body_deadline("test", Duration::from_secs(30), read_body(body, 1024));
        assert_eq!(read.await.unwrap(), Bytes::from_static(b"{}"));
        let big = Full::new(Bytes::from_static(b"0123456789"));
        let read = with_body_deadline("test", Duration::from_secs(30), read_body(big, 4));
        assert!(matches!(read.await, Err(BodyError::TooLarge(4))));
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_param("a=1&token=x%2By", "token").as_deref(),
            Some("x+y")
        );
        assert_eq!(query_param("a=1", "token"), None);
        assert_eq!(query_param("", "token"), None);
        let map = query_map("a=1&a=2&b=x%20y");
        assert_eq!(map["a"], "1");
        assert_eq!(map["b"], "x y");
    }
}
