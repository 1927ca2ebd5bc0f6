//! The time Roster acts on. Lifecycle transitions are computed from it, never from the system
//! clock directly, so tests (and rehearsals) can move it: `roster plan|apply --now T` fixes it,
//! and the operator's hidden `--clock-offset-file F` adds the whole seconds written in F (read at
//! every use, so a test moves time forward while the operator runs), or — when F holds
//! `@<unix seconds>` — stands still at that instant (a test pins the operator to its model's
//! time without rewriting the file as real time passes).

use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_file: Option<Arc<PathBuf>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system clock plus the seconds in `file` (0 while it is missing or unreadable), or
    /// the instant `@<unix seconds>` in it.
    pub fn offset_by_file(file: PathBuf) -> Clock {
        Clock {
            offset_file: Some(Arc::new(file)),
        }
    }

    pub fn now(&self) -> jiff::Timestamp {
        let now = jiff::Timestamp::now();
        let Some(file) = &self.offset_file else {
            return now;
        };
        let text = std::fs::read_to_string(file.as_path()).unwrap_or_default();
        let text = text.trim();
        if let Some(pinned) = text.strip_prefix('@') {
            return pinned
                .parse::<i64>()
                .ok()
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .unwrap_or(now);
        }
        let offset = text.parse::<i64>().unwrap_or(0);
        now.checked_add(jiff::SignedDuration::from_secs(offset))
            .unwrap_or(now)
    }

    /// How long from now until `t` (zero when it has passed).
    pub fn until(&self, t: jiff::Timestamp) -> std::time::Duration {
        let ms = (t.as_millisecond() - self.now().as_millisecond()).max(0);
        std::time::Duration::from_millis(ms as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_file_moves_the_clock_while_it_runs() {
        let file = std::env::temp_dir().join(format!("roster-clock-{}", std::process::id()));
        let clock = Clock::offset_by_file(file.clone());
        let _ = std::fs::remove_file(&file);
        let real = jiff::Timestamp::now().as_second();
        assert!((clock.now().as_second() - real).abs() <= 1);
        std::fs::write(&file, "86400\n").unwrap();
        assert!((clock.now().as_second() - real - 86_400).abs() <= 1);
        let soon = clock.now() + jiff::SignedDuration::from_secs(10);
        assert!(clock.until(soon) <= std::time::Duration::from_secs(10));
        assert!(clock.until(soon) >= std::time::Duration::from_secs(8));
        // Pinned: the same instant however often it is read.
        std::fs::write(&file, "@1893456000\n").unwrap();
        assert_eq!(clock.now().as_second(), 1_893_456_000);
        assert_eq!(clock.now(), clock.now());
        std::fs::remove_file(&file).unwrap();
    }
}
