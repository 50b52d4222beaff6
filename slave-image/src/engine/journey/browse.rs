//! Link-following browsing (see `docs/scenario.md`, "Browsing"): from a step's page, the user
//! picks an eligible link at random, follows it, and goes on from that page, `depth` times or
//! until the run ends or a page has no eligible link. Eligible: same origin as the target, an
//! `http(s)` URL, its path matching `include` (if any) and no `exclude`. Each page counts
//! under the first group whose pattern matches its path, else under the step's name, so the
//! report has a bounded number of rows whatever the site's size.

use lobster_fleet::scenario::{Browse, Think};
use rand::Rng;
use rand::rngs::SmallRng;
use regex::Regex;
use tokio_util::sync::CancellationToken;

use super::{UserState, cookie_header, extract, redirect, think};
use crate::engine::exchange::{Shared, Worker};

/// A step's browsing, compiled once per run.
#[derive(Debug)]
pub(crate) struct Browsing {
    depth: Option<u64>,
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    think: Think,
    /// Group patterns with their recorder endpoint.
    groups: Vec<(Regex, usize)>,
    /// The step's own endpoint (pages no group matches).
    endpoint: usize,
    /// `a[href]`, parsed once.
    anchors: scraper::Selector,
}

impl Browsing {
    /// `first_group` is the recorder index of the step's first group.
    pub(crate) fn new(
        b: &Browse,
        endpoint: usize,
        first_group: usize,
        step_think: Think,
    ) -> Result<Self, String> {
        let compile = |re: &String| Regex::new(re).map_err(|e| e.to_string());
        Ok(Browsing {
            depth: b.depth,
            include: b.include.iter().map(compile).collect::<Result<_, _>>()?,
            exclude: b.exclude.iter().map(compile).collect::<Result<_, _>>()?,
            think: b.think.unwrap_or(step_think),
            groups: b
                .groups
                .iter()
                .enumerate()
                .map(|(i, g)| Ok((compile(&g.path)?, first_group + i)))
                .collect::<Result<_, String>>()?,
            endpoint,
            anchors: scraper::Selector::parse("a[href]").expect("a valid selector"),
        })
    }

    fn eligible(&self, url: &url::Url, origin: &url::Origin) -> bool {
        let path = url.path();
        matches!(url.scheme(), "http" | "https")
            && url.origin() == *origin
            && (self.include.is_empty() || self.include.iter().any(|r| r.is_match(path)))
            && !self.exclude.iter().any(|r| r.is_match(path))
    }

    fn endpoint_of(&self, path: &str) -> usize {
        self.groups
            .iter()
            .find(|(re, _)| re.is_match(path))
            .map_or(self.endpoint, |(_, e)| *e)
    }

    /// The eligible links of an HTML page at `page`, fragments dropped.
    pub(crate) fn links(&self, body: &[u8], page: &url::Url) -> Vec<url::Url> {
        let html = scraper::Html::parse_document(&String::from_utf8_lossy(body));
        let origin = page.origin();
        html.select(&self.anchors)
            .filter_map(|a| page.join(a.value().attr("href")?).ok())
            .map(|mut u| {
                u.set_fragment(None);
                u
            })
            .filter(|u| self.eligible(u, &origin))
            .collect()
    }

    /// Follows links from `page` (whose body is in `user.kept`); false when the run ended
    /// before the browsing did.
    pub(crate) async fn follow(
        &self,
        worker: &mut Worker,
        shared: &Shared,
        user: &mut UserState,
        mut page: url::Url,
        rng: &mut SmallRng,
        halt: &CancellationToken,
    ) -> bool {
        let mut left = self.depth;
        while left != Some(0) {
            if halt.is_cancelled() {
                return false;
            }
            let links = self.links(&user.kept.body, &page);
            if links.is_empty() {
                return true;
            }
            let next = links[rng.random_range(0..links.len())].clone();
            if !think(&self.think, rng, halt).await {
                return false;
            }
            let cookie = cookie_header(&user.jar, &next);
            let hop = redirect::Hop {
                url: next,
                same_method: false,
            };
            redirect::request(&mut user.request, &hop, &cookie);
            let endpoint = self.endpoint_of(hop.url.path());
            let (_, resp) = worker
                .exchange_bytes(
                    shared,
                    endpoint,
                    &user.request,
                    false,
                    None,
                    Some(&mut user.kept),
                    false,
                    &mut |_, _| None,
                )
                .await;
            let Some(resp) = resp else { return true };
            for (name, value) in extract::headers(&user.kept.head) {
                if name.eq_ignore_ascii_case("set-cookie") {
                    let _ = user.jar.parse(value, &hop.url);
                }
            }
            if !(200..400).contains(&resp.status) {
                return true;
            }
            page = hop.url;
            left = left.map(|n| n - 1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_links_within_the_patterns_are_eligible() {
        let b = Browse {
            depth: Some(3),
            include: vec!["^/wiki/".into()],
            exclude: vec!["^/wiki/Special:".into()],
            think: None,
            groups: vec![lobster_fleet::scenario::Group {
                name: "talk".into(),
                path: "^/wiki/Talk:".into(),
            }],
        };
        let br = Browsing::new(&b, 0, 5, Think::default()).unwrap();
        let page = url::Url::parse("https://w.example/wiki/Main").unwrap();
        let body = br#"<a href="/wiki/A">a</a> <a href="B#sec">b</a> <a href="/wiki/Special:Random">s</a>
            <a href="https://other.example/wiki/C">c</a> <a href="mailto:x@y">m</a> <a href="/w/index.php">i</a>
            <a href="//w.example/wiki/Talk:D">d</a> <a>no href</a>"#;
        let links: Vec<String> = br
            .links(body, &page)
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            links,
            [
                "https://w.example/wiki/A",
                "https://w.example/wiki/B",
                "https://w.example/wiki/Talk:D"
            ]
        );
        assert_eq!(br.endpoint_of("/wiki/Talk:D"), 5);
        assert_eq!(br.endpoint_of("/wiki/A"), 0);
    }
}
