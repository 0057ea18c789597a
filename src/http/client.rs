//! The client's address: the peer's, or, when the peer is a trusted reverse proxy, the one it
//! names in `Forwarded` (RFC 7239) or else `X-Forwarded-For`. The list is read from the right
//! (the hop nearest larder) past every trusted proxy; the first address that is not one is the
//! client. A list that cannot be parsed names nobody: the peer it came from is used.

use std::net::IpAddr;

use forwarded_header_value::ForwardedHeaderValue;
use http::HeaderMap;
use http::header::{FORWARDED, HeaderName};
use ipnet::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The address sign-in throttling counts for a request from `peer`.
pub fn address(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let joined = |name: &HeaderName| {
        let mut values = headers.get_all(name).iter().peekable();
        values.peek()?;
        let texts: Option<Vec<&str>> = values.map(|v| v.to_str().ok()).collect();
        Some(texts.unwrap_or_default().join(", "))
    };
    let chain = match joined(&FORWARDED) {
        Some(text) => ForwardedHeaderValue::from_forwarded(&text),
        None => match joined(&X_FORWARDED_FOR) {
            Some(text) => ForwardedHeaderValue::from_x_forwarded_for(&text),
            None => return peer,
        },
    };
    let Ok(chain) = chain else { return peer };
    let mut client = peer;
    for hop in chain.iter().rev() {
        // An obfuscated or unknown hop: nothing beyond it can be believed.
        let Some(ip) = hop.forwarded_for_ip() else { break };
        client = canonical(ip);
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// IPv4-mapped IPv6 addresses as IPv4, so that `127.0.0.1/32` covers `::ffff:127.0.0.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    /// The peer, its header fields, and the client address they give.
    type Case = (IpAddr, &'static [(&'static str, &'static str)], &'static str);

    #[test]
    fn addresses() {
        let proxies: Vec<IpNet> =
            vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        let table: &[Case] = &[
            // Only a trusted peer is believed.
            (stranger, &[("x-forwarded-for", "203.0.113.7")], "192.0.2.9"),
            (proxy, &[("x-forwarded-for", "203.0.113.7")], "203.0.113.7"),
            (proxy, &[], "127.0.0.1"),
            // A client cannot choose its address by prepending one: read from the right.
            (proxy, &[("x-forwarded-for", "198.51.100.1, 203.0.113.7")], "203.0.113.7"),
            (proxy, &[("x-forwarded-for", "203.0.113.7, 10.1.2.3")], "203.0.113.7"),
            (
                proxy,
                &[("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "10.1.2.3")],
                "203.0.113.7",
            ),
            // Forwarded wins over X-Forwarded-For; IPv6 and ports are understood.
            (
                proxy,
                &[
                    ("forwarded", "for=203.0.113.8;proto=https"),
                    ("x-forwarded-for", "198.51.100.1"),
                ],
                "203.0.113.8",
            ),
            (proxy, &[("forwarded", r#"for="[2001:db8::17]:4711""#)], "2001:db8::17"),
            (proxy, &[("forwarded", "for=_hidden, for=10.0.0.2")], "10.0.0.2"),
            // Nonsense names nobody.
            (proxy, &[("x-forwarded-for", "not an address")], "127.0.0.1"),
            (
                "::ffff:127.0.0.1".parse().unwrap(),
                &[("x-forwarded-for", "203.0.113.7")],
                "203.0.113.7",
            ),
        ];
        for (peer, fields, want) in table {
            let got = address(&headers(fields), *peer, &proxies);
            assert_eq!(got, want.parse::<IpAddr>().unwrap(), "{peer} {fields:?}");
        }
    }
}
