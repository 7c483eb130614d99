//! The figures of a scale run, printed as a table (figure, value, ratio to its baseline) or as
//! JSON (`--json`).

use serde_json::json;

use super::millis;
use super::walk::Walk;
use super::workload::{Workload, PROBE_NAME};

pub struct Row {
    pub key: String,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    /// Ratio and what it is a ratio to.
    pub ratio: Option<(f64, &'static str)>,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    pub fn row(
        &mut self,
        key: impl Into<String>,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) {
        self.rows.push(Row {
            key: key.into(),
            figure: figure.into(),
            value,
            unit,
            ratio: None,
        });
    }

    pub fn row_ratio(
        &mut self,
        key: impl Into<String>,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
        ratio: f64,
        ratio_to: &'static str,
    ) {
        self.rows.push(Row {
            key: key.into(),
            figure: figure.into(),
            value,
            unit,
            ratio: Some((ratio, ratio_to)),
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn print_table(&self) {
        println!();
        println!(
            "{:<60} {:>14} {:<7} {:>9}  ratio to",
            "figure", "value", "unit", "ratio"
        );
        for row in &self.rows {
            let value = if row.value.abs() >= 100.0 || row.value == row.value.trunc() {
                format!("{:.0}", row.value)
            } else {
                format!("{:.2}", row.value)
            };
            let (ratio, to) = match row.ratio {
                Some((ratio, to)) => (format!("{ratio:.3}x"), to),
                None => (String::new(), ""),
            };
            println!(
                "{:<60} {value:>14} {:<7} {ratio:>9}  {to}",
                row.figure, row.unit
            );
        }
        println!();
        for note in &self.notes {
            println!("* {note}");
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let figures: Vec<_> = self
            .rows
            .iter()
            .map(|row| {
                json!({
                    "key": row.key,
                    "figure": row.figure,
                    "value": row.value,
                    "unit": row.unit,
                    "ratio": row.ratio.map(|(ratio, _)| ratio),
                    "ratio_to": row.ratio.map(|(_, to)| to),
                })
            })
            .collect();
        json!({"settings": self.settings, "figures": figures, "notes": self.notes})
    }
}

pub fn describe_paths(report: &mut Report, workload: &Workload, http_pins: usize) {
    let pins = workload.pins;
    for (range, path) in [
        (0..http_pins, "POST /pins over HTTP"),
        (
            http_pins..pins,
            "PinRequested appended to the stopped server's log, applied on restart",
        ),
    ] {
        if range.is_empty() {
            continue;
        }
        report.note(format!(
            "pins {}..{} ({} pins; {} share CID {}, {} named {PROBE_NAME}): {path}",
            range.start,
            range.end,
            range.len(),
            workload.shared_in(range.clone()),
            workload.shared_cid,
            Workload::probe_named_in(range.clone()),
        ));
    }
}

pub fn report_walk(report: &mut Report, walked: &Walk, expected: usize) {
    let (first, deep) = (walked.first(), walked.deep());
    let label = &walked.label;
    report.row(
        format!("walk_{label}_pages"),
        format!(
            "walk {label}: pages of 1000 ({} pins seen, {expected} expected{})",
            walked.pins_seen,
            if walked.capped {
                ", capped by --max-pages"
            } else {
                ""
            }
        ),
        walked.pages.len() as f64,
        "pages",
    );
    for (key, figure, value) in [
        ("first_p50", "first 10% of pages p50", first.p50),
        ("first_p99", "first 10% of pages p99", first.p99),
        ("deep_p50", "deepest 10% of pages p50", deep.p50),
        ("deep_p99", "deepest 10% of pages p99", deep.p99),
    ] {
        let (key, figure) = (
            format!("walk_{label}_{key}_ms"),
            format!("walk {label}: {figure}"),
        );
        if key.ends_with("deep_p50_ms") {
            let ratio = walked.deep_over_first();
            report.row_ratio(key, figure, millis(value), "ms", ratio, "first 10% p50");
        } else {
            report.row(key, figure, millis(value), "ms");
        }
    }
    if !walked.capped && walked.pins_seen != expected {
        report.note(format!(
            "MISMATCH: walk {label} saw {} pins where {expected} were loaded (server count {})",
            walked.pins_seen, walked.count_reported
        ));
    }
}
