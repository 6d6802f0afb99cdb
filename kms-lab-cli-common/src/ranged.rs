//! Flag parsers that reject values outside the range a command can use, naming the range
//! (`--concurrency 0` or `--timeout 0` are refused before any work starts instead of running
//! with a value that cannot work). Use them as clap `value_parser`s.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// A parser for a number in `min..=max`: `value_parser = ranged::number(1u64, 1024)`.
pub fn number<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |text: &str| {
        let value: T = text.trim().parse().map_err(|_| format!("`{text}` is not a whole number: expected {min} to {max}"))?;
        if value < min || value > max {
            return Err(format!("`{text}` is out of range: expected {min} to {max}"));
        }
        Ok(value)
    }
}

/// A parser for a duration (`250ms`, `3s`, `1m`) in `min..=max`.
pub fn duration(min: Duration, max: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let value = humantime::parse_duration(text.trim())
            .map_err(|error| format!("`{text}` is not a duration ({error}): expected e.g. 250ms, 3s or 1m"))?;
        check_duration(value, min, max).map_err(|range| format!("`{text}` is out of range: {range}"))
    }
}

/// Checks an already parsed duration against `min..=max`; the error names the range.
pub fn check_duration(value: Duration, min: Duration, max: Duration) -> Result<Duration, String> {
    if value < min || value > max {
        return Err(format!("expected a duration from {} to {}", humantime::format_duration(min), humantime::format_duration(max)));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_outside_the_range_name_the_range() {
        let parse = number(1usize, 1024);
        assert_eq!(parse("16"), Ok(16));
        assert_eq!(parse("0").unwrap_err(), "`0` is out of range: expected 1 to 1024");
        assert_eq!(parse("1000000").unwrap_err(), "`1000000` is out of range: expected 1 to 1024");
        assert!(parse("-1").unwrap_err().contains("not a whole number"));
    }

    #[test]
    fn durations_outside_the_range_name_the_range() {
        let parse = duration(Duration::from_millis(1), Duration::from_secs(600));
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("0").unwrap_err(), "`0` is out of range: expected a duration from 1ms to 10m");
        assert!(parse("3").unwrap_err().contains("not a duration"));
    }
}
