//! Byte sizes as users write them: `512M`, `10G`, `1T`, `4096` (binary units).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("invalid size {0:?}: expected a number with an optional K, M, G, T or P suffix")]
    Syntax(String),
    #[error("invalid size {0:?}: too large")]
    Overflow(String),
    #[error("invalid size {0:?}: not a whole number of bytes")]
    Fraction(String),
}

/// Parses `N[.F][KMGTP][iB|B]` with binary multipliers, as qemu-img takes sizes: plain
/// numbers are bytes, and a decimal fraction (`1.5G`) must come to whole bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let digits = |x: &str| x.bytes().take_while(|b| b.is_ascii_digit()).count();
    let int_len = digits(t);
    let (int, rest) = t.split_at(int_len);
    let (frac, suffix) = match rest.strip_prefix('.') {
        Some(r) => r.split_at(digits(r)),
        None => ("", rest),
    };
    if int.is_empty() || (rest.starts_with('.') && frac.is_empty()) || frac.len() > 18 {
        return Err(SizeError::Syntax(s.to_string()));
    }
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        _ => return Err(SizeError::Syntax(s.to_string())),
    };
    let overflow = || SizeError::Overflow(s.to_string());
    // Exact: (int.frac * 10^len) * 2^shift / 10^len, in u128.
    let scale = 10u128.pow(frac.len() as u32);
    let int: u128 = int.parse().map_err(|_| overflow())?;
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| overflow())?
    };
    let scaled = int
        .checked_mul(scale)
        .and_then(|v| v.checked_add(frac))
        .and_then(|v| v.checked_mul(1u128 << shift))
        .ok_or_else(overflow)?;
    if scaled % scale != 0 {
        return Err(SizeError::Fraction(s.to_string()));
    }
    u64::try_from(scaled / scale).map_err(|_| overflow())
}

/// Formats bytes for people: exact units where they divide evenly, else one decimal.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut v = bytes as f64;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1k").unwrap(), 1024);
    }

    #[test]
    fn refuses_garbage() {
        for s in ["", "G", "-1", ".5G", "1.G", "1.5.1G", "10X", "1 G"] {
            assert!(parse_size(s).is_err(), "{s}");
        }
        assert!(matches!(
            parse_size("99999999999P"),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn decimal_fractions_as_qemu_img_takes_them() {
        assert_eq!(parse_size("1.5G").unwrap(), 1536 << 20);
        assert_eq!(parse_size("0.5k").unwrap(), 512);
        assert_eq!(parse_size("2.25M").unwrap(), 2304 << 10);
        assert_eq!(parse_size("10.0").unwrap(), 10);
        assert_eq!(parse_size("1.1K"), Err(SizeError::Fraction("1.1K".into())));
        assert!(matches!(parse_size("0.5"), Err(SizeError::Fraction(_))));
        assert!(parse_size("16383.99999P").is_err());
        assert!(matches!(parse_size("16384P"), Err(SizeError::Overflow(_))));
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(1536 << 20), "1.5 GiB");
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,24}") {
            let _ = parse_size(&s);
        }
    }
}
