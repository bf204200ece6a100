//! What a plugin may reach beyond the storage contract, granted per plugin
//! by the operator: outgoing HTTP to listed origins (`wasi:http`), and one
//! preopened directory. Environment, arguments, sockets and stdin are never
//! granted. `wasi:http` is linked only for a plugin with an allow list, and
//! a component that imports it without one is refused at load.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

/// What one plugin is granted. The default grants nothing.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Origins outgoing HTTP requests may go to; empty: `wasi:http` is not linked.
    pub http_allow: Vec<Origin>,
    /// How much of the network those requests may hold.
    pub http_limits: HttpLimits,
    /// A host directory the plugin sees as `/`.
    pub preopen: Option<Preopen>,
}

/// Bounds on a plugin's outgoing HTTP requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Requests of one tenant's instances in flight at once (sent, and
    /// their response not yet read to its end or dropped); past it a
    /// request is answered `connection-limit-reached`.
    pub requests_per_tenant: usize,
    /// The same for all tenants of the plugin together.
    pub requests: usize,
    /// The longest a request may wait for its response's head, or between
    /// two pieces of its body, whatever timeout the guest asks for.
    pub timeout: std::time::Duration,
    /// The largest request body and the largest response body of one
    /// request, in bytes.
    pub body_bytes: u64,
    /// Tenants with a `requests_per_tenant` of their own.
    pub requests_by_tenant: std::collections::BTreeMap<String, usize>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            requests_per_tenant: 64,
            requests: 256,
            timeout: std::time::Duration::from_secs(120),
            body_bytes: 1 << 30,
            requests_by_tenant: Default::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Preopen {
    pub dir: PathBuf,
    pub writable: bool,
    /// Each tenant's instances see `dir/<tenant>` as `/` (made on first
    /// use), not `dir`; the host's own work (maintenance) sees `dir`.
    pub per_tenant: bool,
}

impl Preopen {
    /// The host directory `tenant`'s instances see as `/`. A tenant's
    /// folder is made when it is missing (a writable grant only) and is
    /// never followed as a symlink: an entry the operator did not make a
    /// directory is refused, not served.
    pub fn dir_for(&self, tenant: &str) -> Result<PathBuf, String> {
        if !self.per_tenant || tenant.is_empty() {
            return Ok(self.dir.clone());
        }
        tenant_folder_name(tenant)?;
        let folder = self.dir.join(tenant);
        // Checked here, opened by path afterwards (wasmtime takes a path):
        // only who writes into `dir` itself could swap it in between, and
        // tenants are jailed in their own folders below it.
        match std::fs::symlink_metadata(&folder) {
            Ok(meta) if meta.is_dir() => Ok(folder),
            Ok(_) => Err(format!("tenant folder {} is not a directory (a symlink is not followed)", folder.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.writable => {
                match std::fs::create_dir(&folder) {
                    Ok(()) => Ok(folder),
                    // Another instance of the tenant made it first.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.dir_for(tenant),
                    Err(e) => Err(format!("making tenant folder {}: {e}", folder.display())),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("tenant folder {} does not exist (the grant is read-only)", folder.display()))
            }
            Err(e) => Err(format!("tenant folder {}: {e}", folder.display())),
        }
    }
}

/// Whether `tenant` can name a folder of its own directly below a grant's
/// directory: one path segment, not hidden (so never `.` or `..`, nor a
/// name the plugin keeps for itself, such as its uploads in progress).
pub fn tenant_folder_name(tenant: &str) -> Result<(), String> {
    let bad = tenant.is_empty()
        || tenant.starts_with('.')
        || tenant.len() > 255
        || tenant.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(format!(
            "tenant {tenant:?} cannot name a folder (one path segment, not starting with a dot, no control characters)"
        ));
    }
    Ok(())
}

/// One scheme/host/port triple an allow list names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    https: bool,
    /// Lower case; an IPv6 address without its brackets.
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `http://host[:port]` or `https://host[:port]`, nothing else:
    /// no user, path, query or fragment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let path_is_empty = matches!(uri.path(), "" | "/") && uri.query().is_none();
        if !path_is_empty || text.contains('#') {
            return Err(format!("{text:?}: an origin is scheme://host:port, without a path"));
        }
        Self::of(&uri).ok_or_else(|| format!("{text:?}: an origin is http:// or https://, a host and a port, without a user"))
    }

    /// The scheme, host and port `uri` names; none for another scheme, no
    /// host, or a user name.
    pub fn of(uri: &http::Uri) -> Option<Self> {
        let https = match uri.scheme_str()? {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let authority = uri.authority().filter(|a| !a.as_str().contains('@'))?;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Some(Self { https, host: normal_host(authority.host()), port })
    }

    pub fn https(&self) -> bool {
        self.https
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    #[cfg(test)]
    fn matches(&self, uri: &http::Uri) -> bool {
        Self::of(uri).as_ref() == Some(self)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

fn normal_host(host: &str) -> String {
    host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

/// Addresses no plugin reaches through a name, whatever the allow list
/// says: this host (loopback, unspecified), private networks (10/8,
/// 172.16/12, 192.168/16, 100.64/10, fc00::/7) where the server's own
/// neighbours live, and link-local ranges (169.254/16, fe80::/10) holding
/// cloud metadata services (169.254.169.254); also multicast, broadcast and
/// other special-purpose ranges, and any of these carried inside an IPv6
/// address (NAT64, 6to4, the compatible form). An operator who means one
/// lists its address literally. Connections go to the addresses checked
/// (`outbound`), so DNS rebinding gains nothing.
fn reserved(ip: IpAddr) -> bool {
    fn reserved_v4(v4: std::net::Ipv4Addr) -> bool {
        let [a, b, c, _] = v4.octets();
        let shared = a == 100 && (b & 0xc0) == 64;
        let benchmarking = a == 198 && (b & 0xfe) == 18;
        let protocol = a == 192 && b == 0 && c == 0;
        v4.is_loopback()
            || v4.is_private()
            || v4.is_link_local()
            || v4.is_unspecified()
            || v4.is_multicast()
            || v4.is_broadcast()
            || a == 0
            || a >= 240
            || shared
            || benchmarking
            || protocol
    }
    match ip {
        IpAddr::V4(v4) => reserved_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // IPv4 addresses carried inside IPv6 ones reach the IPv4 network
            // (NAT64 on a DNS64 host, 6to4, the old compatible form).
            let embedded = |hi: u16, lo: u16| std::net::Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
            let nat64 = s[0] == 0x64 && s[1] == 0xff9b;
            let compatible = s[..6].iter().all(|&x| x == 0);
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] & 0xfe00) == 0xfc00
                || v6.to_ipv4_mapped().is_some_and(reserved_v4)
                || (nat64 && (s[2] != 0 || reserved_v4(embedded(s[6], s[7]))))
                || (s[0] == 0x2002 && reserved_v4(embedded(s[1], s[2])))
                || (compatible && reserved_v4(embedded(s[6], s[7])))
        }
    }
}

/// Whether a request to `uri` may go out: its origin is listed.
pub fn check_origin(allow: &[Origin], uri: &http::Uri) -> Result<(), String> {
    match Origin::of(uri) {
        Some(origin) if allow.contains(&origin) => Ok(()),
        // The origin only: a path or query may carry the plugin's secrets.
        Some(origin) => Err(format!("{origin} is not in the plugin's http_allow list")),
        None => Err("a request that is not to an http(s) origin".into()),
    }
}

/// Why an origin's addresses cannot be used.
#[derive(Debug)]
pub enum Unreachable {
    /// A name leading to a reserved address: refused, whatever the list says.
    Reserved(String),
    /// The name did not resolve.
    Lookup(String),
}

/// The addresses to connect to for `origin`: a listed address as it is; a
/// name's addresses, unless one of them is reserved.
pub async fn resolve(origin: &Origin, lookups: &Arc<tokio::sync::Semaphore>) -> Result<Vec<SocketAddr>, Unreachable> {
    if let Ok(ip) = origin.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, origin.port)]);
    }
    let addresses = lookup(&origin.host, origin.port, lookups, LOOKUP_LIMIT).await.map_err(Unreachable::Lookup)?;
    if let Some(address) = addresses.iter().find(|a| reserved(a.ip())) {
        return Err(Unreachable::Reserved(format!(
            "{} resolves to {}, a loopback, private or link-local address: only an address listed as itself \
             in http_allow is reached there",
            origin.host,
            address.ip()
        )));
    }
    Ok(addresses)
}

/// The longest a name lookup may take, its wait for a turn included.
const LOOKUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Lookups one plugin runs at once. The system resolver blocks a thread of
/// tokio's blocking pool (shared by the whole server) for each, and a
/// lookup past its limit keeps that thread until the resolver returns: a
/// plugin opening connections while its names' nameserver does not answer
/// holds at most this many threads, and only its own new connections wait.
pub const LOOKUPS_PER_PLUGIN: usize = 8;

/// `host`'s addresses, or why not, within `limit`, on one of the plugin's
/// `lookups` turns (held until the resolver returns).
async fn lookup(
    host: &str,
    port: u16,
    lookups: &Arc<tokio::sync::Semaphore>,
    limit: std::time::Duration,
) -> Result<Vec<SocketAddr>, String> {
    let deadline = tokio::time::Instant::now() + limit;
    let no_answer = || format!("resolving {host}: no answer within {limit:?}");
    let Ok(Ok(turn)) = tokio::time::timeout_at(deadline, lookups.clone().acquire_owned()).await else {
        return Err(no_answer());
    };
    let target = format!("{host}:{port}");
    // The turn goes with the thread: a lookup abandoned at the deadline
    // keeps it until the resolver gives its thread back.
    let resolving = tokio::task::spawn_blocking(move || {
        let addresses = std::net::ToSocketAddrs::to_socket_addrs(&target).map(|a| a.collect::<Vec<_>>());
        drop(turn);
        addresses
    });
    match tokio::time::timeout_at(deadline, resolving).await {
        Ok(Ok(Ok(addresses))) => Ok(addresses),
        Ok(Ok(Err(e))) => Err(format!("resolving {host}: {e}")),
        Ok(Err(e)) => Err(format!("resolving {host}: {e}")),
        Err(_) => Err(no_answer()),
    }
}

/// One linker per grant set, made once: WASI without authority and the
/// host's imports; and the same with `wasi:http`.
pub struct Linkers<T: 'static> {
    base: Linker<T>,
    with_http: Linker<T>,
}

impl<T> Linkers<T>
where
    T: wasmtime_wasi::WasiView + wasmtime_wasi_http::WasiHttpView + 'static,
{
    pub fn new(engine: &Engine, add_host_imports: impl Fn(&mut Linker<T>) -> anyhow::Result<()>) -> anyhow::Result<Self> {
        let mut base = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut base).map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        add_host_imports(&mut base)?;
        let mut with_http = base.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut with_http)
            .map_err(|e| anyhow::anyhow!("linking wasi:http: {e:#}"))?;
        Ok(Self { base, with_http })
    }

    pub fn for_grants(&self, grants: &Grants) -> &Linker<T> {
        if grants.http_allow.is_empty() { &self.base } else { &self.with_http }
    }
}

/// Refuses, with the config line that would grant it, a component that
/// imports what its plugin is not granted; checks a granted directory.
pub fn check_load(name: &str, component: &Component, engine: &Engine, grants: &Grants) -> anyhow::Result<()> {
    if grants.http_allow.is_empty() {
        let imports = component.component_type();
        if let Some((import, _)) = imports.imports(engine).find(|(import, _)| import.starts_with("wasi:http/")) {
            anyhow::bail!(
                "plugin {name} imports {import}, which is not granted; to let it send HTTP requests, list \
                 the origins it may reach: `http_allow = [\"https://HOST:PORT\"]` under [plugins.{name}]"
            );
        }
    }
    if let Some(preopen) = &grants.preopen {
        let meta = std::fs::metadata(&preopen.dir)
            .with_context(|| format!("plugin {name}: preopen dir {}", preopen.dir.display()))?;
        anyhow::ensure!(meta.is_dir(), "plugin {name}: preopen dir {} is not a directory", preopen.dir.display());
    }
    Ok(())
}

/// An import linked for every plugin that reaches nothing unless granted.
/// Most tool chains import these whether or not the code uses them (Rust's
/// std and componentize-js: wasi:filesystem; componentize-py: wasi:sockets
/// as well), so they are not refused: the operator is told once, at load,
/// what the plugin will find there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UngrantedImport {
    /// The interfaces, e.g. `wasi:sockets/tcp@0.2.9`.
    pub interfaces: Vec<String>,
    /// What the plugin finds there, and how to grant it if it can be.
    pub finds: String,
}

/// The plugin's linked imports that its grants leave empty.
pub fn ungranted_imports(name: &str, component: &Component, engine: &Engine, grants: &Grants) -> Vec<UngrantedImport> {
    let imports: Vec<String> = component.component_type().imports(engine).map(|(import, _)| import.to_string()).collect();
    let of = |prefix: &str| imports.iter().filter(|i| i.starts_with(prefix)).cloned().collect::<Vec<_>>();
    let mut ungranted = Vec::new();
    let filesystem = of("wasi:filesystem/");
    if grants.preopen.is_none() && !filesystem.is_empty() {
        ungranted.push(UngrantedImport {
            interfaces: filesystem,
            finds: format!(
                "no directory (no preopen); to give it one: `preopen = {{ dir = \"/srv/files\", mode = \"ro\" }}` \
                 under [plugins.{name}]"
            ),
        });
    }
    let sockets = of("wasi:sockets/");
    if !sockets.is_empty() {
        ungranted.push(UngrantedImport {
            interfaces: sockets,
            finds: "no network: every socket and name lookup is refused (wasftp grants no sockets; HTTP goes \
                    through wasi:http and `http_allow`)"
                .into(),
        });
    }
    ungranted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_gets_its_own_folder_never_a_symlink_or_a_name_that_climbs() {
        let root = tempfile::tempdir().unwrap();
        let grant = Preopen { dir: root.path().into(), writable: true, per_tenant: true };
        assert_eq!(grant.dir_for("alice").unwrap(), root.path().join("alice"));
        assert!(root.path().join("alice").is_dir(), "made on first use");
        assert_eq!(grant.dir_for("alice").unwrap(), root.path().join("alice"), "and found the next time");
        assert_eq!(grant.dir_for("").unwrap(), root.path(), "the host's own work sees the whole folder");
        for bad in ["..", ".", ".hidden", ".wasftp-upload-00112233445566778899aabbccddeeff", "a/b", "../bob", "a\\b", "tab\t", &"x".repeat(256)] {
            let err = grant.dir_for(bad).unwrap_err();
            assert!(err.contains("cannot name a folder"), "{bad:?}: {err}");
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1, "nothing made for a refused name");
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("mallory")).unwrap();
        let err = grant.dir_for("mallory").unwrap_err();
        assert!(err.contains("not a directory") && err.contains("symlink"), "{err}");
        std::fs::write(root.path().join("file"), b"").unwrap();
        assert!(grant.dir_for("file").is_err());
        let read_only = Preopen { writable: false, ..grant.clone() };
        assert_eq!(read_only.dir_for("alice").unwrap(), root.path().join("alice"));
        let err = read_only.dir_for("carol").unwrap_err();
        assert!(err.contains("does not exist") && err.contains("read-only"), "{err}");
        assert!(!root.path().join("carol").exists());
        let shared = Preopen { per_tenant: false, ..grant };
        assert_eq!(shared.dir_for("alice").unwrap(), root.path(), "one folder for all without per_tenant");
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let o = Origin::parse("http://127.0.0.1:3900").unwrap();
        assert_eq!(o.to_string(), "http://127.0.0.1:3900");
        assert_eq!(Origin::parse("https://S3.Example.com").unwrap().to_string(), "https://s3.example.com:443");
        assert_eq!(Origin::parse("http://[::1]:9000/").unwrap().to_string(), "http://[::1]:9000");
        for bad in ["ftp://h:1", "h:80", "http://u:p@h:1", "http://h:1/bucket", "http://h:1?x=1", "http://h:1/#f", ""] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_request_matches_only_its_exact_origin() {
        let allow = [Origin::parse("http://127.0.0.1:3900").unwrap()];
        let ok = |u: &str| allow.iter().any(|o| o.matches(&u.parse().unwrap()));
        assert!(ok("http://127.0.0.1:3900/bucket/key?x-id=PutObject"));
        assert!(!ok("https://127.0.0.1:3900/"), "scheme differs");
        assert!(!ok("http://127.0.0.1:2222/"), "port differs");
        assert!(!ok("http://127.0.0.2:3900/"), "host differs");
        assert!(!ok("http://evil@127.0.0.1:3900/"), "user info");
        let https = [Origin::parse("https://s3.example.com").unwrap()];
        assert!(https[0].matches(&"https://S3.example.com:443/x".parse().unwrap()));
        assert!(!https[0].matches(&"http://s3.example.com/x".parse().unwrap()));
    }

    #[test]
    fn link_local_addresses_are_reserved() {
        assert!(reserved("169.254.169.254".parse().unwrap()));
        assert!(reserved("fe80::1".parse().unwrap()));
        assert!(reserved("::ffff:169.254.1.1".parse().unwrap()));
        assert!(reserved("0.0.0.0".parse().unwrap()));
        for private in [
            "127.0.0.1", "127.9.9.9", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1",
            "0.1.2.3", "192.0.0.8", "198.18.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1",
            "::1", "fc00::1", "fd12::1", "fec0::1", "ff02::1", "::ffff:10.1.2.3", "::ffff:127.0.0.1",
            "64:ff9b::a00:1", "64:ff9b:1::1", "2002:a00:1::1", "2002:7f00:1::", "::10.0.0.1",
        ] {
            assert!(reserved(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"] {
            assert!(!reserved(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_name_leading_to_a_reserved_address_is_refused() {
        // `localhost` resolves without a network, to loopback: listed by
        // name it is refused; a listed literal is allowed as is.
        let allow = [Origin::parse("http://localhost:9").unwrap(), Origin::parse("http://169.254.169.254").unwrap()];
        assert!(check_origin(&allow, &"http://localhost:9/".parse().unwrap()).is_ok());
        assert!(check_origin(&allow, &"http://169.254.169.254/latest".parse().unwrap()).is_ok());
        assert!(check_origin(&allow, &"http://169.254.169.254:8080/".parse().unwrap()).is_err());
        let turns = Arc::new(tokio::sync::Semaphore::new(LOOKUPS_PER_PLUGIN));
        let resolve = |origin| resolve(origin, &turns);
        match resolve(&allow[0]).await {
            Err(Unreachable::Reserved(why)) => assert!(why.contains("localhost resolves to") && why.contains("http_allow"), "{why}"),
            other => panic!("localhost by name: {other:?}"),
        }
        assert_eq!(resolve(&allow[1]).await.unwrap(), vec!["169.254.169.254:80".parse().unwrap()]);
        let loopback = Origin::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(resolve(&loopback).await.unwrap(), vec!["127.0.0.1:9".parse().unwrap()], "listed as itself");
        let unknown = Origin::parse("http://wasftp-test.invalid").unwrap();
        assert!(matches!(resolve(&unknown).await, Err(Unreachable::Lookup(_))), "a name that does not resolve");
    }

    #[tokio::test]
    async fn a_plugin_waits_for_one_of_its_own_lookup_turns_within_the_limit() {
        let lookups = Arc::new(tokio::sync::Semaphore::new(1));
        let (limit, roomy) = (std::time::Duration::from_millis(200), std::time::Duration::from_secs(5));
        let found = lookup("localhost", 80, &lookups, roomy).await.unwrap();
        assert!(found.iter().all(|a| a.port() == 80) && !found.is_empty(), "{found:?}");
        assert_eq!(lookups.available_permits(), 1, "the turn comes back with the thread");
        // Every turn taken (lookups stuck in the resolver): the next waits
        // no longer than the limit, and holds no thread meanwhile.
        let _stuck = lookups.clone().acquire_owned().await.unwrap();
        let started = std::time::Instant::now();
        let error = lookup("localhost", 80, &lookups, limit).await.unwrap_err();
        assert!(error.contains("no answer within"), "{error}");
        assert!(started.elapsed() < limit * 3, "{:?}", started.elapsed());
        // Another plugin's turns are its own.
        let other = Arc::new(tokio::sync::Semaphore::new(1));
        assert!(lookup("localhost", 80, &other, roomy).await.is_ok());
    }
}
