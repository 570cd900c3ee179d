//! save/load/import with real validators (skopeo, umoci).

use std::process::Command;

use kiln_cache::testutil::{busybox_image, busybox_rootfs_tar};
use kiln_cache::{ArchiveFormat, Store, import_rootfs, load_archive, save_archive};

use crate::support::{have, is_root};

fn saved(
    format: ArchiveFormat,
) -> (
    tempfile::TempDir,
    Store,
    std::path::PathBuf,
    kiln_cache::ImageRecord,
) {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("store")).unwrap();
    let rec = busybox_image(&s, "docker.io/library/busybox:1.0").unwrap();
    let out = t.path().join("img.tar");
    save_archive(
        &s,
        &[("docker.io/library/busybox:1.0".into(), rec.clone())],
        format,
        fs_err::File::create(&out).unwrap(),
    )
    .unwrap();
    (t, s, out, rec)
}

#[test]
fn save_load_save_is_identical_both_formats() {
    for format in [ArchiveFormat::Docker, ArchiveFormat::Oci] {
        let (t, _s, out, rec) = saved(format);
        let s2 = Store::open(t.path().join("store2")).unwrap();
        let loaded = load_archive(&s2, fs_err::File::open(&out).unwrap()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            loaded[0].names,
            vec!["docker.io/library/busybox:1.0".to_owned()]
        );
        assert_eq!(loaded[0].record.manifest_digest, rec.manifest_digest);
        let rec2 = s2
            .resolve("docker.io/library/busybox:1.0")
            .unwrap()
            .unwrap();
        let out2 = t.path().join("img2.tar");
        save_archive(
            &s2,
            &[("docker.io/library/busybox:1.0".into(), rec2)],
            format,
            fs_err::File::create(&out2).unwrap(),
        )
        .unwrap();
        assert_eq!(fs_err::read(&out).unwrap(), fs_err::read(&out2).unwrap());
    }
}

#[test]
fn gzipped_archive_loads() {
    let (t, _s, out, rec) = saved(ArchiveFormat::Docker);
    let gz = t.path().join("img.tar.gz");
    let mut e = flate2::write::GzEncoder::new(
        fs_err::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut fs_err::File::open(&out).unwrap(), &mut e).unwrap();
    e.finish().unwrap();
    let s2 = Store::open(t.path().join("s2")).unwrap();
    let l = load_archive(&s2, fs_err::File::open(&gz).unwrap()).unwrap();
    assert_eq!(l[0].record.config_digest, rec.config_digest);
}

#[test]
fn docker_archive_has_docker_load_layout() {
    let (_t, _s, out, rec) = saved(ArchiveFormat::Docker);
    let mut ar = tar::Archive::new(fs_err::File::open(&out).unwrap());
    let mut manifest = None;
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if p == "manifest.json" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            manifest = Some(serde_json::from_str::<serde_json::Value>(&s).unwrap());
        }
        names.push(p);
    }
    let m = manifest.expect("manifest.json");
    assert_eq!(m[0]["RepoTags"][0], "busybox:1.0");
    let cfg = m[0]["Config"].as_str().unwrap();
    assert!(names.iter().any(|n| n == cfg), "{names:?}");
    assert!(names.iter().any(|n| n == "repositories"));
    for l in m[0]["Layers"].as_array().unwrap() {
        assert!(names.iter().any(|n| n == l.as_str().unwrap()));
    }
    assert!(cfg.ends_with(&rec.config_digest.hex()));
    if have("skopeo") {
        let o = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}", out.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn skopeo_accepts_our_oci_archive() {
    if !have("skopeo") {
        return;
    }
    let (_t, _s, out, rec) = saved(ArchiveFormat::Oci);
    let o = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", out.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Digest"], rec.manifest_digest.to_string());
    assert_eq!(v["Layers"][0], rec.layers[0].digest.to_string());
}

#[test]
fn umoci_unpacks_our_oci_archive() {
    if !have("umoci") || !is_root() {
        return;
    }
    let (t, _s, out, _rec) = saved(ArchiveFormat::Oci);
    let layout = t.path().join("layout");
    fs_err::create_dir_all(&layout).unwrap();
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(&out)
            .arg("-C")
            .arg(&layout)
            .status()
            .unwrap()
            .success()
    );
    let bundle = t.path().join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1.0", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert!(
        fs_err::symlink_metadata(bundle.join("rootfs/bin/sh"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn import_rootfs_makes_a_one_layer_image() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("s")).unwrap();
    let mut tarball = Vec::new();
    busybox_rootfs_tar(&mut tarball).unwrap();
    let rec = import_rootfs(
        &s,
        std::io::Cursor::new(tarball.clone()),
        "docker.io/library/imp:latest",
    )
    .unwrap();
    assert_eq!(rec.layers.len(), 1);
    assert_eq!(rec.layers[0].diff_id, kiln_oci::sha256(&tarball));
    assert!(s.resolve("docker.io/library/imp:latest").unwrap().is_some());
    // the layer applies to a working rootfs
    let dst = t.path().join("root");
    kiln_cache::apply_layer(
        s.open_blob(&rec.layers[0].digest).unwrap(),
        &dst,
        &Default::default(),
    )
    .unwrap();
    let o = Command::new(dst.join("bin/busybox"))
        .arg("true")
        .status()
        .unwrap();
    assert!(o.success());
}

#[test]
fn loads_a_legacy_docker_archive_written_by_skopeo() {
    if !have("skopeo") {
        return;
    }
    let (t, _s, out, rec) = saved(ArchiveFormat::Oci);
    let legacy = t.path().join("legacy.tar");
    let o = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci-archive:{}", out.display()))
        .arg(format!(
            "docker-archive:{}:busybox:legacy",
            legacy.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s2 = Store::open(t.path().join("s2")).unwrap();
    let loaded = load_archive(&s2, fs_err::File::open(&legacy).unwrap()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].names,
        vec!["docker.io/library/busybox:legacy".to_owned()]
    );
    assert_eq!(loaded[0].record.diff_ids(), rec.diff_ids());
    // and it unpacks to a working rootfs
    let snap = s2.prepare_snapshot(&loaded[0].record.layers).unwrap();
    assert!(snap.lowerdirs[0].join("bin/busybox").is_file());
}
