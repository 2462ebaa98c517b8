//! Schedules: `every <duration>` intervals and cron expressions (UTC), and when they next fire.
//!
//! Owns parsing and the next-firing computation only; the jobs that act on them (folder
//! sources, agent schedules) run on the [clock](crate::clock) and live with their owners.
//! Pure: no clock, no I/O.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A schedule that cannot be read, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSchedule(pub String);

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression (UTC).
    Cron(Box<croner::Cron>),
    /// A fixed interval.
    Every(std::time::Duration),
}

impl Schedule {
    /// Parses `every 15m` / `@every 1h` or a cron expression (`*/5 * * * *`).
    pub fn parse(s: &str) -> Result<Self, InvalidSchedule> {
        let s = s.trim();
        if let Some(rest) = s
            .strip_prefix("@every ")
            .or_else(|| s.strip_prefix("every "))
        {
            let d = humantime::parse_duration(rest.trim())
                .map_err(|e| InvalidSchedule(format!("schedule `{s}`: {e}")))?;
            if d < std::time::Duration::from_secs(1) {
                return Err(InvalidSchedule(format!(
                    "schedule `{s}`: the interval must be at least one second"
                )));
            }
            return Ok(Schedule::Every(d));
        }
        croner::Cron::from_str(s)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| {
                InvalidSchedule(format!(
                    "schedule `{s}` is neither `every <duration>` nor a cron expression: {e}"
                ))
            })
    }

    /// The first time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => chrono::Duration::from_std(*d).ok().map(|d| after + d),
            Schedule::Cron(c) => c.find_next_occurrence(&after, false).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_intervals_and_cron() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T10:07:30Z")
            .expect("time")
            .with_timezone(&Utc);
        let every = Schedule::parse("every 15m").expect("every");
        assert_eq!(every.next_after(t), Some(t + chrono::Duration::minutes(15)));
        let cron = Schedule::parse("*/10 * * * *").expect("cron");
        assert_eq!(
            cron.next_after(t).map(|d| d.to_rfc3339()),
            Some("2026-01-01T10:10:00+00:00".into())
        );
        assert!(Schedule::parse("every 0s").is_err());
        assert!(Schedule::parse("sometimes").is_err());
    }
}
