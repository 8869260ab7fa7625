//! permessage-deflate (RFC 7692): negotiation, and compression of one
//! message at a time.
//!
//! The edge always answers with `server_no_context_takeover` and
//! `client_no_context_takeover`: each message is compressed and
//! decompressed on its own, so a socket holds no compression state between
//! messages (an idle socket costs what it costs without compression). The
//! contexts themselves are kept per thread and reset after each message.
//! Messages below a threshold go uncompressed, which the RFC allows.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";
/// What ends every flushed deflate block; stripped on the wire (RFC 7692
/// 7.2.1) and put back before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Deflate level: fast, since the edge compresses on its delivery path.
const LEVEL: u32 = 3;

/// What was agreed with one client. Small and `Copy`: this is all a socket
/// keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// LZ77 window the edge compresses with (the client's
    /// `server_max_window_bits`, 15 when it named none).
    pub server_window_bits: u8,
    /// Outbound messages shorter than this go uncompressed.
    pub threshold: u32,
}

impl Deflate {
    /// Whether an outbound message of `len` bytes is sent compressed.
    pub fn compresses(&self, len: usize) -> bool {
        len >= self.threshold as usize
    }
}

/// The accepted offer and the header value that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub deflate: Deflate,
    pub response: String,
}

/// Picks the first permessage-deflate offer the edge can take, from every
/// `Sec-WebSocket-Extensions` header value; `None` declines (the socket
/// runs uncompressed, which every client must accept).
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    threshold: usize,
) -> Option<Agreed> {
    let mut agreed = headers
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)?;
    agreed.deflate.threshold = u32::try_from(threshold).unwrap_or(u32::MAX);
    Some(agreed)
}

/// One offer: `permessage-deflate; param[=value]; …`.
fn accept_offer(offer: &str) -> Option<Agreed> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_bits: Option<u8> = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            // A parameter twice makes the offer invalid (RFC 7692 7).
            return None;
        }
        seen.push(name.clone());
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            // The client's window: any size is fine to inflate with the
            // largest window, so it needs no answer.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(bits)) => {
                window_bits(bits)?;
            }
            // zlib cannot make raw deflate with an 8-bit window.
            ("server_max_window_bits", Some(bits)) => {
                server_bits = Some(window_bits(bits).filter(|b| *b >= 9)?);
            }
            _ => return None,
        }
    }
    let mut response = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    Some(Agreed {
        deflate: Deflate {
            server_window_bits: server_bits.unwrap_or(15),
            threshold: 0,
        },
        response,
    })
}

fn window_bits(text: &str) -> Option<u8> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 2 {
        return None;
    }
    text.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

thread_local! {
    /// One compressor per window size per thread, reset after each message.
    static COMPRESSORS: RefCell<[Option<Compress>; 16]> = const { RefCell::new([const { None }; 16]) };
    /// One decompressor per thread: the largest window inflates any.
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `payload` compressed as one message under `deflate`, the tail stripped.
pub fn compress(payload: &[u8], deflate: Deflate) -> Bytes {
    let bits = deflate.server_window_bits.clamp(9, 15);
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let compress = compressors[usize::from(bits)].get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(LEVEL), false, bits)
        });
        let out = run_compress(compress, payload);
        compress.reset();
        out
    })
}

fn run_compress(compress: &mut Compress, payload: &[u8]) -> Bytes {
    let start = compress.total_in();
    let mut out: Vec<u8> = Vec::with_capacity(payload.len() / 2 + 64);
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        let consumed = (compress.total_in() - start) as usize;
        // A compressor fed a whole in-memory buffer cannot fail; an error
        // would be a bug in the library, and the result is then stopped
        // short, which the peer reports as bad data.
        if compress
            .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
            .is_err()
        {
            break;
        }
        let consumed = (compress.total_in() - start) as usize;
        // Done once all input is in and the flush left room to spare.
        if consumed == payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    Bytes::from(out)
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the message size limit (close 1009): a small
    /// compressed message never becomes unbounded memory.
    #[error("message too big once decompressed")]
    TooBig,
    /// Not valid deflate data (close 1007).
    #[error("invalid compressed data")]
    Invalid,
}

/// One compressed message, inflated to at most `limit` bytes.
pub fn decompress(payload: &[u8], limit: usize) -> Result<Bytes, InflateError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let inflate = slot.get_or_insert_with(|| Decompress::new(false));
        let result = run_decompress(inflate, payload, limit);
        inflate.reset(false);
        result
    })
}

fn run_decompress(
    inflate: &mut Decompress,
    payload: &[u8],
    limit: usize,
) -> Result<Bytes, InflateError> {
    let mut out: Vec<u8> = Vec::with_capacity((payload.len() * 3).min(limit + 1).max(64));
    for input in [payload, &TAIL[..]] {
        let start = inflate.total_in();
        loop {
            let consumed = (inflate.total_in() - start) as usize;
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if out.capacity() - out.len() < 64 {
                let room = out
                    .capacity()
                    .max(256)
                    .min(limit + 1 - out.len().min(limit));
                out.reserve(room.max(64));
            }
            let before_out = out.len();
            let status = inflate
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Invalid)?;
            let progressed =
                (inflate.total_in() - start) as usize > consumed || out.len() > before_out;
            match status {
                Status::StreamEnd => break,
                Status::Ok | Status::BufError if !progressed && out.len() < out.capacity() => break,
                _ => {}
            }
        }
    }
    if out.len() > limit {
        return Err(InflateError::TooBig);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_taken_or_declined_as_rfc_7692_says() {
        let plain = negotiate(["permessage-deflate"], 0).expect("taken");
        assert_eq!(plain.deflate.server_window_bits, 15);
        assert_eq!(
            plain.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        // What browsers send.
        let browser = negotiate(["permessage-deflate; client_max_window_bits"], 0).expect("taken");
        assert_eq!(browser.deflate.server_window_bits, 15);
        let small = negotiate(["permessage-deflate; server_max_window_bits=10"], 0).expect("taken");
        assert_eq!(small.deflate.server_window_bits, 10);
        assert!(small.response.ends_with("server_max_window_bits=10"));
        // The first acceptable offer wins, across headers and lists.
        let second = negotiate([
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=12",
        ], 0)
        .expect("taken");
        assert_eq!(second.deflate.server_window_bits, 12);
        for declined in [
            "x-webkit-deflate-frame",
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08x",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert_eq!(negotiate([declined], 0), None, "{declined}");
        }
    }

    #[test]
    fn a_message_round_trips_at_every_window() {
        let text = "switchboard ".repeat(2_000);
        for bits in 9..=15 {
            let deflate = Deflate {
                server_window_bits: bits,
                threshold: 0,
            };
            let packed = compress(text.as_bytes(), deflate);
            assert!(packed.len() < text.len() / 10, "{bits}: {}", packed.len());
            assert!(!packed.ends_with(&TAIL));
            let back = decompress(&packed, text.len()).expect("inflates");
            assert_eq!(back, text.as_bytes());
        }
        let empty = compress(
            b"",
            Deflate {
                server_window_bits: 15,
                threshold: 0,
            },
        );
        assert_eq!(decompress(&empty, 10).unwrap(), Bytes::new());
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_refused() {
        let zeros = vec![0u8; 4 << 20];
        let bomb = compress(
            &zeros,
            Deflate {
                server_window_bits: 15,
                threshold: 0,
            },
        );
        assert!(bomb.len() < 8 << 10, "{}", bomb.len());
        assert_eq!(decompress(&bomb, 64 << 10), Err(InflateError::TooBig));
        assert_eq!(decompress(&bomb, zeros.len()).unwrap().len(), zeros.len());
        assert_eq!(
            decompress(&[0xff, 0xff, 0xff, 0x00, 0x12], 1024),
            Err(InflateError::Invalid)
        );
    }
}
