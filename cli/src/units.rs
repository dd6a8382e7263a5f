//! Parsing of sizes (`64MiB`) and octal modes (`600`) on the command line.

/// Parses `4096`, `64KiB`, `64MiB`, `1GiB` (also `K`, `M`, `G`, and `B`).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4096 or 64MiB"))?;
    let shift = match unit {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} in {s:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses an octal mode such as `600` or `0o640`.
pub(crate) fn parse_mode(s: &str) -> Result<shmgate_core::Mode, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let bits = u32::from_str_radix(digits, 8).map_err(|_| format!("{s:?} is not an octal mode"))?;
    shmgate_core::Mode::from_bits(bits).map_err(|e| format!("mode {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("600").map(|m| m.bits()), Ok(0o600));
        assert_eq!(parse_mode("0o640").map(|m| m.bits()), Ok(0o640));
        assert!(parse_mode("800").is_err());
        assert!(parse_mode("17777").is_err());
    }
}
