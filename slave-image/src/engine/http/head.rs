//! Response heads: parsing (lenient where user agents are), framing and keep-alive
//! (RFC 9112 §6: `Content-Length`, `chunked`, or read-until-close; `Connection`).

use super::HttpError;

/// Lenient where user agents are (RFC 9112 §5.2 obs-fold; whitespace before the colon).
fn parser() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_obsolete_multiline_headers_in_responses(true)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_multiple_spaces_in_response_status_delimiters(true);
    c
}

/// A parsed head: (status, head length, framing, keep-alive).
pub(super) type Head = (u16, usize, Framing, bool);

/// Why a head could not be parsed with the header room given.
pub(super) enum HeadError {
    /// More header lines than the room given.
    Room,
    Invalid(HttpError),
}

/// Parses a response head with room for `headers.len()` header lines; `Ok(None)` means more
/// bytes are needed.
pub(super) fn parse_head<'b>(
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Result<Option<Head>, HeadError> {
    let mut resp = httparse::Response::new(headers);
    match parser().parse_response(&mut resp, buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(n)) => {
            let status = resp
                .code
                .ok_or(HeadError::Invalid(HttpError::Protocol("no status code")))?;
            let (framing, keep_alive) = framing(&resp).map_err(HeadError::Invalid)?;
            Ok(Some((status, n, framing, keep_alive)))
        }
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::Room),
        Err(_) => Err(HeadError::Invalid(HttpError::Protocol(
            "malformed response head",
        ))),
    }
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(resp: &httparse::Response<'_, '_>) -> Result<(Framing, bool), HttpError> {
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = resp.version == Some(1);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(HttpError::Protocol("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Protocol("conflicting content-length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok((framing, keep_alive))
}
