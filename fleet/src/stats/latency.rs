//! What a report shows of a latency histogram: min, mean, percentiles and max, in
//! milliseconds.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::Metric;

/// Latency percentiles in milliseconds, read from a merged histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(rename = "p99_9")]
    pub p999: f64,
    pub max: f64,
}

impl LatencySummary {
    /// Reads the summary of a histogram of microseconds (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// The value of a latency metric (`None` for non-latency metrics).
    pub fn metric(&self, m: Metric) -> Option<f64> {
        Some(match m {
            Metric::P50 => self.p50,
            Metric::P90 => self.p90,
            Metric::P95 => self.p95,
            Metric::P99 => self.p99,
            Metric::P999 => self.p999,
            Metric::Max => self.max,
            Metric::Mean => self.mean,
            Metric::ErrorRate | Metric::Rps | Metric::InjectorCpu => return None,
        })
    }
}
