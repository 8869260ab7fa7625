//! permessage-deflate (RFC 7692) on the client side: the offer a virtual
//! user sends, what the server's answer agreed to, and inflating the
//! compressed messages it receives.
//!
//! The client offers no context takeover in either direction, so every
//! message can be inflated on its own with a context shared by the
//! thread; a server that answers without `server_no_context_takeover`
//! keeps its context across messages, and the socket then gets a context
//! of its own for as long as it lives. The client never compresses what
//! it sends (the RFC leaves that to each endpoint), so the client's own
//! window parameters need no state.

use std::cell::RefCell;

use flate2::{Decompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const NAME: &str = "permessage-deflate";

/// What a virtual user asks for when compression is on.
pub const OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// What ends every flushed deflate block: stripped by the sender (RFC 7692
/// 7.2.1) and put back before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest message inflated; past it the message is refused.
pub const MAX_INFLATED: usize = 64 << 20;

/// What the server's answer agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// The server starts every message with an empty window.
    pub server_no_context_takeover: bool,
    /// The client must not carry its context over (it compresses nothing,
    /// so this only records the answer).
    pub client_no_context_takeover: bool,
    /// The window the server compresses with (15 when it named none).
    pub server_max_window_bits: u8,
}

/// Why an answer cannot be taken: the client must fail the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the server answered with an extension that was not offered: {0}")]
    NotOffered(String),
    #[error("the server answered permessage-deflate twice")]
    Twice,
    #[error("permessage-deflate parameter `{0}` is unknown, repeated or invalid")]
    Parameter(String),
}

/// Reads the `Sec-WebSocket-Extensions` values of an upgrade answer to
/// [`OFFER`]: `Ok(None)` when the server declined (no extension),
/// `Ok(Some(_))` when it agreed, and an error when the answer is one the
/// client must fail the connection for (RFC 7692 5 and 7.1).
pub fn read_answer<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Option<Agreement>, AnswerError> {
    let mut agreed = None;
    for element in values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let mut parts = element.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        if !name.eq_ignore_ascii_case(NAME) {
            return Err(AnswerError::NotOffered(name.to_owned()));
        }
        if agreed.is_some() {
            return Err(AnswerError::Twice);
        }
        agreed = Some(agreement(parts)?);
    }
    Ok(agreed)
}

fn agreement<'a>(params: impl Iterator<Item = &'a str>) -> Result<Agreement, AnswerError> {
    let mut agreed = Agreement {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
    };
    let mut seen: Vec<String> = Vec::new();
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        let refused = || AnswerError::Parameter(param.to_owned());
        if seen.contains(&name) {
            return Err(refused());
        }
        seen.push(name.clone());
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => agreed.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => agreed.client_no_context_takeover = true,
            ("server_max_window_bits", Some(bits)) => {
                agreed.server_max_window_bits = window_bits(bits).ok_or_else(refused)?;
            }
            // `client_max_window_bits` may only answer an offer that named
            // it, and this one does not (RFC 7692 7.1.2.2).
            _ => return Err(refused()),
        }
    }
    Ok(agreed)
}

fn window_bits(text: &str) -> Option<u8> {
    if text.is_empty() || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("message larger than {MAX_INFLATED} bytes once inflated")]
    TooBig,
    #[error("invalid compressed data")]
    Invalid,
}

thread_local! {
    /// The context of sockets whose server takes no context over: reset
    /// after each message, so it is shared by every socket of the thread.
    static SHARED: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Inflates one socket's compressed messages as its agreement says.
pub struct Inflater {
    agreement: Agreement,
    /// The socket's own context, when the server keeps one across messages.
    own: Option<Box<Decompress>>,
}

impl Inflater {
    pub fn new(agreement: Agreement) -> Self {
        Self {
            agreement,
            own: None,
        }
    }

    pub fn agreement(&self) -> Agreement {
        self.agreement
    }

    /// One compressed message (the payload of its frames, tail stripped)
    /// inflated to at most `limit` bytes.
    pub fn inflate(&mut self, payload: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        if self.agreement.server_no_context_takeover {
            return SHARED.with(|cell| {
                let mut slot = cell.borrow_mut();
                let context = slot.get_or_insert_with(|| Decompress::new(false));
                let result = inflate(context, payload, limit);
                context.reset(false);
                result
            });
        }
        let context = self
            .own
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        let result = inflate(context, payload, limit);
        if result.is_err() {
            // The stream is broken; the socket is failed anyway.
            context.reset(false);
        }
        result
    }
}

/// Runs `payload` and the stripped tail through `context`. A block marked
/// final ends the stream: the context is reset so the next message starts
/// a new one.
fn inflate(
    context: &mut Decompress,
    payload: &[u8],
    limit: usize,
) -> Result<Vec<u8>, InflateError> {
    let capacity = (payload.len() * 4).max(256).min(limit.saturating_add(1));
    let mut out: Vec<u8> = Vec::with_capacity(capacity);
    for input in [payload, &TAIL[..]] {
        let mut at = 0usize;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                out.reserve(out.len().clamp(256, 1 << 20));
            }
            let (in_before, out_before) = (context.total_in(), out.len());
            let status = context
                .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            at += (context.total_in() - in_before) as usize;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                context.reset(false);
                return Ok(out);
            }
            let room_left = out.len() < out.capacity();
            if at == input.len() && room_left {
                break;
            }
            let progressed = context.total_in() != in_before || out.len() != out_before;
            if room_left && !progressed {
                // Input left, room to write and still no progress.
                return Err(InflateError::Invalid);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// What a server puts on the wire for one message: raw deflate, sync
    /// flushed, tail stripped.
    fn deflate_message(compress: &mut Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        let start = compress.total_in();
        loop {
            let done = (compress.total_in() - start) as usize;
            compress
                .compress_vec(&text[done..], &mut out, FlushCompress::Sync)
                .unwrap();
            if (compress.total_in() - start) as usize == text.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(256);
        }
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
        out
    }

    #[test]
    fn the_edge_answer_and_variants_are_read() {
        let edge = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(
            read_answer([edge]),
            Ok(Some(Agreement {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 15,
            }))
        );
        assert_eq!(read_answer([]), Ok(None), "declined");
        assert_eq!(read_answer([""]), Ok(None), "an empty header declines too");
        let windowed = read_answer(["Permessage-Deflate; Server_Max_Window_Bits=\"10\""])
            .unwrap()
            .unwrap();
        assert_eq!(windowed.server_max_window_bits, 10);
        assert!(
            !windowed.server_no_context_takeover,
            "the server keeps its context"
        );
        for refused in [
            "x-webkit-deflate-frame",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; client_max_window_bits=12",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; mystery",
        ] {
            assert!(read_answer([refused]).is_err(), "{refused}");
        }
        // Several header lines are one list.
        assert_eq!(
            read_answer(["permessage-deflate", "permessage-deflate"]),
            Err(AnswerError::Twice)
        );
    }

    #[test]
    fn messages_inflate_one_by_one_without_context_takeover() {
        let agreement = read_answer([OFFER]).unwrap().unwrap();
        let mut inflater = Inflater::new(agreement);
        let text = br#"{"items":[{"sku":"A-1","qty":2},{"sku":"A-1","qty":3}],"note":"hello hello hello"}"#;
        for _ in 0..3 {
            // A fresh compressor per message, as a server with no context
            // takeover does.
            let mut compress = Compress::new(Compression::new(6), false);
            let wire = deflate_message(&mut compress, text);
            assert!(wire.len() < text.len());
            assert_eq!(inflater.inflate(&wire, 1 << 20).unwrap(), text);
        }
        assert_eq!(inflater.inflate(&[], 10).unwrap(), b"", "empty message");
        assert!(inflater.own.is_none(), "no state of its own");
    }

    #[test]
    fn a_server_that_keeps_its_context_is_followed() {
        let mut inflater = Inflater::new(Agreement {
            server_no_context_takeover: false,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
        });
        let mut compress = Compress::new(Compression::new(6), false);
        let first = b"the quick brown fox jumps over the lazy dog, again and again";
        let a = deflate_message(&mut compress, first);
        let b = deflate_message(&mut compress, first);
        // The second refers back into the first's window.
        assert!(b.len() < a.len() / 2, "{} vs {}", b.len(), a.len());
        assert_eq!(inflater.inflate(&a, 1 << 20).unwrap(), first);
        assert_eq!(inflater.inflate(&b, 1 << 20).unwrap(), first);
        // Alone, without the first, it does not inflate to the text.
        let mut alone = Inflater::new(read_answer([OFFER]).unwrap().unwrap());
        assert_ne!(alone.inflate(&b, 1 << 20).ok().as_deref(), Some(&first[..]));
    }

    #[test]
    fn limits_and_garbage_are_refused() {
        let zeros = vec![0u8; 1 << 20];
        let mut compress = Compress::new(Compression::new(6), false);
        let bomb = deflate_message(&mut compress, &zeros);
        assert!(bomb.len() < 4 << 10);
        let mut inflater = Inflater::new(read_answer([OFFER]).unwrap().unwrap());
        assert_eq!(inflater.inflate(&bomb, 64 << 10), Err(InflateError::TooBig));
        assert_eq!(inflater.inflate(&bomb, 1 << 20).unwrap().len(), 1 << 20);
        assert_eq!(
            inflater.inflate(&[0xff, 0xff, 0xff, 0x00, 0x12], 1024),
            Err(InflateError::Invalid)
        );
        // The shared context is usable again after a failure.
        let mut compress = Compress::new(Compression::new(6), false);
        let ok = deflate_message(&mut compress, b"still fine");
        assert_eq!(inflater.inflate(&ok, 1024).unwrap(), b"still fine");
    }
}
