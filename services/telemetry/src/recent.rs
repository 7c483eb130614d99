//! The recent warnings and errors of this process, for the operator console: a
//! `tracing_subscriber` layer ([`RecentLayer`], WARN and above) keeps the last
//! [`RECENT_LINES`] in a ring and, while someone subscribes, sends each one on a bounded
//! broadcast channel ([`FEED_CAPACITY`]). Values are cut at [`MAX_VALUE_CHARS`] characters and an
//! event keeps at most [`MAX_FIELDS`] fields, so a line's size is bounded.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines the ring keeps.
pub const RECENT_LINES: usize = 100;
/// Lines the broadcast channel holds for its slowest subscriber.
pub const FEED_CAPACITY: usize = 256;
pub const MAX_VALUE_CHARS: usize = 512;
pub const MAX_FIELDS: usize = 16;

/// One warning or error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time_ns: i64,
    /// `warn` or `error`.
    pub level: &'static str,
    pub target: String,
    pub message: String,
    /// The event's other fields (`node`, `error`, `cid`, ...), as text.
    pub fields: BTreeMap<String, String>,
}

struct Recent {
    ring: Mutex<VecDeque<Arc<LogLine>>>,
    sender: broadcast::Sender<Arc<LogLine>>,
}

static RECENT: LazyLock<Recent> = LazyLock::new(|| Recent {
    ring: Mutex::new(VecDeque::with_capacity(RECENT_LINES)),
    sender: broadcast::channel(FEED_CAPACITY).0,
});

/// The last warnings and errors, oldest first.
pub fn lines() -> Vec<Arc<LogLine>> {
    RECENT
        .ring
        .lock()
        .map(|ring| ring.iter().cloned().collect())
        .unwrap_or_default()
}

/// Every warning and error from now on (a subscriber that falls behind loses the oldest).
pub fn subscribe() -> broadcast::Receiver<Arc<LogLine>> {
    RECENT.sender.subscribe()
}

/// Records one line (what the layer does for each event; public for tests).
pub fn record(line: LogLine) {
    let line = Arc::new(line);
    if let Ok(mut ring) = RECENT.ring.lock() {
        if ring.len() >= RECENT_LINES {
            ring.pop_front();
        }
        ring.push_back(line.clone());
    }
    if RECENT.sender.receiver_count() > 0 {
        let _ = RECENT.sender.send(line);
    }
}

/// The layer: install it with a WARN level filter (`tracing_setup::init` does).
pub struct RecentLayer;

#[derive(Default)]
struct Fields {
    message: String,
    fields: BTreeMap<String, String>,
}

fn cut(mut text: String) -> String {
    if text.chars().count() > MAX_VALUE_CHARS {
        text = text.chars().take(MAX_VALUE_CHARS).collect();
        text.push('…');
    }
    text
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = cut(value.to_string());
        } else if self.fields.len() < MAX_FIELDS {
            self.fields
                .insert(field.name().to_string(), cut(value.to_string()));
        }
    }
}

impl<S: Subscriber> Layer<S> for RecentLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let level = match *metadata.level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            _ => return,
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        record(LogLine {
            time_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .unwrap_or_default(),
            level,
            target: metadata.target().to_string(),
            message: fields.message,
            fields: fields.fields,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn warnings_and_errors_are_kept_bounded_and_sent_to_subscribers() {
        let subscriber = tracing_subscriber::registry().with(RecentLayer);
        let mut receiver = subscribe();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(node = "ipfs-a", error = %"x".repeat(2_000), "ipfs node unreachable");
            for i in 0..RECENT_LINES + 5 {
                tracing::error!(i, "boom");
            }
        });
        let first = receiver.try_recv().unwrap();
        assert_eq!(first.level, "warn");
        assert_eq!(first.message, "ipfs node unreachable");
        assert_eq!(first.fields["node"], "ipfs-a");
        assert_eq!(first.fields["error"].chars().count(), MAX_VALUE_CHARS + 1);
        let kept = lines();
        assert_eq!(kept.len(), RECENT_LINES);
        assert!(kept.iter().all(|line| line.level == "error"));
        assert_eq!(
            kept.last().unwrap().fields["i"],
            (RECENT_LINES + 4).to_string()
        );
    }
}
