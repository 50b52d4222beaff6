//! Value parsers for the numeric flags of `lobster` and `lobster-slave`: whatever way a value
//! is typed (`--count -3`, `--count=-3`, `--count many`), the error states the flag's rule.
//! Flags that take them are declared with `allow_negative_numbers`, so a negative value
//! reaches the parser instead of being taken for another flag.

use std::fmt::Display;

/// A whole number in `min..=max` (`hint` is added to the rule, e.g. how to stop a fleet).
pub fn whole<T>(
    min: T,
    max: T,
    hint: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: Copy + Display + Into<u64> + TryFrom<u64> + Send + Sync + 'static,
{
    move |text: &str| {
        let rule = || {
            let rule = format!("must be a whole number from {min} to {max}");
            if hint.is_empty() {
                rule
            } else {
                format!("{rule} ({hint})")
            }
        };
        let v: i128 = text
            .trim()
            .parse()
            .map_err(|_| format!("{}, not `{text}`", rule()))?;
        if v < i128::from(min.into()) || v > i128::from(max.into()) {
            return Err(rule());
        }
        T::try_from(v as u64).map_err(|_| rule())
    }
}

/// A number in `min..=max` (above `min` when `min_exclusive`), e.g. minutes or a share.
pub fn number(
    min: f64,
    max: f64,
    min_exclusive: bool,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let rule = if min_exclusive {
            format!("must be a number above {min} and at most {max}")
        } else {
            format!("must be a number from {min} to {max}")
        };
        let v: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{rule}, not `{text}`"))?;
        let low_ok = if min_exclusive { v > min } else { v >= min };
        if !v.is_finite() || !low_ok || v > max {
            return Err(rule);
        }
        Ok(v)
    }
}

/// A percentage in `0..=max` written `20%` or `20`, returned as a fraction (`0.2`).
pub fn percent(max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let rule = format!("must be a percentage from 0% to {max}%");
        let t = text.trim();
        let v: f64 = t
            .strip_suffix('%')
            .unwrap_or(t)
            .trim()
            .parse()
            .map_err(|_| format!("{rule}, not `{text}`"))?;
        if !v.is_finite() || !(0.0..=max).contains(&v) {
            return Err(rule);
        }
        Ok(v / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_gets_the_rule() {
        let count = whole(1u32, 10_000, "to stop the fleet: lobster fleet down");
        assert_eq!(count("3"), Ok(3));
        for bad in [
            "-3",
            "0",
            "10001",
            "99999999999999999999999",
            "many",
            "1.5",
            "",
        ] {
            let e = count(bad).unwrap_err();
            assert!(
                e.contains("from 1 to 10000") && e.contains("lobster fleet down"),
                "{bad}: {e}"
            );
        }
        let share = number(0.0, 1.0, false);
        assert_eq!(share("0.5"), Ok(0.5));
        for bad in ["-0.1", "2", "NaN", "inf", "x"] {
            assert!(share(bad).unwrap_err().contains("from 0 to 1"), "{bad}");
        }
        let pct = percent(1000.0);
        assert_eq!(pct("20%"), Ok(0.2));
        assert_eq!(pct(" 5 "), Ok(0.05));
        for bad in ["-1%", "1001", "x%", "NaN", ""] {
            assert!(pct(bad).unwrap_err().contains("from 0% to 1000%"), "{bad}");
        }
        let minutes = number(0.0, 10_080.0, true);
        assert!(minutes("0").unwrap_err().contains("above 0"));
    }
}
