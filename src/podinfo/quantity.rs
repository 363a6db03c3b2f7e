//! Kubernetes resource quantities ("500m", "128Mi", "1.5", "2e3") as the integers CRI wants.
//! Pure and strict: a quantity we cannot read is an error naming it, never a silent zero.

/// The value of a quantity in thousandths of its unit (CPU millicores, or milli-bytes).
pub fn parse_milli(text: &str) -> Result<i128, String> {
    let s = text.trim();
    let bad = || format!("invalid quantity {text:?}");
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number.starts_with('-') {
        return Err(bad());
    }
    let number = number.trim_start_matches('+');
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() || !(int_part.chars().chain(frac_part.chars()).all(|c| c.is_ascii_digit())) {
        return Err(bad());
    }
    // (multiplier numerator, decimal exponent) applied to the number, times 1000 for milli.
    let (binary, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        e if e.starts_with(['e', 'E']) => (1, e[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let digits: String = format!("{int_part}{frac_part}");
    let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| bad())? };
    let exp = exp10 + 3 - frac_part.len() as i32;
    let scaled = if exp >= 0 {
        mantissa.checked_mul(10i128.checked_pow(exp as u32).ok_or_else(bad)?).ok_or_else(bad)?
    } else {
        // Round up, as Kubernetes does when a quantity is finer than the unit asked for.
        let div = 10i128.checked_pow((-exp) as u32).ok_or_else(bad)?;
        mantissa / div + i128::from(mantissa % div != 0)
    };
    scaled.checked_mul(binary).ok_or_else(bad)
}

/// CPU in millicores.
pub fn cpu_millis(text: &str) -> Result<i64, String> {
    parse_milli(text).and_then(|m| fit(text, m, "millicores"))
}

/// Memory (or any byte count) in bytes, rounded up.
pub fn bytes(text: &str) -> Result<i64, String> {
    parse_milli(text).and_then(|m| fit(text, (m + 999) / 1000, "bytes"))
}

/// A value beyond what CRI's int64 fields hold (2^63 or more) is refused: the kubelet's
/// `Quantity.Value()` wraps such a value to a negative number, which nodelet must not copy.
fn fit(text: &str, value: i128, unit: &str) -> Result<i64, String> {
    i64::try_from(value).map_err(|_| format!("quantity {text:?} is too large: {value} {unit} does not fit in 64 bits (at most {})", i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(cpu_millis("500m"), Ok(500));
        assert_eq!(cpu_millis("1"), Ok(1000));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis("0.1"), Ok(100));
        assert_eq!(cpu_millis("2e3"), Ok(2_000_000));
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(bytes("128Mi"), Ok(128 << 20));
        assert_eq!(bytes("1Gi"), Ok(1 << 30));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1.5Ki"), Ok(1536));
        assert_eq!(bytes("100"), Ok(100));
        assert_eq!(bytes("1k"), Ok(1000));
    }

    #[test]
    fn quantities_of_2_pow_63_or_more_are_errors_not_wrapped() {
        assert_eq!(bytes("7Ei"), Ok(7 << 60));
        assert_eq!(bytes("9223372036854775807"), Ok(i64::MAX));
        for big in ["8Ei", "9223372036854775808", "10E", "1e19", "100000000000000000000000000000"] {
            let err = bytes(big).unwrap_err();
            assert!(err.contains(&format!("{big:?}")) && err.contains("too large"), "{big}: {err}");
        }
        // Millicores overflow 1000 times sooner than bytes.
        assert_eq!(cpu_millis("9223372036854775"), Ok(9_223_372_036_854_775_000));
        assert!(cpu_millis("9223372036854776").unwrap_err().contains("too large"));
        assert!(cpu_millis("8Ei").is_err());
        // Far beyond i128 as well: an error, never a panic.
        assert!(parse_milli("1e400").is_err());
        assert!(parse_milli("99999999999999999999999999999999999999999999").is_err());
        assert_eq!(parse_milli("169999999999999999999999999999999999999e-41"), Ok(2));
    }

    #[test]
    fn garbage_is_an_error_naming_it() {
        for bad in ["", "abc", "1Q", "-1", "1..2", "Mi"] {
            let err = parse_milli(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
