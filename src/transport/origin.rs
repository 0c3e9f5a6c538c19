//! The Origin check that every transport applies before admitting a browser.
//!
//! Owns the policy (off, same host and port as the request, or an allow-list) and the
//! decision for one request. Must not answer the request: transports turn a refusal
//! into their own 403.

use std::fmt;

/// Which `Origin` headers are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Accept any origin.
    Off,
    /// The Origin's host and port must equal the request's `Host` (Phoenix's `:conn`).
    Conn,
    /// The Origin must match one of these.
    List(Vec<AllowedOrigin>),
}

/// One entry of an allow-list. A `None` part matches anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedOrigin {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
}

/// An origin, parsed: `scheme://host[:port]`.
#[derive(Debug, PartialEq, Eq)]
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl OriginPolicy {
    /// Parses the `--check-origin` value: `off`, `conn`, or a comma-separated list.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "off" | "false" => Ok(OriginPolicy::Off),
            "conn" | "true" | "" => Ok(OriginPolicy::Conn),
            list => list
                .split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(AllowedOrigin::parse)
                .collect::<Result<Vec<_>, _>>()
                .map(OriginPolicy::List),
        }
    }

    /// Whether a request with this `Origin` header (if any), sent to this `Host`, is
    /// allowed.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        match self {
            OriginPolicy::Off => true,
            OriginPolicy::Conn => {
                let (Some(origin), Some(host)) = (Origin::parse(origin), host) else {
                    return false;
                };
                // A Host names its port only when it is not the scheme's default, and
                // the scheme is the client's: behind a TLS-terminating proxy the request
                // reaches us over plain HTTP while the page is `https://`. So: the same
                // explicit port, or both at their scheme's default.
                let (req_host, req_port) = split_host_port(host);
                let same_port = match req_port {
                    Some(port) => origin.effective_port() == port,
                    None => origin.port.is_none(),
                };
                origin.host.eq_ignore_ascii_case(req_host) && same_port
            }
            OriginPolicy::List(allowed) => match Origin::parse(origin) {
                Some(origin) => allowed.iter().any(|entry| entry.matches(&origin)),
                None => false,
            },
        }
    }
}

impl fmt::Display for OriginPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginPolicy::Off => f.write_str("off"),
            OriginPolicy::Conn => f.write_str("conn"),
            OriginPolicy::List(list) => {
                let entries: Vec<String> = list.iter().map(|e| e.to_string()).collect();
                f.write_str(&entries.join(","))
            }
        }
    }
}

impl AllowedOrigin {
    fn parse(entry: &str) -> Result<Self, String> {
        let (scheme, rest) = match entry.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, entry),
        };
        let rest = rest.trim_end_matches('/');
        // Unlike a request's Host, a configured port that does not parse is an error.
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !rest.ends_with(']') => {
                let port = port
                    .parse()
                    .map_err(|_| format!("invalid port in allowed origin {entry:?}"))?;
                (host, Some(port))
            }
            _ => (rest, None),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("invalid allowed origin {entry:?}"));
        }
        Ok(AllowedOrigin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn matches(&self, origin: &Origin<'_>) -> bool {
        let scheme_ok = self
            .scheme
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case(origin.scheme));
        let port_ok = self.port.is_none_or(|p| p == origin.effective_port());
        let host = origin.host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => host == domain || host.ends_with(&format!(".{domain}")),
            None => host == self.host,
        };
        scheme_ok && port_ok && host_ok
    }
}

impl fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl<'a> Origin<'a> {
    fn parse(origin: &'a str) -> Option<Self> {
        let (scheme, rest) = origin.split_once("://")?;
        let (host, port) = split_host_port(rest.trim_end_matches('/'));
        if host.is_empty() {
            return None;
        }
        Some(Origin { scheme, host, port })
    }

    fn scheme_is_secure(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("https") || self.scheme.eq_ignore_ascii_case("wss")
    }

    fn effective_port(&self) -> u16 {
        self.port
            .unwrap_or(if self.scheme_is_secure() { 443 } else { 80 })
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets); an unparsable port reads as none.
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    let colon = if authority.starts_with('[') {
        authority
            .find(']')
            .and_then(|end| authority[end..].find(':').map(|i| end + i))
    } else {
        authority.rfind(':')
    };
    match colon {
        Some(i) => match authority[i + 1..].parse() {
            Ok(port) => (&authority[..i], Some(port)),
            Err(_) => (authority, None),
        },
        None => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_origin_header_is_always_allowed() {
        let list = OriginPolicy::parse("https://example.com").unwrap();
        for policy in [OriginPolicy::Off, OriginPolicy::Conn, list] {
            assert!(policy.allows(None, Some("127.0.0.1:4000")));
        }
    }

    #[test]
    fn conn_requires_same_host_and_port() {
        let p = OriginPolicy::Conn;
        assert!(p.allows(Some("http://127.0.0.1:4000"), Some("127.0.0.1:4000")));
        assert!(p.allows(Some("http://LOCALHOST"), Some("localhost:80")));
        assert!(p.allows(Some("https://x.io"), Some("x.io:443")));
        assert!(!p.allows(Some("http://127.0.0.1:4001"), Some("127.0.0.1:4000")));
        assert!(!p.allows(Some("http://evil.com:4000"), Some("127.0.0.1:4000")));
        assert!(!p.allows(Some("http://x.io:8080"), Some("x.io")));
        assert!(!p.allows(Some("null"), Some("127.0.0.1:4000")));
        assert!(!p.allows(Some("http://a.io"), None));
    }

    #[test]
    fn conn_behind_a_tls_terminating_proxy() {
        // The page is https://, the proxy forwards Host without a port over plain HTTP.
        let p = OriginPolicy::Conn;
        assert!(p.allows(Some("https://chat.example.com"), Some("chat.example.com")));
        assert!(!p.allows(Some("https://evil.example"), Some("chat.example.com")));
    }

    #[test]
    fn allow_list_with_wildcards_and_optional_parts() {
        let p = OriginPolicy::parse("https://example.com, *.example.org:8443").unwrap();
        assert!(p.allows(Some("https://example.com"), None));
        assert!(!p.allows(Some("http://example.com"), None));
        assert!(!p.allows(Some("https://sub.example.com"), None));
        assert!(p.allows(Some("http://example.org:8443"), None));
        assert!(p.allows(Some("https://a.b.example.org:8443"), None));
        assert!(!p.allows(Some("https://a.example.org"), None));
        assert!(!p.allows(Some("https://badexample.org:8443"), None));
    }

    #[test]
    fn parse_policies() {
        assert_eq!(OriginPolicy::parse("off").unwrap(), OriginPolicy::Off);
        assert_eq!(OriginPolicy::parse("conn").unwrap(), OriginPolicy::Conn);
        assert!(OriginPolicy::parse("https://a.io:notaport").is_err());
        assert_eq!(
            OriginPolicy::parse("https://a.io:1,b.io")
                .unwrap()
                .to_string(),
            "https://a.io:1,b.io"
        );
    }

    #[test]
    fn ipv6_hosts() {
        let p = OriginPolicy::Conn;
        assert!(p.allows(Some("http://[::1]:4000"), Some("[::1]:4000")));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
    }
}
