//! The parts of a request's time, as k6's `http_req_connecting`, `_tls_handshaking`,
//! `_waiting` and `_receiving`: one HDR histogram (microseconds) per phase, merged exactly
//! like latency.
//!
//! A phase's histogram holds only the requests in which the phase happened: connecting and
//! TLS handshaking are recorded for requests that opened a connection (a reused keep-alive
//! connection has neither, and k6's zeros would only dilute the distribution), waiting and
//! receiving for requests that got a response. So `connecting_us.len()` is the number of
//! connections opened.

use hdrhistogram::Histogram;

use super::{MAX_LATENCY_US, new_histogram};

/// The phases of requests, each a histogram of microseconds.
#[derive(Clone, Debug)]
pub struct Phases {
    /// TCP connect of requests that opened a connection.
    pub connecting_us: Histogram<u64>,
    /// TLS handshake of requests that opened an `https` connection.
    pub tls_handshaking_us: Histogram<u64>,
    /// Request written → first byte of the response (time to first byte after sending).
    pub waiting_us: Histogram<u64>,
    /// First byte of the response → its last.
    pub receiving_us: Histogram<u64>,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            connecting_us: new_histogram(),
            tls_handshaking_us: new_histogram(),
            waiting_us: new_histogram(),
            receiving_us: new_histogram(),
        }
    }
}

impl Phases {
    /// The phases' names in reports, in the order of a request.
    pub const NAMES: [&'static str; 4] = ["connecting", "tls_handshaking", "waiting", "receiving"];

    /// Each phase with its name, in the order of [`Phases::NAMES`].
    pub fn each(&self) -> [(&'static str, &Histogram<u64>); 4] {
        [
            (Self::NAMES[0], &self.connecting_us),
            (Self::NAMES[1], &self.tls_handshaking_us),
            (Self::NAMES[2], &self.waiting_us),
            (Self::NAMES[3], &self.receiving_us),
        ]
    }

    fn each_mut(&mut self) -> [&mut Histogram<u64>; 4] {
        [
            &mut self.connecting_us,
            &mut self.tls_handshaking_us,
            &mut self.waiting_us,
            &mut self.receiving_us,
        ]
    }

    /// Records one phase of `us` microseconds (clamped to 1 µs ..= one hour).
    pub fn record(h: &mut Histogram<u64>, us: u64) {
        // `record` resizes the histogram; `saturating_record` would clamp to its current
        // (initially tiny) range instead.
        let _ = h.record(us.clamp(1, MAX_LATENCY_US));
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Phases) {
        for (mine, (_, theirs)) in self.each_mut().into_iter().zip(other.each()) {
            let _ = mine.add(theirs);
        }
    }

    /// The wire form: sparse encodings ([`super::sparse`]), empty for a phase without
    /// samples.
    pub(super) fn encode(&self) -> [bytes::Bytes; 4] {
        self.each().map(|(_, h)| super::sparse::encode(h).into())
    }
}
