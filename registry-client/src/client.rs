//! The client: options, HTTP plumbing, authentication state and retries.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use rand::Rng as _;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use tracing::{debug, info};

use crate::auth::{
    self, Challenge, Credential, SourcedCredential, Token, TokenResponse, parse_challenge,
};
use crate::deadline::Deadline;
use crate::error::{Envelope, Error, Result, Seconds};
use crate::reference::DOCKER_HUB;

/// Environment variable with extra comma-separated insecure (plain HTTP) registries.
pub const INSECURE_REGISTRIES_ENV: &str = "KILN_INSECURE_REGISTRIES";
/// Environment variable overriding [`ClientOptions`]' timeouts: comma-separated
/// `connect=10s`, `idle=30s`, `request=60s` (units `ms`, `s`, `m`; a bare number is seconds).
pub const TIMEOUTS_ENV: &str = "KILN_REGISTRY_TIMEOUTS";
/// Largest error body read for its envelope.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest token endpoint answer accepted.
const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;

/// How a [`Client`] behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host` or `host:port`) spoken to over plain HTTP, in addition to loopback ones
    /// and those in `KILN_INSECURE_REGISTRIES`.
    pub insecure_registries: Vec<String>,
    /// Where docker's `config.json` lives; `None` = `$DOCKER_CONFIG` or `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Credentials that take precedence over docker's config, keyed by registry host.
    pub credentials: HashMap<String, Credential>,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Attempts per request or blob transfer, including the first (at least 1).
    pub max_attempts: u32,
    /// First retry delay; doubles on each attempt, with full jitter.
    pub backoff_base: Duration,
    /// Longest delay between attempts (a longer `Retry-After` gives up instead).
    pub backoff_max: Duration,
    /// Blobs transferred at once by `pull` and `push_image`.
    pub concurrency: usize,
    /// Blobs up to this size are uploaded with one PUT; larger ones in PATCH chunks.
    pub monolithic_limit: u64,
    /// Size of each PATCH chunk.
    pub chunk_size: u64,
    /// Longest wait for a TCP connection (and TLS handshake) to a registry.
    pub connect_timeout: Duration,
    /// Longest wait with nothing received: for a response's headers, or for the next byte of
    /// any body (a stalled blob fails after this, however large it is).
    pub idle_timeout: Duration,
    /// Longest a small request (manifest, token, `HEAD`, upload session, manifest push) may
    /// take in all, body included. Blob transfers are bounded by `idle_timeout` only.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            docker_config_dir: None,
            credentials: HashMap::new(),
            user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
            max_attempts: 5,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            concurrency: 4,
            monolithic_limit: 64 * 1024 * 1024,
            chunk_size: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Authentication state for one registry.
#[derive(Default)]
struct RegistryAuth {
    /// The last challenge seen, so later scopes can get a token without a 401 round trip.
    challenge: Option<Challenge>,
    /// Bearer tokens by scope key.
    tokens: HashMap<String, Token>,
    /// The credential, once looked up (`Some(None)` = anonymous).
    credential: Option<Option<SourcedCredential>>,
}

/// An OCI distribution client. Cheap to share by reference across tasks.
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) opts: ClientOptions,
    insecure: Vec<String>,
    auth: Mutex<HashMap<String, RegistryAuth>>,
}

/// What a request's body and headers are, rebuilt for each attempt.
pub(crate) type Build<'a> = &'a (dyn Fn(RequestBuilder) -> Result<RequestBuilder> + Send + Sync);

impl Client {
    /// Creates a client; reads `KILN_INSECURE_REGISTRIES` and `KILN_REGISTRY_TIMEOUTS`.
    pub fn new(mut opts: ClientOptions) -> Result<Client> {
        if let Ok(spec) = std::env::var(TIMEOUTS_ENV) {
            apply_timeouts(&mut opts, &spec)?;
        }
        let http = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true)
            .http2_adaptive_window(true)
            .build()
            .map_err(|transport| Error::Setup { transport })?;
        let mut insecure = opts.insecure_registries.clone();
        if let Ok(list) = std::env::var(INSECURE_REGISTRIES_ENV) {
            insecure.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(Client {
            http,
            opts,
            insecure,
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Whether `registry` is spoken to over plain HTTP (loopback or listed insecure).
    pub fn is_plain_http(&self, registry: &str) -> bool {
        let host = host_of(registry);
        is_loopback(host) || self.insecure.iter().any(|i| i == registry || i == host)
    }

    /// `scheme://host[:port]` of a registry's API.
    pub(crate) fn base_url(&self, registry: &str) -> String {
        let host = if registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if self.is_plain_http(registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}")
    }

    /// Parses a URL built from a registry name and repository (always valid for a valid reference).
    pub(crate) fn url(&self, registry: &str, path: &str) -> Result<Url> {
        let text = format!("{}{path}", self.base_url(registry));
        Url::parse(&text).map_err(|_| Error::InvalidReference {
            input: text,
            reason: "not a valid URL",
        })
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or attempts run out.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let max = self.opts.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < max && e.is_retryable() => {
                    let delay = match e.retry_after() {
                        Some(d) if d > self.opts.backoff_max => return Err(e),
                        Some(d) => d,
                        None => self.backoff(attempt),
                    };
                    // Quiet by design: BuildKit retries without a word, and the final error
                    // says what failed; `--debug` shows each retry.
                    info!(
                        "retrying in {} (attempt {}/{max}): {e}",
                        Seconds(delay),
                        attempt + 1
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Exponential backoff with full jitter: uniform in `[d/2, d]`, `d = base·2^(n-1)` capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .backoff_base
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.opts.backoff_max);
        let half = exp / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Sends a request with retries (see [`Client::send`]).
    pub(crate) async fn request(
        &self,
        registry: &str,
        scope: &[String],
        method: Method,
        url: &Url,
        build: Build<'_>,
    ) -> Result<Response> {
        self.retrying(|_| async {
            let deadline = Deadline::small(&self.opts);
            self.send(
                registry,
                scope,
                method.clone(),
                url.clone(),
                build,
                &deadline,
            )
            .await
        })
        .await
    }

    /// One attempt: sends with cached auth; on 401 authenticates per the challenge and resends
    /// once. 429 and 5xx become retryable [`Error::Status`]; 401/403 become
    /// [`Error::Unauthorized`]; other statuses are returned for the caller to judge. The
    /// response headers must arrive within `deadline`; the caller reads the body with it.
    pub(crate) async fn send(
        &self,
        registry: &str,
        scope: &[String],
        method: Method,
        url: Url,
        build: Build<'_>,
        deadline: &Deadline,
    ) -> Result<Response> {
        let mut authorization = self.cached_authorization(registry, scope).await?;
        let mut reauthenticated = false;
        loop {
            let mut req = build(self.http.request(method.clone(), url.clone()))?;
            if let Some(value) = &authorization {
                req = req.header(AUTHORIZATION, value.clone());
            }
            debug!(%method, %url, "request");
            let resp = deadline
                .response(&method, &url, req.send())
                .await?
                .map_err(|transport| Error::Http {
                    method: method.to_string(),
                    url: url.to_string(),
                    transport,
                })?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                let header = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let challenge = parse_challenge(&header).ok_or_else(|| Error::Challenge {
                    registry: registry.to_owned(),
                    header: header.clone(),
                })?;
                self.with_auth(registry, |a| a.challenge = Some(challenge.clone()));
                authorization = self.authenticate(registry, scope, &challenge).await?;
                reauthenticated = true;
                if authorization.is_some() {
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let credential = self.credential(registry).await?;
                let envelope = Envelope::parse(&read_limited(resp, deadline.idle()).await);
                self.with_auth(registry, |a| a.tokens.clear());
                return Err(Error::Unauthorized {
                    registry: registry.to_owned(),
                    status: status.as_u16(),
                    credential: auth::describe(credential.as_ref()),
                    envelope,
                });
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                return Err(self.status_error(&method, resp).await);
            }
            return Ok(resp);
        }
    }

    fn with_auth<T>(&self, registry: &str, f: impl FnOnce(&mut RegistryAuth) -> T) -> T {
        let mut map = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(registry.to_owned()).or_default())
    }

    /// The credential for `registry`: explicit ones first, then docker's config.
    pub(crate) async fn credential(&self, registry: &str) -> Result<Option<SourcedCredential>> {
        if let Some(c) = self.with_auth(registry, |a| a.credential.clone()) {
            return Ok(c);
        }
        let found = if let Some(c) = self.opts.credentials.get(registry) {
            Some(SourcedCredential {
                credential: c.clone(),
                source: "the given credentials".to_owned(),
            })
        } else {
            let dir = auth::docker_config_dir(self.opts.docker_config_dir.as_deref());
            let reg = registry.to_owned();
            tokio::task::spawn_blocking(move || auth::lookup_credential(dir.as_deref(), &reg))
                .await
                .map_err(|e| Error::Credential {
                    registry: registry.to_owned(),
                    reason: format!("lookup task failed: {e}"),
                })??
        };
        self.with_auth(registry, |a| a.credential = Some(found.clone()));
        Ok(found)
    }

    /// An `Authorization` value usable without a round trip: a fresh token for the scope, or
    /// basic credentials when the registry asked for basic auth before, or a new token when the
    /// registry's bearer challenge is known.
    async fn cached_authorization(
        &self,
        registry: &str,
        scope: &[String],
    ) -> Result<Option<HeaderValue>> {
        let key = scope.join(" ");
        let (challenge, token) = self.with_auth(registry, |a| {
            let token = a
                .tokens
                .get(&key)
                .filter(|t| t.fresh())
                .map(|t| t.value.clone());
            (a.challenge.clone(), token)
        });
        if let Some(token) = token {
            return Ok(bearer(&token));
        }
        match challenge {
            Some(c) => self.authenticate(registry, scope, &c).await,
            None => Ok(None),
        }
    }

    /// Answers a challenge: basic credentials, or a bearer token for `scope` (cached).
    async fn authenticate(
        &self,
        registry: &str,
        scope: &[String],
        challenge: &Challenge,
    ) -> Result<Option<HeaderValue>> {
        let credential = self.credential(registry).await?;
        match challenge {
            Challenge::Basic => Ok(match credential.map(|c| c.credential) {
                Some(Credential::Basic { username, password }) => {
                    let raw = format!("{username}:{password}");
                    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                    HeaderValue::from_str(&format!("Basic {encoded}")).ok()
                }
                _ => None,
            }),
            Challenge::Bearer { realm, service } => {
                let token = self
                    .fetch_token(
                        registry,
                        realm,
                        service.as_deref(),
                        scope,
                        credential.as_ref(),
                    )
                    .await?;
                let header = bearer(&token.value);
                let key = scope.join(" ");
                self.with_auth(registry, |a| a.tokens.insert(key, token));
                Ok(header)
            }
        }
    }

    /// Gets a bearer token from the challenge's realm (docker's token protocol, or the OAuth2
    /// refresh-token grant for identity tokens).
    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &[String],
        credential: Option<&SourcedCredential>,
    ) -> Result<Token> {
        let mut url = Url::parse(realm).map_err(|_| Error::Challenge {
            registry: registry.to_owned(),
            header: realm.to_owned(),
        })?;
        let req = match credential.map(|c| &c.credential) {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form =
                    Url::parse("http://form.invalid/").map_err(|_| Error::Challenge {
                        registry: registry.to_owned(),
                        header: realm.to_owned(),
                    })?;
                {
                    let mut q = form.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token");
                    q.append_pair("client_id", "kiln");
                    q.append_pair("refresh_token", refresh);
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scope {
                        q.append_pair("scope", s);
                    }
                }
                let body = form.query().unwrap_or_default().to_owned();
                self.http
                    .post(url.clone())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
            }
            other => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scope {
                        q.append_pair("scope", s);
                    }
                    if let Some(Credential::Basic { username, .. }) = other {
                        q.append_pair("account", username);
                    }
                }
                let req = self.http.get(url.clone());
                match other {
                    Some(Credential::Basic { username, password }) => {
                        req.basic_auth(username, Some(password))
                    }
                    _ => req,
                }
            }
        };
        debug!(realm, ?scope, "fetching token");
        let method = if matches!(
            credential.map(|c| &c.credential),
            Some(Credential::IdentityToken(_))
        ) {
            Method::POST
        } else {
            Method::GET
        };
        let deadline = Deadline::small(&self.opts);
        let mut resp = deadline
            .response(&method, &url, req.send())
            .await?
            .map_err(|transport| Error::Http {
                method: method.to_string(),
                url: realm.to_owned(),
                transport,
            })?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let envelope = Envelope::parse(&read_limited(resp, deadline.idle()).await);
            return Err(Error::Unauthorized {
                registry: registry.to_owned(),
                status: status.as_u16(),
                credential: auth::describe(credential),
                envelope,
            });
        }
        if !status.is_success() {
            return Err(self.status_error(&method, resp).await);
        }
        let what = format!("token from {realm}");
        let mut body = Vec::new();
        while let Some(chunk) = deadline
            .chunk(&mut resp, &method, &what, body.len() as u64)
            .await?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_TOKEN_RESPONSE {
                return Err(Error::TooLarge {
                    what,
                    limit: MAX_TOKEN_RESPONSE as u64,
                });
            }
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|error| Error::TokenResponse {
                realm: realm.to_owned(),
                error,
            })?;
        parsed.into_token().ok_or_else(|| Error::TokenResponse {
            realm: realm.to_owned(),
            error: serde::de::Error::custom("no token in response"),
        })
    }

    /// Pings `/v2/` with the registry's credentials and fails unless they are accepted.
    pub async fn check_auth(&self, registry: &str) -> Result<()> {
        let url = self.url(registry, "/v2/")?;
        let resp = self
            .request(registry, &[], Method::GET, &url, &|r| Ok(r))
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&Method::GET, resp).await);
        }
        // A registry that never challenges accepts anyone, as docker login also concludes.
        Ok(())
    }
}

fn bearer(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

/// `repository:NAME:ACTIONS`.
pub(crate) fn repo_scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

/// Reads at most [`MAX_ERROR_BODY`] bytes of a body; errors, and `idle` without a byte, give
/// what was read.
pub(crate) async fn read_limited(mut resp: Response, idle: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(idle, resp.chunk()).await {
        let room = MAX_ERROR_BODY.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    out
}

impl Client {
    /// Turns an unexpected response into [`Error::Status`] with the registry's envelope.
    pub(crate) async fn status_error(&self, method: &Method, resp: Response) -> Error {
        status_error(method, resp, self.opts.idle_timeout).await
    }
}

async fn status_error(method: &Method, resp: Response, idle: Duration) -> Error {
    let status = resp.status().as_u16();
    let url = resp.url().to_string();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let envelope = Envelope::parse(&read_limited(resp, idle).await);
    Error::Status {
        method: method.to_string(),
        url,
        status,
        envelope,
        retry_after,
    }
}

/// Applies a [`TIMEOUTS_ENV`] value (`connect=5s,idle=1m,request=90s`) to `opts`.
fn apply_timeouts(opts: &mut ClientOptions, spec: &str) -> Result<()> {
    let invalid = |reason: &'static str| Error::InvalidSetting {
        name: TIMEOUTS_ENV,
        value: spec.to_owned(),
        reason,
    };
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| invalid("expected connect=, idle= or request= entries"))?;
        let d = parse_duration(value.trim())
            .ok_or_else(|| invalid("durations are like 500ms, 30s or 2m and not zero"))?;
        match key.trim() {
            "connect" => opts.connect_timeout = d,
            "idle" => opts.idle_timeout = d,
            "request" => opts.request_timeout = d,
            _ => return Err(invalid("expected connect=, idle= or request= entries")),
        }
    }
    Ok(())
}

/// `500ms`, `30s`, `2m`, or bare seconds; never zero.
fn parse_duration(v: &str) -> Option<Duration> {
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// `Retry-After`: delta seconds or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The host part of `host[:port]` / `[v6]:port`.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// `localhost`, 127.0.0.0/8 and ::1, as docker treats them.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure_registries_use_http() {
        let c = Client::new(ClientOptions {
            insecure_registries: vec!["reg.lan:5000".into()],
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(c.base_url("127.3.2.1"), "http://127.3.2.1");
        assert_eq!(c.base_url("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(c.base_url("localhost:5000"), "http://localhost:5000");
        assert_eq!(c.base_url("reg.lan:5000"), "http://reg.lan:5000");
        assert_eq!(c.base_url("reg.lan:5001"), "https://reg.lan:5001");
        assert_eq!(c.base_url("ghcr.io"), "https://ghcr.io");
        assert_eq!(c.base_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(c.base_url("128.0.0.1"), "https://128.0.0.1");
    }

    #[test]
    fn timeouts_from_the_environment_syntax() {
        let mut o = ClientOptions::default();
        apply_timeouts(&mut o, "connect=500ms, idle=2m,request=90")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.connect_timeout, Duration::from_millis(500));
        assert_eq!(o.idle_timeout, Duration::from_secs(120));
        assert_eq!(o.request_timeout, Duration::from_secs(90));
        for bad in ["idle", "idle=0s", "idle=3h", "total=1s", "idle=-1"] {
            let err = apply_timeouts(&mut o, bad).err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.starts_with("KILN_REGISTRY_TIMEOUTS=")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let c = Client::new(ClientOptions {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..50 {
            let d1 = c.backoff(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = c.backoff(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d20 = c.backoff(20);
            assert!(d20 >= Duration::from_millis(500) && d20 <= Duration::from_millis(1000));
        }
    }
}
