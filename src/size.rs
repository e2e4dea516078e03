//! Human-readable byte sizes: `512M`, `10G`, `1.5GiB`, `123`.
//!
//! All multiples are **binary** (powers of 1024), whatever the spelling: `1K` = `1KB` = `1KiB` =
//! 1024 bytes, `1G` = 1024³ bytes. Storage quotas and cache budgets are sized against disks and
//! file sizes that tools like `du -h` and `ls -lh` show in binary units, so one rule, stated once,
//! beats the SI/IEC distinction that nobody types consistently.

use std::fmt;

/// Why a size could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error("invalid size {0:?}: expected a number with an optional unit, like 512M, 1.5G or 123")]
    InvalidNumber(String),
    #[error("unknown size unit {unit:?} in {input:?}: use B, K, M, G, T or P (optionally followed by B or iB)")]
    UnknownUnit { input: String, unit: String },
    #[error("size {0:?} is too large")]
    Overflow(String),
    #[error("size {0:?} is not a whole number of bytes")]
    FractionalBytes(String),
}

const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];

/// Parses a size such as `512M`, `10G`, `1.5G`, `100K`, `123` (bytes), `2T`, `10GiB`, `512MB`.
///
/// Case-insensitive; whitespace between the number and the unit is allowed. Units are binary
/// multiples of 1024 (see the module docs). A fractional value is rounded down to a whole byte;
/// a fraction without a unit (`1.5`) is an error.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim_start());

    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || frac_part.contains('.')
        || (number.contains('.') && frac_part.is_empty())
    {
        return Err(SizeError::InvalidNumber(input.to_string()));
    }

    let exponent = unit_exponent(unit).ok_or_else(|| SizeError::UnknownUnit {
        input: input.to_string(),
        unit: unit.to_string(),
    })?;
    let multiplier: u128 = 1u128 << (10 * exponent);

    let overflow = || SizeError::Overflow(input.to_string());
    // Exact integer arithmetic: value = (int . frac) * multiplier, rounded down.
    let int_value: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse::<u128>().map_err(|_| overflow())?
    };
    let mut total = int_value.checked_mul(multiplier).ok_or_else(overflow)?;
    if !frac_part.is_empty() {
        // 20 digits resolve far below one byte even for P (2^50 < 10^16); more could overflow
        // the multiplication below, so the rest is ignored.
        let digits = &frac_part[..frac_part.len().min(20)];
        let frac: u128 = digits.parse().map_err(|_| overflow())?;
        let scale = 10u128.pow(digits.len() as u32);
        if exponent == 0 && frac != 0 {
            return Err(SizeError::FractionalBytes(input.to_string()));
        }
        total = total
            .checked_add(frac * multiplier / scale)
            .ok_or_else(overflow)?;
    }
    u64::try_from(total).map_err(|_| overflow())
}

/// The power of 1024 a unit stands for, or `None` for an unknown unit.
fn unit_exponent(unit: &str) -> Option<u32> {
    let u = unit.to_ascii_uppercase();
    if u.is_empty() || u == "B" {
        return Some(0);
    }
    let (letter, rest) = u.split_at(1);
    let exponent = UNITS.iter().position(|x| *x == letter)? as u32;
    if exponent == 0 {
        return None; // "BB", "BIB"
    }
    match rest {
        "" | "B" | "IB" => Some(exponent),
        _ => None,
    }
}

/// Formats a byte count with binary units, e.g. `123 B`, `512 MiB`, `1.5 GiB`.
///
/// The result is accepted by [`parse_size`] (rounded to one decimal).
pub fn format_size(bytes: u64) -> String {
    FormatSize(bytes).to_string()
}

/// `Display` adapter behind [`format_size`], handy in log and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatSize(pub u64);

impl fmt::Display for FormatSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        if bytes < 1024 {
            return write!(f, "{bytes} B");
        }
        let mut exponent = 1;
        while exponent + 1 < UNITS.len() && bytes >= 1u64 << (10 * (exponent + 1)) {
            exponent += 1;
        }
        let unit = 1u64 << (10 * exponent);
        // Tenths, rounded to nearest, computed in integers to avoid float surprises.
        let tenths = (u128::from(bytes) * 10 + u128::from(unit) / 2) / u128::from(unit);
        let (whole, tenth) = (tenths / 10, tenths % 10);
        if tenth == 0 {
            write!(f, "{whole} {}iB", UNITS[exponent])
        } else {
            write!(f, "{whole}.{tenth} {}iB", UNITS[exponent])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;
    const M: u64 = K * 1024;
    const G: u64 = M * 1024;
    const T: u64 = G * 1024;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("123B"), Ok(123));
        assert_eq!(parse_size(" 123 b "), Ok(123));
    }

    #[test]
    fn binary_units_any_spelling() {
        assert_eq!(parse_size("100K"), Ok(100 * K));
        assert_eq!(parse_size("512M"), Ok(512 * M));
        assert_eq!(parse_size("512MB"), Ok(512 * M));
        assert_eq!(parse_size("512MiB"), Ok(512 * M));
        assert_eq!(parse_size("10G"), Ok(10 * G));
        assert_eq!(parse_size("10GiB"), Ok(10 * G));
        assert_eq!(parse_size("10gib"), Ok(10 * G));
        assert_eq!(parse_size("10gB"), Ok(10 * G));
        assert_eq!(parse_size("2T"), Ok(2 * T));
        assert_eq!(parse_size("2 TiB"), Ok(2 * T));
        assert_eq!(parse_size("1P"), Ok(1024 * T));
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_size("1.5G"), Ok(G + G / 2));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size(".5K"), Ok(512));
        // Rounded down to a whole byte: 0.1 KiB = 102.4 bytes.
        assert_eq!(parse_size("0.1K"), Ok(102));
        assert_eq!(parse_size("1.0"), Ok(1));
        assert!(matches!(
            parse_size("1.5"),
            Err(SizeError::FractionalBytes(_))
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("   "), Err(SizeError::Empty));
        assert!(matches!(parse_size("G"), Err(SizeError::InvalidNumber(_))));
        assert!(matches!(parse_size("."), Err(SizeError::InvalidNumber(_))));
        assert!(matches!(parse_size("1."), Err(SizeError::InvalidNumber(_))));
        assert!(matches!(
            parse_size("1.2.3G"),
            Err(SizeError::InvalidNumber(_))
        ));
        assert!(matches!(
            parse_size("-1G"),
            Err(SizeError::InvalidNumber(_))
        ));
        assert!(matches!(
            parse_size("10X"),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10GX"),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10 G B"),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("10BB"),
            Err(SizeError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn overflow() {
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert!(matches!(
            parse_size("18446744073709551616"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(parse_size("16384P"), Err(SizeError::Overflow(_))));
        assert!(matches!(
            parse_size("99999999999999999999999999999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
        assert_eq!(
            parse_size("15.99999999999999999999999999999999999P"),
            Ok(16 * 1024 * T - 1)
        );
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1 KiB");
        assert_eq!(format_size(512 * M), "512 MiB");
        assert_eq!(format_size(G + G / 2), "1.5 GiB");
        assert_eq!(format_size(2 * T), "2 TiB");
        assert_eq!(format_size(u64::MAX), "16384 PiB");
    }

    #[test]
    fn format_parses_back() {
        for n in [0, 1, 1023, 1024, 1536, 512 * M, G + G / 2, 10 * G, 2 * T] {
            let s = format_size(n);
            let back = parse_size(&s).unwrap();
            let err = back.abs_diff(n);
            assert!(err <= n / 20, "{n} -> {s} -> {back}");
        }
    }
}
