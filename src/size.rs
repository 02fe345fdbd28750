//! Byte sizes for people, in one place: printing them (`1.5 GiB`, `12 MiB`) and parsing them
//! (`4G`, `3500MiB`). Binary units throughout.

const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

/// One decimal in the largest unit that keeps the number at least 1: `512 B`, `1.5 KiB`,
/// `1.9 GiB` (reports such as `piforge inspect`).
pub fn human(n: u64) -> String {
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Whole KiB or MiB, rounded down, once there are at least ten of them: `9999 B`, `10 KiB`,
/// `12 MiB` (the `--dry-run` listing, where sizes line up as integers).
pub fn human_whole(n: u64) -> String {
    if n >= 10 << 20 {
        format!("{} MiB", n >> 20)
    } else if n >= 10 << 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// Parses `123`, `512K`, `100M`, `4G`, `1T` (binary units; an optional trailing `iB`/`B`).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mul) = match t.chars().last()? {
        'K' | 'k' => (&t[..t.len() - 1], 1u64 << 10),
        'M' | 'm' => (&t[..t.len() - 1], 1 << 20),
        'G' | 'g' => (&t[..t.len() - 1], 1 << 30),
        'T' | 't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(2 << 30), "2.0 GiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
        assert_eq!(human_whole(10_239), "10239 B");
        assert_eq!(human_whole(10_240), "10 KiB");
        assert_eq!(human_whole((12 << 20) + 5), "12 MiB");
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("3500MiB"), Some(3500 << 20));
        assert_eq!(parse_size(" 512 "), Some(512));
        assert_eq!(parse_size("1TB"), Some(1 << 40));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999T"), None);
    }
}
