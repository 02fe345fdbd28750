//! Typed values of a checked spec: made once, at validation, so that nothing downstream
//! re-validates a string. [`Cidr`](super::Cidr) lives in its own file.

use std::fmt;
use std::time::Duration;

/// A kubeadm bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`: the token id, a dot, the secret.
///
/// `Debug` elides it and there is no `Display`: write it out with [`Token::secret`] only where
/// it is meant to go.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// A string that is not a bootstrap token (the message never repeats the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a bootstrap token must look like abcdef.0123456789abcdef ([a-z0-9]{{6}}.[a-z0-9]{{16}})")]
pub struct TokenError;

impl Token {
    /// The one token check of piforge.
    pub fn parse(s: &str) -> Result<Token, TokenError> {
        let b = s.as_bytes();
        let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.len() == 23 && b[6] == b'.' && b[..6].iter().all(ok) && b[7..].iter().all(ok) {
            Ok(Token(s.to_string()))
        } else {
            Err(TokenError)
        }
    }

    /// Whether `s` is a well-formed token.
    pub fn is_valid(s: &str) -> bool {
        Token::parse(s).is_ok()
    }

    /// The whole token, secret part included.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([elided])")
    }
}

/// A Go `time.Duration` as kubeadm reads one (`24h`, `1h30m`, `1.5h`, `300ms`, `0`), never
/// negative. [`Display`](fmt::Display) writes Go's canonical form (`24h0m0s`, `1m30s`,
/// `0s`), the form kubeadm writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(Duration);

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(Duration::ZERO);

    pub const fn from_secs(secs: u64) -> GoDuration {
        GoDuration(Duration::from_secs(secs))
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }

    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    /// Go's `time.ParseDuration` grammar: `0`, or one or more decimal-number-and-unit pairs
    /// (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`); an optional leading `+`. Negative durations and
    /// anything over Go's limit (about 290 years) are refused.
    pub fn parse(s: &str) -> Option<GoDuration> {
        if s == "0" || s == "+0" {
            return Some(GoDuration::ZERO);
        }
        let mut rest = s.strip_prefix('+').unwrap_or(s);
        if rest.is_empty() {
            return None;
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (num, tail) = rest.split_at(num_len);
            let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
            if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
                return None;
            }
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let nanos_per_unit: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return None,
            };
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().ok()?
            };
            total = total.checked_add(whole.checked_mul(nanos_per_unit)?)?;
            // The fraction, to the nanosecond (Go drops the digits below too).
            let mut scale = nanos_per_unit;
            for d in frac.bytes() {
                scale /= 10;
                total += u128::from(d - b'0') * scale;
            }
            if total >= i64::MAX as u128 {
                return None;
            }
            rest = tail;
        }
        Some(GoDuration(Duration::from_nanos(total as u64)))
    }
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        // Below a second: the largest unit that keeps a whole part, and a fraction.
        let fraction = |value: u128, unit: u128| {
            let whole = value / unit;
            let frac = value % unit;
            if frac == 0 {
                whole.to_string()
            } else {
                let width = unit.ilog10() as usize;
                let digits = format!("{frac:0width$}");
                format!("{whole}.{}", digits.trim_end_matches('0'))
            }
        };
        if nanos < 1_000 {
            return write!(f, "{nanos}ns");
        }
        if nanos < 1_000_000 {
            return write!(f, "{}µs", fraction(nanos, 1_000));
        }
        if nanos < 1_000_000_000 {
            return write!(f, "{}ms", fraction(nanos, 1_000_000));
        }
        let secs = nanos / 1_000_000_000;
        let sub = nanos % 1_000_000_000;
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        let s = fraction(s * 1_000_000_000 + sub, 1_000_000_000);
        if h > 0 {
            write!(f, "{h}h{m}m{s}s")
        } else if m > 0 {
            write!(f, "{m}m{s}s")
        } else {
            write!(f, "{s}s")
        }
    }
}

/// A node name: a DNS-1123 label (lowercase letters, digits and `-`, starting and ending with
/// a letter or digit, at most 63 characters). It is the hostname and the Kubernetes node name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    pub fn parse(s: &str) -> Option<NodeName> {
        is_dns_label(s).then(|| NodeName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for NodeName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for NodeName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for NodeName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<NodeName> for String {
    fn eq(&self, other: &NodeName) -> bool {
        *self == other.0
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

/// A DNS-1123 label.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(Token::is_valid("abcdef.0123456789abcdef"));
        for bad in [
            "ABCDEF.0123456789abcdef",
            "abcdef0123456789abcdef",
            "abcde.0123456789abcdefg",
            "abc.def",
            "",
        ] {
            assert!(!Token::is_valid(bad), "{bad}");
        }
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(t.secret(), "abcdef.0123456789abcdef");
        assert!(!format!("{t:?}").contains("0123456789"));
        let err = Token::parse("ZZZZZZ.0123456789abcdef").unwrap_err();
        assert!(!err.to_string().contains("ZZZZZZ"));
    }

    #[test]
    fn go_durations_parse() {
        let secs = |s: &str| GoDuration::parse(s).map(|d| d.as_duration());
        assert_eq!(secs("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(secs("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(secs("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(secs("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(
            secs("1m1h"),
            Some(Duration::from_secs(3660)),
            "Go allows any order"
        );
        assert_eq!(secs(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(secs("0"), Some(Duration::ZERO));
        assert_eq!(secs("+24h"), Some(Duration::from_secs(86_400)));
        for bad in [
            "", "h", "24", "24x", "-1h", "24h 0m", "1..5h", ".h", "24 hours", "+", "1e3s",
            "3000000h",
        ] {
            assert_eq!(GoDuration::parse(bad), None, "{bad}");
        }
    }

    /// Go's `Duration.String` outputs (from `go doc time.Duration.String` and by hand).
    #[test]
    fn go_durations_display() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(86_399), "23h59m59s"),
            (Duration::from_secs(86_400), "24h0m0s"),
            (Duration::from_secs(7 * 86_400), "168h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_nanos(12), "12ns"),
            (Duration::from_millis(3_723_050), "1h2m3.05s"),
        ] {
            let g = GoDuration(d);
            assert_eq!(g.to_string(), want);
            // What it writes, it reads back.
            assert_eq!(GoDuration::parse(want), Some(g), "{want}");
        }
    }

    #[test]
    fn node_names() {
        assert!(NodeName::parse("cp1").is_some());
        assert!(NodeName::parse(&"a".repeat(63)).is_some());
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(NodeName::parse(bad).is_none(), "{bad}");
        }
        let n = NodeName::parse("w1").unwrap();
        assert_eq!(n, "w1");
        assert_eq!(n.to_string(), "w1");
    }
}
