//! Key extractors: what a request is counted under.
//!
//! A [`KeyExtractor`] is one or several parts ([`KeyExtractor::and`]), each read from the
//! request's head ([`http::request::Parts`]): the client's IP ([`ClientIp`]: the direct peer,
//! or the address a trusted proxy saw), a header, the route template, or anything a closure
//! reads (request extensions, typically). A part that can't be read makes the whole key
//! missing, and the layer's [`MissingKey`](super::MissingKey) decides.
//!
//! The key is the parts' bytes, each percent-encoded (`%`, `{`, `}`, `|`, control and
//! non-ASCII bytes) and joined with `|`, so distinct part lists never give the same key.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::extract::{ConnectInfo, MatchedPath};
use http::{Extensions, HeaderMap, HeaderName, request::Parts};
use ipnet::IpNet;
use percent_encoding::{AsciiSet, CONTROLS, percent_encode};

use super::error::LayerError;

/// Reads the direct peer's address from a request's extensions.
type PeerFn = Arc<dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync>;
/// Reads a key part from a request's head.
type PartFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// The direct peer's IP, as servers put it in a request's extensions: axum's
/// `ConnectInfo<SocketAddr>` (`into_make_service_with_connect_info::<SocketAddr>()`), tonic's
/// `TcpConnectInfo`, or a plain `SocketAddr` (e.g. inserted by a hyper service). The default
/// peer source of [`ClientIp`]; use [`ClientIp::peer_from`] for another.
pub fn connect_info_peer(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(ConnectInfo(addr)) = extensions.get::<ConnectInfo<SocketAddr>>() {
        return Some(addr.ip());
    }
    if let Some(info) = extensions.get::<tonic::transport::server::TcpConnectInfo>() {
        if let Some(addr) = info.remote_addr() {
            return Some(addr.ip());
        }
    }
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

/// The route a request is limited as: axum's `MatchedPath` (the route template, e.g.
/// `/users/{id}`), else the request's path (a gRPC method's `/package.Service/Method`, a
/// hyper service's path).
pub(crate) fn route_of(parts: &Parts) -> &str {
    match parts.extensions.get::<MatchedPath>() {
        Some(matched) => matched.as_str(),
        None => parts.uri.path(),
    }
}

/// The proxies whose forwarding headers are believed: IP networks in CIDR notation (or
/// single addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Networks such as `"192.0.2.0/24"`, `"2001:db8::/32"`, or single addresses
    /// (`"198.51.100.7"`). An entry that is neither is refused with
    /// [`LayerError::InvalidCidr`] naming it (`trusted_proxies[i]`).
    pub fn new<I>(cidrs: I) -> Result<Self, LayerError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        cidrs
            .into_iter()
            .enumerate()
            .map(|(i, cidr)| {
                let text = cidr.as_ref().trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| LayerError::InvalidCidr {
                        field: format!("trusted_proxies[{i}]"),
                        value: text.to_owned(),
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `ip` is a trusted proxy (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// The forwarding header trusted proxies write. One only: a proxy that writes one and passes
/// the other through from the client would let a client choose its own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// The client's IP: the direct peer, or, when the peer is a trusted proxy, the address the
/// forwarding header says the trusted proxies got the request from.
///
/// With proxies: a peer that is not a trusted proxy is the client, whatever headers it sent
/// (a client can't pick its own key). A trusted peer's header is read from the right (the
/// entries the trusted proxies appended) and the right-most address that is not a trusted
/// proxy is the client; everything to its left was written by the client or by proxies nobody
/// vouches for. When every address is trusted, the left-most is the client. An entry that is
/// not an address (`unknown`, an obfuscated `_node`, garbage) reached before an untrusted
/// address, or a trusted peer that sent no header, leaves the client unknown: the key is
/// missing.
#[derive(Clone)]
pub struct ClientIp {
    proxies: Option<(TrustedProxies, ProxyHeader)>,
    peer: PeerFn,
}

impl ClientIp {
    /// The direct peer's IP; no header is read.
    pub fn peer() -> Self {
        Self {
            proxies: None,
            peer: Arc::new(connect_info_peer),
        }
    }

    /// The client behind `trusted` proxies, which write `header`.
    pub fn behind(trusted: TrustedProxies, header: ProxyHeader) -> Self {
        Self {
            proxies: Some((trusted, header)),
            ..Self::peer()
        }
    }

    /// Read the direct peer from the request's extensions with `peer` instead of
    /// [`connect_info_peer`].
    pub fn peer_from(
        mut self,
        peer: impl Fn(&Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.peer = Arc::new(peer);
        self
    }

    /// The client's IP for a request, `None` when it can't be known (see the type's docs).
    pub fn resolve(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = (self.peer)(&parts.extensions)?.to_canonical();
        let Some((trusted, header)) = &self.proxies else {
            return Some(peer);
        };
        if !trusted.contains(peer) {
            return Some(peer);
        }
        let hops = match header {
            ProxyHeader::XForwardedFor => x_forwarded_for(&parts.headers),
            ProxyHeader::Forwarded => forwarded(&parts.headers),
        };
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) if trusted.contains(*ip) => continue,
                Some(ip) => return Some(*ip),
                None => return None,
            }
        }
        hops.first().copied().flatten()
    }
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIp")
            .field("proxies", &self.proxies)
            .finish_non_exhaustive()
    }
}

/// The addresses of `X-Forwarded-For` (every field line, in order); `None` for an entry that
/// is not an address.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .filter_map(|entry| {
            let entry = std::str::from_utf8(entry).map(str::trim);
            match entry {
                Ok("") => None,
                Ok(text) => Some(node_ip(text)),
                Err(_) => Some(None),
            }
        })
        .collect()
}

/// The `for=` addresses of RFC 7239 `Forwarded` (every element of every field line, in
/// order); `None` for an element whose `for` is missing or not an address.
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(http::header::FORWARDED)
        .iter()
        .flat_map(|line| split_unquoted(line.as_bytes(), b','))
        .filter(|element| !element.iter().all(u8::is_ascii_whitespace))
        .map(|element| {
            split_unquoted(element, b';').into_iter().find_map(|pair| {
                let eq = pair.iter().position(|&b| b == b'=')?;
                let (name, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
                if !name.eq_ignore_ascii_case(b"for") {
                    return None;
                }
                let value = unquote(value);
                Some(std::str::from_utf8(&value).ok().and_then(node_ip))
            })?
        })
        .collect()
}

/// `bytes` split at `sep` outside double-quoted strings.
fn split_unquoted(bytes: &[u8], sep: u8) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                out.push(&bytes[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&bytes[start..]);
    out
}

/// A token or a quoted-string's content (`\x` unescaped).
fn unquote(value: &[u8]) -> Vec<u8> {
    let Some(inner) = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
    else {
        return value.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if b == b'\\' && !escaped {
            escaped = true;
        } else {
            out.push(b);
            escaped = false;
        }
    }
    out
}

/// A node as proxies write it: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`.
fn node_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })?;
    Some(ip.to_canonical())
}

/// Bytes escaped in a key part: those that would end a hash tag or the part, `%` itself, and
/// control bytes (non-ASCII bytes are always escaped).
const KEY_ESCAPES: &AsciiSet = &CONTROLS.add(b'%').add(b'{').add(b'}').add(b'|');

/// One part of a key.
#[derive(Clone)]
enum Part {
    Ip(ClientIp),
    Header(HeaderName),
    Route,
    Custom(&'static str, PartFn),
}

impl Part {
    fn read(&self, parts: &Parts) -> Option<Vec<u8>> {
        let value = match self {
            Part::Ip(ip) => ip.resolve(parts)?.to_string().into_bytes(),
            Part::Header(name) => parts.headers.get(name)?.as_bytes().to_vec(),
            Part::Route => route_of(parts).as_bytes().to_vec(),
            Part::Custom(_, read) => read(parts)?.into_bytes(),
        };
        (!value.is_empty()).then_some(value)
    }

    fn describe(&self) -> String {
        match self {
            Part::Ip(ip) if ip.proxies.is_some() => "the client IP".to_owned(),
            Part::Ip(_) => "the peer IP".to_owned(),
            Part::Header(name) => format!("the {name} header"),
            Part::Route => "the route".to_owned(),
            Part::Custom(what, _) => (*what).to_owned(),
        }
    }
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Ip(ip) => ip.fmt(f),
            Part::Header(name) => write!(f, "Header({name})"),
            Part::Route => f.write_str("Route"),
            Part::Custom(what, _) => write!(f, "Custom({what})"),
        }
    }
}

/// What a request is counted under: one part, or several joined ([`KeyExtractor::and`]).
///
/// ```
/// use http::HeaderName;
/// use sluice_gateway::layer::{ClientIp, KeyExtractor, ProxyHeader, TrustedProxies};
///
/// // Each client IP on each route, the client seen through the load balancers' X-Forwarded-For.
/// let trusted = TrustedProxies::new(["192.0.2.0/24"])?;
/// let per_ip_and_route = KeyExtractor::client_ip(ClientIp::behind(trusted, ProxyHeader::XForwardedFor))
///     .and(KeyExtractor::route());
/// // Each API key.
/// let per_api_key = KeyExtractor::header(HeaderName::from_static("x-api-key"));
/// # Ok::<(), sluice_gateway::layer::LayerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct KeyExtractor {
    parts: Vec<Part>,
}

impl KeyExtractor {
    fn one(part: Part) -> Self {
        Self { parts: vec![part] }
    }

    /// The direct peer's IP ([`ClientIp::peer`]): right when clients connect directly.
    pub fn peer_ip() -> Self {
        Self::client_ip(ClientIp::peer())
    }

    /// The client's IP as `ip` resolves it (e.g. behind trusted proxies).
    pub fn client_ip(ip: ClientIp) -> Self {
        Self::one(Part::Ip(ip))
    }

    /// A header's value (its first field line); missing when absent or empty.
    pub fn header(name: HeaderName) -> Self {
        Self::one(Part::Header(name))
    }

    /// The route: axum's `MatchedPath` (the template, `/users/{id}`), else the request's path.
    pub fn route() -> Self {
        Self::one(Part::Route)
    }

    /// A value read from the request extension `T` (e.g. the user an auth layer put there);
    /// missing when there is no `T` or `read` returns `None`. `what` names it in the 400
    /// answer's detail ("the user id").
    pub fn extension<T, F>(what: &'static str, read: F) -> Self
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> Option<String> + Send + Sync + 'static,
    {
        Self::from_fn(what, move |parts| {
            parts.extensions.get::<T>().and_then(&read)
        })
    }

    /// Any value read from the request's head; missing when `read` returns `None` (or an
    /// empty string). `what` names it in the 400 answer's detail.
    pub fn from_fn<F>(what: &'static str, read: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        Self::one(Part::Custom(what, Arc::new(read)))
    }

    /// This key and then `other`'s parts: a request is counted under all of them together
    /// (e.g. `route().and(peer_ip())`: each IP on each route apart).
    pub fn and(mut self, other: KeyExtractor) -> Self {
        self.parts.extend(other.parts);
        self
    }

    /// The key for a request, or what could not be read (for the 400 answer's detail).
    pub(crate) fn extract(&self, parts: &Parts) -> Result<Vec<u8>, String> {
        let mut key = Vec::with_capacity(48);
        for (i, part) in self.parts.iter().enumerate() {
            let value = part.read(parts).ok_or_else(|| part.describe())?;
            if i > 0 {
                key.push(b'|');
            }
            for chunk in percent_encode(&value, KEY_ESCAPES) {
                key.extend_from_slice(chunk.as_bytes());
            }
        }
        Ok(key)
    }
}

impl Default for KeyExtractor {
    /// [`KeyExtractor::peer_ip`].
    fn default() -> Self {
        Self::peer_ip()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::builder().uri("/x");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        let addr: SocketAddr = peer.parse().unwrap();
        parts.extensions.insert(ConnectInfo(addr));
        parts
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn behind(header: ProxyHeader) -> ClientIp {
        let trusted = TrustedProxies::new(["127.0.0.1", "192.0.2.0/24", "2001:db8::/32"]).unwrap();
        ClientIp::behind(trusted, header)
    }

    #[test]
    fn trusted_proxies_parse_and_name_the_bad_entry() {
        let t = TrustedProxies::new(["192.0.2.7/24", " 2001:db8::1 "]).unwrap();
        assert!(t.contains("192.0.2.200".parse().unwrap()));
        assert!(t.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(t.contains("2001:db8::1".parse().unwrap()));
        assert!(!t.contains("2001:db8::2".parse().unwrap()));
        assert!(!t.contains("198.51.100.1".parse().unwrap()));
        let err = TrustedProxies::new(["192.0.2.0/24", "10.0.0.0/33"]).unwrap_err();
        assert_eq!(
            err,
            LayerError::InvalidCidr {
                field: "trusted_proxies[1]".into(),
                value: "10.0.0.0/33".into()
            }
        );
        assert!(err.to_string().starts_with("trusted_proxies[1]: "), "{err}");
    }

    #[test]
    fn untrusted_peers_headers_are_ignored() {
        let p = parts(
            "198.51.100.9:5000",
            &[
                ("x-forwarded-for", "203.0.113.1"),
                ("forwarded", "for=203.0.113.1"),
            ],
        );
        assert_eq!(
            behind(ProxyHeader::XForwardedFor).resolve(&p),
            ip("198.51.100.9")
        );
        assert_eq!(
            behind(ProxyHeader::Forwarded).resolve(&p),
            ip("198.51.100.9")
        );
        assert_eq!(ClientIp::peer().resolve(&p), ip("198.51.100.9"));
    }

    #[test]
    fn x_forwarded_for_right_most_untrusted() {
        let c = behind(ProxyHeader::XForwardedFor);
        let p = parts(
            "127.0.0.1:1",
            &[
                ("x-forwarded-for", "6.6.6.6, 203.0.113.5"),
                ("x-forwarded-for", "192.0.2.4"),
            ],
        );
        assert_eq!(c.resolve(&p), ip("203.0.113.5"));
        // Ports, brackets, spaces, and mapped addresses.
        let p = parts(
            "127.0.0.1:1",
            &[("x-forwarded-for", "[2001:db9::1]:80 ,192.0.2.4:9")],
        );
        assert_eq!(c.resolve(&p), ip("2001:db9::1"));
        let p = parts("127.0.0.1:1", &[("x-forwarded-for", "::ffff:203.0.113.8")]);
        assert_eq!(c.resolve(&p), ip("203.0.113.8"));
        // All trusted: the left-most.
        let p = parts(
            "127.0.0.1:1",
            &[("x-forwarded-for", "192.0.2.1, 192.0.2.2")],
        );
        assert_eq!(c.resolve(&p), ip("192.0.2.1"));
        // Garbage left of the client is not read; garbage where the client should be is.
        let p = parts("127.0.0.1:1", &[("x-forwarded-for", "junk, 203.0.113.5")]);
        assert_eq!(c.resolve(&p), ip("203.0.113.5"));
        let p = parts(
            "127.0.0.1:1",
            &[("x-forwarded-for", "203.0.113.5, junk, 192.0.2.4")],
        );
        assert_eq!(c.resolve(&p), None);
        // A trusted peer with no header.
        assert_eq!(c.resolve(&parts("127.0.0.1:1", &[])), None);
    }

    #[test]
    fn forwarded_for_parameters() {
        let c = behind(ProxyHeader::Forwarded);
        let p = parts(
            "127.0.0.1:1",
            &[(
                "forwarded",
                r#"for=6.6.6.6, For="[2001:db9::17]:4711";proto=https, for=192.0.2.43;by=192.0.2.1"#,
            )],
        );
        assert_eq!(c.resolve(&p), ip("2001:db9::17"));
        let p = parts(
            "127.0.0.1:1",
            &[("forwarded", r#"proto=http;for="203.0.113.9:80""#)],
        );
        assert_eq!(c.resolve(&p), ip("203.0.113.9"));
        let p = parts(
            "127.0.0.1:1",
            &[("forwarded", r#"for="a,b;c", for=203.0.113.3"#)],
        );
        assert_eq!(c.resolve(&p), ip("203.0.113.3"));
        for unknown in ["for=unknown", "for=_hidden", "proto=https", r#"for="\"x""#] {
            let p = parts("127.0.0.1:1", &[("forwarded", unknown)]);
            assert_eq!(c.resolve(&p), None, "{unknown}");
        }
        // X-Forwarded-For is not read when Forwarded is the proxies' header.
        let p = parts("127.0.0.1:1", &[("x-forwarded-for", "203.0.113.1")]);
        assert_eq!(c.resolve(&p), None);
    }

    #[test]
    fn keys_join_escaped_parts_and_name_the_missing_one() {
        let k = KeyExtractor::peer_ip()
            .and(KeyExtractor::header(HeaderName::from_static("x-user")))
            .and(KeyExtractor::route());
        let p = parts("[::1]:1", &[("x-user", "a|b}{%c")]);
        assert_eq!(k.extract(&p).unwrap(), b"::1|a%7Cb%7D%7B%25c|/x");
        let err = k.extract(&parts("127.0.0.1:1", &[])).unwrap_err();
        assert_eq!(err, "the x-user header");
        let k = KeyExtractor::extension::<u32, _>("the user id", |id| Some(id.to_string()));
        let mut p = parts("127.0.0.1:1", &[]);
        assert_eq!(k.extract(&p).unwrap_err(), "the user id");
        p.extensions.insert(42_u32);
        assert_eq!(k.extract(&p).unwrap(), b"42");
    }
}
