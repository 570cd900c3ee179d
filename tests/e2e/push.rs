//! Push of images whose layers are stored uncompressed (docker archives): each such layer is
//! compressed while it uploads, once; the next push sends the kept blob.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::{Kiln, Registry, repo_root, sandbox_available, skopeo_raw, text};

fn sha256(b: &[u8]) -> String {
    let d = sha2::Sha256::digest(b);
    format!(
        "sha256:{}",
        d.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// A tar of one file.
fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, name, data).expect("tar append");
    b.into_inner().expect("tar finish")
}

/// `n` bytes that do not compress.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `n` bytes of text that compress well.
fn prose(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(
            format!("line {i} of a layer that compresses {}\n", i % 97).as_bytes(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

/// A docker archive (`docker save`'s format: plain tar layers) of an image named `tag` with
/// one layer per tar.
fn docker_archive(path: &Path, tag: &str, layers: &[Vec<u8>]) {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/data"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap();
    let config_name = format!("{}.json", sha256(&config).trim_start_matches("sha256:"));
    let layer_names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": layer_names,
    }]))
    .unwrap();
    let mut b = tar::Builder::new(fs_err::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&config_name, &config);
    for (name, l) in layer_names.iter().zip(layers) {
        add(name, l);
    }
    add("manifest.json", &manifest);
    b.into_inner().unwrap().flush().unwrap();
}

/// A registry that opens upload sessions and then hangs up in the middle of every blob
/// streamed to it (chunked PATCH), as one that goes away mid-push.
fn hang_up_registry() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, sock) in listener.incoming().enumerate() {
            let Ok(sock) = sock else { return };
            std::thread::spawn(move || answer(sock, n));
        }
    });
    port
}

fn answer(mut sock: TcpStream, n: usize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match sock.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut words = head.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let reply = |sock: &mut TcpStream, status: &str, extra: &str| {
        let _ = write!(
            sock,
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n"
        );
    };
    match method {
        "PATCH" => {
            // Take a little of the stream, then go away without an answer.
            let mut buf = vec![0u8; 1 << 20];
            let _ = sock.read_exact(&mut buf);
        }
        "POST" => {
            let repo = path
                .trim_start_matches("/v2/")
                .split("/blobs/")
                .next()
                .unwrap_or("");
            reply(
                &mut sock,
                "202 Accepted",
                &format!("Location: /v2/{repo}/blobs/uploads/u{n}\r\n"),
            );
        }
        "PUT" => {
            let mut body = vec![0u8; length];
            let _ = sock.read_exact(&mut body);
            reply(&mut sock, "201 Created", "");
        }
        "GET" if path == "/v2/" => reply(&mut sock, "200 OK", ""),
        _ => reply(&mut sock, "404 Not Found", ""),
    }
}

/// Files under `dir`, recursively, but for lock files.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs_err::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if !p.to_string_lossy().ends_with("lock") {
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

/// `kiln push` with debug logs of the solver; (status ok, stderr).
fn push(k: &Kiln, target: &str) -> (bool, String) {
    let out = k
        .command()
        .env("KILN_LOG", "kiln_solver=debug,kiln_cache=debug")
        .args(["push", target])
        .output()
        .unwrap();
    (out.status.success(), text(&out.stderr))
}

#[test]
fn a_docker_archive_is_compressed_while_it_uploads_once_and_the_kept_blobs_go_next_time() {
    if !sandbox_available() {
        return;
    }
    let (Some(reg), Some(other)) = (Registry::start(), Registry::start()) else {
        return;
    };
    let k = Kiln::empty();
    let work = tempfile::tempdir_in(repo_root().join("target")).unwrap();
    let archive = work.path().join("plain.tar");
    // A layer that compresses well, and one larger than every buffer between the compressor
    // and the registry (so a registry that hangs up stops it mid-stream).
    let layers = [
        tar_of("prose.txt", &prose(3 << 20)),
        tar_of("noise.bin", &noise(40 << 20)),
    ];
    docker_archive(&archive, "kiln-test/plain:1", &layers);
    k.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
    // The big layer alone, for the registry that hangs up (a small layer may be whole, and
    // kept, before the hang-up is noticed).
    let big = work.path().join("big.tar");
    docker_archive(&big, "kiln-test/big:1", &layers[1..]);
    k.ok(&["load", "-q", "-i", big.to_str().unwrap()]);
    let local: Value = serde_json::from_str(&k.ok(&["inspect", "kiln-test/plain:1"])).unwrap();
    let diff_ids = local[0]["RootFS"]["Layers"].clone();
    assert_eq!(diff_ids.as_array().map(Vec::len), Some(2), "{local}");
    let blobs = k.root.path().join("blobs/sha256");
    let stored_before = files(&blobs);

    // A registry that goes away mid-stream: a clear error, and nothing half made is kept.
    let gone = format!("127.0.0.1:{}/kiln/gone:1", hang_up_registry());
    k.ok(&["tag", "kiln-test/big:1", &gone]);
    let (ok, err) = push(&k, &gone);
    assert!(!ok, "a push to a registry that hung up succeeded:\n{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with(&format!("error: push {gone}: PATCH http://"))),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("compressed while it uploaded"), "{err}");
    assert_eq!(files(&blobs), stored_before, "a broken push kept a blob");
    assert_eq!(files(&k.root.path().join("tmp")), Vec::<String>::new());

    // The first push compresses both layers while they upload (no variant was recorded by
    // the broken push)...
    let target = format!("{}/kiln/plain:1", reg.host());
    k.ok(&["tag", "kiln-test/plain:1", &target]);
    let (ok, err) = push(&k, &target);
    assert!(ok, "{err}");
    assert!(
        err.contains("3 blobs uploaded (2 compressed while uploading)"),
        "{err}"
    );
    let made: Vec<String> = err
        .lines()
        .filter(|l| l.contains("layer compressed while it uploaded"))
        .filter_map(|l| {
            Some(
                l.split(" to=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(made.len(), 2, "{err}");
    let pushed = skopeo_raw(&target);
    let pushed_layers = pushed["layers"].as_array().unwrap();
    assert_eq!(pushed_layers.len(), 2);
    for l in pushed_layers {
        let media = l["mediaType"].as_str().unwrap();
        assert!(media.ends_with("tar+gzip"), "{pushed}");
        let digest = l["digest"].as_str().unwrap();
        assert!(made.iter().any(|m| m == digest), "{digest} not in {made:?}");
        // The store keeps the very bytes the registry got, as the layer's gzip variant.
        let kept = fs_err::read(blobs.join(digest.trim_start_matches("sha256:"))).unwrap();
        assert_eq!(sha256(&kept), digest);
        assert_eq!(kept.len() as u64, l["size"].as_u64().unwrap());
        assert_eq!(&kept[..2], &[0x1f, 0x8b], "not gzip");
    }
    // The compressible layer went out compressed.
    assert!(
        pushed_layers[0]["size"].as_u64().unwrap() < (1 << 20),
        "{pushed}"
    );

    // ...a second push, to another registry, uploads the kept blobs without compressing.
    let elsewhere = format!("{}/kiln/again:1", other.host());
    k.ok(&["tag", "kiln-test/plain:1", &elsewhere]);
    let (ok, err) = push(&k, &elsewhere);
    assert!(ok, "{err}");
    assert!(err.contains("3 blobs uploaded, "), "{err}");
    assert!(!err.contains("compressed while"), "{err}");
    assert!(!err.contains("layer compressed again"), "{err}");
    assert_eq!(skopeo_raw(&elsewhere)["layers"], pushed["layers"]);

    // skopeo reads what was pushed as a valid image (digests and diffIDs verified)...
    crate::support::skopeo_copies(&target);
    // ...and a pull of it into another store gives the same layers back.
    let fresh = Kiln::empty();
    fresh.ok(&["pull", &elsewhere]);
    let back: Value = serde_json::from_str(&fresh.ok(&["inspect", &elsewhere])).unwrap();
    assert_eq!(back[0]["RootFS"]["Layers"], diff_ids);
    assert_eq!(back[0]["Id"], local[0]["Id"]);
}
