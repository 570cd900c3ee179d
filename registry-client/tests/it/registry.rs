//! Against the real `docker-registry` on 127.0.0.1.

use std::process::Command;

use kiln_oci::Platform;
use kiln_oci::media_type::OCI_INDEX;
use kiln_registry_client::{
    BlobPush, BlobStore, Client, ClientOptions, Error, PullEvent, PushEvent, Reference, Stored,
    login, logout,
};

use crate::support::{
    DirStore, OrDie, OrDieOpt, Registry, TestImage, build_image, require, tar_layer,
};

fn client() -> Client {
    Client::new(ClientOptions::default()).or_die("client")
}

fn reference(reg: &Registry, name: &str) -> Reference {
    format!("{}/{name}", reg.host()).parse().or_die("reference")
}

fn amd64() -> Platform {
    "linux/amd64".parse().or_die("platform")
}

fn sample(store: &DirStore) -> TestImage {
    let layer = tar_layer(&[("etc/hello", b"hello from kiln\n"), ("bin/x", &[7u8; 5000])]);
    build_image(store, "amd64", &[layer])
}

async fn push(
    c: &Client,
    target: &Reference,
    img: &TestImage,
    store: &DirStore,
) -> kiln_registry_client::PushReport {
    c.push_image(
        target,
        &img.manifest,
        &img.media_type,
        &img.blobs(),
        store,
        &[],
    )
    .await
    .or_die("push")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_push_skopeo_pull() {
    let skopeo = require("skopeo", "skopeo");
    let reg = Registry::start();
    let src = DirStore::new();
    let img = sample(&src);
    let target = reference(&reg, "kiln/app:v1");
    let c = client();

    let report = push(&c, &target, &img, &src).await;
    assert_eq!(report.digest, img.digest);
    assert_eq!((report.uploaded, report.skipped, report.mounted), (2, 0, 0));

    let out = Command::new(skopeo)
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/kiln/app:v1", reg.host()))
        .output()
        .or_die("run skopeo");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).or_die("skopeo json");
    assert_eq!(
        inspected["Digest"].as_str(),
        Some(img.digest.to_string().as_str())
    );

    let dst = DirStore::new();
    let events = std::sync::Mutex::new(Vec::new());
    let record = |e: PullEvent| events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    let resolved = c
        .pull(&target, &amd64(), &dst, Some(&record))
        .await
        .or_die("pull");
    assert_eq!(resolved.manifest_digest, img.digest);
    assert_eq!(
        resolved.manifest_bytes, img.manifest,
        "manifest bytes kept exactly"
    );
    assert_eq!(resolved.media_type, img.media_type);
    assert_eq!(resolved.config, img.config);
    assert_eq!(resolved.layers, img.layers);
    for d in img.blobs() {
        assert_eq!(
            dst.read(&d.digest),
            src.read(&d.digest),
            "blob {}",
            &d.digest
        );
    }
    let events = events.into_inner().unwrap_or_else(|p| p.into_inner());
    let done = events
        .iter()
        .filter(|e| matches!(e, PullEvent::Done { .. }))
        .count();
    assert_eq!(done, 2, "{events:?}");
    assert_eq!(dst.staged(), 0);

    // Pulling again downloads nothing.
    let before = reg.count("GET", "/blobs/");
    c.pull(&target, &amd64(), &dst, None)
        .await
        .or_die("second pull");
    assert_eq!(reg.count("GET", "/blobs/"), before);

    // By digest too.
    let by_digest = target.with_digest(img.digest.clone());
    let resolved = c
        .resolve(&by_digest, &amd64())
        .await
        .or_die("resolve by digest");
    assert_eq!(resolved.manifest_digest, img.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repush_of_unchanged_image_uploads_no_blobs() {
    let reg = Registry::start();
    let store = DirStore::new();
    let img = sample(&store);
    let target = reference(&reg, "kiln/app:v1");
    let c = client();
    push(&c, &target, &img, &store).await;
    let uploads = |r: &Registry| {
        r.count("POST", "/blobs/uploads")
            + r.count("PATCH", "/blobs/uploads")
            + r.count("PUT", "/blobs/uploads")
    };
    let before = uploads(&reg);
    assert_eq!(
        before,
        4,
        "first push: POST+PUT per blob: {:?}",
        reg.requests()
    );

    let again = Client::new(ClientOptions::default()).or_die("fresh client");
    let report = push(&again, &target, &img, &store).await;
    assert_eq!((report.uploaded, report.skipped, report.mounted), (0, 2, 0));
    assert_eq!(report.digest, img.digest);
    assert_eq!(
        uploads(&reg),
        before,
        "re-push uploaded: {:?}",
        reg.requests()
    );
    assert_eq!(reg.count("HEAD", "/blobs/sha256:"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repository_mount() {
    let reg = Registry::start();
    let store = DirStore::new();
    let img = sample(&store);
    let c = client();
    let a = reference(&reg, "team/base:1");
    let b = reference(&reg, "team/derived:1");
    push(&c, &a, &img, &store).await;
    let events = std::sync::Mutex::new(Vec::new());
    let record = |e: PushEvent| events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    let report = c
        .push_image_with_progress(
            &b,
            &img.manifest,
            &img.media_type,
            &img.blobs(),
            &store,
            std::slice::from_ref(&a),
            Some(&record),
        )
        .await
        .or_die("push with mount");
    let events = events.into_inner().unwrap_or_else(|p| p.into_inner());
    let mounted = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                PushEvent::Blob {
                    outcome: BlobPush::Mounted,
                    ..
                }
            )
        })
        .count();
    assert_eq!(mounted, 2, "{events:?}");
    assert_eq!(
        events.last(),
        Some(&PushEvent::Manifest {
            digest: img.digest.clone()
        })
    );
    assert_eq!((report.uploaded, report.skipped, report.mounted), (0, 0, 2));
    assert_eq!(reg.count("POST", "mount=sha256"), 2, "{:?}", reg.requests());
    assert_eq!(reg.count("PUT", "/v2/team/derived/blobs/uploads"), 0);
    let dst = DirStore::new();
    let resolved = c
        .pull(&b, &amd64(), &dst, None)
        .await
        .or_die("pull mounted");
    assert_eq!(resolved.manifest_digest, img.digest);
    assert!(dst.has_blob(&img.layers[0].digest));

    // A mount source that lacks the blob gets a 202: a normal upload follows.
    let other = DirStore::new();
    let img2 = build_image(&other, "amd64", &[tar_layer(&[("only/here", b"x")])]);
    let c2 = reference(&reg, "team/third:1");
    let report = c
        .push_image(
            &c2,
            &img2.manifest,
            &img2.media_type,
            &img2.blobs(),
            &other,
            &[a],
        )
        .await
        .or_die("push with failed mount");
    assert_eq!((report.uploaded, report.mounted), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_of_large_blobs() {
    let reg = Registry::start();
    let store = DirStore::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let img = build_image(&store, "amd64", &[tar_layer(&[("big", &data)])]);
    let c = Client::new(ClientOptions {
        monolithic_limit: 10_000,
        chunk_size: 64 * 1024,
        ..Default::default()
    })
    .or_die("client");
    let target = reference(&reg, "kiln/big:1");
    let report = push(&c, &target, &img, &store).await;
    assert_eq!(report.uploaded, 2);
    let patches = reg.count("PATCH", "/blobs/uploads");
    let size = img.layers[0].size;
    assert_eq!(
        patches as u64,
        size.div_ceil(64 * 1024),
        "{:?}",
        reg.requests()
    );
    let dst = DirStore::new();
    c.pull(&target, &amd64(), &dst, None).await.or_die("pull");
    assert_eq!(
        dst.read(&img.layers[0].digest),
        store.read(&img.layers[0].digest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_resolves_to_the_platform() {
    let reg = Registry::start();
    let store = DirStore::new();
    let amd = build_image(&store, "amd64", &[tar_layer(&[("arch", b"amd64")])]);
    let arm = build_image(&store, "arm64", &[tar_layer(&[("arch", b"arm64")])]);
    let c = client();
    let repo = reference(&reg, "multi/img:latest");
    for img in [&amd, &arm] {
        let by_digest = repo.with_digest(img.digest.clone());
        c.push_image(
            &by_digest,
            &img.manifest,
            &img.media_type,
            &img.blobs(),
            &store,
            &[],
        )
        .await
        .or_die("push child");
    }
    let entry = |img: &TestImage, arch: &str| {
        serde_json::json!({
            "mediaType": img.media_type, "digest": img.digest, "size": img.manifest.len(),
            "platform": { "os": "linux", "architecture": arch },
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [entry(&amd, "amd64"), entry(&arm, "arm64")],
    });
    let index = serde_json::to_vec(&index).or_die("index json");
    let index_digest = c
        .put_manifest(&repo, &index, OCI_INDEX)
        .await
        .or_die("put index");

    let arm64: Platform = "linux/arm64".parse().or_die("platform");
    let resolved = c.resolve(&repo, &arm64).await.or_die("resolve arm64");
    assert_eq!(resolved.manifest_digest, arm.digest);
    assert_eq!(
        resolved.index.as_ref().map(|i| &i.digest),
        Some(&index_digest)
    );
    assert_eq!(
        resolved.index.as_ref().map(|i| i.bytes.clone()),
        Some(index)
    );
    let resolved = c.resolve(&repo, &amd64()).await.or_die("resolve amd64");
    assert_eq!(resolved.manifest_digest, amd.digest);

    let s390x: Platform = "linux/s390x".parse().or_die("platform");
    let err = c.resolve(&repo, &s390x).await.err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            format!(
                "no manifest for platform linux/s390x in {}/multi/img:latest (available: linux/amd64, linux/arm64)",
                reg.host()
            )
            .as_str()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_keep_their_media_type() {
    let reg = Registry::start();
    let store = DirStore::new();
    let blob = store.put("application/vnd.kiln.cache.v1+json", b"{\"k\":1}");
    let empty = store.put("application/vnd.oci.empty.v1+json", b"{}");
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.kiln.cache.v1",
        "config": empty, "layers": [blob],
    });
    let bytes = serde_json::to_vec(&manifest).or_die("json");
    let c = client();
    let target = reference(&reg, "cache/x:k");
    let report = c
        .push_image(
            &target,
            &bytes,
            "application/vnd.oci.image.manifest.v1+json",
            &[empty, blob],
            &store,
            &[],
        )
        .await
        .or_die("push artifact");
    let got = c
        .get_manifest(&target, &["application/vnd.oci.image.manifest.v1+json"])
        .await
        .or_die("get manifest");
    assert_eq!(got.bytes, bytes);
    assert_eq!(got.digest, report.digest);
    assert_eq!(got.media_type, "application/vnd.oci.image.manifest.v1+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_manifest_and_blob_are_clear_errors() {
    let reg = Registry::start();
    let c = client();
    let r = reference(&reg, "busybox:nope");
    let err = c.resolve(&r, &amd64()).await.err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(format!(
            "manifest for {}/busybox:nope not found",
            reg.host()
        ))
    );
    let store = DirStore::new();
    let d = store.put("application/octet-stream", b"never pushed");
    let err = c.fetch_blob(&r, &d, &DirStore::new()).await;
    assert!(matches!(err, Err(Error::BlobNotFound { .. })), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_auth_with_login_and_bad_credentials() {
    let reg = Registry::start_with_auth("alice", "correct horse");
    let store = DirStore::new();
    let img = sample(&store);
    let target = reference(&reg, "private/app:1");
    let config = tempfile::tempdir().or_die("tempdir");
    let opts = || ClientOptions {
        docker_config_dir: Some(config.path().to_owned()),
        ..Default::default()
    };

    // Anonymous: refused, saying so.
    let anon = Client::new(opts()).or_die("client");
    let err = anon
        .push_image(
            &target,
            &img.manifest,
            &img.media_type,
            &img.blobs(),
            &store,
            &[],
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("status 401") && err.contains("anonymous"),
        "{err}"
    );

    // Bad password: refused by login, naming the user but never the password.
    let err = login(&reg.host(), "alice", "wrong-pass", opts())
        .await
        .err();
    let text = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        matches!(err, Some(Error::Unauthorized { status: 401, .. })),
        "{err:?}"
    );
    assert!(
        text.contains("\"alice\"") && !text.contains("wrong-pass"),
        "{text}"
    );
    assert!(
        !config.path().join("config.json").exists(),
        "nothing stored on failure"
    );

    // Good password: stored in config.json, then used by a fresh client.
    let stored = login(&reg.host(), "alice", "correct horse", opts())
        .await
        .or_die("login");
    assert_eq!(
        stored,
        Stored::ConfigFile(config.path().join("config.json"))
    );
    let text = fs_err::read_to_string(config.path().join("config.json")).or_die("read config");
    assert!(
        text.contains(&reg.host()) && !text.contains("correct horse"),
        "{text}"
    );
    let authed = Client::new(opts()).or_die("client");
    let report = push(&authed, &target, &img, &store).await;
    assert_eq!(report.uploaded, 2);
    let dst = DirStore::new();
    let resolved = authed
        .pull(&target, &amd64(), &dst, None)
        .await
        .or_die("pull");
    assert_eq!(resolved.manifest_digest, img.digest);

    // A wrong password in config.json: the error says where it came from.
    assert_eq!(logout(&reg.host(), Some(config.path())).ok(), Some(true));
    let bad = serde_json::json!({"auths": {reg.host(): {"auth": "YWxpY2U6bm9wZQ=="}}});
    fs_err::write(config.path().join("config.json"), bad.to_string()).or_die("write");
    let err = Client::new(opts())
        .or_die("client")
        .resolve(&target, &amd64())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("user \"alice\" from") && err.contains("config.json"),
        "{err}"
    );
    assert!(!err.contains("nope"), "{err}");
}

/// The lead spawns pulls and pushes on tokio: their futures must be `Send`.
#[tokio::test]
async fn futures_are_send() {
    fn is_send<T: Send>(_: T) {}
    let c = client();
    let r: Reference = "127.0.0.1:1/x:y".parse().or_die("ref");
    let store = DirStore::new();
    let img = sample(&store);
    is_send(c.pull(&r, &amd64(), &store, None));
    is_send(c.push_image(
        &r,
        &img.manifest,
        &img.media_type,
        &img.blobs(),
        &store,
        &[],
    ));
    is_send(c.fetch_blob(&r, &img.config, &store));
    is_send(login("127.0.0.1:1", "u", "p", ClientOptions::default()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_and_manifest_lists() {
    use kiln_oci::media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};
    let reg = Registry::start();
    let store = DirStore::new();
    let layer = store.put(
        "application/vnd.docker.image.rootfs.diff.tar",
        &tar_layer(&[("docker", b"v2")]),
    );
    let config_bytes = serde_json::to_vec(&serde_json::json!({
        "architecture": "arm", "variant": "v7", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    }))
    .or_die("json");
    let config = store.put(
        "application/vnd.docker.container.image.v1+json",
        &config_bytes,
    );
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config, "layers": [layer],
    }))
    .or_die("json");
    let c = client();
    let repo = reference(&reg, "legacy/img:v7");
    let digest = kiln_oci::sha256(&manifest);
    let child = repo.with_digest(digest.clone());
    c.push_image(
        &child,
        &manifest,
        DOCKER_MANIFEST,
        &[config.clone(), layer.clone()],
        &store,
        &[],
    )
    .await
    .or_die("push schema2");
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [{
            "mediaType": DOCKER_MANIFEST, "digest": digest, "size": manifest.len(),
            "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
        }],
    }))
    .or_die("json");
    c.put_manifest(&repo, &list, DOCKER_MANIFEST_LIST)
        .await
        .or_die("put list");

    let armv7: Platform = "linux/arm/v7".parse().or_die("platform");
    let dst = DirStore::new();
    let resolved = c.pull(&repo, &armv7, &dst, None).await.or_die("pull list");
    assert_eq!(resolved.media_type, DOCKER_MANIFEST);
    assert_eq!(resolved.manifest_digest, digest);
    assert_eq!(resolved.manifest_bytes, manifest);
    assert_eq!(
        resolved.index.map(|i| i.media_type).as_deref(),
        Some(DOCKER_MANIFEST_LIST)
    );
    assert_eq!(dst.read(&layer.digest), store.read(&layer.digest));
    let armv6: Platform = "linux/arm/v6".parse().or_die("platform");
    let err = c.resolve(&repo, &armv6).await;
    assert!(
        matches!(err, Err(Error::NoMatchingPlatform { .. })),
        "{err:?}"
    );
    assert_eq!(
        c.head_manifest(&repo).await.or_die("head"),
        Some(
            c.put_manifest(&repo, &list, DOCKER_MANIFEST_LIST)
                .await
                .or_die("re-put")
        )
    );
    assert_eq!(
        c.head_manifest(&reference(&reg, "legacy/img:none"))
            .await
            .or_die("head missing"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_made_while_it_uploads_streams_in_one_patch_and_closes_with_its_digest() {
    let reg = Registry::start();
    let c = client();
    let target = reference(&reg, "kiln/made:v1");
    // Larger than the monolithic limit and several pieces: its length is not known up front.
    let maker = crate::support::TestMaker::new(crate::support::noise(3 << 20 | 12345));
    let want = maker.descriptor();
    let stored = maker
        .store
        .put("application/octet-stream", b"a stored blob alongside");
    let blobs = [
        kiln_registry_client::PushBlob::Made(maker.clone()),
        kiln_registry_client::PushBlob::Stored(stored),
    ];
    let pushed = c
        .push_blobs(&target, &blobs, &maker.store, &[], None)
        .await
        .or_die("push blobs");
    assert_eq!(pushed.len(), 2);
    assert_eq!(pushed[0].descriptor, want);
    assert!(pushed[0].made);
    assert_eq!(pushed[0].outcome, BlobPush::Uploaded);
    assert!(!pushed[1].made);
    assert_eq!(maker.runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The registry has exactly the maker's bytes under the digest given at the end.
    let back = DirStore::new();
    c.fetch_blob(&target, &want, &back).await.or_die("fetch");
    assert_eq!(back.read(&want.digest), maker.data);
    assert!(maker.store.has_blob(&want.digest), "the made blob is kept");
    let digest = want.digest.to_string().replace(':', "%3A");
    assert_eq!(reg.count("PATCH", "/v2/kiln/made/blobs/uploads/"), 1);
    assert_eq!(
        reg.count("PUT", &format!("?digest={digest}"))
            + reg.count("PUT", &format!("&digest={digest}")),
        1,
        "{:?}",
        reg.requests()
    );
    assert_eq!(
        reg.count("HEAD", &want.digest.to_string()),
        0,
        "its digest was unknown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_blob_whose_digest_is_wrong_is_refused_by_the_registry() {
    let reg = Registry::start();
    let c = client();
    let target = reference(&reg, "kiln/liar:v1");
    let mut maker = crate::support::TestMaker::new(crate::support::noise(1 << 20));
    let lie = kiln_oci::sha256(b"other bytes");
    std::sync::Arc::get_mut(&mut maker).or_die_opt().claim = Some(lie.clone());
    let blobs = [kiln_registry_client::PushBlob::Made(maker.clone())];
    let err = c
        .push_blobs(&target, &blobs, &maker.store, &[], None)
        .await
        .err()
        .or_die_opt();
    let text = err.to_string();
    assert!(matches!(err, Error::Status { status: 400, .. }), "{err:?}");
    assert!(text.contains("DIGEST_INVALID"), "{text}");
    assert!(text.contains("PUT"), "{text}");
    assert_eq!(
        maker.runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a refused digest is not retried"
    );
    assert!(!c.has_blob(&target, &lie).await.or_die("head"));
}
