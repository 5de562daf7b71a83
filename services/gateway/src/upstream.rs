//! Calls from the gateway to the domain services (leads, deals, accounts).
//!
//! One lazily connected channel per service is built with the application and shared by every
//! call. It balances calls over every address of the service: the configured URLs (one, or a
//! comma-separated list) are re-resolved every [`REFRESH_INTERVAL`] by the
//! [`Upstreams::balancer`] worker, which also drops addresses that refuse a TCP connection; the
//! connections send HTTP/2 keepalive PINGs, so a lost pod is noticed within seconds. Each call acts for the gateway's caller: it carries the caller's `authorization`
//! metadata (the services check the caller's own scopes), the W3C trace context of a client span
//! that is a child of the caller's RPC span, and a deadline that is the shorter of
//! `gateway.upstream_timeout_ms` and what is left of the caller's own `grpc-timeout` (less a
//! small reserve so the gateway can still answer in time). The deadline is sent as
//! `grpc-timeout` and also enforced locally, so a hung service cannot hold a call longer.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kizuna_proto::accounts::accounts_service_client::AccountsServiceClient;
use kizuna_proto::accounts::{Account, GetAccountRequest};
use kizuna_proto::deals::deals_service_client::DealsServiceClient;
use kizuna_proto::deals::{Deal, GetDealRequest};
use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::{GetLeadRequest, Lead};
use kizuna_settings::GatewaySettings;
use kizuna_store::Worker;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Largest response accepted from a domain service.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Longest deadline ever sent upstream, whatever the settings say (a `grpc-timeout` must fit
/// in eight digits of its unit; one day is far beyond any sensible setting).
pub const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Most of the caller's remaining time kept back for the gateway's own answer.
pub const MAX_RESERVE: Duration = Duration::from_millis(50);

/// The metadata key of the caller's credentials.
const AUTHORIZATION: &str = "authorization";
/// The metadata key of a gRPC deadline.
const GRPC_TIMEOUT: &str = "grpc-timeout";

pub use kizuna_server::deadline::parse_grpc_timeout;

/// The deadline of one upstream call: `configured`, shortened to what is left of the caller's
/// deadline (when it set one) minus a reserve of a tenth of it, at most [`MAX_RESERVE`], so the
/// gateway answers before its caller gives up. Never above [`MAX_UPSTREAM_TIMEOUT`].
pub fn upstream_timeout(configured: Duration, caller_remaining: Option<Duration>) -> Duration {
    let configured = configured.min(MAX_UPSTREAM_TIMEOUT);
    match caller_remaining {
        None => configured,
        Some(remaining) => {
            let reserve = (remaining / 10).min(MAX_RESERVE);
            configured.min(remaining.saturating_sub(reserve))
        }
    }
}

/// What a gateway call passes on to the calls it makes: the caller's credentials and deadline.
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    authorization: Option<AsciiMetadataValue>,
    deadline: Option<Instant>,
}

impl CallContext {
    /// The context of an incoming call, read from its metadata as it arrives.
    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        Self::from_metadata_at(metadata, Instant::now())
    }

    /// The context of a call whose metadata arrived at `now`.
    pub fn from_metadata_at(metadata: &MetadataMap, now: Instant) -> Self {
        let authorization = metadata.get(AUTHORIZATION).cloned();
        let deadline = metadata
            .get(GRPC_TIMEOUT)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .and_then(|timeout| now.checked_add(timeout));
        Self {
            authorization,
            deadline,
        }
    }

    /// The caller's deadline, if it set one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the caller's deadline (zero once passed), if it set one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// An outgoing request carrying the caller's credentials, the current trace context and
    /// `timeout` as its `grpc-timeout`.
    pub fn outgoing<M>(&self, message: M, timeout: Duration) -> Request<M> {
        let mut request = Request::new(message);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert(AUTHORIZATION, authorization.clone());
        }
        kizuna_telemetry::propagation::inject_current(request.metadata_mut());
        request.set_timeout(timeout.min(MAX_UPSTREAM_TIMEOUT));
        request
    }
}

/// Clients of the three domain services, over lazily connected channels balanced over every
/// address of each service (see [`Upstreams::balancer`]).
#[derive(Clone, Debug)]
pub struct Upstreams {
    leads: LeadsServiceClient<Channel>,
    deals: DealsServiceClient<Channel>,
    accounts: AccountsServiceClient<Channel>,
    peers: Peers,
    targets: Vec<Target>,
    timeout: Duration,
}

/// Where a service is reached: `server.address` and `server.port` of the client spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// Host name or address from the configured URL.
    pub address: String,
    /// Port from the URL, or the scheme's default.
    pub port: u16,
}

impl Peer {
    fn of(uri: &tonic::codegen::http::Uri) -> Self {
        let default_port = if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        Self {
            address: uri.host().unwrap_or_default().to_owned(),
            port: uri.port_u16().unwrap_or(default_port),
        }
    }
}

#[derive(Clone, Debug)]
struct Peers {
    leads: Peer,
    deals: Peer,
    accounts: Peer,
}

/// Seconds between two refreshes of the balanced addresses (DNS and reachability).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait for one DNS lookup or one reachability probe of a refresh.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 PING period on every connection to a domain service, idle or not.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A connection whose PING is not answered within this is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// An endpoint of a balanced channel: a configured URL not resolved yet, or one address.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Key {
    Url(usize),
    Addr(SocketAddr),
}

/// One domain service: its configured URLs and the sender that changes the endpoints its
/// balanced channel spreads calls over.
#[derive(Clone, Debug)]
struct Target {
    name: &'static str,
    endpoints: Vec<Endpoint>,
    changes: tokio::sync::mpsc::Sender<Change<Key, Endpoint>>,
}

fn endpoint(url: &str, connect_timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// A channel balanced over the comma-separated URLs of `urls`. Each URL is an endpoint until
/// [`Upstreams::balancer`] replaces it with the addresses its host resolves to.
fn balanced_channel(
    name: &'static str,
    urls: &str,
    connect_timeout: Duration,
) -> Result<(Channel, Peer, Target), tonic::transport::Error> {
    let endpoints = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| endpoint(url, connect_timeout))
        .collect::<Result<Vec<_>, _>>()?;
    let first = match endpoints.first() {
        Some(first) => first.clone(),
        // No URL at all: the empty string fails as a URL with tonic's own error.
        None => endpoint(urls, connect_timeout)?,
    };
    // Room for every change of one refresh: removals and insertions of all addresses.
    let (channel, changes) = Channel::balance_channel(64.max(4 * endpoints.len()));
    for (index, endpoint) in endpoints.iter().enumerate() {
        // The receiver is alive (the channel holds it) and the buffer has room.
        let _ = changes.try_send(Change::Insert(Key::Url(index), endpoint.clone()));
    }
    let peer = Peer::of(first.uri());
    Ok((
        channel,
        peer,
        Target {
            name,
            endpoints,
            changes,
        },
    ))
}

/// The endpoint of `template`'s service at `addr`: the same settings, the configured host as
/// the origin (the `:authority` of its calls).
fn endpoint_at(
    template: &Endpoint,
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Option<Endpoint> {
    let uri = template.uri();
    let scheme = uri.scheme_str().unwrap_or("http");
    let origin = format!("{scheme}://{}", uri.authority()?).parse().ok()?;
    endpoint(&format!("{scheme}://{addr}"), connect_timeout)
        .ok()
        .map(|endpoint| endpoint.origin(origin))
}

/// The host and port of `uri` as `lookup_host` takes them (no brackets around IPv6).
fn host_port(uri: &tonic::codegen::http::Uri) -> Option<(String, u16)> {
    let peer = Peer::of(uri);
    let host = peer.address.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_owned(), peer.port))
}

impl Target {
    /// Brings the channel's endpoints in line with DNS and reachability: every address the
    /// URLs' hosts resolve to that accepts a TCP connection (all resolved addresses when none
    /// does, so calls fail fast instead of waiting for an endpoint). A URL whose lookup fails
    /// keeps the endpoints it had. Returns `false` once the channel is gone.
    async fn refresh(&self, current: &mut HashMap<Key, usize>, connect_timeout: Duration) -> bool {
        let mut resolved: Vec<(SocketAddr, usize)> = Vec::new();
        let mut kept: HashMap<Key, usize> = HashMap::new();
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            let lookup = match host_port(endpoint.uri()) {
                Some(host_port) => {
                    tokio::time::timeout(PROBE_TIMEOUT, tokio::net::lookup_host(host_port)).await
                }
                None => continue,
            };
            let error = match lookup {
                Ok(Ok(addrs)) => {
                    let mut any = false;
                    for addr in addrs {
                        any = true;
                        if !resolved.iter().any(|(seen, _)| *seen == addr) {
                            resolved.push((addr, index));
                        }
                    }
                    if any {
                        continue;
                    }
                    "no address".to_owned()
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => "the lookup timed out".to_owned(),
            };
            tracing::warn!(
                name: "kizuna.gateway.resolve_failed",
                upstream = self.name,
                uri = %endpoint.uri(),
                error,
                "could not resolve an upstream; keeping its endpoints"
            );
            kept.extend(
                current
                    .iter()
                    .filter(|(_, url)| **url == index)
                    .map(|(k, u)| (k.clone(), *u)),
            );
        }
        let probes = futures::future::join_all(resolved.iter().map(|(addr, _)| {
            tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(*addr))
        }))
        .await;
        let reachable: Vec<(SocketAddr, usize)> = resolved
            .iter()
            .zip(probes)
            .filter(|(_, probe)| matches!(probe, Ok(Ok(_))))
            .map(|(resolved, _)| *resolved)
            .collect();
        let chosen = if reachable.is_empty() {
            resolved
        } else {
            reachable
        };
        let mut wanted: HashMap<Key, usize> = chosen
            .into_iter()
            .map(|(addr, index)| (Key::Addr(addr), index))
            .collect();
        wanted.extend(kept);
        if wanted.is_empty() {
            return true;
        }
        let removed: Vec<Key> = current
            .keys()
            .filter(|key| !wanted.contains_key(*key))
            .cloned()
            .collect();
        for key in removed {
            current.remove(&key);
            tracing::info!(name: "kizuna.gateway.endpoint_removed", upstream = self.name, endpoint = ?key, "stopped balancing over an endpoint");
            if self.changes.send(Change::Remove(key)).await.is_err() {
                return false;
            }
        }
        for (key, index) in wanted {
            if current.contains_key(&key) {
                continue;
            }
            let endpoint = match &key {
                Key::Addr(addr) => endpoint_at(&self.endpoints[index], *addr, connect_timeout),
                Key::Url(_) => Some(self.endpoints[index].clone()),
            };
            let Some(endpoint) = endpoint else { continue };
            tracing::info!(name: "kizuna.gateway.endpoint_added", upstream = self.name, endpoint = ?key, "balancing over a new endpoint");
            if self
                .changes
                .send(Change::Insert(key.clone(), endpoint))
                .await
                .is_err()
            {
                return false;
            }
            current.insert(key, index);
        }
        true
    }
}

impl Upstreams {
    /// Clients for the URLs in `settings`; nothing connects until the first call. Fails only
    /// on a malformed URL. Must be called inside a Tokio runtime.
    pub fn connect_lazy(settings: &GatewaySettings) -> Result<Self, tonic::transport::Error> {
        let timeout = Duration::from_millis(settings.upstream_timeout_ms).min(MAX_UPSTREAM_TIMEOUT);
        let (leads, leads_peer, leads_target) =
            balanced_channel("leads", &settings.leads_url, timeout)?;
        let (deals, deals_peer, deals_target) =
            balanced_channel("deals", &settings.deals_url, timeout)?;
        let (accounts, accounts_peer, accounts_target) =
            balanced_channel("accounts", &settings.accounts_url, timeout)?;
        Ok(Self {
            leads: LeadsServiceClient::new(leads).max_decoding_message_size(MAX_RESPONSE_BYTES),
            deals: DealsServiceClient::new(deals).max_decoding_message_size(MAX_RESPONSE_BYTES),
            accounts: AccountsServiceClient::new(accounts)
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            peers: Peers {
                leads: leads_peer,
                deals: deals_peer,
                accounts: accounts_peer,
            },
            targets: vec![leads_target, deals_target, accounts_target],
            timeout,
        })
    }

    /// The worker that keeps the balanced channels current: every [`REFRESH_INTERVAL`] it
    /// re-resolves each configured host (a headless Service name resolves to every ready pod)
    /// and drops addresses that refuse a TCP connection, until `stopping` turns true.
    pub fn balancer(&self, mut stopping: tokio::sync::watch::Receiver<bool>) -> Worker {
        let targets = self.targets.clone();
        let connect_timeout = self.timeout;
        Worker::new("gateway.balancer", async move {
            let mut current: Vec<HashMap<Key, usize>> = targets
                .iter()
                .map(|target| {
                    (0..target.endpoints.len())
                        .map(|index| (Key::Url(index), index))
                        .collect()
                })
                .collect();
            loop {
                for (target, current) in targets.iter().zip(current.iter_mut()) {
                    if !target.refresh(current, connect_timeout).await {
                        return;
                    }
                }
                tokio::select! {
                    _ = stopping.wait_for(|stopping| *stopping) => return,
                    () = tokio::time::sleep(REFRESH_INTERVAL) => {}
                }
            }
        })
    }

    /// The configured deadline of one upstream call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reads a lead from the leads service.
    pub async fn get_lead(&self, call: &CallContext, name: &str) -> Result<Lead, Status> {
        let mut client = self.leads.clone();
        let message = GetLeadRequest {
            name: name.to_owned(),
        };
        self.unary(
            call,
            &self.peers.leads,
            "kizuna.leads.v1.LeadsService/GetLead",
            message,
            move |request| async move { client.get_lead(request).await },
        )
        .await
    }

    /// Reads a deal from the deals service.
    pub async fn get_deal(&self, call: &CallContext, name: &str) -> Result<Deal, Status> {
        let mut client = self.deals.clone();
        let message = GetDealRequest {
            name: name.to_owned(),
        };
        self.unary(
            call,
            &self.peers.deals,
            "kizuna.deals.v1.DealsService/GetDeal",
            message,
            move |request| async move { client.get_deal(request).await },
        )
        .await
    }

    /// Reads an account from the accounts service.
    pub async fn get_account(&self, call: &CallContext, name: &str) -> Result<Account, Status> {
        let mut client = self.accounts.clone();
        let message = GetAccountRequest {
            name: name.to_owned(),
        };
        self.unary(
            call,
            &self.peers.accounts,
            "kizuna.accounts.v1.AccountsService/GetAccount",
            message,
            move |request| async move { client.get_account(request).await },
        )
        .await
    }

    /// One unary call to `peer` in a client span, within the call's deadline.
    async fn unary<M, R, F, Fut>(
        &self,
        call: &CallContext,
        peer: &Peer,
        method: &'static str,
        message: M,
        send: F,
    ) -> Result<R, Status>
    where
        F: FnOnce(Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let span = tracing::info_span!(
            "rpc.client",
            otel.name = method,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system.name = "grpc",
            rpc.method = method,
            rpc.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            server.address = peer.address.as_str(),
            server.port = i64::from(peer.port),
        );
        let timeout = upstream_timeout(self.timeout, call.remaining());
        let request = span.in_scope(|| call.outgoing(message, timeout));
        let result = async {
            if timeout.is_zero() {
                return Err(Status::deadline_exceeded(format!(
                    "no time left to call {method}"
                )));
            }
            match tokio::time::timeout(timeout, send(request)).await {
                Ok(response) => response.map(Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "{method} did not answer within {} ms",
                    timeout.as_millis()
                ))),
            }
        }
        .instrument(span.clone())
        .await;
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        let code_name = kizuna_server::layer::code_name(code);
        span.record("rpc.response.status_code", code_name);
        if code != tonic::Code::Ok {
            span.record("error.type", code_name);
            span.record("otel.status_code", "ERROR");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(
            parse_grpc_timeout("3H"),
            Some(Duration::from_secs(3 * 3600))
        );
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(MS(250)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for value in [
            "",
            "m",
            "100",
            "100x",
            "123456789m",
            "-5m",
            "1.5S",
            "+5S",
            "5 S",
            "５S",
        ] {
            assert_eq!(parse_grpc_timeout(value), None, "{value:?}");
        }
    }

    #[test]
    fn lookups_take_hosts_without_brackets_and_default_ports() {
        let uri = |text: &str| text.parse::<tonic::codegen::http::Uri>().expect("uri");
        assert_eq!(
            host_port(&uri("http://[::1]:50051")),
            Some(("::1".to_owned(), 50051))
        );
        assert_eq!(
            host_port(&uri("http://leads-pods")),
            Some(("leads-pods".to_owned(), 80))
        );
        assert_eq!(
            host_port(&uri("https://leads-pods")),
            Some(("leads-pods".to_owned(), 443))
        );
    }

    #[tokio::test]
    async fn an_address_endpoint_is_the_address() {
        let template = endpoint("http://leads-pods:50051", MS(100)).expect("endpoint");
        let addr: SocketAddr = "10.1.2.3:50051".parse().expect("addr");
        let at = endpoint_at(&template, addr, MS(100)).expect("endpoint");
        assert_eq!(at.uri().to_string(), "http://10.1.2.3:50051/");
        let v6: SocketAddr = "[fd00::1]:50051".parse().expect("addr");
        let at = endpoint_at(&template, v6, MS(100)).expect("endpoint");
        assert_eq!(at.uri().host(), Some("[fd00::1]"));
    }

    #[tokio::test]
    async fn a_list_of_urls_is_one_balanced_channel() {
        let (_, peer, target) =
            balanced_channel("leads", "http://127.0.0.1:1, http://127.0.0.1:2", MS(100))
                .expect("channel");
        assert_eq!(target.endpoints.len(), 2);
        assert_eq!(peer.port, 1);
        assert!(balanced_channel("leads", "not a url", MS(100)).is_err());
    }

    #[test]
    fn without_a_caller_deadline_the_setting_applies() {
        assert_eq!(upstream_timeout(MS(3000), None), MS(3000));
    }

    #[test]
    fn a_shorter_caller_deadline_wins_minus_a_reserve() {
        // 10% of 500 ms is 50 ms, the cap.
        assert_eq!(upstream_timeout(MS(3000), Some(MS(500))), MS(450));
        // 10% of 200 ms.
        assert_eq!(upstream_timeout(MS(3000), Some(MS(200))), MS(180));
        // The reserve never exceeds 50 ms.
        assert_eq!(upstream_timeout(MS(3000), Some(MS(2000))), MS(1950));
    }

    #[test]
    fn a_longer_caller_deadline_keeps_the_setting() {
        assert_eq!(upstream_timeout(MS(3000), Some(MS(10_000))), MS(3000));
        // Just above the setting once the reserve is taken: still the setting.
        assert_eq!(upstream_timeout(MS(3000), Some(MS(3050))), MS(3000));
        assert_eq!(upstream_timeout(MS(3000), Some(MS(3049))), MS(2999));
    }

    #[test]
    fn an_expired_caller_deadline_leaves_nothing() {
        assert_eq!(
            upstream_timeout(MS(3000), Some(Duration::ZERO)),
            Duration::ZERO
        );
    }

    #[test]
    fn absurd_settings_are_capped() {
        let huge = Duration::from_millis(u64::MAX);
        assert_eq!(upstream_timeout(huge, None), MAX_UPSTREAM_TIMEOUT);
        // And the outgoing request can carry it without panicking.
        let request = CallContext::default().outgoing((), huge);
        assert!(request.metadata().get(GRPC_TIMEOUT).is_some());
    }

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (key, value) in pairs {
            metadata.insert(*key, value.parse().expect("ascii"));
        }
        metadata
    }

    #[test]
    fn the_caller_deadline_counts_from_arrival() {
        let arrival = Instant::now();
        let call = CallContext::from_metadata_at(&metadata(&[(GRPC_TIMEOUT, "800m")]), arrival);
        assert_eq!(call.deadline(), Some(arrival + MS(800)));
        let remaining = call.remaining().expect("deadline");
        assert!(remaining <= MS(800));
        let garbage = CallContext::from_metadata_at(&metadata(&[(GRPC_TIMEOUT, "soon")]), arrival);
        assert_eq!(garbage.deadline(), None);
        assert_eq!(garbage.remaining(), None);
    }

    #[test]
    fn outgoing_requests_carry_the_callers_identity_and_deadline() {
        let call = CallContext::from_metadata(&metadata(&[
            (AUTHORIZATION, "Bearer token-of-the-caller"),
            (GRPC_TIMEOUT, "1S"),
            ("x-unrelated", "not forwarded"),
        ]));
        let request = call.outgoing(GetLeadRequest::default(), MS(250));
        let md = request.metadata();
        assert_eq!(
            md.get(AUTHORIZATION).and_then(|v| v.to_str().ok()),
            Some("Bearer token-of-the-caller")
        );
        let sent = md
            .get(GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        assert_eq!(sent, Some(MS(250)));
        assert!(md.get("x-unrelated").is_none());
        // Without credentials nothing is invented.
        let anonymous = CallContext::default().outgoing((), MS(1));
        assert!(anonymous.metadata().get(AUTHORIZATION).is_none());
    }
}
