//! Gateway access log lines → [`AccessEvent`]s. Pure: no I/O, no clock; one line in, one event
//! or one [`Skip`] reason out, so every rule is a unit test.
//!
//! A line is a read of pinned content only if it is a `GET` answered `200` (the whole object:
//! `size` is known) or `206` (a range: `size` unknown) for a path-gateway path `/ipfs/<cid>[/…]`
//! or, in Caddy logs, on a subdomain-gateway host `<cid>.ipfs.<domain>`. Paths below a CID count
//! for the root CID, which is what pins name.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::LazyLock;

use pinhive_events::access::{AccessEvent, MAX_REGION_BYTES};
use regex::Regex;
use serde_json::Value;

/// Log format of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// nginx `combined`, optionally followed by `key=value` fields.
    Nginx,
    /// Caddy's JSON access log (one object per line).
    Caddy,
    /// Per line: a line starting with `{` is Caddy JSON, any other nginx.
    Auto,
}

/// Why a line produced no event. The order is the summary's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Parsed, but not a successful `GET` of `/ipfs/<cid>` (other method, status or path).
    NotGatewayRead,
    /// A gateway read whose CID does not parse.
    BadCid,
    /// Not a line of the format (or a field of it has the wrong shape).
    Unparsable,
}

impl Skip {
    pub const ALL: [Skip; 3] = [Skip::NotGatewayRead, Skip::BadCid, Skip::Unparsable];

    /// Name in the human summary.
    pub fn label(self) -> &'static str {
        match self {
            Skip::NotGatewayRead => "not a gateway read",
            Skip::BadCid => "bad CID",
            Skip::Unparsable => "unparsable",
        }
    }
}

/// What a client IP is matched with: text prefixes (`10.1.`) or networks (`10.1.0.0/16`).
#[derive(Clone, Debug, PartialEq)]
pub enum Prefix {
    Text(String),
    Network(ipnet::IpNet),
}

/// One `--region-map PREFIX=REGION` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionRule {
    pub prefix: Prefix,
    pub region: String,
}

impl FromStr for RegionRule {
    type Err = String;

    fn from_str(text: &str) -> Result<RegionRule, String> {
        let Some((prefix, region)) = text.rsplit_once('=') else {
            return Err(format!("expected PREFIX=REGION, got {text:?}"));
        };
        let region = check_region(region)?;
        if prefix.is_empty() {
            return Err(format!("empty prefix in {text:?} (use --default-region)"));
        }
        let prefix = if prefix.contains('/') {
            let network = prefix
                .parse::<ipnet::IpNet>()
                .map_err(|e| format!("{prefix:?} is not a network such as 10.1.0.0/16: {e}"))?;
            Prefix::Network(network.trunc())
        } else {
            Prefix::Text(prefix.to_string())
        };
        Ok(RegionRule { prefix, region })
    }
}

/// A region name as the server admits it (1 to [`MAX_REGION_BYTES`] bytes, trimmed, no
/// control characters): one it refuses would fail the whole batch.
pub fn check_region(text: &str) -> Result<String, String> {
    let region = text.trim();
    if region.is_empty() || region.len() > MAX_REGION_BYTES || region.chars().any(char::is_control)
    {
        return Err(format!(
            "a region is 1 to {MAX_REGION_BYTES} bytes, got {region:?}"
        ));
    }
    Ok(region.to_string())
}

/// How a line's region is chosen: the field, else the longest matching map rule, else the
/// default.
#[derive(Clone, Debug)]
pub struct RegionRules {
    field: Option<String>,
    /// Longest prefix first, so the first match is the winner.
    map: Vec<RegionRule>,
    default: String,
}

impl RegionRules {
    /// Fails when text prefixes and networks are mixed: which of `10.1.` and `10.0.0.0/8` is
    /// the longer has no good answer.
    pub fn new(
        field: Option<String>,
        mut map: Vec<RegionRule>,
        default: String,
    ) -> Result<RegionRules, String> {
        let texts = map
            .iter()
            .filter(|rule| matches!(rule.prefix, Prefix::Text(_)))
            .count();
        if texts != 0 && texts != map.len() {
            return Err(
                "--region-map: use either text prefixes (10.1.) or networks (10.1.0.0/16), not both"
                    .into(),
            );
        }
        map.sort_by_key(|rule| {
            std::cmp::Reverse(match &rule.prefix {
                Prefix::Text(text) => text.len(),
                Prefix::Network(network) => usize::from(network.prefix_len()),
            })
        });
        Ok(RegionRules {
            field,
            map,
            default: check_region(&default)?,
        })
    }

    /// A field value that is empty or too long to be a region is ignored, not fatal: the
    /// header it comes from is client input.
    fn region(&self, field_value: Option<String>, client_ip: &str) -> String {
        if let Some(region) = field_value.and_then(|value| check_region(&value).ok()) {
            return region;
        }
        // `::ffff:10.1.2.3` is the IPv4 client 10.1.2.3 behind a dual-stack socket.
        let address = client_ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
        let text = address.map(|ip| ip.to_string());
        let text = text.as_deref().unwrap_or(client_ip);
        let matched = self.map.iter().find(|rule| match &rule.prefix {
            Prefix::Text(prefix) => text.starts_with(prefix.as_str()),
            Prefix::Network(network) => address.is_some_and(|ip| network.contains(&ip)),
        });
        matched.map_or_else(|| self.default.clone(), |rule| rule.region.clone())
    }
}

/// A request as the log line tells it, before the gateway rules.
#[derive(Debug, Default)]
struct Request {
    method: String,
    /// Path and query as requested (origin form).
    uri: String,
    host: Option<String>,
    status: u16,
    bytes: u64,
    ts: Option<f64>,
    client_ip: String,
    region_field: Option<String>,
}

/// One log line → one event, or why not.
pub fn parse_line(line: &str, format: Format, rules: &RegionRules) -> Result<AccessEvent, Skip> {
    let caddy = match format {
        Format::Caddy => true,
        Format::Nginx => false,
        Format::Auto => line.trim_start().starts_with('{'),
    };
    let field = rules.field.as_deref();
    let request = if caddy {
        parse_caddy(line, field)?
    } else {
        parse_nginx(line, field)?
    };
    to_event(request, rules)
}

fn to_event(request: Request, rules: &RegionRules) -> Result<AccessEvent, Skip> {
    if request.method != "GET" || !matches!(request.status, 200 | 206) {
        return Err(Skip::NotGatewayRead);
    }
    let cid_text = match request.host.as_deref().and_then(subdomain_cid) {
        Some(cid) => cid,
        None => path_cid(&request.uri).ok_or(Skip::NotGatewayRead)?,
    };
    let cid = pinhive_domain::values::canonical_cid(cid_text).map_err(|_| Skip::BadCid)?;
    let region = rules.region(request.region_field, &request.client_ip);
    Ok(AccessEvent {
        cid,
        region,
        bytes: request.bytes,
        ts: request.ts,
        size: (request.status == 200).then_some(request.bytes),
    })
}

/// The CID of `/ipfs/<cid>[/…][?…][#…]`; `None` for any other path.
fn path_cid(uri: &str) -> Option<&str> {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    // Absolute form (`GET http://host/ipfs/…`), as sent to proxies.
    let path = match path.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => path,
    };
    let rest = path.strip_prefix("/ipfs/")?;
    Some(rest.split('/').next().unwrap_or_default())
}

/// The CID of a subdomain-gateway host `<cid>.ipfs.<domain>[:port]`.
fn subdomain_cid(host: &str) -> Option<&str> {
    let mut labels = host.split('.');
    let cid = labels.next()?;
    let is_ipfs = labels.next()?.eq_ignore_ascii_case("ipfs");
    let has_domain = labels.next().is_some_and(|label| !label.is_empty());
    (is_ipfs && has_domain && !cid.is_empty()).then_some(cid)
}

static NGINX_COMBINED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"^(?<addr>\S+) \S+ \S+ \[(?<time>[^\]]+)\] "(?<request>(?:[^"\\]|\\.)*)" "#,
        r#"(?<status>\d{3}) (?<bytes>\d+|-) "(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*"(?<extra>.*)$"#,
    ))
    .expect("the nginx combined pattern compiles")
});

static NGINX_EXTRA_FIELD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?<key>[A-Za-z_][\w.-]*)=(?:"(?<quoted>(?:[^"\\]|\\.)*)"|(?<bare>\S*))"#)
        .expect("the key=value pattern compiles")
});

fn parse_nginx(line: &str, region_field: Option<&str>) -> Result<Request, Skip> {
    let captures = NGINX_COMBINED.captures(line).ok_or(Skip::Unparsable)?;
    let time = chrono::DateTime::parse_from_str(&captures["time"], "%d/%b/%Y:%H:%M:%S %z")
        .map_err(|_| Skip::Unparsable)?;
    let bytes = match &captures["bytes"] {
        "-" => 0,
        digits => digits.parse().map_err(|_| Skip::Unparsable)?,
    };
    // A request line nginx could not read (`"-"`, garbage) is still a logged request: one
    // that was no read.
    let mut request_line = captures["request"].split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let uri = request_line.next().unwrap_or_default().to_string();
    let region_field = region_field.and_then(|wanted| {
        NGINX_EXTRA_FIELD
            .captures_iter(&captures["extra"])
            .find(|field| &field["key"] == wanted)
            .and_then(|field| field.name("quoted").or(field.name("bare")))
            .map(|value| value.as_str().to_string())
    });
    Ok(Request {
        method,
        uri,
        host: None,
        status: captures["status"].parse().map_err(|_| Skip::Unparsable)?,
        bytes,
        ts: Some(time.timestamp_millis() as f64 / 1000.0),
        client_ip: captures["addr"].to_string(),
        region_field,
    })
}

fn parse_caddy(line: &str, region_field: Option<&str>) -> Result<Request, Skip> {
    let entry: Value = serde_json::from_str(line).map_err(|_| Skip::Unparsable)?;
    let request = entry.get("request").ok_or(Skip::Unparsable)?;
    let text =
        |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let method = text(request, "method").ok_or(Skip::Unparsable)?;
    let uri = text(request, "uri").ok_or(Skip::Unparsable)?;
    let status = entry
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|status| u16::try_from(status).ok())
        .ok_or(Skip::Unparsable)?;
    let bytes = entry
        .get("size")
        .and_then(Value::as_u64)
        .ok_or(Skip::Unparsable)?;
    // `ts` is float seconds unless Caddy was told another time format; those are left out
    // (the server then uses the time it received the read).
    let ts = entry.get("ts").and_then(Value::as_f64);
    // `client_ip` (Caddy ≥ 2.7) honours trusted proxies; older versions log `remote_ip`, or
    // `remote_addr` with the port.
    let client_ip = text(request, "client_ip")
        .or_else(|| text(request, "remote_ip"))
        .or_else(|| {
            let address = text(request, "remote_addr")?;
            let ip = address.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
            Some(ip.map_or(address, |ip| ip.to_string()))
        })
        .unwrap_or_default();
    let host = text(request, "host").map(|host| match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => host,
    });
    Ok(Request {
        method,
        uri,
        host,
        status,
        bytes,
        ts,
        client_ip,
        region_field: region_field.and_then(|path| field_text(&entry, path)),
    })
}

/// A top-level key, else a dotted path (`request.headers.X-Region.0`: object keys, array
/// indexes). Keys match exactly, else ignoring ASCII case (header names vary in case).
fn field_text(entry: &Value, path: &str) -> Option<String> {
    let found = entry.get(path).or_else(|| {
        path.split('.').try_fold(entry, |value, step| match value {
            Value::Object(map) => map.get(step).or_else(|| {
                map.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(step))
                    .map(|(_, value)| value)
            }),
            Value::Array(items) => items.get(step.parse::<usize>().ok()?),
            _ => None,
        })
    })?;
    match found {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID_V1: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
    const CID_V0: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

    fn rules(field: Option<&str>, map: &[&str]) -> RegionRules {
        let map = map.iter().map(|rule| rule.parse().unwrap()).collect();
        RegionRules::new(field.map(str::to_string), map, "unknown".into()).unwrap()
    }

    fn nginx(ip: &str, request: &str, status: u16, bytes: u64, extra: &str) -> String {
        format!(
            r#"{ip} - - [14/Nov/2023:22:13:20 +0000] "{request}" {status} {bytes} "-" "curl/8.4.0"{extra}"#
        )
    }

    #[test]
    fn nginx_line_with_region_field() {
        let line = nginx(
            "10.1.2.3",
            &format!("GET /ipfs/{CID_V1} HTTP/1.1"),
            200,
            1234,
            " rt=0.004 region=eu",
        );
        let event =
            parse_line(&line, Format::Nginx, &rules(Some("region"), &["10.1.=us"])).unwrap();
        assert_eq!(
            event,
            AccessEvent {
                cid: CID_V1.into(),
                region: "eu".into(),
                bytes: 1234,
                ts: Some(1_700_000_000.0),
                size: Some(1234),
            }
        );
    }

    #[test]
    fn nginx_quoted_region_field() {
        let line = nginx(
            "10.1.2.3",
            &format!("GET /ipfs/{CID_V1} HTTP/1.1"),
            200,
            5,
            r#" region="ap south""#,
        );
        let event = parse_line(&line, Format::Nginx, &rules(Some("region"), &[])).unwrap();
        assert_eq!(event.region, "ap south");
    }

    #[test]
    fn nginx_with_region_map_longest_prefix_wins() {
        let map = ["10.=global", "10.1.=eu", "192.168.=us"];
        let line = nginx(
            "10.1.2.3",
            &format!("GET /ipfs/{CID_V1} HTTP/1.1"),
            200,
            10,
            "",
        );
        let event = parse_line(&line, Format::Nginx, &rules(Some("region"), &map)).unwrap();
        assert_eq!(event.region, "eu");
        let line = nginx(
            "10.9.2.3",
            &format!("GET /ipfs/{CID_V1} HTTP/1.1"),
            200,
            10,
            "",
        );
        let event = parse_line(&line, Format::Nginx, &rules(None, &map)).unwrap();
        assert_eq!(event.region, "global");
    }

    #[test]
    fn region_map_with_networks() {
        let map = ["10.0.0.0/8=global", "10.1.0.0/16=eu"];
        let line = nginx(
            "::ffff:10.1.2.3",
            &format!("GET /ipfs/{CID_V1} HTTP/1.1"),
            200,
            10,
            "",
        );
        let event = parse_line(&line, Format::Nginx, &rules(None, &map)).unwrap();
        assert_eq!(event.region, "eu");
    }

    #[test]
    fn default_region_when_nothing_matches() {
        let line = nginx(
            "172.16.0.1",
            &format!("GET /ipfs/{CID_V1} HTTP/1.1"),
            200,
            10,
            " region=",
        );
        let event =
            parse_line(&line, Format::Nginx, &rules(Some("region"), &["10.1.=eu"])).unwrap();
        assert_eq!(event.region, "unknown");
    }

    #[test]
    fn mixing_text_prefixes_and_networks_is_refused() {
        let map = vec![
            "10.1.=eu".parse().unwrap(),
            "10.0.0.0/8=us".parse().unwrap(),
        ];
        assert!(RegionRules::new(None, map, "unknown".into()).is_err());
    }

    #[test]
    fn bad_region_map_rules_are_refused() {
        for rule in ["10.1.", "=eu", "10.1.=", "10.0.0.0/99=eu", "10.1.=e\u{7}u"] {
            assert!(rule.parse::<RegionRule>().is_err(), "{rule}");
        }
    }

    #[test]
    fn partial_content_has_no_size() {
        let line = nginx(
            "10.1.2.3",
            &format!("GET /ipfs/{CID_V1} HTTP/2.0"),
            206,
            65536,
            "",
        );
        let event = parse_line(&line, Format::Nginx, &rules(None, &[])).unwrap();
        assert_eq!((event.bytes, event.size), (65536, None));
    }

    #[test]
    fn non_get_is_skipped() {
        for method in ["HEAD", "POST", "OPTIONS"] {
            let line = nginx(
                "10.1.2.3",
                &format!("{method} /ipfs/{CID_V1} HTTP/1.1"),
                200,
                0,
                "",
            );
            assert_eq!(
                parse_line(&line, Format::Nginx, &rules(None, &[])),
                Err(Skip::NotGatewayRead)
            );
        }
    }

    #[test]
    fn other_statuses_are_skipped() {
        for status in [304, 404, 500] {
            let line = nginx(
                "10.1.2.3",
                &format!("GET /ipfs/{CID_V1} HTTP/1.1"),
                status,
                0,
                "",
            );
            assert_eq!(
                parse_line(&line, Format::Nginx, &rules(None, &[])),
                Err(Skip::NotGatewayRead)
            );
        }
    }

    #[test]
    fn non_ipfs_path_is_skipped() {
        for path in [
            "/",
            "/ipns/example.com",
            "/ipfs",
            "/api/v0/cat",
            "/x/ipfs/abc",
        ] {
            let line = nginx("10.1.2.3", &format!("GET {path} HTTP/1.1"), 200, 10, "");
            assert_eq!(
                parse_line(&line, Format::Nginx, &rules(None, &[])),
                Err(Skip::NotGatewayRead),
                "{path}"
            );
        }
    }

    #[test]
    fn bad_cid_is_skipped() {
        for path in [
            "/ipfs/notacid",
            "/ipfs/",
            "/ipfs/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdx",
        ] {
            let line = nginx("10.1.2.3", &format!("GET {path} HTTP/1.1"), 200, 10, "");
            assert_eq!(
                parse_line(&line, Format::Nginx, &rules(None, &[])),
                Err(Skip::BadCid),
                "{path}"
            );
        }
    }

    #[test]
    fn garbage_is_unparsable() {
        for line in [
            "",
            "hello world",
            r#"10.0.0.1 - - [not a time] "GET /ipfs/x HTTP/1.1" 200 1 "-" "-""#,
        ] {
            assert_eq!(
                parse_line(line, Format::Nginx, &rules(None, &[])),
                Err(Skip::Unparsable),
                "{line}"
            );
        }
        assert_eq!(
            parse_line("{not json", Format::Caddy, &rules(None, &[])),
            Err(Skip::Unparsable)
        );
        assert_eq!(
            parse_line(r#"{"msg":"started"}"#, Format::Caddy, &rules(None, &[])),
            Err(Skip::Unparsable)
        );
    }

    #[test]
    fn sub_path_counts_for_the_root_cid() {
        let line = nginx(
            "10.1.2.3",
            &format!("GET /ipfs/{CID_V0}/images/cat.jpg HTTP/1.1"),
            200,
            77,
            "",
        );
        let event = parse_line(&line, Format::Nginx, &rules(None, &[])).unwrap();
        assert_eq!(
            event.cid,
            pinhive_domain::values::canonical_cid(CID_V0).unwrap()
        );
        assert!(
            event.cid.starts_with("bafy"),
            "canonical CIDv1: {}",
            event.cid
        );
    }

    #[test]
    fn query_strings_are_stripped() {
        for path in [
            format!("/ipfs/{CID_V1}?filename=a.txt"),
            format!("/ipfs/{CID_V1}/a.txt?download=true#top"),
        ] {
            let line = nginx("10.1.2.3", &format!("GET {path} HTTP/1.1"), 200, 9, "");
            assert_eq!(
                parse_line(&line, Format::Nginx, &rules(None, &[]))
                    .unwrap()
                    .cid,
                CID_V1,
                "{path}"
            );
        }
    }

    fn caddy(host: &str, uri: &str, status: u16) -> String {
        serde_json::json!({
            "level": "info", "ts": 1_700_000_000.5, "logger": "http.log.access", "msg": "handled request",
            "request": {
                "remote_ip": "192.168.7.9", "remote_port": "51234", "proto": "HTTP/2.0",
                "method": "GET", "host": host, "uri": uri,
                "headers": {"X-Region": ["ap"], "User-Agent": ["curl/8.4.0"]}
            },
            "bytes_read": 0, "duration": 0.002, "size": 4321, "status": status
        })
        .to_string()
    }

    #[test]
    fn caddy_json_with_dotted_region_field() {
        let line = caddy("gw.example.org", &format!("/ipfs/{CID_V1}"), 200);
        let event = parse_line(
            &line,
            Format::Caddy,
            &rules(Some("request.headers.x-region.0"), &["192.168.=us"]),
        )
        .unwrap();
        assert_eq!(
            event,
            AccessEvent {
                cid: CID_V1.into(),
                region: "ap".into(),
                bytes: 4321,
                ts: Some(1_700_000_000.5),
                size: Some(4321),
            }
        );
    }

    #[test]
    fn caddy_region_map_on_remote_ip() {
        let line = caddy("gw.example.org", &format!("/ipfs/{CID_V1}"), 206);
        let event = parse_line(
            &line,
            Format::Auto,
            &rules(Some("region"), &["192.168.=us"]),
        )
        .unwrap();
        assert_eq!((event.region.as_str(), event.size), ("us", None));
    }

    #[test]
    fn caddy_subdomain_host() {
        let line = caddy(
            &format!("{CID_V1}.ipfs.dweb.link:443"),
            "/docs/index.html?x=1",
            200,
        );
        let event = parse_line(&line, Format::Auto, &rules(None, &[])).unwrap();
        assert_eq!(event.cid, CID_V1);
        let line = caddy(&format!("{CID_V1}.ipns.dweb.link"), "/", 200);
        assert_eq!(
            parse_line(&line, Format::Caddy, &rules(None, &[])),
            Err(Skip::NotGatewayRead)
        );
        let line = caddy("notacid.ipfs.dweb.link", "/", 200);
        assert_eq!(
            parse_line(&line, Format::Caddy, &rules(None, &[])),
            Err(Skip::BadCid)
        );
    }

    #[test]
    fn auto_detects_the_format_per_line() {
        let nginx_line = nginx(
            "10.1.2.3",
            &format!("GET /ipfs/{CID_V1} HTTP/1.1"),
            200,
            1,
            "",
        );
        let caddy_line = caddy("gw", &format!("/ipfs/{CID_V1}"), 200);
        for line in [nginx_line, caddy_line] {
            assert!(
                parse_line(&line, Format::Auto, &rules(None, &[])).is_ok(),
                "{line}"
            );
        }
    }
}
