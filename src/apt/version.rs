//! Debian version comparison (`[epoch:]upstream[-revision]`), as dpkg's `verrevcmp` in
//! lib/dpkg/version.c orders them: `~` sorts before everything, even the end of a part;
//! letters before other characters; digit runs compare as numbers.

use std::cmp::Ordering;

/// A parsed version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts<'a> {
    epoch: u64,
    upstream: &'a str,
    revision: &'a str,
}

fn parts(v: &str) -> Parts<'_> {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.bytes().all(|b| b.is_ascii_digit()) && !e.is_empty() => {
            (e.parse().unwrap_or(u64::MAX), r)
        }
        _ => (0, v),
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, r),
        None => (rest, ""),
    };
    Parts {
        epoch,
        upstream,
        revision,
    }
}

fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == 0 {
                first_diff = a[i] as i32 - b[j] as i32;
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// Compares two Debian versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (parts(a), parts(b));
    a.epoch
        .cmp(&b.epoch)
        .then_with(|| verrevcmp(a.upstream, b.upstream))
        .then_with(|| verrevcmp(a.revision, b.revision))
}

/// A version relation of a dependency: `<<`, `<=`, `=`, `>=`, `>>` (and the obsolete `<`
/// and `>`, which mean `<=` and `>=`).
pub fn satisfies(have: &str, op: &str, want: &str) -> bool {
    let c = compare(have, want);
    match op {
        "<<" => c == Ordering::Less,
        "<=" | "<" => c != Ordering::Greater,
        "=" => c == Ordering::Equal,
        ">=" | ">" => c != Ordering::Less,
        ">>" => c == Ordering::Greater,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_ordering() {
        use Ordering::*;
        // Cases from dpkg's own test suite (t-version.c) and Debian policy 5.6.12.
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0-0", Equal),
            ("0:1.0", "1.0", Equal),
            ("1:0.1", "2.0", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0+", Less),
            ("1.10", "1.9", Greater),
            ("1.0-2", "1.0-10", Less),
            ("2.41-12+rpt1", "2.41-12", Greater),
            ("1.8.11-2", "1.8.11-1+b1", Greater),
            ("007", "7", Equal),
            ("1.2.3", "1.2.3.0", Less),
            ("3:20240905-3", "3:20221126-1", Greater),
        ] {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
        assert!(satisfies("2.41-12", ">=", "2.38"));
        assert!(!satisfies("2.36-9", ">=", "2.38"));
        assert!(satisfies("1.8.11-2", "<<", "1.8.12"));
        assert!(satisfies("1.0", "=", "1.0-0"));
        assert!(!satisfies("1.0", "!=", "1.0"));
    }
}
