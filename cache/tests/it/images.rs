//! Image store: put, tag, resolve, images, rmi, history, inspect.

use kiln_cache::image::minimal_config;
use kiln_cache::testutil::busybox_image;
use kiln_cache::{Encoding, Error, LayerOptions, RemoveEvent, Store, history, inspect_json};
use kiln_oci::media_type::OCI_MANIFEST;

#[test]
fn put_tag_resolve_and_rmi() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let rec = busybox_image(&s, "docker.io/library/busybox:latest").unwrap();
    assert_eq!(rec.manifest_media_type, OCI_MANIFEST);
    // Manifest bytes are canonical and hash to the manifest digest.
    let mbytes = s.manifest_bytes(&rec).unwrap();
    assert_eq!(kiln_oci::sha256(&mbytes), rec.manifest_digest);
    assert_eq!(
        kiln_oci::canonical_json(&serde_json::from_slice::<serde_json::Value>(&mbytes).unwrap())
            .unwrap(),
        mbytes
    );

    s.tag("docker.io/library/other:1", &rec.manifest_digest)
        .unwrap();
    for r in [
        "docker.io/library/busybox:latest",
        &rec.config_digest.to_string(),
        &rec.manifest_digest.to_string(),
        &rec.short_id(),
        &rec.config_digest.hex()[..5],
    ] {
        assert_eq!(
            s.resolve(r).unwrap().map(|r| r.manifest_digest),
            Some(rec.manifest_digest.clone()),
            "{r}"
        );
    }
    assert_eq!(s.resolve("docker.io/library/nope:1").unwrap(), None);
    let imgs = s.images().unwrap();
    assert_eq!(imgs.len(), 1);
    assert_eq!(
        imgs[0].names,
        vec![
            "docker.io/library/busybox:latest",
            "docker.io/library/other:1"
        ]
    );

    // by ID with two names: refused without force
    let err = s.remove_image(&rec.short_id(), false).unwrap_err();
    assert!(matches!(err, Error::ImageInUse { .. }), "{err}");
    // by name: untag only
    let ev = s.remove_image("docker.io/library/other:1", false).unwrap();
    assert_eq!(
        ev,
        vec![RemoveEvent::Untagged("docker.io/library/other:1".into())]
    );
    assert_eq!(s.images().unwrap().len(), 1);
    // last name: untag and delete
    let ev = s
        .remove_image("docker.io/library/busybox:latest", false)
        .unwrap();
    assert_eq!(
        ev,
        vec![
            RemoveEvent::Untagged("docker.io/library/busybox:latest".into()),
            RemoveEvent::Deleted(rec.config_digest.clone())
        ]
    );
    assert!(s.images().unwrap().is_empty());
    assert!(matches!(
        s.remove_image("docker.io/library/busybox:latest", false),
        Err(Error::ImageNotFound(_))
    ));
}

#[test]
fn put_image_checks_diff_ids() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let d = t.path().join("d");
    crate::support::file(&d, "f", b"1");
    let l = s
        .create_layer(
            &d,
            &LayerOptions {
                compression: Encoding::ZSTD,
                ..Default::default()
            },
        )
        .unwrap();
    let cfg = minimal_config(&[], "1970-01-01T00:00:00Z", "x", serde_json::json!({})).unwrap();
    assert!(s.put_image(&cfg, &[l]).is_err());
}

#[test]
fn history_and_inspect_are_docker_shaped() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let rec = busybox_image(&s, "docker.io/library/busybox:latest").unwrap();
    let h = history(&rec).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].id.as_ref(), Some(&rec.config_digest));
    assert_eq!(h[0].size, rec.layers[0].size);
    let names = s.names_for(&rec.manifest_digest).unwrap();
    let v = inspect_json(&s, &rec, &names);
    assert_eq!(v["Id"], rec.config_digest.to_string());
    assert_eq!(v["RepoTags"][0], "docker.io/library/busybox:latest");
    assert_eq!(
        v["RepoDigests"][0],
        format!("docker.io/library/busybox@{}", rec.manifest_digest)
    );
    assert_eq!(v["Config"]["Cmd"][0], "sh");
    assert_eq!(v["Config"]["Entrypoint"], serde_json::Value::Null);
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["RootFS"]["Layers"][0], rec.layers[0].diff_id.to_string());
    for k in [
        "Env",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Volumes",
        "Labels",
        "StopSignal",
        "Healthcheck",
        "Shell",
        "OnBuild",
    ] {
        assert!(v["Config"].get(k).is_some(), "{k}");
    }
}

#[test]
fn pulled_manifest_bytes_are_kept_as_they_came() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let rec = busybox_image(&s, "").unwrap();
    let l = &rec.layers[0];
    // a docker v2 schema 2 manifest with unusual whitespace and key order
    let m = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"application/vnd.docker.distribution.manifest.v2+json\",\n  \"layers\": [{{\"mediaType\": \"application/vnd.docker.image.rootfs.diff.tar.gzip\", \"size\": {}, \"digest\": \"{}\"}}],\n  \"config\": {{\"mediaType\": \"application/vnd.docker.container.image.v1+json\", \"size\": {}, \"digest\": \"{}\"}}\n}}",
        l.size,
        l.digest,
        rec.config_bytes.len(),
        rec.config_digest
    );
    let p = s
        .put_pulled_image(
            m.as_bytes(),
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .unwrap();
    assert_eq!(s.manifest_bytes(&p).unwrap(), m.as_bytes());
    assert_eq!(p.layers[0].diff_id, l.diff_id);
    assert_eq!(
        p.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
}

#[test]
fn gc_keeps_images_and_leases_and_removes_the_rest() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let rec = busybox_image(&s, "docker.io/library/busybox:latest").unwrap();
    let snap = s.prepare_snapshot(&rec.layers).unwrap();
    let orphan = s.write_blob(b"orphan").unwrap();
    let leased = s.write_blob(b"leased").unwrap();
    s.lease("build-1", std::slice::from_ref(&leased)).unwrap();
    // within the grace period nothing goes
    assert_eq!(s.gc().unwrap().blobs_removed, 0);
    let st = s.gc_with_grace(std::time::Duration::ZERO).unwrap();
    assert_eq!(st.blobs_removed, 1);
    assert!(!s.has_blob(&orphan));
    assert!(s.has_blob(&leased));
    assert!(
        s.resolve("docker.io/library/busybox:latest")
            .unwrap()
            .is_some()
    );
    assert!(snap.lowerdirs[0].is_dir());
    // after rmi and release, everything goes
    s.remove_image("docker.io/library/busybox:latest", false)
        .unwrap();
    assert!(s.release("build-1").unwrap());
    let st = s.gc_with_grace(std::time::Duration::ZERO).unwrap();
    assert_eq!(st.blobs_removed, 4); // manifest, config, layer, leased
    assert_eq!(st.snapshots_removed, 1);
    assert!(!snap.lowerdirs[0].exists());
    assert!(
        s.layer_for_diff_id(&rec.layers[0].diff_id)
            .unwrap()
            .is_none()
    );
}
