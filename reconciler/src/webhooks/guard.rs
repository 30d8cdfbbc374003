//! Which webhook targets the daemon may POST to: a tenant registers a URL, and the daemon —
//! inside the platform's network — sends signed requests there, so a URL is a request made on
//! the tenant's behalf from a privileged place (server-side request forgery).
//!
//! The rules, checked when a webhook is registered **and** at every delivery, after DNS
//! resolution, with the connection made only to an address that was checked (so a name that
//! resolves to a public address at registration and to 127.0.0.1 later — DNS rebinding —
//! reaches nothing):
//!
//! * `https` only, unless `[webhooks] allow-http = true`;
//! * no user name or password in the URL;
//! * no name that is local by definition (`localhost`, `*.localhost`, `*.local`,
//!   `*.internal`, `metadata.google.internal`, `metadata`);
//! * no address that is not global: loopback, unspecified, private (10/8, 172.16/12,
//!   192.168/16), shared (100.64/10), link-local (169.254/16 — cloud metadata — and fe80::/10),
//!   unique-local (fc00::/7), multicast, broadcast, reserved (240/4, 0/8), benchmarking
//!   (198.18/15), documentation ranges, and IPv4-mapped, -compatible, NAT64 and 6to4 forms of
//!   any of these. Numeric spellings (`127.1`, `2130706433`, `0x7f000001`) are the addresses
//!   they stand for (the URL parser normalises them before the check);
//! * never the daemon's own listening port on a local address (its `/hooks/git`, its API).
//!
//! Operators reach internal receivers by listing their networks in `[webhooks]
//! allow-networks` (CIDR); nothing else widens the rules.

use std::net::{IpAddr, SocketAddr};

pub use crate::net::Network;
use crate::net::canonical;

/// Why `ip` is not a global unicast address, if it is not.
pub fn not_global(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("an unspecified address")
            } else if v4.is_private() {
                Some("a private address")
            } else if v4.is_link_local() {
                Some("a link-local address (cloud metadata lives there)")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("a shared (carrier-grade NAT) address")
            } else if v4.is_multicast() {
                Some("a multicast address")
            } else if v4.is_broadcast() || o[0] >= 240 {
                Some("a reserved or broadcast address")
            } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
                Some("a benchmarking address")
            } else if v4.is_documentation() || (o[0] == 192 && o[1] == 0 && o[2] == 0) {
                Some("a documentation or protocol-assignment address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("a unique-local address")
            } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("a documentation address")
            } else if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
                Some("a discard-only address")
            } else {
                None
            }
        }
    }
}

/// Names that are local by definition, whatever a resolver says.
fn local_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost"
        || h == "metadata"
        || h == "metadata.google.internal"
        || [
            ".localhost",
            ".local",
            ".internal",
            ".localdomain",
            ".home.arpa",
        ]
        .iter()
        .any(|suffix| h.ends_with(suffix))
        || h == "local"
        || h == "internal"
}

/// The rules of one daemon: its configuration and its own listening address.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    pub allow_http: bool,
    pub allow: Vec<Network>,
    /// The daemon's own listener: never a target, even on an allowed network.
    pub own: Option<SocketAddr>,
}

impl Guard {
    pub(crate) fn new(config: &crate::config::WebhooksConfig, own: Option<SocketAddr>) -> Guard {
        Guard {
            allow_http: config.allow_http,
            allow: config.allow_networks.clone(),
            own,
        }
    }

    /// Is `addr` a target? `Err` says why not.
    pub(crate) fn check_addr(&self, addr: SocketAddr) -> Result<(), String> {
        let ip = canonical(addr.ip());
        if let Some(own) = self.own
            && own.port() == addr.port()
            && (canonical(own.ip()) == ip
                || own.ip().is_unspecified() && not_global(ip).is_some()
                || ip.is_loopback())
        {
            return Err(format!(
                "{addr} is this daemon's own listener ({own}): it never POSTs to itself"
            ));
        }
        if self.allow.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        match not_global(ip) {
            Some(why) => Err(format!(
                "{} is {why}; webhooks go to public addresses only (an operator may allow internal networks in [webhooks] allow-networks)",
                addr.ip()
            )),
            None => Ok(()),
        }
    }

    /// The URL's own rules (scheme, credentials, local names, literal addresses); a host name
    /// is checked again, with what it resolves to, when it is delivered to.
    pub(crate) fn check_url(&self, url: &str) -> Result<reqwest::Url, String> {
        let u = reqwest::Url::parse(url).map_err(|e| format!("not an absolute URL: {e}"))?;
        match u.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(
                    "http is not allowed: use https (an operator may set [webhooks] allow-http = true)"
                        .into(),
                );
            }
            other => return Err(format!("`{other}:` is not http or https")),
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err("a URL may not carry a user name or password".into());
        }
        let port = u.port_or_known_default().unwrap_or(443);
        match u.host() {
            None => Err("the URL has no host".into()),
            Some(url::Host::Ipv4(ip)) => self.check_addr(SocketAddr::new(IpAddr::V4(ip), port)),
            Some(url::Host::Ipv6(ip)) => self.check_addr(SocketAddr::new(IpAddr::V6(ip), port)),
            Some(url::Host::Domain(name)) => {
                if local_name(name) {
                    Err(format!(
                        "`{name}` is a local name; webhooks go to public hosts only"
                    ))
                } else {
                    Ok(())
                }
            }
        }?;
        Ok(u)
    }

    /// [`Guard::check_url`], then — for a host name — what it resolves to now: a name that
    /// resolves only to refused addresses is refused at registration. One that does not
    /// resolve (yet) is accepted; every delivery checks again.
    pub(crate) async fn check_registration(&self, url: &str) -> Result<(), String> {
        let u = self.check_url(url)?;
        if let Some(url::Host::Domain(name)) = u.host() {
            let port = u.port_or_known_default().unwrap_or(443);
            if let Ok(Ok(addrs)) = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                tokio::net::lookup_host((name, port)),
            )
            .await
            {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if !addrs.is_empty() && addrs.iter().all(|a| self.check_addr(*a).is_err()) {
                    return Err(self
                        .check_addr(addrs[0])
                        .err()
                        .map(|why| format!("`{name}` resolves to {why}"))
                        .unwrap_or_default());
                }
            }
        }
        Ok(())
    }
}

/// A resolver for the delivery client that hands the connector only addresses the guard
/// allows: the connection is made to exactly what was checked.
pub(crate) struct Resolver(pub std::sync::Arc<Guard>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if local_name(&host) {
                return Err(format!("`{host}` is a local name").into());
            }
            // Port 0: the connector puts the URL's port in.
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match guard.check_addr(*a) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| "no address".into());
                return Err(format!("`{host}` resolves to {why}").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::default()
    }

    #[test]
    fn internal_targets_are_refused_in_every_spelling() {
        let g = Guard {
            allow_http: true,
            ..guard()
        };
        for url in [
            "http://127.0.0.1:9090/",
            "http://localhost/",
            "http://LOCALHOST./x",
            "http://app.localhost/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://240.0.0.1/",
            "http://user:pass@example.com/",
            "http://user@example.com/",
            "ftp://example.com/",
            "file:///etc/passwd",
        ] {
            assert!(g.check_url(url).is_err(), "{url} must be refused");
        }
        for url in [
            "https://ops.example.com/hooks/tenancy",
            "http://93.184.216.34/",
            "https://[2606:4700::1111]/",
        ] {
            assert!(g.check_url(url).is_ok(), "{url} is a public target");
        }
    }

    #[test]
    fn https_only_by_default_and_operators_allow_networks() {
        let g = guard();
        assert!(g.check_url("http://93.184.216.34/").is_err());
        assert!(g.check_url("https://93.184.216.34/").is_ok());
        let g = Guard {
            allow_http: true,
            allow: vec![
                "10.20.0.0/16".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
            ],
            own: Some("127.0.0.1:9090".parse().unwrap()),
        };
        assert!(g.check_url("http://10.20.3.4/").is_ok());
        assert!(g.check_url("http://10.21.3.4/").is_err());
        assert!(g.check_url("http://127.0.0.1:8080/").is_ok());
        assert!(
            g.check_url("http://127.0.0.1:9090/hooks/git").is_err(),
            "never the daemon itself"
        );
        assert!(g.check_url("http://[::ffff:127.0.0.1]:9090/").is_err());
        let any = Guard {
            own: Some("0.0.0.0:9090".parse().unwrap()),
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            ..guard()
        };
        assert!(any.check_url("https://10.0.0.5:9090/").is_err());
        assert!(any.check_url("https://10.0.0.5:9091/").is_ok());
    }

    #[test]
    fn networks_parse_and_contain() {
        let n: Network = "fd00::/8".parse().unwrap();
        assert!(n.contains("fd12::1".parse().unwrap()));
        assert!(!n.contains("fe80::1".parse().unwrap()));
        let n: Network = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("ten".parse::<Network>().is_err());
        assert!(
            "0.0.0.0/0"
                .parse::<Network>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}
