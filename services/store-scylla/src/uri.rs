//! `scylla://host:9042[,host:9042]/keyspace`: where the store lives.

/// The contact points and keyspace of a `scylla://` store URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaUri {
    /// `host:port` of each contact point (port 9042 when not given).
    pub hosts: Vec<String>,
    pub keyspace: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    #[error("store URI {0:?} does not start with scylla://")]
    Scheme(String),
    #[error("store URI {0:?} names no host (scylla://host:9042/keyspace)")]
    NoHost(String),
    #[error("store URI {uri:?}: bad port in {host:?}")]
    Port { uri: String, host: String },
    #[error("store URI {0:?} names no keyspace (scylla://host:9042/keyspace)")]
    NoKeyspace(String),
    #[error("store URI {uri:?}: keyspace {keyspace:?} must be 1 to 48 letters, digits or _, starting with a letter")]
    Keyspace { uri: String, keyspace: String },
}

pub const DEFAULT_PORT: u16 = 9042;

impl ScyllaUri {
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let rest = uri
            .strip_prefix("scylla://")
            .ok_or_else(|| UriError::Scheme(uri.to_string()))?;
        let (authority, keyspace) = rest
            .split_once('/')
            .ok_or_else(|| UriError::NoKeyspace(uri.to_string()))?;
        let mut hosts = Vec::new();
        for host in authority.split(',').map(str::trim) {
            if host.is_empty() {
                return Err(UriError::NoHost(uri.to_string()));
            }
            hosts.push(with_port(uri, host)?);
        }
        let keyspace = keyspace.trim_end_matches('/');
        if keyspace.is_empty() {
            return Err(UriError::NoKeyspace(uri.to_string()));
        }
        // Unquoted CQL identifiers (the keyspace is substituted into DDL): what ScyllaDB
        // accepts as a keyspace name, lowercase so it needs no quoting.
        let valid = keyspace.len() <= 48
            && keyspace.starts_with(|c: char| c.is_ascii_lowercase())
            && keyspace
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(UriError::Keyspace {
                uri: uri.to_string(),
                keyspace: keyspace.to_string(),
            });
        }
        Ok(ScyllaUri {
            hosts,
            keyspace: keyspace.to_string(),
        })
    }
}

/// `host` or `host:port` or `[v6]:port` → `host:port`.
fn with_port(uri: &str, host: &str) -> Result<String, UriError> {
    let bad_port = || UriError::Port {
        uri: uri.to_string(),
        host: host.to_string(),
    };
    if let Some(v6) = host.strip_prefix('[') {
        let (address, after) = v6.split_once(']').ok_or_else(bad_port)?;
        return match after.strip_prefix(':') {
            Some(port) => port
                .parse::<u16>()
                .map(|port| format!("[{address}]:{port}"))
                .map_err(|_| bad_port()),
            None if after.is_empty() => Ok(format!("[{address}]:{DEFAULT_PORT}")),
            None => Err(bad_port()),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() => port
            .parse::<u16>()
            .map(|port| format!("{name}:{port}"))
            .map_err(|_| bad_port()),
        Some(_) => Err(UriError::NoHost(uri.to_string())),
        None => Ok(format!("{host}:{DEFAULT_PORT}")),
    }
}

impl std::str::FromStr for ScyllaUri {
    type Err = UriError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ScyllaUri::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_and_keyspace() {
        assert_eq!(
            ScyllaUri::parse("scylla://a:9042,b:19042/pinhive").unwrap(),
            ScyllaUri {
                hosts: vec!["a:9042".into(), "b:19042".into()],
                keyspace: "pinhive".into()
            }
        );
        assert_eq!(
            ScyllaUri::parse("scylla://10.0.0.1/ks_1/").unwrap().hosts,
            vec!["10.0.0.1:9042"]
        );
        assert_eq!(
            ScyllaUri::parse("scylla://[::1]:9043,[fe80::1]/k")
                .unwrap()
                .hosts,
            vec!["[::1]:9043", "[fe80::1]:9042"]
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        use UriError::*;
        let err = |uri: &str| ScyllaUri::parse(uri).unwrap_err();
        assert!(matches!(err("cassandra://a/k"), Scheme(_)));
        assert!(matches!(err("scylla://a:9042"), NoKeyspace(_)));
        assert!(matches!(err("scylla://a:9042/"), NoKeyspace(_)));
        assert!(matches!(err("scylla:///k"), NoHost(_)));
        assert!(matches!(err("scylla://a,,b/k"), NoHost(_)));
        assert!(matches!(err("scylla://:9042/k"), NoHost(_)));
        assert!(matches!(err("scylla://a:90x/k"), Port { .. }));
        assert!(matches!(err("scylla://a:70000/k"), Port { .. }));
        assert!(matches!(err("scylla://[::1/k"), Port { .. }));
        assert!(matches!(err("scylla://a/Pin-hive"), Keyspace { .. }));
        assert!(matches!(err("scylla://a/1ks"), Keyspace { .. }));
        assert!(matches!(err("scylla://a/k;drop"), Keyspace { .. }));
        assert!(err("scylla://a/K").to_string().contains("keyspace"));
    }
}
