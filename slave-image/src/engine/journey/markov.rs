//! A Markov mix: each user walks from state to state, drawing its first state from the
//! initial distribution and each next one from the row of the state it just visited.

use lobster_fleet::scenario::Markov;

/// The mix's distributions as cumulative sums, for drawing with one uniform number.
#[derive(Debug)]
pub(crate) struct Chain {
    initial: Vec<f64>,
    rows: Vec<Vec<f64>>,
}

impl Chain {
    pub(crate) fn new(m: &Markov) -> Self {
        Chain {
            initial: cumulative(&m.initial),
            rows: m.transitions.iter().map(|r| cumulative(r)).collect(),
        }
    }

    /// The first state for a uniform draw `r` in `[0, 1)`.
    pub(crate) fn start(&self, r: f64) -> usize {
        draw(&self.initial, r)
    }

    /// The state after `from` for a uniform draw `r` in `[0, 1)`.
    pub(crate) fn next(&self, from: usize, r: f64) -> usize {
        self.rows.get(from).map_or(0, |row| draw(row, r))
    }
}

fn cumulative(p: &[f64]) -> Vec<f64> {
    let mut sum = 0.0;
    p.iter()
        .map(|x| {
            sum += x;
            sum
        })
        .collect()
}

/// The index whose interval holds `r`; a draw past the (rounded) total goes to the last state
/// with a probability above zero.
fn draw(cumulative: &[f64], r: f64) -> usize {
    cumulative.iter().position(|&c| r < c).unwrap_or_else(|| {
        let mut last = 0;
        let mut prev = 0.0;
        for (i, &c) in cumulative.iter().enumerate() {
            if c > prev {
                last = i;
            }
            prev = c;
        }
        last
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// RUBiS-like: 3 states. Over 200 000 draws from each row, every observed transition
    /// frequency is within 4 standard errors of its probability, and impossible transitions
    /// never happen; the walk's visit shares approach the stationary distribution.
    #[test]
    fn observed_transition_frequencies_match_the_matrix() {
        let m = Markov {
            initial: vec![1.0, 0.0, 0.0],
            transitions: vec![
                vec![0.1, 0.6, 0.3],
                vec![0.5, 0.0, 0.5],
                vec![0.25, 0.25, 0.5],
            ],
        };
        let chain = Chain::new(&m);
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 200_000;
        for (from, row) in m.transitions.iter().enumerate() {
            let mut counts = [0u64; 3];
            for _ in 0..n {
                counts[chain.next(from, rng.random::<f64>())] += 1;
            }
            for (to, &p) in row.iter().enumerate() {
                let observed = counts[to] as f64 / n as f64;
                let se = (p * (1.0 - p) / n as f64).sqrt();
                if p == 0.0 {
                    assert_eq!(counts[to], 0, "{from}→{to} never happens");
                } else {
                    assert!(
                        (observed - p).abs() <= 4.0 * se,
                        "{from}→{to}: observed {observed:.4}, expected {p} ± {:.4}",
                        4.0 * se
                    );
                }
            }
        }
        // A long walk visits states in the stationary shares.
        let pi = m.stationary();
        let mut visits = [0u64; 3];
        let mut state = chain.start(rng.random::<f64>());
        assert_eq!(state, 0);
        for _ in 0..n {
            visits[state] += 1;
            state = chain.next(state, rng.random::<f64>());
        }
        for (i, &p) in pi.iter().enumerate() {
            let share = visits[i] as f64 / n as f64;
            assert!(
                (share - p).abs() < 0.01,
                "state {i}: {share:.4} vs π {p:.4}"
            );
        }
    }

    #[test]
    fn a_draw_at_the_rounded_top_goes_to_a_possible_state() {
        let c = cumulative(&[0.3, 0.7, 0.0]);
        assert_eq!(draw(&c, 0.999_999_999_999), 1);
        assert_eq!(draw(&c, 1.0), 1);
        assert_eq!(draw(&c, 0.0), 0);
    }
}
