//! Lobster's encoding of a histogram on the wire and in the run store: its non-empty buckets,
//! each one 32-bit word, which the master checks and merges without reading numbers one after
//! another.
//!
//! HdrHistogram's V2 encoding, which slaves sent before and which runs stored by earlier
//! masters hold (still read: `wire.rs`), writes every bucket's count as a zig-zag LEB128
//! number and a run of empty buckets as one negative number. Reading it is a chain of
//! dependent steps per number (where does this number end, so where does the next start):
//! about 5 ns a number on the 2-core machine (`scripts/bench/interval-check`), for about 3,000
//! numbers in a slave's second of 10 endpoints; at 10,000 slaves the check was a quarter of
//! the master's samples, and three branch-free decoders of it (8 bytes at a time by their
//! terminator bits, byte by byte unrolled, numbers first and buckets second) were no more than
//! 8 % faster. Here the words are independent of one another.
//!
//! The encoding: [`SPARSE_COOKIE`] (4 bytes, big-endian as V2's cookie, from which it
//! differs), then one little-endian `u32` per non-empty bucket, in increasing index order,
//! each index once: the bucket's index in our configuration's counts array (3 significant
//! digits, lowest value 1, as `wire.rs` lays it out) in the high 16 bits and its count in the
//! low 16 bits; a count of 2¹⁶ − 1 or more is written as `0xFFFF` and followed by the count as
//! a little-endian `u64`. A histogram without samples is no bytes at all. Anything else is
//! refused (so every histogram has exactly one encoding).

use hdrhistogram::Histogram;

/// First 4 bytes of a sparse encoding ("LSB1"; V2's are 0x1c849303 or 0x1c849313).
pub(super) const SPARSE_COOKIE: u32 = 0x4c53_4231;
/// The count field's value that says the count follows as a `u64`.
const LONG: u32 = 0xFFFF;
/// log2 of half the sub-buckets per bucket (as `wire.rs`: 2048 sub-buckets).
const HALF_MAGNITUDE: u32 = 10;

/// The index of the bucket holding `value` in a histogram of our configuration (HdrHistogram's
/// `index_for`, unit magnitude 0): the inverse of `wire::value_at` on each bucket's values.
pub(super) fn index_of(value: u64) -> usize {
    // 64 − unit magnitude (0) − half magnitude − 1.
    let base = 64 - HALF_MAGNITUDE - 1;
    let bucket = base - (value | ((2 << HALF_MAGNITUDE) - 1)).leading_zeros();
    let sub = (value >> bucket) as usize;
    (((bucket + 1) as usize) << HALF_MAGNITUDE) + sub - (1 << HALF_MAGNITUDE)
}

/// The sparse encoding of `h` (a histogram of our configuration): no bytes when it is empty.
pub(super) fn encode(h: &Histogram<u64>) -> Vec<u8> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(4 + 4 * 64);
    out.extend_from_slice(&SPARSE_COOKIE.to_be_bytes());
    for v in h.iter_recorded() {
        let index = index_of(v.value_iterated_to()) as u32;
        let count = v.count_at_value();
        if count < u64::from(LONG) {
            out.extend_from_slice(&((index << 16) | count as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&((index << 16) | LONG).to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
    }
    out
}

/// Calls `f(bucket index, count)` for each bucket of a sparse encoding's words (after its
/// cookie), refusing words out of order, empty buckets and encodings cut off or not
/// canonical; stops at `f`'s first error. Indexes are bounded by the caller's check, as V2's
/// are (`wire.rs`: one bound for both encodings).
#[inline(always)]
pub(super) fn buckets(
    words: &[u8],
    mut f: impl FnMut(usize, u64) -> Result<(), String>,
) -> Result<(), String> {
    let mut at = 0;
    // The lowest index the next bucket may have.
    let mut next = 0;
    while let Some(word) = words.get(at..at + 4) {
        let w = u32::from_le_bytes(word.try_into().expect("4 bytes"));
        at += 4;
        let index = (w >> 16) as usize;
        let mut count = u64::from(w & LONG);
        if count == u64::from(LONG) {
            let long = words
                .get(at..at + 8)
                .ok_or("histogram buckets end mid-bucket")?;
            count = u64::from_le_bytes(long.try_into().expect("8 bytes"));
            at += 8;
            if count < u64::from(LONG) {
                return Err("histogram bucket count written long but short".into());
            }
        }
        if index < next {
            return Err("histogram buckets out of order".into());
        }
        if count == 0 {
            return Err("histogram bucket without samples".into());
        }
        f(index, count)?;
        next = index + 1;
    }
    if at != words.len() {
        return Err("histogram buckets end mid-bucket".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::wire::{counts_len, value_at};
    use super::super::{
        IntervalStats, MAX_LATENCY_US, MAX_WIRE_HIGHEST, WireHistogram, new_histogram,
    };
    use super::*;

    fn buckets_of(h: &Histogram<u64>) -> Vec<(u64, u64)> {
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// A word, as the encoding writes one.
    fn word(index: u32, count: u32) -> [u8; 4] {
        ((index << 16) | count).to_le_bytes()
    }

    fn encoded(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = SPARSE_COOKIE.to_be_bytes().to_vec();
        for p in parts {
            out.extend_from_slice(p);
        }
        out
    }

    /// `index_of` finds the bucket of every value: the inverse of `value_at` on every bucket
    /// any encoding may name, for its lowest and highest value.
    #[test]
    fn every_bucket_is_found_by_its_values() {
        let h: Histogram<u64> = Histogram::new_with_bounds(1, MAX_WIRE_HIGHEST, 3).unwrap();
        for index in 0..counts_len(MAX_WIRE_HIGHEST) {
            let low = value_at(index);
            assert_eq!(index_of(low), index, "lowest value {low}");
            assert_eq!(
                index_of(h.highest_equivalent(low)),
                index,
                "highest of {low}"
            );
        }
    }

    proptest! {
        /// What `encode` writes is checked and added back into exactly the histogram it was:
        /// every bucket and count, counts past 2¹⁶ − 1 and 2⁴⁸ included.
        #[test]
        fn encoding_and_adding_back_gives_the_same_histogram(
            values in proptest::collection::vec(
                (1u64..MAX_LATENCY_US, prop_oneof![1u64..5, 65_530u64..65_540, Just(1u64 << 50)]),
                0..300,
            ),
        ) {
            let mut h = new_histogram();
            for (v, n) in &values {
                h.record_n(*v, *n).unwrap();
            }
            let bytes = encode(&h);
            prop_assert_eq!(bytes.is_empty(), h.is_empty());
            let wire = WireHistogram::check(&bytes).unwrap();
            prop_assert_eq!(wire.len(), h.len());
            let back = wire.to_histogram();
            prop_assert_eq!(buckets_of(&back), buckets_of(&h));
            prop_assert_eq!((back.min(), back.max()), (h.min(), h.max()));
        }

        /// Arbitrary words behind the cookie never panic, and whatever passes the check adds
        /// exactly the samples it claims.
        #[test]
        fn arbitrary_words_never_panic(words in proptest::collection::vec(any::<u8>(), 0..512)) {
            let bytes = encoded(&[&words]);
            if let Ok(w) = WireHistogram::check(&bytes) {
                prop_assert_eq!(w.to_histogram().len(), w.len());
            }
        }
    }

    /// Every encoding that is not the one `encode` writes is refused, with what is wrong.
    #[test]
    fn encodings_other_than_the_canonical_one_are_refused() {
        let beyond = counts_len(MAX_WIRE_HIGHEST) as u32;
        let long_short = [word(7, LONG).as_slice(), &5u64.to_le_bytes()].concat();
        let huge = [word(7, LONG).as_slice(), &u64::MAX.to_le_bytes()].concat();
        let overflow = [
            huge.clone(),
            word(8, LONG).to_vec(),
            u64::MAX.to_le_bytes().to_vec(),
        ];
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("the cookie alone", encoded(&[]), "without buckets"),
            (
                "a word cut short",
                encoded(&[&word(3, 1), &[1, 2]]),
                "mid-bucket",
            ),
            (
                "a long count cut short",
                encoded(&[&word(3, LONG), &[1, 2, 3]]),
                "mid-bucket",
            ),
            (
                "a long count below 2¹⁶ − 1",
                encoded(&[&long_short]),
                "long but short",
            ),
            (
                "buckets out of order",
                encoded(&[&word(9, 1), &word(4, 1)]),
                "out of order",
            ),
            (
                "a bucket twice",
                encoded(&[&word(9, 1), &word(9, 1)]),
                "out of order",
            ),
            (
                "an empty bucket",
                encoded(&[&word(9, 0)]),
                "without samples",
            ),
            (
                "a bucket past any value",
                encoded(&[&word(beyond, 1)]),
                "beyond",
            ),
            (
                "counts past 2⁶⁴",
                encoded(&[&overflow.concat()]),
                "overflow",
            ),
        ];
        for (what, bytes, why) in cases {
            let got = WireHistogram::check(&bytes);
            assert!(
                got.as_ref().is_err_and(|e| e.contains(why)),
                "{what}: {got:?} (expected an error with {why:?})"
            );
        }
        // A count that needs the long form, then the largest index: both pass.
        let big = [word(7, LONG).as_slice(), &(1u64 << 40).to_le_bytes()].concat();
        let ok = encoded(&[&big, &word(beyond - 1, 1)]);
        assert_eq!(WireHistogram::check(&ok).unwrap().len(), (1 << 40) + 1);
    }

    /// Slaves and the run store write the sparse encoding, for every histogram of an
    /// interval (latencies, phases, flows); a histogram without samples is no bytes.
    #[test]
    fn intervals_are_written_sparse() {
        let mut st = IntervalStats::default();
        let e = st.endpoints.entry("e".into()).or_default();
        e.latency_us.record(1500).unwrap();
        e.phases.waiting_us.record(1200).unwrap();
        e.requests = 1;
        let f = st.flows.entry("f".into()).or_default();
        f.duration_us.record(9000).unwrap();
        f.completed = 1;
        let wire = st.to_proto("r", 0, false);
        let e = &wire.endpoints[0];
        let cookie = SPARSE_COOKIE.to_be_bytes();
        for (what, bytes) in [
            ("latency", &e.latency_us),
            ("waiting", &e.waiting_us),
            ("flow", &wire.flows["f"].duration_us),
        ] {
            assert_eq!(bytes.len(), 8, "{what}: the cookie and one word");
            assert_eq!(bytes[..4], cookie, "{what}");
        }
        assert!(e.connecting_us.is_empty() && e.receiving_us.is_empty());
        let back = IntervalStats::from_proto(&wire).unwrap();
        assert_eq!(back.endpoints["e"].latency_us.max(), 1500);
        assert_eq!(back.flows["f"].duration_us.len(), 1);
    }
}
