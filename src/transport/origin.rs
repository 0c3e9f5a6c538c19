//! The Origin and Host checks that every transport applies before admitting a browser.
//!
//! Owns the origin policy (off, the request's own origin, or an allow-list), the list of
//! allowed `Host` names (`--host-allow`), and the decision for one request. Must not
//! answer the request: transports turn a refusal into their own 403.

use std::fmt;
use std::net::Ipv6Addr;

/// Which `Origin` headers are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Accept any origin.
    Off,
    /// The Origin must be the request's own: its scheme (plain HTTP unless
    /// `X-Forwarded-Proto` says otherwise), and the host and port of its `Host` header
    /// (Phoenix's `:conn`).
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

    /// Whether a request with this `Origin` header (if any), sent to `target`, is
    /// allowed.
    pub fn allows(&self, origin: Option<&str>, target: &Target<'_>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        match self {
            OriginPolicy::Off => true,
            OriginPolicy::Conn => {
                Origin::parse(origin).is_some_and(|origin| origin.is_the_origin_of(target))
            }
            OriginPolicy::List(allowed) => match Origin::parse(origin) {
                Some(origin) => allowed.iter().any(|entry| entry.matches(&origin)),
                None => false,
            },
        }
    }
}

/// `--host-allow`: the `Host` headers a request may carry. Empty allows any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAllow(Vec<HostPattern>);

/// One entry of `--host-allow`: a host (or `*.domain`) and, if given, the port the
/// `Host` header must name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostAllow {
    /// Parses a comma-separated list of `host[:port]` entries (`*.domain` matches the
    /// domain and its subdomains, IPv6 literals go in brackets); an empty list allows any.
    pub fn parse(value: &str) -> Result<Self, String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(HostPattern::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(HostAllow)
    }

    /// Whether any `Host` is allowed (no list was given).
    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request with this `Host` header (if any) is allowed; with a list, a
    /// request without one is not.
    pub fn allows(&self, host: Option<&str>) -> bool {
        if self.is_any() {
            return true;
        }
        let Some(host) = host else {
            return false;
        };
        let (name, port) = split_host_port(host.trim());
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|entry| entry.matches(&name, port))
    }
}

impl HostPattern {
    fn parse(entry: &str) -> Result<Self, String> {
        if entry.contains('/') {
            return Err(format!(
                "invalid allowed host {entry:?}: a host name, not a URL (e.g. example.com or example.com:4000)"
            ));
        }
        // A bare IPv6 literal is written in brackets in a Host header.
        let bracketed = entry.parse::<Ipv6Addr>().ok().map(|ip| format!("[{ip}]"));
        let (host, port) = match (&bracketed, entry.rsplit_once(':')) {
            (Some(literal), _) => (literal.as_str(), None),
            (None, Some((host, port))) if !host.contains(':') || host.ends_with(']') => {
                let port = port
                    .parse()
                    .map_err(|_| format!("invalid port in allowed host {entry:?}"))?;
                (host, Some(port))
            }
            _ => (entry, None),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty() || bare.contains('*') || bare.contains(char::is_whitespace) {
            return Err(format!("invalid allowed host {entry:?}"));
        }
        Ok(HostPattern { host, port })
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        let port_ok = self.port.is_none_or(|p| port == Some(p));
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => host == domain || host.ends_with(&format!(".{domain}")),
            None => host == self.host,
        };
        port_ok && host_ok
    }
}

impl fmt::Display for HostAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|entry| match entry.port {
                Some(port) => format!("{}:{port}", entry.host),
                None => entry.host.clone(),
            })
            .collect();
        f.write_str(&entries.join(","))
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

/// Where a request was sent, as its client saw it: the `Host` header, and whether it
/// went over TLS. fluxwire serves plain HTTP, so a request is `http` unless a proxy in
/// front of it says otherwise in `X-Forwarded-Proto` (its first value).
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub host: Option<&'a str>,
    pub secure: bool,
}

impl<'a> Target<'a> {
    pub fn new(host: Option<&'a str>, forwarded_proto: Option<&str>) -> Self {
        let proto = forwarded_proto.and_then(|value| value.split(',').next());
        let secure = proto.is_some_and(|proto| {
            let proto = proto.trim();
            proto.eq_ignore_ascii_case("https") || proto.eq_ignore_ascii_case("wss")
        });
        Target { host, secure }
    }
}

impl<'a> Origin<'a> {
    /// Whether this origin is the request's own: the same scheme (`ws` counting as
    /// `http`, `wss` as `https`), host and port (a port left out being the scheme's).
    fn is_the_origin_of(&self, target: &Target<'_>) -> bool {
        let Some(host) = target.host else {
            return false;
        };
        let (host, port) = split_host_port(host);
        let port = port.unwrap_or(if target.secure { 443 } else { 80 });
        self.scheme_is_secure() == target.secure
            && self.scheme_is_web()
            && self.host.eq_ignore_ascii_case(host)
            && self.effective_port() == port
    }

    fn scheme_is_web(&self) -> bool {
        ["http", "https", "ws", "wss"]
            .iter()
            .any(|scheme| self.scheme.eq_ignore_ascii_case(scheme))
    }

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

    /// A plain HTTP request to `host`.
    fn to(host: &str) -> Target<'_> {
        Target::new(Some(host), None)
    }

    /// A request to `host` through a proxy that says it came over TLS.
    fn tls_to(host: &str) -> Target<'_> {
        Target::new(Some(host), Some("https"))
    }

    const NO_HOST: Target<'static> = Target {
        host: None,
        secure: false,
    };

    #[test]
    fn no_origin_header_is_always_allowed() {
        let list = OriginPolicy::parse("https://example.com").unwrap();
        for policy in [OriginPolicy::Off, OriginPolicy::Conn, list] {
            assert!(policy.allows(None, &to("127.0.0.1:4000")));
        }
    }

    #[test]
    fn conn_requires_same_scheme_host_and_port() {
        let p = OriginPolicy::Conn;
        assert!(p.allows(Some("http://127.0.0.1:4000"), &to("127.0.0.1:4000")));
        assert!(p.allows(Some("http://LOCALHOST"), &to("localhost:80")));
        assert!(p.allows(Some("http://x.io:80"), &to("x.io")));
        assert!(p.allows(Some("ws://x.io"), &to("x.io")));
        assert!(!p.allows(Some("http://127.0.0.1:4001"), &to("127.0.0.1:4000")));
        assert!(!p.allows(Some("http://evil.com:4000"), &to("127.0.0.1:4000")));
        assert!(!p.allows(Some("http://x.io:8080"), &to("x.io")));
        assert!(!p.allows(Some("null"), &to("127.0.0.1:4000")));
        assert!(!p.allows(Some("ftp://x.io"), &to("x.io")));
        assert!(!p.allows(Some("http://a.io"), &NO_HOST));
        // The scheme counts: an https page is not the plain-HTTP request's origin.
        assert!(!p.allows(Some("https://x.io"), &to("x.io:443")));
        assert!(!p.allows(Some("https://127.0.0.1:4000"), &to("127.0.0.1:4000")));
    }

    #[test]
    fn conn_behind_a_tls_terminating_proxy() {
        // The page is https://; the proxy forwards Host without a port over plain HTTP
        // and says the client came over TLS.
        let p = OriginPolicy::Conn;
        let target = tls_to("chat.example.com");
        assert!(p.allows(Some("https://chat.example.com"), &target));
        assert!(p.allows(Some("wss://chat.example.com:443"), &target));
        assert!(!p.allows(Some("http://chat.example.com"), &target));
        assert!(!p.allows(Some("https://evil.example"), &target));
        // Without that header, the request is plain HTTP: the https page is refused.
        assert!(!p.allows(Some("https://chat.example.com"), &to("chat.example.com")));
        assert!(Target::new(None, Some("HTTPS, http")).secure);
        assert!(!Target::new(None, Some("http, https")).secure);
    }

    #[test]
    fn allow_list_with_wildcards_and_optional_parts() {
        let p = OriginPolicy::parse("https://example.com, *.example.org:8443").unwrap();
        assert!(p.allows(Some("https://example.com"), &NO_HOST));
        assert!(!p.allows(Some("http://example.com"), &NO_HOST));
        assert!(!p.allows(Some("https://sub.example.com"), &NO_HOST));
        assert!(p.allows(Some("http://example.org:8443"), &NO_HOST));
        assert!(p.allows(Some("https://a.b.example.org:8443"), &NO_HOST));
        assert!(!p.allows(Some("https://a.example.org"), &NO_HOST));
        assert!(!p.allows(Some("https://badexample.org:8443"), &NO_HOST));
    }

    #[test]
    fn host_allow_lists_names_and_ports() {
        let any = HostAllow::parse("").unwrap();
        assert!(any.is_any() && any.allows(None) && any.allows(Some("evil.example")));
        let list = HostAllow::parse("Chat.Example.com, *.example.org, 10.0.0.1:4000, ::1").unwrap();
        assert!(!list.is_any());
        assert!(list.allows(Some("chat.example.com")));
        assert!(list.allows(Some("CHAT.example.com.:8080")));
        assert!(list.allows(Some("example.org")));
        assert!(list.allows(Some("a.b.example.org:443")));
        assert!(list.allows(Some("10.0.0.1:4000")));
        assert!(list.allows(Some("[::1]:4000")));
        assert!(!list.allows(Some("10.0.0.1:4001")));
        assert!(!list.allows(Some("10.0.0.1")));
        assert!(!list.allows(Some("evil.example")));
        assert!(!list.allows(Some("badexample.org")));
        assert!(!list.allows(Some("chat.example.com.evil.example")));
        assert!(!list.allows(None));
        assert_eq!(
            list.to_string(),
            "chat.example.com,*.example.org,10.0.0.1:4000,[::1]"
        );
        assert!(HostAllow::parse("https://example.com").is_err());
        assert!(HostAllow::parse("example.com:http").is_err());
        assert!(HostAllow::parse("*").is_err());
        assert!(HostAllow::parse("[::1]:4000")
            .unwrap()
            .allows(Some("[::1]:4000")));
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
        assert!(p.allows(Some("http://[::1]:4000"), &to("[::1]:4000")));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
    }
}
