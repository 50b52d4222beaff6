//! Slicing: how a run's load is divided over its slaves.
//!
//! Pure and exact. The load itself (users or arrivals) is striped: every slave follows the
//! fleet-wide profile and owns the user or arrival indexes of its [`stripe`], in proportion to
//! its weight (its thousandths of a core), so the fleet acts as one generator whatever its size.
//! The data items and the connection budget are divided by the largest remainder method: each
//! slave gets the floor of its exact quota, and the units left over go one each to the slaves
//! with the largest remainders (ties to the earlier slave). So the shares always sum to exactly
//! what the scenario asks, no slave gets more than the ceiling of its quota, and the same
//! inputs always give the same shares.

use lobster_fleet::proto::Share;
use lobster_fleet::scenario::Scenario;
use lobster_fleet::stripe;

/// Divides `total` over `weights` (largest remainder). Zero weights get zero; if every weight
/// is zero the total is divided as if all weights were equal.
pub fn slice(total: u64, weights: &[u64]) -> Vec<u64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let all_zero = weights.iter().all(|&w| w == 0);
    let w: Vec<u128> = weights
        .iter()
        .map(|&w| if all_zero { 1 } else { u128::from(w) })
        .collect();
    let sum: u128 = w.iter().sum();
    let total128 = u128::from(total);
    let mut shares: Vec<u64> = w.iter().map(|&wi| (total128 * wi / sum) as u64).collect();
    let given: u64 = shares.iter().sum();
    let mut left = total - given;
    if left > 0 {
        let mut order: Vec<usize> = (0..w.len()).filter(|&i| w[i] > 0).collect();
        // Largest remainder first; ties keep the earlier slave first (stable sort).
        order.sort_by(|&a, &b| (total128 * w[b] % sum).cmp(&(total128 * w[a] % sum)));
        for i in order {
            if left == 0 {
                break;
            }
            shares[i] += 1;
            left -= 1;
        }
    }
    shares
}

/// One participant of a run as slicing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Stable key (the slave's uid); participants are sliced in this order.
    pub key: String,
    /// Thousandths of a core.
    pub millicores: u64,
}

/// The shares of `scenario` for `slots` (same order as `slots`, which callers keep sorted by key).
pub fn shares(scenario: &Scenario, slots: &[Slot]) -> Vec<Share> {
    let weights: Vec<u64> = slots.iter().map(|s| s.millicores).collect();
    let stripes = stripe::stripes(&weights);
    let items = slice(scenario.data.len() as u64, &weights);
    // `cycle` and `random`: every slave gets every item.
    let shared_items = scenario.data_strategy != lobster_fleet::scenario::DataStrategy::Slice;
    let conns = slice(u64::from(scenario.max_connections), &weights);
    let mut offset = 0usize;
    stripes
        .into_iter()
        .enumerate()
        .map(|(i, stripe)| {
            let n = items[i] as usize;
            let share = Share {
                items: if shared_items {
                    scenario.data.clone()
                } else {
                    scenario.data[offset..offset + n].to_vec()
                },
                max_connections: conns[i].clamp(1, u64::from(u32::MAX)) as u32,
                stripe_period: stripe.period(),
                stripe_offsets: stripe.offsets().to_vec(),
                // Set by the run when it sends the share.
                from_load_ms: None,
            };
            offset += n;
            share
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(slice(30, &[1000, 1000, 1000]), vec![10, 10, 10]);
        assert_eq!(
            slice(200_000, &[1000, 1000, 1000]),
            vec![66_667, 66_667, 66_666]
        );
        assert_eq!(slice(10, &[2000, 1000, 1000]), vec![5, 3, 2]);
        assert_eq!(slice(1, &[1000, 1000]), vec![1, 0]);
        assert_eq!(slice(0, &[1000, 1000]), vec![0, 0]);
        assert_eq!(slice(7, &[0, 0]), vec![4, 3]);
        assert_eq!(slice(7, &[0, 500]), vec![0, 7]);
        assert!(slice(5, &[]).is_empty());
    }

    #[test]
    fn items_are_partitioned_without_overlap() {
        let text = "name: d\ntarget: http://a\nduration: 1s\nload: {users: 5}\ndata: {items: [a, b, c, d, e, f, g]}\nrequests: [{name: r, path: '/{{item}}'}]\n";
        let s = lobster_fleet::scenario::parse(text, "d.yaml").unwrap();
        let slots: Vec<Slot> = ["x", "y", "z"]
            .iter()
            .map(|k| Slot {
                key: k.to_string(),
                millicores: 1000,
            })
            .collect();
        let shares = shares(&s, &slots);
        let all: Vec<String> = shares.iter().flat_map(|s| s.items.clone()).collect();
        assert_eq!(all, s.data);
        // `cycle` and `random` give every slave every item.
        for strategy in ["cycle", "random"] {
            let shared = text.replace("g]}", &format!("g], strategy: {strategy}}}"));
            let s = lobster_fleet::scenario::parse(&shared, "d.yaml").unwrap();
            for share in super::shares(&s, &slots) {
                assert_eq!(share.items, s.data, "{strategy}");
            }
        }
        let owned: Vec<usize> = (0..5u64)
            .map(|u| {
                shares
                    .iter()
                    .filter(|s| {
                        let st = stripe::Stripe::new(s.stripe_period, s.stripe_offsets.clone());
                        st.unwrap().owns(u)
                    })
                    .count()
            })
            .collect();
        assert_eq!(owned, vec![1; 5], "every user index has exactly one owner");
        assert_eq!(
            shares
                .iter()
                .map(|s| u64::from(s.max_connections))
                .sum::<u64>(),
            10_000
        );
    }

    proptest! {
        /// Sum preserved, nobody above the ceiling of its quota, deterministic.
        #[test]
        fn slicing_invariants(total in 0u64..10_000_000_000, weights in proptest::collection::vec(0u64..64_000, 1..64)) {
            let shares = slice(total, &weights);
            prop_assert_eq!(shares.len(), weights.len());
            prop_assert_eq!(shares.iter().sum::<u64>(), total);
            let all_zero = weights.iter().all(|&w| w == 0);
            let w: Vec<u128> = weights.iter().map(|&w| if all_zero { 1 } else { u128::from(w) }).collect();
            let sum: u128 = w.iter().sum();
            for (i, &s) in shares.iter().enumerate() {
                let exact_num = u128::from(total) * w[i];
                let floor = (exact_num / sum) as u64;
                let ceil = floor + u64::from(!exact_num.is_multiple_of(sum));
                prop_assert!(s >= floor && s <= ceil, "slave {} got {} for quota in [{}, {}]", i, s, floor, ceil);
            }
            prop_assert_eq!(slice(total, &weights), shares);
        }
    }
}
