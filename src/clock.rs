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

/// Converts seconds since 1970 to a UTC calendar date (Howard Hinnant's civil_from_days).
pub fn civil(epoch: i64) -> Civil {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: (secs % 3600 / 60) as u32,
        second: (secs % 60) as u32,
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
    }
}
