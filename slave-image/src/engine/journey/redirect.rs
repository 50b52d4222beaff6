//! Following a redirect as browsers do (RFC 9110 §15.4): `303`, and `301`/`302` after a POST,
//! become a `GET` without a body; `307` and `308` repeat the method and body. Only redirects
//! to the target's own origin are followed (the worker's connection goes to that one
//! address); the `Location` is resolved against the request's URL.

use super::extract::header;

/// Where a redirect goes, and how.
#[derive(Debug)]
pub(crate) struct Hop {
    pub url: url::Url,
    /// Send the same method and body again (`307`, `308`) rather than a `GET`.
    pub same_method: bool,
}

/// The hop a response asks for, if it is a redirect this step can follow from `base`.
pub(crate) fn next(status: u16, head: &[u8], base: &url::Url) -> Option<Hop> {
    let same_method = match status {
        301..=303 => false,
        307 | 308 => true,
        _ => return None,
    };
    let url = base.join(header(head, "location")?).ok()?;
    (url.origin() == base.origin()).then_some(Hop { url, same_method })
}

/// Rewrites `request` (the previous hop's bytes) for `hop`: the request line's target, a
/// `GET` without body unless the method is kept (a HEAD stays a HEAD), and `cookie` as the
/// `Cookie` header.
pub(crate) fn request(request: &mut Vec<u8>, hop: &Hop, cookie: &str) {
    let text = String::from_utf8_lossy(request).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let method = first.split(' ').next().unwrap_or("GET");
    let method = if hop.same_method || method == "HEAD" {
        method
    } else {
        "GET"
    };
    let mut target = hop.url.path().to_string();
    if let Some(q) = hop.url.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    for line in lines {
        let name = line.split(':').next().unwrap_or("").trim();
        let drop = name.eq_ignore_ascii_case("cookie")
            || (!hop.same_method
                && (name.eq_ignore_ascii_case("content-length")
                    || name.eq_ignore_ascii_case("content-type")));
        if !drop {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if !cookie.is_empty() {
        out.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    out.push_str("\r\n");
    if hop.same_method {
        out.push_str(body);
    }
    request.clear();
    request.extend_from_slice(out.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> url::Url {
        url::Url::parse("https://shop.example:8443/login/").unwrap()
    }

    #[test]
    fn a_see_other_after_a_post_becomes_a_get_to_the_same_origin() {
        let head = b"HTTP/1.1 303 See Other\r\nLocation: /account/?tab=1\r\n\r\n";
        let hop = next(303, head, &base()).unwrap();
        assert!(!hop.same_method);
        let mut req = b"POST /login/ HTTP/1.1\r\nHost: shop.example:8443\r\nContent-Type: application/x-www-form-urlencoded\r\nCookie: old=1\r\nContent-Length: 3\r\n\r\na=b".to_vec();
        request(&mut req, &hop, "session=s1");
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "GET /account/?tab=1 HTTP/1.1\r\nHost: shop.example:8443\r\nCookie: session=s1\r\n\r\n"
        );
    }

    #[test]
    fn a_307_keeps_method_and_body_and_other_origins_are_not_followed() {
        let hop = next(307, b"HTTP/1.1 307 x\r\nlocation: next\r\n\r\n", &base()).unwrap();
        assert_eq!(hop.url.path(), "/login/next");
        let mut req = b"PUT /login/ HTTP/1.1\r\nContent-Length: 3\r\n\r\na=b".to_vec();
        request(&mut req, &hop, "");
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "PUT /login/next HTTP/1.1\r\nContent-Length: 3\r\n\r\na=b"
        );
        for location in [
            "https://other.example/",
            "http://shop.example:8443/",
            "//evil/x",
        ] {
            let head = format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\n\r\n");
            assert!(next(302, head.as_bytes(), &base()).is_none(), "{location}");
        }
        assert!(next(200, b"HTTP/1.1 200 OK\r\nLocation: /x\r\n\r\n", &base()).is_none());
        assert!(next(302, b"HTTP/1.1 302 Found\r\n\r\n", &base()).is_none());
    }
}
