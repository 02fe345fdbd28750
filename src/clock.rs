//! The one clock of a build: every timestamp piforge writes comes from the build epoch
//! (`SOURCE_DATE_EPOCH`, or [`DEFAULT_EPOCH`]), so the same inputs give the same bytes.

/// 2024-01-01T00:00:00Z: the epoch used when `SOURCE_DATE_EPOCH` is not set.
pub const DEFAULT_EPOCH: i64 = 1_704_067_200;

#[derive(Debug, thiserror::Error)]
#[error("SOURCE_DATE_EPOCH is {0:?}, not a whole number of seconds since 1970")]
pub struct EpochError(String);

/// The build epoch from `SOURCE_DATE_EPOCH`, or the default.
pub fn build_epoch() -> Result<i64, EpochError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<i64>().map_err(|_| EpochError(v)),
        _ => Ok(DEFAULT_EPOCH),
    }
}

/// A UTC calendar date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Converts seconds since 1970 to a UTC calendar date, through the `time` crate. Epochs
/// outside years -9999..=9999 (which `time` cannot represent) are clamped to those ends.
pub fn civil(epoch: i64) -> Civil {
    use time::OffsetDateTime;
    let t = OffsetDateTime::from_unix_timestamp(epoch).unwrap_or(if epoch < 0 {
        time::PrimitiveDateTime::MIN.assume_utc()
    } else {
        time::PrimitiveDateTime::MAX.assume_utc()
    });
    Civil {
        year: i64::from(t.year()),
        month: u32::from(u8::from(t.month())),
        day: u32::from(t.day()),
        hour: u32::from(t.hour()),
        minute: u32::from(t.minute()),
        second: u32::from(t.second()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_matches_known_dates() {
        let c = civil(DEFAULT_EPOCH);
        assert_eq!((c.year, c.month, c.day, c.hour), (2024, 1, 1, 0));
        // 2000-02-29T12:34:56Z, a leap day.
        let c = civil(951_827_696);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2000, 2, 29, 12, 34, 56)
        );
        assert_eq!(civil(0).year, 1970);
        // Before 1970, and the ends `time` can represent.
        let c = civil(-1);
        assert_eq!((c.year, c.month, c.day, c.second), (1969, 12, 31, 59));
        assert_eq!(civil(i64::MAX).year, 9999);
        assert_eq!(civil(i64::MIN).year, -9999);
    }
}
