//! Credentials of Kubo RPC APIs protected by `API.Authorizations`: an `Authorization` header
//! per node, configured on each instance (never in a node's URL, which travels in control-log
//! events and shows in the admin API).
//!
//! A secret is written as Kubo writes its `AuthSecret`: `bearer:TOKEN` or `basic:USER:PASSWORD`
//! (or `basic:BASE64`). The header value is marked sensitive, so `Debug` of a request or of
//! [`NodeAuth`] never prints it.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use reqwest::header::HeaderValue;

/// The `Authorization` header of each node, by node id; `"*"` applies to a node without its
/// own.
#[derive(Clone, Default)]
pub struct NodeAuth {
    by_node: BTreeMap<String, HeaderValue>,
}

/// The key whose secret applies to every node without one of its own.
pub const ANY_NODE: &str = "*";

impl NodeAuth {
    /// Parses `node id → secret`; an error names the node, never the secret.
    pub fn parse(secrets: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut by_node = BTreeMap::new();
        for (node, secret) in secrets {
            let header = authorization(secret).map_err(|why| {
                format!("the Kubo RPC credential of node {node:?} is malformed: {why}")
            })?;
            by_node.insert(node.clone(), header);
        }
        Ok(NodeAuth { by_node })
    }

    /// Adds `header` for `node` unless the node has a credential already (explicit
    /// configuration wins over credentials taken out of a URL).
    pub fn add_if_absent(&mut self, node: &str, header: HeaderValue) {
        self.by_node.entry(node.to_string()).or_insert(header);
    }

    /// The header to send to `node`, if any.
    pub fn for_node(&self, node: &str) -> Option<HeaderValue> {
        self.by_node
            .get(node)
            .or_else(|| self.by_node.get(ANY_NODE))
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}

impl fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Which nodes have a credential, never the credential.
        f.debug_set().entries(self.by_node.keys()).finish()
    }
}

/// The `Authorization` header of a Kubo `AuthSecret`: `bearer:TOKEN`, `basic:USER:PASSWORD`
/// or `basic:BASE64(USER:PASSWORD)`. Errors never quote the secret.
pub fn authorization(secret: &str) -> Result<HeaderValue, String> {
    let secret = secret.trim();
    let value = if let Some(token) = secret.strip_prefix("bearer:") {
        if token.is_empty() {
            return Err("bearer: needs a token".into());
        }
        format!("Bearer {token}")
    } else if let Some(basic) = secret.strip_prefix("basic:") {
        if basic.is_empty() {
            return Err("basic: needs USER:PASSWORD".into());
        }
        let encoded = if basic.contains(':') {
            base64::engine::general_purpose::STANDARD.encode(basic)
        } else {
            basic.to_string()
        };
        format!("Basic {encoded}")
    } else {
        return Err("write it as bearer:TOKEN or basic:USER:PASSWORD (Kubo's AuthSecret)".into());
    };
    let mut header =
        HeaderValue::from_str(&value).map_err(|_| "it holds characters a header cannot carry")?;
    header.set_sensitive(true);
    Ok(header)
}

/// `url` without its user info, and the Basic `Authorization` header the user info meant
/// (`http://user:pass@host:5001` → `http://host:5001`, `Basic base64(user:pass)`). A URL without
/// user info comes back as it is.
pub fn split_credentials(url: &str) -> (String, Option<HeaderValue>) {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return (url.to_string(), None);
    };
    if parsed.username().is_empty() && parsed.password().is_none() {
        return (url.to_string(), None);
    }
    let decode = |text: &str| percent_decode(text).unwrap_or_else(|| text.to_string());
    let user = decode(parsed.username());
    let password = parsed.password().map(decode).unwrap_or_default();
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let header = authorization(&format!("basic:{user}:{password}")).ok();
    let clean = parsed.as_str().trim_end_matches('/').to_string();
    (clean, header)
}

/// `url` fit to show or log: its user info replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("***");
            let _ = parsed.set_password(None);
            parsed.as_str().trim_end_matches('/').to_string()
        }
        // Not an http(s) URL with user info, yet maybe one mistyped: show nothing before an `@`.
        _ => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_string(),
        },
    }
}

/// True if `url` carries user info (a credential).
pub fn has_credentials(url: &str) -> bool {
    reqwest::Url::parse(url)
        .map(|parsed| !parsed.username().is_empty() || parsed.password().is_some())
        .unwrap_or_else(|_| url.contains('@'))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_kubo_auth_secrets() {
        assert_eq!(authorization("bearer:t0k").unwrap(), "Bearer t0k");
        // base64("hello:world")
        assert_eq!(
            authorization("basic:hello:world").unwrap(),
            "Basic aGVsbG86d29ybGQ="
        );
        assert_eq!(
            authorization("basic:aGVsbG86d29ybGQ=").unwrap(),
            "Basic aGVsbG86d29ybGQ="
        );
        assert!(authorization("bearer:t0k").unwrap().is_sensitive());
        // Refused, and the error never quotes what could be the secret.
        for (bad, secret) in [
            ("", ""),
            ("t0k", "t0k"),
            ("bearer:", ""),
            ("basic:", ""),
            ("Bearer t0k", "t0k"),
            ("bearer:a\nb", "a\nb"),
        ] {
            let error = authorization(bad).unwrap_err();
            assert!(secret.is_empty() || !error.contains(secret), "{error}");
        }
    }

    #[test]
    fn per_node_secrets_with_a_default() {
        let secrets: BTreeMap<String, String> = [
            ("a".to_string(), "bearer:for-a".to_string()),
            ("*".to_string(), "bearer:for-all".to_string()),
        ]
        .into();
        let mut auth = NodeAuth::parse(&secrets).unwrap();
        assert_eq!(auth.for_node("a").unwrap(), "Bearer for-a");
        assert_eq!(auth.for_node("b").unwrap(), "Bearer for-all");
        auth.add_if_absent("a", HeaderValue::from_static("Bearer other"));
        assert_eq!(auth.for_node("a").unwrap(), "Bearer for-a");
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("for-a") && shown.contains("\"a\""),
            "{shown}"
        );
        let bad: BTreeMap<String, String> = [("x".to_string(), "s3cr3t".to_string())].into();
        let error = NodeAuth::parse(&bad).unwrap_err();
        assert!(
            error.contains("\"x\"") && !error.contains("s3cr3t"),
            "{error}"
        );
    }

    #[test]
    fn credentials_leave_urls() {
        let (clean, header) = split_credentials("http://us%40r:p%3Ass@10.0.0.1:5001/");
        assert_eq!(clean, "http://10.0.0.1:5001");
        // base64("us@r:p:ss")
        assert_eq!(header.unwrap(), "Basic dXNAcjpwOnNz");
        let (clean, header) = split_credentials("https://h:5001");
        assert_eq!((clean.as_str(), header), ("https://h:5001", None));
        assert_eq!(redact_url("http://user:secret@h:5001"), "http://***@h:5001");
        assert_eq!(redact_url("http://h:5001"), "http://h:5001");
        assert_eq!(redact_url("user:secret@h:5001"), "***@h:5001");
        assert!(has_credentials("http://user:secret@h:5001"));
        assert!(!has_credentials("http://h:5001"));
    }
}
