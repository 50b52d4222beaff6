//! Scalar values of the scenario format: durations, rates and percentages, each accepted in the
//! forms users write (`20s`, `1m30s`, `500ms`, a bare number of seconds; `200`, `0.5`; `1%`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A duration written as `500ms`, `20s`, `1m30s`, `2h`, or a bare number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor).map(DurationValue)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as `500ms`, `20s`, `1m30s` or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("duration must not be negative, got {v}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v).map_err(|_| {
            E::custom(format!(
                "duration must be a finite number of seconds ≥ 0, got {v}"
            ))
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

/// Parses `500ms`, `20s`, `1m30s`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration: expected e.g. `20s`".into());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("invalid duration `{text}`: expected a number of seconds ≥ 0"));
    }
    // humantime does not take fractions (`1.5s`); accept a single fractional unit ourselves.
    for (unit, scale) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] {
        if let Some(number) = text.strip_suffix(unit)
            && let Ok(v) = number.trim().parse::<f64>()
        {
            return Duration::try_from_secs_f64(v * scale)
                .map_err(|_| format!("invalid duration `{text}`: must be ≥ 0"));
        }
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid duration `{text}` ({e}): expected e.g. `500ms`, `20s`, `1m30s`")
    })
}

/// A non-negative number (`200`, `0.5`), used for arrival rates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Number(pub f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = f64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
        }
        d.deserialize_any(V).map(Number)
    }
}

/// A whole number as written: its value when it is one (`1e12` is), and the text to show in
/// an error, so that each field's message states its own range whatever was written
/// (`-3`, `1.5`, `many`, `1e12`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Whole {
    /// The number, when the value is a whole number ≥ 0 within `u64`.
    pub value: Option<u64>,
    /// The value as written, for messages.
    pub shown: String,
}

impl Whole {
    /// The value if it is a whole number in `min..=max`, else the field's rule.
    pub fn in_range(&self, field: &str, min: u64, max: u64) -> Result<u64, String> {
        match self.value {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(format!(
                "{field} must be a whole number from {min} to {max}, got {}",
                self.shown
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole {
                    value: Some(v),
                    shown: v.to_string(),
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
                Ok(Whole {
                    value: u64::try_from(v).ok(),
                    shown: v.to_string(),
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Whole, E> {
                let whole = v.is_finite() && v.fract() == 0.0 && v >= 0.0 && v < u64::MAX as f64;
                Ok(Whole {
                    value: whole.then_some(v as u64),
                    shown: v.to_string(),
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Whole, E> {
                Ok(Whole {
                    value: None,
                    shown: format!("`{v}`"),
                })
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Whole, E> {
                Ok(Whole {
                    value: None,
                    shown: format!("`{v}`"),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Think time: `1s`, or `{min: 500ms, max: 2s}` for a uniform draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThinkValue {
    pub min: Duration,
    pub max: Duration,
}

impl<'de> Deserialize<'de> for ThinkValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ThinkValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `1s`, or `{min: 500ms, max: 2s}`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ThinkValue, E> {
                let d = DurationVisitor.visit_u64(v)?;
                Ok(ThinkValue { min: d, max: d })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ThinkValue, E> {
                let d = DurationVisitor.visit_i64(v)?;
                Ok(ThinkValue { min: d, max: d })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ThinkValue, E> {
                let d = DurationVisitor.visit_f64(v)?;
                Ok(ThinkValue { min: d, max: d })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ThinkValue, E> {
                let d = DurationVisitor.visit_str(v)?;
                Ok(ThinkValue { min: d, max: d })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ThinkValue, A::Error> {
                let (mut min, mut max) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "min" => min = Some(map.next_value::<DurationValue>()?.0),
                        "max" => max = Some(map.next_value::<DurationValue>()?.0),
                        other => {
                            return Err(de::Error::unknown_field(other, &["min", "max"]));
                        }
                    }
                }
                match (min, max) {
                    (Some(min), Some(max)) => Ok(ThinkValue { min, max }),
                    _ => Err(de::Error::custom("think needs both `min` and `max`")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Expected statuses: `200` or `[200, 204]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusList(pub Vec<u16>);

impl<'de> Deserialize<'de> for StatusList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u16>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an HTTP status code or a list of them")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<u16>, E> {
                status(v).map(|s| vec![s])
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<u16>, E> {
                Err(E::custom(format!("expected an HTTP status code, got {v}")))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u16>, A::Error> {
                let mut out = Vec::new();
                while let Some(w) = seq.next_element::<Whole>()? {
                    match w.value {
                        Some(v) => out.push(status(v)?),
                        None => {
                            return Err(de::Error::custom(format!(
                                "expected an HTTP status code between 100 and 599, got {}",
                                w.shown
                            )));
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V).map(StatusList)
    }
}

fn status<E: de::Error>(v: u64) -> Result<u16, E> {
    u16::try_from(v)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| {
            E::custom(format!(
                "expected an HTTP status code between 100 and 599, got {v}"
            ))
        })
}

/// An SLA threshold: a duration (`800ms`), a percentage (`1%`) or a plain number.
#[derive(Clone, Debug, PartialEq)]
pub enum Threshold {
    /// Written with a time unit.
    Duration(Duration),
    /// Written with `%`.
    Percent(f64),
    /// A bare number; its unit comes from the metric (ms for latency, % for error rate).
    Number(f64),
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Threshold;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a threshold such as `800ms`, `1%` or a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Threshold, E> {
                Ok(Threshold::Number(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Threshold, E> {
                Ok(Threshold::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Threshold, E> {
                Ok(Threshold::Number(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Threshold, E> {
                let t = v.trim();
                if let Some(p) = t.strip_suffix('%') {
                    return p
                        .trim()
                        .parse::<f64>()
                        .map(Threshold::Percent)
                        .map_err(|_| {
                            E::custom(format!("invalid percentage `{v}`: expected e.g. `1%`"))
                        });
                }
                if let Ok(n) = t.parse::<f64>() {
                    return Ok(Threshold::Number(n));
                }
                parse_duration(t)
                    .map(Threshold::Duration)
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Text from a file as editors and spreadsheets save it: UTF-8 with or without a byte order
/// mark, or UTF-16 (little or big endian) with one, as Windows tools write "Unicode" text.
pub fn decode_text(bytes: &[u8]) -> Result<String, String> {
    let utf16 = |rest: &[u8], le: bool| {
        if !rest.len().is_multiple_of(2) {
            return Err("UTF-16 text with an odd number of bytes".to_string());
        }
        let units = rest.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|e| format!("invalid UTF-16 text ({e})"))
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => utf8(rest),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        _ => utf8(bytes),
    }
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        format!(
            "not UTF-8 or UTF-16 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_forms_users_write() {
        let ms = |t: &str| parse_duration(t).map(|d| d.as_millis());
        assert_eq!(ms("20s"), Ok(20_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms("1.5s"), Ok(1_500));
        assert_eq!(ms("2h"), Ok(7_200_000));
        assert_eq!(ms("3"), Ok(3_000));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e400s").is_err());
    }
}
