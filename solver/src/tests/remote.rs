//! The shared build cache against a real `docker-registry` on 127.0.0.1 and real stores.

use crate::refs::{Chain, ChainLayer};
use crate::remote::{
    self, CacheMode, CacheSpec, ExportRecord, INLINE_KEY, RemoteCache, parse_cache_from,
    parse_cache_to,
};
use kiln_cache::{LayerInfo, LayerOptions, Store};
use kiln_oci::Descriptor;
use kiln_oci::media_type::OCI_MANIFEST;
use kiln_oci::{Digest as Key, sha256};
use kiln_registry_client::{Client, ClientOptions, Reference};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry` on 127.0.0.1 with temp storage and an access log; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        Registry::launch(false)
    }

    /// A registry that demands basic auth (the tests have no credentials for it).
    fn start_with_auth() -> Registry {
        Registry::launch(true)
    }

    fn launch(auth: bool) -> Registry {
        let bin = ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("docker-registry is required: install the Debian package `docker-registry`");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if auth {
            // A well-formed bcrypt entry; nobody logs in, so its password does not matter.
            let htpasswd = dir.path().join("htpasswd");
            fs_err::write(
                &htpasswd,
                "ci:$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy\n",
            )
            .expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs_err::write(&config_path, config).expect("config");
        let log = fs_err::File::create(dir.path().join("registry.log")).expect("log");
        let (log, _) = log.into_parts();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn docker-registry");
        let mut reg = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{}", reg.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "registry not up:\n{}", reg.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn reference(&self, repo_tag: &str) -> Reference {
        format!("127.0.0.1:{}/{repo_tag}", self.port)
            .parse()
            .expect("reference")
    }

    fn log(&self) -> String {
        fs_err::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Access-log requests (`METHOD /path?query`).
    fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find('"')? + 1..];
                let req = &rest[..rest.find(" HTTP/")?];
                let method = req.split(' ').next()?;
                ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
                    .contains(&method)
                    .then(|| req.to_owned())
            })
            .collect()
    }

    fn count(&self, method: &str, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(&format!("{method} ")) && r.contains(needle))
            .count()
    }

    /// The registry's own file holding a blob.
    fn blob_data(&self, digest: &kiln_oci::Digest) -> PathBuf {
        let hex = digest.hex();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TestStore {
    store: Store,
    _dir: tempfile::TempDir,
}

fn new_store() -> TestStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("root")).expect("open store");
    TestStore { store, _dir: dir }
}

fn client() -> Client {
    let config = tempfile::tempdir().expect("tempdir");
    Client::new(ClientOptions {
        docker_config_dir: Some(config.path().to_owned()),
        max_attempts: 2,
        backoff_base: Duration::from_millis(10),
        ..ClientOptions::default()
    })
    .expect("client")
}

/// A real layer in `store` made from files in a temp dir.
fn layer(store: &Store, files: &[(&str, &str)]) -> LayerInfo {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        let p = dir.path().join(name);
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent).expect("mkdir");
        }
        fs_err::write(p, content).expect("write");
    }
    store
        .create_layer(dir.path(), &LayerOptions::default())
        .expect("create layer")
}

fn chain(layers: &[&LayerInfo]) -> Chain {
    Chain {
        layers: layers
            .iter()
            .enumerate()
            .map(|(i, l)| ChainLayer {
                layer: (*l).clone(),
                step: sha256(format!("step {i}").as_bytes()),
            })
            .collect(),
    }
}

fn key(name: &str) -> Key {
    sha256(name.as_bytes())
}

/// Three steps over a base layer: a RUN, a COPY, and a config-only step on top.
struct Fixture {
    layers: Vec<LayerInfo>,
    records: Vec<ExportRecord>,
}

fn fixture(store: &Store, tag: &str) -> Fixture {
    let base = layer(store, &[("bin/sh", "busybox"), ("etc/os-release", tag)]);
    let run = layer(store, &[("usr/lib/deps.txt", &format!("deps {tag}"))]);
    let copy = layer(store, &[("app/main.py", &format!("print('{tag}')"))]);
    let records = vec![
        ExportRecord {
            key: key(&format!("{tag} run")),
            chain: chain(&[&base, &run]),
            inputs: vec![key(&format!("{tag} base"))],
            description: "RUN install".to_owned(),
        },
        ExportRecord {
            key: key(&format!("{tag} copy")),
            chain: chain(&[&base, &run, &copy]),
            inputs: vec![key(&format!("{tag} run")), key(&format!("{tag} context"))],
            description: "COPY . .".to_owned(),
        },
        ExportRecord {
            key: key(&format!("{tag} cmd")),
            chain: chain(&[&base, &run, &copy]),
            inputs: vec![key(&format!("{tag} copy"))],
            description: "CMD [\"app\"]".to_owned(),
        },
    ];
    Fixture {
        layers: vec![base, run, copy],
        records,
    }
}

fn registry_spec(reference: Reference) -> CacheSpec {
    CacheSpec::Registry {
        reference,
        mode: CacheMode::Max,
        compression: None,
        cache_mounts: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_round_trip_is_lazy_and_verified() {
    let reg = Registry::start();
    let client = client();
    let (a, b) = (new_store(), new_store());
    let fx = fixture(&a.store, "one");
    let cache_ref = reg.reference("app/cache:main");
    let spec = parse_cache_to(&format!("type=registry,ref={cache_ref},mode=max")).expect("spec");
    assert_eq!(spec, registry_spec(cache_ref.clone()));

    let report = remote::export(&client, &a.store, &spec, &fx.records)
        .await
        .expect("export");
    assert_eq!((report.records, report.layers), (3, 3));
    assert_eq!(report.uploaded, 4, "3 layers and the config: {report:?}");

    let from = parse_cache_from(&cache_ref.to_string()).expect("from");
    let (cache, warnings) = RemoteCache::load(&client, &b.store, &[from]).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cache.len(), 3);
    for r in &fx.records {
        assert_eq!(cache.lookup(&r.key).as_ref(), Some(&r.chain), "{}", r.key);
        let rec = cache.record(&r.key).expect("record");
        assert_eq!((&rec.inputs, &rec.description), (&r.inputs, &r.description));
    }
    assert_eq!(cache.lookup(&key("never built")), None);
    // Lazy: metadata only, no layer blob downloaded.
    for l in &fx.layers {
        assert!(!b.store.has_blob(&l.digest));
        assert_eq!(reg.count("GET", &format!("/blobs/{}", l.digest)), 0);
        assert_eq!(cache.source_of(&l.digest), Some(&cache_ref));
    }

    // Only the RUN step's chain: base and run, not copy.
    let run_chain = cache.lookup(&fx.records[0].key).expect("run");
    cache
        .ensure_blobs(&client, &b.store, &run_chain)
        .await
        .expect("ensure");
    for l in &fx.layers[..2] {
        assert_eq!(
            b.store.read_blob(&l.digest).expect("blob"),
            a.store.read_blob(&l.digest).expect("blob")
        );
        assert_eq!(reg.count("GET", &format!("/blobs/{}", l.digest)), 1);
        let recorded = b.store.layer_for_diff_id(&l.diff_id).expect("index");
        assert_eq!(recorded.as_ref(), Some(l), "diffID recorded");
    }
    assert!(!b.store.has_blob(&fx.layers[2].digest));
    // Again: nothing left to fetch.
    let full = cache.lookup(&fx.records[2].key).expect("cmd");
    cache
        .ensure_blobs(&client, &b.store, &full)
        .await
        .expect("ensure");
    for l in &fx.layers {
        assert_eq!(
            reg.count("GET", &format!("/blobs/{}", l.digest)),
            1,
            "{}",
            l.digest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_export_uploads_no_blob_and_image_layers_are_shared() {
    let reg = Registry::start();
    let client = client();
    let a = new_store();
    let fx = fixture(&a.store, "two");

    // The image is pushed first, to its own repository.
    let diff_ids: Vec<String> = fx.layers.iter().map(|l| l.diff_id.to_string()).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let image = a
        .store
        .put_image(&serde_json::to_vec(&config).expect("json"), &fx.layers)
        .expect("image");
    let app = reg.reference("team/app:1.2");
    crate::distribution::push(&client, &a.store, &image, &app, &[])
        .await
        .expect("push image");
    let uploads_after_image = reg.count("POST", "/blobs/uploads/");

    // A cache in another repository mounts the image's layers, uploads only its config.
    let cache_ref = reg.reference("team/cache:main");
    let spec = registry_spec(cache_ref.clone());
    let first = remote::export_with(
        &client,
        &a.store,
        &spec,
        &fx.records,
        &[],
        std::slice::from_ref(&app),
    )
    .await
    .expect("export");
    assert_eq!(
        (first.uploaded, first.mounted, first.existed),
        (1, 3, 0),
        "{first:?}"
    );
    let uploads_after_first = reg.count("POST", "/blobs/uploads/");
    assert_eq!(
        uploads_after_first - uploads_after_image,
        4,
        "3 mounts + 1 upload"
    );

    // The same records again: nothing uploaded, same manifest.
    let second = remote::export(&client, &a.store, &spec, &fx.records)
        .await
        .expect("re-export");
    assert_eq!((second.uploaded, second.mounted, second.existed), (0, 0, 4));
    assert_eq!(second.manifest, first.manifest, "deterministic manifest");
    assert_eq!(reg.count("POST", "/blobs/uploads/"), uploads_after_first);
    assert_eq!(reg.count("PATCH", "/blobs/uploads/"), 0);

    // A cache in the image's own repository finds every layer there (only its config is new).
    let same_repo = registry_spec(reg.reference("team/app:buildcache"));
    let third = remote::export(&client, &a.store, &same_repo, &fx.records)
        .await
        .expect("export");
    assert_eq!(
        (third.uploaded, third.existed, third.mounted),
        (1, 3, 0),
        "{third:?}"
    );
}

/// Pushes a manifest with our config media type over arbitrary config bytes.
async fn push_fake_cache(client: &Client, store: &Store, target: &Reference, config: &[u8]) {
    let digest = store.write_blob(config).expect("blob");
    let desc = Descriptor::new(
        remote::CONFIG_MEDIA_TYPE,
        config.len() as u64,
        digest.clone(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": remote::CONFIG_MEDIA_TYPE, "digest": digest.to_string(), "size": config.len()},
        "layers": [],
    });
    client
        .push_image(
            target,
            &serde_json::to_vec(&manifest).expect("json"),
            OCI_MANIFEST,
            &[desc],
            &crate::distribution::StoreBlobs(store.clone()),
            &[],
        )
        .await
        .expect("push fake cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_sources_are_warnings_and_later_sources_still_serve() {
    let reg = Registry::start();
    let locked = Registry::start_with_auth();
    let client = client();
    let (a, b) = (new_store(), new_store());

    // A plain image (no inline metadata).
    let l = layer(&a.store, &[("f", "x")]);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id.to_string()]}});
    let image = a
        .store
        .put_image(
            &serde_json::to_vec(&config).expect("json"),
            std::slice::from_ref(&l),
        )
        .expect("image");
    let plain = reg.reference("lib/plain:1");
    crate::distribution::push(&client, &a.store, &image, &plain, &[])
        .await
        .expect("push");

    // A cache whose config is not JSON, and one whose config blob rots on the registry's disk.
    let garbage = reg.reference("c/garbage:1");
    push_fake_cache(&client, &a.store, &garbage, b"this is not json").await;
    let fx = fixture(&a.store, "three");
    let rotten = reg.reference("c/rotten:1");
    let report = remote::export(
        &client,
        &a.store,
        &registry_spec(rotten.clone()),
        &fx.records,
    )
    .await
    .expect("export");
    let manifest = client
        .get_manifest(&rotten, &[OCI_MANIFEST])
        .await
        .expect("manifest");
    assert_eq!(manifest.digest, report.manifest);
    let m: serde_json::Value = serde_json::from_slice(&manifest.bytes).expect("json");
    let config_digest: kiln_oci::Digest = m["config"]["digest"]
        .as_str()
        .expect("digest")
        .parse()
        .expect("digest");
    let data = reg.blob_data(&config_digest);
    let len = fs_err::metadata(&data).expect("stat").len() as usize;
    fs_err::write(&data, vec![b'{'; len]).expect("corrupt");

    // A good cache last.
    let good = reg.reference("c/good:1");
    let fx_good = fixture(&a.store, "good");
    remote::export(
        &client,
        &a.store,
        &registry_spec(good.clone()),
        &fx_good.records,
    )
    .await
    .expect("export");

    let missing_dir = tempfile::tempdir().expect("tempdir");
    let specs = vec![
        registry_spec(reg.reference("c/missing:1")),
        registry_spec(plain),
        registry_spec(garbage),
        registry_spec(rotten),
        registry_spec(locked.reference("c/locked:1")),
        CacheSpec::Local {
            dir: missing_dir.path().join("nothing-here"),
            mode: CacheMode::Min,
            cache_mounts: Default::default(),
        },
        registry_spec(good),
    ];
    let (cache, warnings) = RemoteCache::load(&client, &b.store, &specs).await;
    assert_eq!(warnings.len(), 6, "{warnings:#?}");
    for (w, needle) in warnings.iter().zip([
        "not found",
        "without inline cache metadata",
        "invalid cache metadata",
        "digest mismatch",
        "denied",
        "nothing-here",
    ]) {
        assert!(w.contains(needle), "{needle:?} not in {w:?}");
    }
    assert_eq!(cache.len(), 3, "only the good cache's records");
    for r in &fx_good.records {
        assert_eq!(cache.lookup(&r.key).as_ref(), Some(&r.chain));
    }
    for r in &fx.records {
        assert_eq!(cache.lookup(&r.key), None, "the rotten cache gives nothing");
    }

    // Every source broken: an empty cache, still no error.
    let (empty, warnings) = RemoteCache::load(&client, &b.store, &specs[..6]).await;
    assert!(empty.is_empty());
    assert_eq!(warnings.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_directory_round_trip() {
    let client = client();
    let (a, b) = (new_store(), new_store());
    let fx = fixture(&a.store, "local");
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("cache");
    let to = parse_cache_to(&format!("type=local,dest={},mode=max", dir.display())).expect("to");
    let report = remote::export(&client, &a.store, &to, &fx.records)
        .await
        .expect("export");
    assert_eq!(
        (report.uploaded, report.existed),
        (5, 0),
        "3 layers, config, manifest"
    );

    // An OCI image layout, with no temp files left behind.
    let layout: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.join("oci-layout")).expect("oci-layout"))
            .expect("json");
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.join("index.json")).expect("index"))
            .expect("json");
    assert_eq!(index["manifests"][0]["digest"], report.manifest.to_string());
    let leftovers: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp"))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for l in &fx.layers {
        let p = dir.join("blobs/sha256").join(l.digest.hex());
        assert_eq!(
            fs_err::read(p).expect("blob"),
            a.store.read_blob(&l.digest).expect("blob")
        );
    }

    // Exporting again copies nothing.
    let again = remote::export(&client, &a.store, &to, &fx.records)
        .await
        .expect("export");
    assert_eq!((again.uploaded, again.existed), (0, 5));

    let from = parse_cache_from(&format!("type=local,src={}", dir.display())).expect("from");
    let (cache, warnings) = RemoteCache::load(&client, &b.store, &[from]).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cache.len(), 3);
    assert_eq!(
        cache.source_of(&fx.layers[0].digest),
        None,
        "no registry to mount from"
    );
    let full = cache.lookup(&fx.records[1].key).expect("copy");
    assert!(fx.layers.iter().all(|l| !b.store.has_blob(&l.digest)));
    cache
        .ensure_blobs(&client, &b.store, &full)
        .await
        .expect("ensure");
    for l in &fx.layers {
        assert_eq!(
            b.store.read_blob(&l.digest).expect("blob"),
            a.store.read_blob(&l.digest).expect("blob")
        );
    }

    // A blob that rotted in the directory is refused, and nothing lands in the store.
    let c = new_store();
    let bad = &fx.layers[2];
    let p = dir.join("blobs/sha256").join(bad.digest.hex());
    let mut bytes = fs_err::read(&p).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs_err::write(&p, bytes).expect("corrupt");
    let err = cache
        .ensure_blobs(&client, &c.store, &full)
        .await
        .expect_err("corrupt blob must fail");
    assert!(
        format!("{err}").contains("digest") || format!("{err:?}").contains("Digest"),
        "{err:?}"
    );
    assert!(!c.store.has_blob(&bad.digest));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs_err::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_metadata_round_trip_through_an_image() {
    let reg = Registry::start();
    let client = client();
    let (a, b) = (new_store(), new_store());
    let fx = fixture(&a.store, "inline");
    // mode=min: the final image's steps; the image has all three layers.
    let diff_ids: Vec<String> = fx.layers.iter().map(|l| l.diff_id.to_string()).collect();
    let mut config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["app"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    config[INLINE_KEY] = remote::inline_metadata(&fx.records);
    let image = a
        .store
        .put_image(&serde_json::to_vec(&config).expect("json"), &fx.layers)
        .expect("image");
    let app = reg.reference("team/app:latest");
    crate::distribution::push(&client, &a.store, &image, &app, &[])
        .await
        .expect("push");

    let from = parse_cache_from(&app.to_string()).expect("bare ref");
    let (cache, warnings) = RemoteCache::load(&client, &b.store, &[from]).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cache.len(), 3);
    for r in &fx.records {
        assert_eq!(cache.lookup(&r.key).as_ref(), Some(&r.chain));
    }
    assert_eq!(cache.source_of(&fx.layers[1].digest), Some(&app));
    let full = cache.lookup(&fx.records[2].key).expect("cmd");
    cache
        .ensure_blobs(&client, &b.store, &full)
        .await
        .expect("ensure from the image repository");
    assert!(fx.layers.iter().all(|l| b.store.has_blob(&l.digest)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_exports_to_one_ref_leave_a_whole_record_set() {
    let reg = Registry::start();
    let client = client();
    let (a1, a2) = (new_store(), new_store());
    let (fx1, fx2) = (fixture(&a1.store, "left"), fixture(&a2.store, "right"));
    let spec = registry_spec(reg.reference("shared/cache:main"));
    let keys = |fx: &Fixture| -> Vec<Key> {
        let mut k: Vec<Key> = fx.records.iter().map(|r| r.key.clone()).collect();
        k.sort();
        k
    };
    let (k1, k2) = (keys(&fx1), keys(&fx2));
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..4 {
        let reader = async {
            let mut outcomes = Vec::new();
            for _ in 0..4 {
                let b = new_store();
                let (cache, warnings) =
                    RemoteCache::load(&client, &b.store, std::slice::from_ref(&spec)).await;
                let mut got: Vec<Key> = cache.records().map(|r| r.key.clone()).collect();
                got.sort();
                outcomes.push((got, warnings));
            }
            outcomes
        };
        let (r1, r2, reads) = tokio::join!(
            remote::export(&client, &a1.store, &spec, &fx1.records),
            remote::export(&client, &a2.store, &spec, &fx2.records),
            reader,
        );
        r1.expect("export 1");
        r2.expect("export 2");
        // A reader sees one exporter's whole set, or (before the first export, or when the
        // registry answered a read racing a tag update with an error, which the load reports)
        // none: never a mix.
        for (got, warnings) in reads {
            assert!(
                got.is_empty() && (round == 0 || !warnings.is_empty()) || got == k1 || got == k2,
                "round {round}: a mixed record set {got:?} ({warnings:?})"
            );
        }
        let b = new_store();
        let (cache, warnings) =
            RemoteCache::load(&client, &b.store, std::slice::from_ref(&spec)).await;
        assert!(warnings.is_empty(), "{warnings:?}");
        let mut got: Vec<Key> = cache.records().map(|r| r.key.clone()).collect();
        got.sort();
        assert!(got == k1 || got == k2, "round {round}: {got:?}");
        // Whichever won, its layers are all fetchable.
        let winner = if got == k1 { &fx1 } else { &fx2 };
        seen.insert(got == k1);
        let full = cache.lookup(&winner.records[2].key).expect("record");
        cache
            .ensure_blobs(&client, &b.store, &full)
            .await
            .expect("blobs of the winner");
    }
    assert!(!seen.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_blobs_of_an_unknown_layer_is_an_error() {
    let client = client();
    let (a, b) = (new_store(), new_store());
    let stray = layer(&a.store, &[("x", "y")]);
    let cache = RemoteCache::default();
    let err = cache
        .ensure_blobs(&client, &b.store, &chain(&[&stray]))
        .await
        .expect_err("unknown");
    assert!(matches!(err, remote::Error::UnknownBlob { .. }), "{err:?}");
    // A chain the store already has needs nothing.
    cache
        .ensure_blobs(&client, &a.store, &chain(&[&stray]))
        .await
        .expect("present");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_downloaded_the_layers_exports_by_mounting() {
    let reg = Registry::start();
    let client = client();
    let (a, b) = (new_store(), new_store());
    let fx = fixture(&a.store, "mount");
    let main = reg.reference("team/cache:main");
    remote::export(&client, &a.store, &registry_spec(main.clone()), &fx.records)
        .await
        .expect("export");

    // B hits every step remotely and downloads nothing, then exports its branch cache.
    let (cache, warnings) =
        RemoteCache::load(&client, &b.store, &[registry_spec(main.clone())]).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cache.mount_sources(), vec![main.clone()]);
    let records: Vec<ExportRecord> = fx
        .records
        .iter()
        .map(|r| ExportRecord {
            chain: cache.lookup(&r.key).expect("hit"),
            ..r.clone()
        })
        .collect();
    let gets_before = reg.count("GET", "/blobs/");

    // Same repository: every layer is already there.
    let same = registry_spec(reg.reference("team/cache:branch"));
    let r = remote::export(&client, &b.store, &same, &records)
        .await
        .expect("export to the same repository");
    assert_eq!((r.uploaded, r.existed, r.mounted), (0, 4, 0), "{r:?}");

    // Another repository: mounted from the source, never downloaded.
    let other = registry_spec(reg.reference("fork/cache:branch"));
    let r = remote::export_with(
        &client,
        &b.store,
        &other,
        &records,
        &[],
        &cache.mount_sources(),
    )
    .await
    .expect("export with mounts");
    // The config is the same record set as main's, so it is mounted too.
    assert_eq!((r.uploaded, r.mounted), (0, 4), "{r:?}");
    assert_eq!(
        reg.count("GET", "/blobs/"),
        gets_before,
        "no blob downloaded"
    );
    assert!(fx.layers.iter().all(|l| !b.store.has_blob(&l.digest)));

    // Without a source to mount from, the export names the blob it lacks.
    let third = registry_spec(reg.reference("elsewhere/cache:x"));
    let err = remote::export(&client, &b.store, &third, &records)
        .await
        .expect_err("no bytes, no mount");
    assert!(matches!(err, remote::Error::MissingBlob { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_steps_download_a_shared_layer_once() {
    let reg = Registry::start();
    let client = client();
    let (a, b) = (new_store(), new_store());
    let fx = fixture(&a.store, "shared");
    let spec = registry_spec(reg.reference("team/cache:main"));
    remote::export(&client, &a.store, &spec, &fx.records)
        .await
        .expect("export");
    let (cache, _) = RemoteCache::load(&client, &b.store, std::slice::from_ref(&spec)).await;
    let run = cache.lookup(&fx.records[0].key).expect("run");
    let copy = cache.lookup(&fx.records[1].key).expect("copy");
    let cmd = cache.lookup(&fx.records[2].key).expect("cmd");
    let (r1, r2, r3) = tokio::join!(
        cache.ensure_blobs(&client, &b.store, &run),
        cache.ensure_blobs(&client, &b.store, &copy),
        cache.ensure_blobs(&client, &b.store, &cmd),
    );
    r1.and(r2).and(r3).expect("ensure");
    for l in &fx.layers {
        assert!(b.store.has_blob(&l.digest));
        assert_eq!(
            reg.count("GET", &format!("/blobs/{}", l.digest)),
            1,
            "{}",
            l.digest
        );
    }
}
