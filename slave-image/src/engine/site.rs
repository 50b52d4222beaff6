//! The targets a share sends to: one [`Site`] per base URL of the scenario (`target`, or each
//! of `targets:`), with what talking to it takes (its address, its TLS client, its requests
//! serialized with its `Host` and base path, its flows with its origin).
//!
//! Which site a unit of load goes to is a pure function of the unit's fleet-wide number
//! (arrival k in the open model, user k in the closed): the scenario's weighted round-robin
//! ([`Scenario::target_order`]). Every slave computes the same, so each target's share of the
//! fleet's arrivals or users is its weight's exactly, whatever the number of slaves and however
//! the fleet is re-sliced mid-run; a slave talks only to the targets its own units map to.

use std::net::SocketAddr;

use lobster_fleet::scenario::{Scenario, Target};

use super::journey::Journeys;
use super::mix::Mix;
use super::tls::{self, TlsClient};

/// One target and what sending to it takes.
pub struct Site {
    pub target: Target,
    pub addr: SocketAddr,
    /// `Some` for an `https://` target.
    pub tls: Option<TlsClient>,
    /// The requests of the mix, serialized for this target.
    pub mix: Mix,
    /// `Some` when the scenario has flows (users run journeys instead of the mix).
    pub journeys: Option<Journeys>,
}

/// Every target of a share, and the order units of load are dealt to them in.
pub struct Sites {
    sites: Vec<Site>,
    /// One round of the weighted round-robin (site indexes).
    order: Vec<u16>,
    /// Each site's weight, over the weights' sum.
    weights: Vec<(u32, u32)>,
}

impl Sites {
    /// Resolves and prepares every target of `scenario`; an error names the target.
    pub async fn prepare(scenario: &Scenario) -> Result<Sites, String> {
        let all = scenario.sites();
        let total: u32 = all.iter().map(|w| w.weight).sum();
        let mut sites = Vec::with_capacity(all.len());
        let mut weights = Vec::with_capacity(all.len());
        for w in all {
            let own;
            // The scenario as seen from this target: its `Host`, base path and origin.
            let view = if w.target == scenario.target {
                scenario
            } else {
                own = Scenario {
                    target: w.target.clone(),
                    ..scenario.clone()
                };
                &own
            };
            let addr = resolve(&w.target).await?;
            let tls =
                tls::client(view).map_err(|e| format!("cannot speak TLS to {}: {e}", w.target))?;
            let journeys = Journeys::new(view).map_err(|e| format!("cannot run the flows: {e}"))?;
            sites.push(Site {
                target: w.target,
                addr,
                tls,
                mix: Mix::new(view),
                journeys,
            });
            weights.push((w.weight, total));
        }
        Ok(Sites {
            sites,
            order: scenario.target_order(),
            weights,
        })
    }

    /// A share with one prepared site (tests).
    #[cfg(test)]
    pub fn one(site: Site) -> Sites {
        Sites {
            sites: vec![site],
            order: vec![0],
            weights: vec![(1, 1)],
        }
    }

    /// The site unit `k` of the load (arrival or user, numbered fleet-wide) goes to.
    pub fn of(&self, k: u64) -> usize {
        usize::from(self.order[(k % self.order.len() as u64) as usize])
    }

    /// Site `i`.
    pub fn get(&self, i: usize) -> &Site {
        &self.sites[i]
    }

    /// Every site, in the scenario's order.
    pub fn all(&self) -> &[Site] {
        &self.sites
    }

    /// Site `i`'s part of `budget` connections: its weight's share, at least one.
    pub fn part_of(&self, budget: usize, i: usize) -> usize {
        let (weight, total) = self.weights[i];
        (budget * weight as usize / total.max(1) as usize).max(1)
    }
}

async fn resolve(target: &Target) -> Result<SocketAddr, String> {
    let authority = (target.host.as_str(), target.port);
    let mut addrs = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", target.authority()))?;
    addrs
        .next()
        .ok_or_else(|| format!("{} resolves to no address", target.authority()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(targets: &str) -> Scenario {
        let text = format!(
            "name: s\n{targets}\nduration: 1s\nload: {{rate: 10}}\nrequests: [{{name: r, path: /x}}]\n"
        );
        lobster_fleet::scenario::parse(&text, "s.yaml").unwrap()
    }

    /// Weights 1, 3 and 2 over two rounds: each site exactly its weight per round, the
    /// heaviest never three in a row, every unit's site the same on every slave.
    #[tokio::test]
    async fn units_are_dealt_to_targets_in_their_weights() {
        let s = scenario(
            "targets:\n  - http://127.0.0.1:1\n  - {url: 'http://127.0.0.1:2', weight: 3}\n  - {url: 'http://127.0.0.1:3/base', weight: 2}",
        );
        let sites = Sites::prepare(&s).await.unwrap();
        let dealt: Vec<usize> = (0..12).map(|k| sites.of(k)).collect();
        for round in dealt.chunks(6) {
            let count = |i| round.iter().filter(|&&s| s == i).count();
            assert_eq!([count(0), count(1), count(2)], [1, 3, 2], "{dealt:?}");
        }
        assert!(
            !dealt.windows(3).any(|w| w.iter().all(|&s| s == 1)),
            "{dealt:?}"
        );
        assert_eq!(dealt[..6], dealt[6..]);
        // Each site's requests carry its own Host and base path.
        let bytes = |i: usize| {
            let mut scratch = Vec::new();
            String::from_utf8(sites.get(i).mix.pick(0).bytes("", &mut scratch).to_vec()).unwrap()
        };
        assert!(bytes(1).starts_with("GET /x HTTP/1.1\r\n"), "{}", bytes(1));
        assert!(bytes(1).contains("Host: 127.0.0.1:2\r\n"), "{}", bytes(1));
        assert!(
            bytes(2).starts_with("GET /base/x HTTP/1.1\r\n"),
            "{}",
            bytes(2)
        );
        assert!(bytes(2).contains("Host: 127.0.0.1:3\r\n"), "{}", bytes(2));
        // Connections split by weight, at least one each.
        assert_eq!(
            [
                sites.part_of(60, 0),
                sites.part_of(60, 1),
                sites.part_of(60, 2)
            ],
            [10, 30, 20]
        );
        assert_eq!(sites.part_of(2, 0), 1);
    }
}
