//! A small in-process HTTP/1.1 server that misbehaves on purpose.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_oci::{Descriptor, Platform};
use kiln_registry_client::{BlobStore, Client, ClientOptions, Credential, Error, Reference};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{DirStore, OrDie, OrDieOpt, build_image, tar_layer};

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// What to answer.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close the connection.
    cut_at: Option<usize>,
    /// Send only this many body bytes, then keep the connection open without a word.
    stall_at: Option<usize>,
    /// Read the request and never answer it.
    silent: bool,
    /// Close the connection without an answer.
    hang_up: bool,
    /// No `Content-Length`: the body ends when the connection closes.
    close_delimited: bool,
    /// Send the body in pieces of this many bytes with this pause between them.
    trickle: Option<(usize, Duration)>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_at: None,
            stall_at: None,
            silent: false,
            hang_up: false,
            close_delimited: false,
            trickle: None,
        }
    }
    fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
    fn body(mut self, b: &[u8]) -> Reply {
        self.body = b.to_vec();
        self
    }
}

type Handler = dyn Fn(&Seen, &[Seen]) -> Reply + Send + Sync;

struct FaultServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FaultServer {
    /// Serves each connection one request (`Connection: close`); `handler` sees the request and
    /// all earlier ones.
    async fn start(
        handler: impl Fn(&Seen, &[Seen]) -> Reply + Send + Sync + 'static,
    ) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.or_die("bind");
        let port = listener.local_addr().or_die("addr").port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    let reply = {
                        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                        let reply = handler(&req, &log);
                        log.push(req);
                        reply
                    };
                    if reply.hang_up {
                        return;
                    }
                    if reply.silent {
                        // Hold the connection open; the test's runtime ends it.
                        std::future::pending::<()>().await;
                    }
                    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
                    if !reply.close_delimited {
                        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
                    }
                    for (k, v) in &reply.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = sock.write_all(head.as_bytes()).await;
                    let body = match reply.cut_at.or(reply.stall_at) {
                        Some(n) => &reply.body[..n],
                        None => &reply.body[..],
                    };
                    match reply.trickle {
                        Some((piece, pause)) => {
                            for p in body.chunks(piece.max(1)) {
                                let _ = sock.write_all(p).await;
                                let _ = sock.flush().await;
                                tokio::time::sleep(pause).await;
                            }
                        }
                        None => {
                            let _ = sock.write_all(body).await;
                        }
                    }
                    let _ = sock.flush().await;
                    if reply.stall_at.is_some() {
                        std::future::pending::<()>().await;
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        FaultServer { port, seen }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lines(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let mut len = 0usize;
    let mut authorization = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(v.trim().to_owned()),
                "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
    }
    let mut body = buf[head_end..].to_vec();
    if chunked {
        let body = read_chunked(sock, body).await?;
        return Some(Seen {
            method,
            path,
            authorization,
            body,
        });
    }
    while body.len() < len {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Some(Seen {
        method,
        path,
        authorization,
        body,
    })
}

/// Most of a chunked request body the server reads; past it, it stops reading (and the
/// handler sees the bytes so far).
const CHUNKED_CAP: usize = 1 << 20;

/// Decodes a chunked request body whose first bytes are `raw`, up to [`CHUNKED_CAP`].
async fn read_chunked(sock: &mut tokio::net::TcpStream, mut raw: Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        // The next chunk's size line.
        let line_end = loop {
            if let Some(i) = raw.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            let n = sock.read(&mut tmp).await.ok()?;
            if n == 0 {
                return Some(body);
            }
            raw.extend_from_slice(&tmp[..n]);
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw.drain(..line_end + 2);
        while raw.len() < size + 2 {
            if body.len() + raw.len() >= CHUNKED_CAP {
                body.extend_from_slice(&raw);
                return Some(body);
            }
            let n = sock.read(&mut tmp).await.ok()?;
            if n == 0 {
                body.extend_from_slice(&raw);
                return Some(body);
            }
            raw.extend_from_slice(&tmp[..n]);
        }
        body.extend_from_slice(&raw[..size]);
        raw.drain(..size + 2);
        if size == 0 {
            return Some(body);
        }
    }
}

fn fast_client(max_attempts: u32) -> Client {
    Client::new(ClientOptions {
        max_attempts,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_secs(5),
        ..Default::default()
    })
    .or_die("client")
}

fn blob(bytes: &[u8]) -> Descriptor {
    Descriptor::new(
        "application/octet-stream",
        bytes.len() as u64,
        kiln_oci::sha256(bytes),
    )
}

fn count(seen: &[Seen], method: &str, path: &str) -> usize {
    seen.iter()
        .filter(|s| s.method == method && s.path.starts_with(path))
        .count()
}

const MANIFEST_PATH: &str = "/v2/app/manifests/v1";

fn image() -> (DirStore, crate::support::TestImage) {
    let store = DirStore::new();
    let img = build_image(&store, "amd64", &[tar_layer(&[("f", b"data")])]);
    (store, img)
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (_store, img) = image();
    let manifest = img.manifest.clone();
    let server = FaultServer::start(move |req, earlier| {
        if count(earlier, "GET", MANIFEST_PATH) == 0 {
            return Reply::new(429)
                .header("Retry-After", "1")
                .body(br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#);
        }
        assert_eq!(req.path, MANIFEST_PATH);
        Reply::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(&manifest)
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let started = Instant::now();
    let resolved = fast_client(3)
        .resolve(&r, &Platform::host())
        .await
        .or_die("resolve after 429");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(resolved.manifest_digest, img.digest);
    assert_eq!(server.lines(), vec![format!("GET {MANIFEST_PATH}"); 2]);
}

#[tokio::test]
async fn server_error_then_success() {
    let data = b"layer bytes".to_vec();
    let desc = blob(&data);
    let d2 = data.clone();
    let server = FaultServer::start(move |_, earlier| {
        if earlier.is_empty() {
            return Reply::new(500);
        }
        Reply::new(200).body(&d2)
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let store = DirStore::new();
    fast_client(3)
        .fetch_blob(&r, &desc, &store)
        .await
        .or_die("fetch");
    assert_eq!(store.read(&desc.digest), data);
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn attempts_are_bounded_and_the_envelope_shown() {
    let server = FaultServer::start(|_, _| {
        Reply::new(503).body(br#"{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}"#)
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let err = fast_client(3).resolve(&r, &Platform::host()).await.err();
    let text = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        matches!(err, Some(Error::Status { status: 503, .. })),
        "{err:?}"
    );
    assert!(text.contains("UNAVAILABLE: maintenance"), "{text}");
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn dropped_connection_mid_blob_is_retried() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let desc = blob(&data);
    let d2 = data.clone();
    let server = FaultServer::start(move |_, earlier| {
        let mut reply = Reply::new(200).body(&d2);
        if earlier.is_empty() {
            reply.cut_at = Some(100_000);
        }
        reply
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let store = DirStore::new();
    fast_client(3)
        .fetch_blob(&r, &desc, &store)
        .await
        .or_die("fetch");
    assert_eq!(store.read(&desc.digest), data);
    assert_eq!(server.seen().len(), 2);
    assert_eq!(store.staged(), 0, "the broken attempt left nothing behind");
}

#[tokio::test]
async fn wrong_digest_is_an_error_and_nothing_is_stored() {
    let desc = blob(b"the real bytes");
    let server = FaultServer::start(|_, _| Reply::new(200).body(b"the fake bytes")).await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let store = DirStore::new();
    let err = fast_client(3).fetch_blob(&r, &desc, &store).await;
    match err {
        Err(Error::DigestMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(&expected, &desc.digest);
            assert_eq!(actual, kiln_oci::sha256(b"the fake bytes").to_string());
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!store.has_blob(&desc.digest));
    assert_eq!(store.staged(), 0);
    assert_eq!(server.seen().len(), 1, "a mismatch is not retried");

    // A tampered manifest fetched by digest is refused too.
    let wanted = r.with_digest(kiln_oci::sha256(b"{}"));
    let err = fast_client(1).resolve(&wanted, &Platform::host()).await;
    assert!(matches!(err, Err(Error::DigestMismatch { .. })), "{err:?}");
}

#[tokio::test]
async fn oversized_blob_is_cut_off() {
    let desc = blob(b"short");
    let server = FaultServer::start(|_, _| Reply::new(200).body(&[b'x'; 4096])).await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let store = DirStore::new();
    let err = fast_client(1).fetch_blob(&r, &desc, &store).await;
    assert!(
        matches!(err, Err(Error::SizeMismatch { expected: 5, .. })),
        "{err:?}"
    );
    assert!(!store.has_blob(&desc.digest));
}

#[tokio::test]
async fn retried_upload_restarts_with_a_new_session() {
    let (store, img) = image();
    let layer = img.layers[0].clone();
    let expected = store.read(&layer.digest);
    let server = FaultServer::start(move |req, earlier| match req.method.as_str() {
        "HEAD" => Reply::new(404),
        "POST" => {
            let n = count(earlier, "POST", "/v2/app/blobs/uploads/");
            Reply::new(202).header("Location", &format!("/v2/app/blobs/uploads/s{n}"))
        }
        "PUT" if req.path.starts_with("/v2/app/blobs/uploads/s0") => Reply::new(500),
        "PUT" if req.path.starts_with("/v2/app/blobs/uploads/s1") => {
            assert_eq!(
                req.body, expected,
                "the retried upload sends the whole blob"
            );
            Reply::new(201)
        }
        _ => Reply::new(400),
    })
    .await;
    let target: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let outcome = fast_client(3)
        .push_blob(&target, &layer, &store, &[])
        .await
        .or_die("push blob");
    assert_eq!(outcome, kiln_registry_client::BlobPush::Uploaded);
    let lines = server.lines();
    let digest = layer.digest.to_string().replace(':', "%3A");
    assert_eq!(
        lines,
        vec![
            format!("HEAD /v2/app/blobs/{}", layer.digest),
            "POST /v2/app/blobs/uploads/".to_owned(),
            format!("PUT /v2/app/blobs/uploads/s0?digest={digest}"),
            "POST /v2/app/blobs/uploads/".to_owned(),
            format!("PUT /v2/app/blobs/uploads/s1?digest={digest}"),
        ]
    );
}

#[tokio::test]
async fn bearer_tokens_are_fetched_with_credentials_and_cached() {
    let (_store, img) = image();
    let manifest = img.manifest.clone();
    let port = Arc::new(Mutex::new(0u16));
    let p2 = port.clone();
    let server = FaultServer::start(move |req, _| {
        let port = *p2.lock().unwrap_or_else(|e| e.into_inner());
        if req.path.starts_with("/token") {
            // Basic alice:secret
            if req.authorization.as_deref() != Some("Basic YWxpY2U6c2VjcmV0") {
                return Reply::new(401);
            }
            return Reply::new(200).body(br#"{"token":"tok123","expires_in":300}"#);
        }
        if req.authorization.as_deref() != Some("Bearer tok123") {
            return Reply::new(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="fault",scope="repository:app:pull""#),
            );
        }
        Reply::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(&manifest)
    })
    .await;
    *port.lock().unwrap_or_else(|e| e.into_inner()) = server.port;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let mut opts = ClientOptions::default();
    opts.credentials.insert(
        server.host(),
        Credential::Basic {
            username: "alice".into(),
            password: "secret".into(),
        },
    );
    let c = Client::new(opts).or_die("client");
    c.get_manifest(&r, &["application/vnd.oci.image.manifest.v1+json"])
        .await
        .or_die("first");
    c.get_manifest(&r, &["application/vnd.oci.image.manifest.v1+json"])
        .await
        .or_die("second");
    let lines = server.lines();
    assert_eq!(
        lines.len(),
        4,
        "401, token, retry, cached-token request: {lines:?}"
    );
    assert_eq!(
        lines[1],
        "GET /token?service=fault&scope=repository%3Aapp%3Apull&account=alice"
    );

    // Without credentials the token endpoint refuses, and the error says anonymous.
    let anon = fast_client(1);
    let err = anon
        .get_manifest(&r, &["application/vnd.oci.image.manifest.v1+json"])
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("anonymous") && err.contains("401"), "{err}");
}

#[tokio::test]
async fn identity_tokens_use_the_oauth2_refresh_grant() {
    let (_store, img) = image();
    let manifest = img.manifest.clone();
    let port = Arc::new(Mutex::new(0u16));
    let p2 = port.clone();
    let server = FaultServer::start(move |req, _| {
        let port = *p2.lock().unwrap_or_else(|e| e.into_inner());
        if req.path.starts_with("/token") {
            let form = String::from_utf8_lossy(&req.body).to_string();
            if req.method != "POST" || !form.contains("grant_type=refresh_token") {
                return Reply::new(400);
            }
            if !form.contains("refresh_token=refresh-me") {
                return Reply::new(401);
            }
            return Reply::new(200).body(br#"{"access_token":"acc456","expires_in":300}"#);
        }
        if req.authorization.as_deref() != Some("Bearer acc456") {
            return Reply::new(401).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="fault""#),
            );
        }
        Reply::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(&manifest)
    })
    .await;
    *port.lock().unwrap_or_else(|e| e.into_inner()) = server.port;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let config = tempfile::tempdir().or_die("tempdir");
    let json = serde_json::json!({"auths": {server.host(): {"identitytoken": "refresh-me"}}});
    fs_err::write(config.path().join("config.json"), json.to_string()).or_die("write config");
    let c = Client::new(ClientOptions {
        docker_config_dir: Some(config.path().to_owned()),
        max_attempts: 1,
        ..Default::default()
    })
    .or_die("client");
    let got = c
        .get_manifest(&r, &["application/vnd.oci.image.manifest.v1+json"])
        .await
        .or_die("manifest with identity token");
    assert_eq!(got.digest, img.digest);
    let token_req = server
        .seen()
        .into_iter()
        .find(|s| s.path.starts_with("/token"))
        .or_die_opt();
    let form = String::from_utf8_lossy(&token_req.body).to_string();
    assert!(form.contains("scope=repository%3Aapp%3Apull"), "{form}");
    assert!(form.contains("service=fault"), "{form}");
}

// Deadlines, cause chains, header digests and declared sizes.

/// A client with tiny deadlines: `idle` without a byte, `request` for a whole small request.
fn deadline_client(max_attempts: u32, idle_ms: u64, request_ms: u64) -> Client {
    Client::new(ClientOptions {
        max_attempts,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_secs(5),
        idle_timeout: Duration::from_millis(idle_ms),
        request_timeout: Duration::from_millis(request_ms),
        ..Default::default()
    })
    .or_die("client")
}

/// Runs `fut`, failing the test if it has not returned within `secs` (a hang, not a timing).
async fn returns<T>(secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("still waiting after {secs}s: the client hangs"),
    }
}

fn text<T: std::fmt::Debug>(r: &Result<T, Error>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn unanswered_manifest_request_times_out_then_is_retried() {
    let server = FaultServer::start(|_, _| {
        let mut r = Reply::new(200);
        r.silent = true;
        r
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let got = returns(
        20,
        deadline_client(2, 200, 10_000).get_manifest(&r, &["*/*"]),
    )
    .await;
    assert_eq!(
        text(&got),
        format!(
            "GET http://{}/v2/app/manifests/v1: no response within 200ms",
            server.host()
        )
    );
    assert!(matches!(got, Err(Error::NoResponse { .. })), "{got:?}");
    assert_eq!(server.seen().len(), 2, "a timeout is retried");
}

#[tokio::test]
async fn small_requests_have_an_overall_deadline() {
    // Headers and 1,000 bytes arrive at once, then nothing: within the idle timeout (10 s),
    // past the overall deadline (300 ms).
    let server = FaultServer::start(|_, _| {
        let mut r = Reply::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(&[b' '; 2000]);
        r.stall_at = Some(1000);
        r
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let got = returns(
        20,
        deadline_client(1, 10_000, 300).get_manifest(&r, &["*/*"]),
    )
    .await;
    assert_eq!(
        text(&got),
        format!(
            "manifest {}/app:v1 not received within 300ms (1000 bytes so far)",
            server.host()
        )
    );
}

#[tokio::test]
async fn stalled_blob_body_fails_after_the_idle_timeout() {
    let data = vec![7u8; 5000];
    let desc = blob(&data);
    let server = FaultServer::start(move |_, _| {
        let mut r = Reply::new(200).body(&data);
        r.stall_at = Some(1000);
        r
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let store = DirStore::new();
    let got = returns(
        20,
        deadline_client(2, 200, 10_000).fetch_blob(&r, &desc, &store),
    )
    .await;
    assert_eq!(
        text(&got),
        format!(
            "blob {} stalled after 1000 bytes: no data for 200ms",
            desc.digest
        )
    );
    assert_eq!(server.seen().len(), 2, "a stall is retried");
    assert!(!store.has_blob(&desc.digest));
    assert_eq!(
        store.staged(),
        0,
        "the stalled attempts left nothing behind"
    );
}

#[tokio::test]
async fn blobs_are_bounded_by_idleness_not_by_the_overall_deadline() {
    // 12 pieces 100 ms apart: well past the 150 ms overall deadline of small requests, never
    // idle for the 5 s idle timeout.
    let data: Vec<u8> = (0..12_000u32).map(|i| (i % 251) as u8).collect();
    let desc = blob(&data);
    let d2 = data.clone();
    let server = FaultServer::start(move |_, _| {
        let mut r = Reply::new(200).body(&d2);
        r.trickle = Some((1000, Duration::from_millis(100)));
        r
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let store = DirStore::new();
    returns(
        30,
        deadline_client(1, 5000, 150).fetch_blob(&r, &desc, &store),
    )
    .await
    .or_die("a slow but moving blob");
    assert_eq!(store.read(&desc.digest), data);
}

#[tokio::test]
async fn body_closed_early_names_the_unexpected_eof() {
    let data = vec![1u8; 5000];
    let desc = blob(&data);
    let server = FaultServer::start(move |_, _| {
        let mut r = Reply::new(200).body(&data);
        r.cut_at = Some(1000);
        r
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let store = DirStore::new();
    let got = returns(
        20,
        deadline_client(1, 5000, 10_000).fetch_blob(&r, &desc, &store),
    )
    .await;
    let url = format!("http://{}/v2/app/blobs/{}", server.host(), desc.digest);
    assert_eq!(
        text(&got),
        format!("GET {url}: error reading a body from connection: unexpected EOF")
    );
}

#[tokio::test]
async fn refused_connection_is_named_once_in_one_line() {
    let port = crate::support::free_port();
    let r: Reference = format!("127.0.0.1:{port}/app:v1").parse().or_die("ref");
    let got = returns(20, fast_client(2).head_manifest(&r)).await;
    assert_eq!(
        text(&got),
        format!(
            "HEAD http://127.0.0.1:{port}/v2/app/manifests/v1: connect 127.0.0.1:{port}: connection refused"
        )
    );
    // The cause is in the message, so printers walking `source()` cannot repeat it.
    if let Err(e) = &got {
        assert!(std::error::Error::source(e).is_none());
        assert!(e.is_retryable());
    }
}

#[tokio::test]
async fn unknown_host_names_the_resolution() {
    let r: Reference = "registry.invalid/app:v1".parse().or_die("ref");
    let got = returns(60, fast_client(1).get_manifest(&r, &["*/*"])).await;
    let msg = text(&got);
    assert!(
        msg.starts_with(
            "GET https://registry.invalid/v2/app/manifests/v1: resolve registry.invalid: "
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn tag_whose_content_digest_header_disagrees_is_refused() {
    let (_store, img) = image();
    let manifest = img.manifest.clone();
    let liar = kiln_oci::sha256(b"some other manifest");
    let header = liar.to_string();
    let server = FaultServer::start(move |_, _| {
        Reply::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .header("Docker-Content-Digest", &header)
            .body(&manifest)
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let got = returns(20, fast_client(3).resolve(&r, &Platform::host())).await;
    assert_eq!(
        text(&got),
        format!(
            "manifest {}/app:v1: registry says Docker-Content-Digest {liar}, but the manifest's sha256 is {}",
            server.host(),
            img.digest
        )
    );
    assert_eq!(
        server.seen().len(),
        1,
        "a lying registry is not asked again"
    );

    // The same manifest with a truthful header is accepted.
    let manifest = img.manifest.clone();
    let truth = img.digest.to_string();
    let honest = FaultServer::start(move |_, _| {
        Reply::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .header("Docker-Content-Digest", &truth)
            .body(&manifest)
    })
    .await;
    let r: Reference = format!("{}/app:v1", honest.host()).parse().or_die("ref");
    let resolved = fast_client(1)
        .resolve(&r, &Platform::host())
        .await
        .or_die("honest registry");
    assert_eq!(resolved.manifest_digest, img.digest);
}

/// A manifest with one config and one layer of the given declared sizes.
fn manifest_declaring(config_size: &str, layer_size: &str) -> Vec<u8> {
    let d = kiln_oci::sha256(b"x");
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{layer_size}}}]}}"#
    )
    .into_bytes()
}

async fn resolve_served(
    manifest: Vec<u8>,
) -> (Result<kiln_registry_client::Resolved, Error>, FaultServer) {
    let server = FaultServer::start(move |_, _| {
        Reply::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(&manifest)
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let got = returns(20, fast_client(1).resolve(&r, &Platform::host())).await;
    (got, server)
}

#[tokio::test]
async fn absurd_declared_sizes_are_refused_before_fetching() {
    let d = kiln_oci::sha256(b"x");
    let (got, _) = resolve_served(manifest_declaring("10", "4611686018427387904")).await;
    assert_eq!(
        text(&got),
        format!(
            "blob {d} declares 4611686018427387904 bytes, more than the 1099511627776 accepted"
        )
    );
    let (got, _) = resolve_served(manifest_declaring("999999999", "10")).await;
    assert_eq!(
        text(&got),
        format!("config {d} declares 999999999 bytes, more than the 16777216 accepted")
    );
    let (got, server) = resolve_served(manifest_declaring("10", "-1")).await;
    let msg = text(&got);
    assert!(
        msg.starts_with(&format!(
            "invalid manifest for {}/app:v1: invalid value: integer `-1`",
            server.host()
        )),
        "{msg}"
    );

    // fetch_blob with such a descriptor sends nothing.
    let server = FaultServer::start(|_, _| Reply::new(200)).await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let desc = Descriptor::new("application/octet-stream", 1 << 62, d);
    let got = fast_client(1).fetch_blob(&r, &desc, &DirStore::new()).await;
    assert!(
        matches!(got, Err(Error::DeclaredTooLarge { .. })),
        "{got:?}"
    );
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn blob_longer_than_declared_is_cut_at_the_first_piece_beyond() {
    // No Content-Length to check up front: the reading itself must stop.
    let desc = blob(b"short");
    let server = FaultServer::start(|_, _| {
        let mut r = Reply::new(200).body(&vec![b'x'; 8 << 20]);
        r.close_delimited = true;
        r
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let store = DirStore::new();
    let got = returns(20, fast_client(1).fetch_blob(&r, &desc, &store)).await;
    match got {
        Err(Error::SizeMismatch {
            expected: 5,
            actual,
            ..
        }) => assert!(actual < 1 << 20, "read {actual} bytes past a 5-byte blob"),
        other => panic!("expected a size mismatch, got {other:?}"),
    }
    assert_eq!(store.staged(), 0);
}

#[tokio::test]
async fn blob_shorter_than_declared_is_refused() {
    let data = b"the whole blob".to_vec();
    let desc = blob(&data);
    let server = FaultServer::start(move |_, _| {
        let mut r = Reply::new(200).body(&data[..4]);
        r.close_delimited = true;
        r
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let store = DirStore::new();
    let got = returns(20, fast_client(1).fetch_blob(&r, &desc, &store)).await;
    assert_eq!(
        text(&got),
        format!(
            "size mismatch for {}: expected 14 bytes, got 4",
            desc.digest
        )
    );
    assert!(!store.has_blob(&desc.digest));
}

#[tokio::test]
async fn manifests_are_limited_and_checked_against_their_index_entry() {
    // A Content-Length beyond the manifest limit is refused before the body is read.
    let server = FaultServer::start(|_, _| {
        Reply::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(&vec![b' '; (4 << 20) + 1])
    })
    .await;
    let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let got = returns(20, fast_client(1).get_manifest(&r, &["*/*"])).await;
    assert_eq!(
        text(&got),
        format!(
            "manifest {}/app:v1 declares 4194305 bytes, more than the 4194304 accepted",
            server.host()
        )
    );

    // An index entry whose size disagrees with the manifest it names.
    let (_store, img) = image();
    let child = img.manifest.clone();
    let index = |size: u64| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{size},"platform":{{"os":"linux","architecture":"{}"}}}}]}}"#,
            img.digest,
            Platform::host().architecture
        )
        .into_bytes()
    };
    for (declared, want) in [
        (child.len() as u64 + 1, "index says"),
        (1 << 40, "declares 1099511627776 bytes"),
    ] {
        let idx = index(declared);
        let c2 = child.clone();
        let server = FaultServer::start(move |req, _| {
            if req.path.ends_with("/v1") {
                Reply::new(200)
                    .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                    .body(&idx)
            } else {
                Reply::new(200)
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .body(&c2)
            }
        })
        .await;
        let r: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
        let got = returns(20, fast_client(1).resolve(&r, &Platform::host())).await;
        let msg = text(&got);
        assert!(msg.contains(want), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_blob_cut_off_mid_stream_is_made_again_and_nothing_half_made_is_kept() {
    // More than the body's channel and the sockets' buffers hold: the maker cannot be done
    // when the registry hangs up.
    let maker = crate::support::TestMaker::new(crate::support::noise(40 << 20));
    let server = FaultServer::start(move |req, earlier| match req.method.as_str() {
        "POST" => {
            let n = count(earlier, "POST", "/v2/app/blobs/uploads/");
            Reply::new(202).header("Location", &format!("/v2/app/blobs/uploads/s{n}"))
        }
        // The registry goes away in the middle of the stream.
        "PATCH" => Reply {
            hang_up: true,
            ..Reply::new(500)
        },
        _ => Reply::new(400),
    })
    .await;
    let target: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let blobs = [kiln_registry_client::PushBlob::Made(maker.clone())];
    let err = fast_client(3)
        .push_blobs(&target, &blobs, &maker.store, &[], None)
        .await
        .err()
        .or_die_opt();
    assert!(matches!(err, Error::Http { .. }), "{err:?}");
    assert!(err.to_string().contains("PATCH"), "{err}");
    let seen = server.seen();
    assert_eq!(
        count(&seen, "PATCH", "/v2/app/blobs/uploads/"),
        3,
        "{:?}",
        server.lines()
    );
    assert!(
        seen.iter().all(|s| s.method != "PUT"),
        "{:?}",
        server.lines()
    );
    // Each attempt made the blob again, and none of them kept anything.
    assert_eq!(maker.runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(!maker.store.has_blob(&maker.descriptor().digest));
    assert_eq!(maker.store.staged(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_blob_whose_close_failed_is_retried_from_the_store() {
    let maker = crate::support::TestMaker::new(crate::support::noise(600_000));
    let want = maker.data.clone();
    let server = FaultServer::start(move |req, earlier| match req.method.as_str() {
        "POST" => {
            let n = count(earlier, "POST", "/v2/app/blobs/uploads/");
            Reply::new(202).header("Location", &format!("/v2/app/blobs/uploads/s{n}"))
        }
        "PATCH" => {
            assert_eq!(req.body, want, "the stream carries the whole blob");
            Reply::new(202).header("Location", &req.path)
        }
        "PUT" if req.path.starts_with("/v2/app/blobs/uploads/s0") => Reply::new(503),
        "PUT" => {
            assert_eq!(req.body, want, "the retry sends the kept blob");
            Reply::new(201)
        }
        _ => Reply::new(400),
    })
    .await;
    let target: Reference = format!("{}/app:v1", server.host()).parse().or_die("ref");
    let blobs = [kiln_registry_client::PushBlob::Made(maker.clone())];
    let pushed = fast_client(3)
        .push_blobs(&target, &blobs, &maker.store, &[], None)
        .await
        .or_die("push");
    let desc = maker.descriptor();
    assert_eq!(pushed[0].descriptor, desc);
    assert_eq!(maker.runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    let digest = desc.digest.to_string().replace(':', "%3A");
    assert_eq!(
        server.lines(),
        vec![
            "POST /v2/app/blobs/uploads/".to_owned(),
            "PATCH /v2/app/blobs/uploads/s0".to_owned(),
            format!("PUT /v2/app/blobs/uploads/s0?digest={digest}"),
            "POST /v2/app/blobs/uploads/".to_owned(),
            format!("PUT /v2/app/blobs/uploads/s1?digest={digest}"),
        ]
    );
}
