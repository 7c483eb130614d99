//! The lines of a pin import (pure: no I/O). Three formats, one record per line:
//!
//! * `cids`: a CID per line;
//! * `csv`: `cid[,name[,meta]]`, or any column order under a header row naming `cid`, `name`,
//!   `meta` (a JSON object of strings) and `meta.<key>` columns;
//! * `jsonl`: an object per line with `cid`, `name`, `meta`, `origins` — or a `PinStatus` as
//!   `pinhive pins export` writes it (`{"requestid", "pin": {"cid", …}, …}`).
//!
//! Blank lines and lines starting with `#` are skipped in every format. Each pin is checked
//! with the domain's rules (the ones the service applies), so a bad line is reported with its
//! number without a request.

use std::collections::BTreeMap;

use pinhive_domain::command::{RawPin, ReplicaBounds};
use pinhive_domain::PinCommand;
use serde_json::Value;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// From the first record: `{` → jsonl, a comma → csv, else cids.
    Auto,
    Cids,
    Csv,
    Jsonl,
}

/// Where each CSV column goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Column {
    Cid,
    Name,
    Meta,
    MetaKey(String),
}

/// The format settled on and, for CSV, its columns.
#[derive(Clone, Debug)]
pub struct Parser {
    format: Format,
    columns: Vec<Column>,
    /// Whether a record was seen (only the first may be a CSV header).
    seen_record: bool,
}

/// What one line is.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// Blank, a comment, or the CSV header.
    Skip,
    Pin(RawPin),
}

impl Parser {
    pub fn new(format: Format) -> Parser {
        Parser {
            format,
            columns: vec![Column::Cid, Column::Name, Column::Meta],
            seen_record: false,
        }
    }

    /// The pin on `line`, or why it is not one. `Auto` is settled by the first record.
    pub fn parse(&mut self, line: &str) -> Result<Line, String> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(Line::Skip);
        }
        if self.format == Format::Auto {
            self.format = if line.starts_with('{') {
                Format::Jsonl
            } else if line.contains(',') {
                Format::Csv
            } else {
                Format::Cids
            };
        }
        let first = !std::mem::replace(&mut self.seen_record, true);
        if first && self.format == Format::Csv {
            if let Some(columns) = header(line)? {
                self.columns = columns;
                return Ok(Line::Skip);
            }
        }
        let raw = match self.format {
            Format::Cids | Format::Auto => RawPin {
                cid: line.to_string(),
                name: None,
                origins: Vec::new(),
                meta: BTreeMap::new(),
            },
            Format::Csv => self.csv(line)?,
            Format::Jsonl => json(line)?,
        };
        check(&raw)?;
        Ok(Line::Pin(raw))
    }

    fn csv(&self, line: &str) -> Result<RawPin, String> {
        let fields = csv_fields(line)?;
        if fields.len() > self.columns.len() {
            return Err(format!(
                "{} fields, at most {} expected ({})",
                fields.len(),
                self.columns.len(),
                self.columns
                    .iter()
                    .map(|c| match c {
                        Column::Cid => "cid".to_string(),
                        Column::Name => "name".to_string(),
                        Column::Meta => "meta".to_string(),
                        Column::MetaKey(key) => format!("meta.{key}"),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        let mut raw = RawPin {
            cid: String::new(),
            name: None,
            origins: Vec::new(),
            meta: BTreeMap::new(),
        };
        for (column, field) in self.columns.iter().zip(fields) {
            match column {
                Column::Cid => raw.cid = field,
                Column::Name if field.is_empty() => {}
                Column::Name => raw.name = Some(field),
                Column::Meta if field.trim().is_empty() => {}
                Column::Meta => {
                    let meta: BTreeMap<String, String> = serde_json::from_str(&field)
                        .map_err(|e| format!("meta is not a JSON object of strings: {e}"))?;
                    raw.meta.extend(meta);
                }
                Column::MetaKey(_) if field.is_empty() => {}
                Column::MetaKey(key) => {
                    raw.meta.insert(key.clone(), field);
                }
            }
        }
        Ok(raw)
    }
}

fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record.iter().map(|f| f.trim().to_string()).collect()),
        Ok(false) => Err("empty CSV record".into()),
        Err(error) => Err(format!("not CSV: {error}")),
    }
}

/// The columns of a header row (its first field is `cid`), or `None` for a data row.
fn header(line: &str) -> Result<Option<Vec<Column>>, String> {
    let fields = csv_fields(line)?;
    if !fields
        .first()
        .is_some_and(|first| first.eq_ignore_ascii_case("cid"))
    {
        return Ok(None);
    }
    let mut columns = Vec::new();
    for field in fields {
        let column = match field.to_ascii_lowercase().as_str() {
            "cid" => Column::Cid,
            "name" => Column::Name,
            "meta" => Column::Meta,
            _ => match field.strip_prefix("meta.") {
                Some(key) if !key.is_empty() => Column::MetaKey(key.to_string()),
                _ => {
                    return Err(format!(
                        "header column {field:?}: expected cid, name, meta or meta.<key>"
                    ))
                }
            },
        };
        if columns.contains(&column) {
            return Err(format!("header names column {field:?} twice"));
        }
        columns.push(column);
    }
    Ok(Some(columns))
}

fn json(line: &str) -> Result<RawPin, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    // A PinStatus (what `pins export` writes) carries the pin under "pin".
    let pin = if value.get("pin").is_some_and(Value::is_object) {
        &value["pin"]
    } else {
        &value
    };
    let Some(object) = pin.as_object() else {
        return Err("not a JSON object".into());
    };
    let cid = match object.get("cid") {
        Some(Value::String(cid)) => cid.clone(),
        Some(_) => return Err("cid is not a string".into()),
        None => return Err("no cid".into()),
    };
    let name = match object.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err("name is not a string".into()),
    };
    let meta = match object.get("meta") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(meta) => serde_json::from_value(meta.clone())
            .map_err(|e| format!("meta is not an object of strings: {e}"))?,
    };
    let origins = match object.get("origins") {
        None | Some(Value::Null) => Vec::new(),
        Some(origins) => serde_json::from_value(origins.clone())
            .map_err(|e| format!("origins is not a list of strings: {e}"))?,
    };
    Ok(RawPin {
        cid,
        name,
        origins,
        meta,
    })
}

/// The service's own rules (domain crate), with a stand-in owner: the real one is the token's.
fn check(raw: &RawPin) -> Result<(), String> {
    let bounds = ReplicaBounds::new(1, 1).map_err(|e| e.to_string())?;
    PinCommand::new(raw.clone(), "import", bounds)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The body of `POST /pins` for a pin.
pub fn body(raw: &RawPin) -> Value {
    let mut body = serde_json::json!({ "cid": raw.cid });
    if let Some(name) = &raw.name {
        body["name"] = Value::from(name.clone());
    }
    if !raw.meta.is_empty() {
        body["meta"] = serde_json::to_value(&raw.meta).unwrap_or_default();
    }
    if !raw.origins.is_empty() {
        body["origins"] = serde_json::to_value(&raw.origins).unwrap_or_default();
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafkqaaa";
    const CID_V0: &str = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH";

    fn pin(parser: &mut Parser, line: &str) -> RawPin {
        match parser.parse(line) {
            Ok(Line::Pin(raw)) => raw,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn auto_detects_each_format_from_its_first_record() {
        let mut cids = Parser::new(Format::Auto);
        assert_eq!(cids.parse("# a comment").unwrap(), Line::Skip);
        assert_eq!(cids.parse("").unwrap(), Line::Skip);
        assert_eq!(pin(&mut cids, &format!(" {CID_V0} ")).cid, CID_V0);
        assert_eq!(cids.format, Format::Cids);

        let mut csv = Parser::new(Format::Auto);
        let raw = pin(
            &mut csv,
            &format!("{CID},\"a, b\",\"{{\"\"k\"\":\"\"v\"\"}}\""),
        );
        assert_eq!(raw.name.as_deref(), Some("a, b"));
        assert_eq!(raw.meta["k"], "v");

        let mut jsonl = Parser::new(Format::Auto);
        let raw = pin(
            &mut jsonl,
            &format!(r#"{{"cid":"{CID}","name":"n","meta":{{"a":"1"}}}}"#),
        );
        assert_eq!(
            (raw.name.as_deref(), raw.meta["a"].as_str()),
            (Some("n"), "1")
        );
    }

    #[test]
    fn a_csv_header_orders_columns_and_names_meta_keys() {
        // A header starts with `cid`; a first row that does not is data.
        let mut parser = Parser::new(Format::Auto);
        assert!(parser.parse("name,cid,meta.source").is_err());
        assert!(Parser::new(Format::Csv).parse("cid,colour").is_err());
        let mut parser = Parser::new(Format::Csv);
        assert_eq!(parser.parse("cid,meta.source,name").unwrap(), Line::Skip);
        let raw = pin(&mut parser, &format!("{CID},s3,photo"));
        assert_eq!(raw.name.as_deref(), Some("photo"));
        assert_eq!(raw.meta["source"], "s3");
        let raw = pin(&mut parser, &format!("{CID},,"));
        assert!(raw.name.is_none() && raw.meta.is_empty());
        let error = parser.parse(&format!("{CID},a,b,c")).unwrap_err();
        assert!(error.contains("at most 3"), "{error}");
    }

    #[test]
    fn an_exported_pin_status_imports_as_its_pin() {
        let mut parser = Parser::new(Format::Auto);
        let line = format!(
            r#"{{"requestid":"r1","status":"queued","created":"2026-01-01T00:00:00Z","pin":{{"cid":"{CID}","name":"x","meta":{{"k":"v"}},"origins":[]}},"delegates":[]}}"#
        );
        let raw = pin(&mut parser, &line);
        assert_eq!((raw.cid.as_str(), raw.name.as_deref()), (CID, Some("x")));
        assert_eq!(
            body(&raw),
            serde_json::json!({"cid": CID, "name": "x", "meta": {"k": "v"}})
        );
    }

    #[test]
    fn bad_lines_say_why() {
        let mut parser = Parser::new(Format::Cids);
        assert!(parser.parse("not-a-cid").unwrap_err().contains("cid"));
        let mut parser = Parser::new(Format::Jsonl);
        assert!(parser
            .parse("{\"cid\":")
            .unwrap_err()
            .starts_with("not JSON"));
        assert_eq!(parser.parse("{\"name\":\"x\"}").unwrap_err(), "no cid");
        let long = "n".repeat(300);
        assert!(parser
            .parse(&format!(r#"{{"cid":"{CID}","name":"{long}"}}"#))
            .is_err());
        let mut parser = Parser::new(Format::Csv);
        assert!(parser
            .parse(&format!("{CID},n,{{not json}}"))
            .unwrap_err()
            .contains("meta"));
    }
}
