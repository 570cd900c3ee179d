//! Test fixtures: a directory blob store, a real `docker-registry` process, test images.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kiln_oci::{Descriptor, Digest};
use kiln_registry_client::{BlobSink, BlobStore};
use sha2::{Digest as _, Sha256};

/// Panics with `msg` and the error; tests only.
pub trait OrDie<T> {
    fn or_die(self, msg: &str) -> T;
}

impl<T, E: std::fmt::Display> OrDie<T> for Result<T, E> {
    fn or_die(self, msg: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("{msg}: {e}"),
        }
    }
}

/// A content store in a temp dir: `blobs/<alg>/<hex>`, writes staged in `tmp/`.
pub struct DirStore {
    pub dir: tempfile::TempDir,
}

impl DirStore {
    pub fn new() -> DirStore {
        let dir = tempfile::tempdir().or_die("tempdir");
        fs_err::create_dir_all(dir.path().join("tmp")).or_die("mkdir tmp");
        DirStore { dir }
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.dir
            .path()
            .join("blobs")
            .join(d.algorithm())
            .join(d.hex())
    }

    /// Stores bytes directly and returns their descriptor.
    pub fn put(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let digest = kiln_oci::sha256(bytes);
        let path = self.path(&digest);
        fs_err::create_dir_all(path.parent().or_die_opt()).or_die("mkdir");
        fs_err::write(&path, bytes).or_die("write blob");
        Descriptor::new(media_type, bytes.len() as u64, digest)
    }

    pub fn read(&self, d: &Digest) -> Vec<u8> {
        fs_err::read(self.path(d)).or_die("read blob")
    }

    /// Files left in the staging directory (uncommitted writes not cleaned up).
    pub fn staged(&self) -> usize {
        fs_err::read_dir(self.dir.path().join("tmp"))
            .or_die("read tmp")
            .count()
    }
}

pub trait OrDieOpt<T> {
    fn or_die_opt(self) -> T;
}

impl<T> OrDieOpt<T> for Option<T> {
    fn or_die_opt(self) -> T {
        match self {
            Some(v) => v,
            None => panic!("unexpected None"),
        }
    }
}

static SINK_ID: AtomicUsize = AtomicUsize::new(0);

struct DirSink {
    file: fs_err::File,
    hasher: Sha256,
    tmp: PathBuf,
    root: PathBuf,
    committed: bool,
}

impl Write for DirSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl BlobSink for DirSink {
    fn commit(mut self: Box<Self>, expected: &Digest) -> std::io::Result<()> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if actual != expected.to_string() {
            return Err(std::io::Error::other("digest mismatch at commit"));
        }
        let dest = self
            .root
            .join("blobs")
            .join(expected.algorithm())
            .join(expected.hex());
        if let Some(parent) = dest.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::rename(&self.tmp, dest)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for DirSink {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs_err::remove_file(&self.tmp);
        }
    }
}

impl BlobStore for DirStore {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }
    fn blob_size(&self, digest: &Digest) -> std::io::Result<u64> {
        Ok(fs_err::metadata(self.path(digest))?.len())
    }
    fn open_blob(&self, digest: &Digest) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(fs_err::File::open(self.path(digest))?))
    }
    fn begin_blob(&self) -> std::io::Result<Box<dyn BlobSink>> {
        let n = SINK_ID.fetch_add(1, Ordering::SeqCst);
        let tmp = self.dir.path().join("tmp").join(format!("w{n}"));
        let file = fs_err::File::create(&tmp)?;
        Ok(Box::new(DirSink {
            file,
            hasher: Sha256::new(),
            tmp,
            root: self.dir.path().to_owned(),
            committed: false,
        }))
    }
}

/// Fails the test, naming the Debian package, when a binary is missing.
pub fn require(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(binary);
        if p.is_file() {
            return p;
        }
    }
    panic!("{binary} is required for this test: install the Debian package `{package}`");
}

/// A `docker-registry` on 127.0.0.1 with temp storage; killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Registry {
    /// Plain registry, no auth.
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// Registry requiring basic auth for `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Registry {
        let bin = require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().or_die("tempdir");
        let port = free_port();
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash(password, 5).or_die("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            fs_err::write(&htpasswd, format!("{user}:{hash}\n")).or_die("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs_err::write(&config_path, config).or_die("write config");
        let log = dir.path().join("registry.log");
        let out = fs_err::File::create(&log).or_die("log file");
        let (out, _) = out.into_parts();
        let err = out.try_clone().or_die("dup log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .or_die("spawn docker-registry");
        let mut reg = Registry {
            child,
            port,
            _dir: dir,
            log,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{}", self.log_text());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen in time:\n{}",
            self.log_text()
        );
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        fs_err::read_to_string(&self.log).unwrap_or_default()
    }

    /// Access-log request lines (`"METHOD /path HTTP/1.1"`) so far.
    pub fn requests(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|l| {
                let start = l.find("\"")? + 1;
                let rest = &l[start..];
                let end = rest.find(" HTTP/")?;
                let req = &rest[..end];
                let method = req.split(' ').next()?;
                ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
                    .contains(&method)
                    .then(|| req.to_owned())
            })
            .collect()
    }

    /// Number of access-log requests matching `method` whose path contains `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(&format!("{method} ")) && r.contains(needle))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").or_die("bind");
    l.local_addr().or_die("addr").port()
}

/// An image assembled in the store.
pub struct TestImage {
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl TestImage {
    pub fn blobs(&self) -> Vec<Descriptor> {
        let mut v = vec![self.config.clone()];
        v.extend(self.layers.iter().cloned());
        v
    }
}

/// A tar with the given files.
pub fn tar_layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, *data).or_die("tar append");
    }
    b.into_inner().or_die("tar finish")
}

/// Builds an OCI image (one layer per entry of `layers`) for `arch` into `store`.
pub fn build_image(store: &DirStore, arch: &str, layers: &[Vec<u8>]) -> TestImage {
    let layer_descs: Vec<Descriptor> = layers
        .iter()
        .map(|l| store.put(kiln_oci::media_type::OCI_LAYER_GZIP, l))
        .collect();
    let diff_ids: Vec<String> = layer_descs.iter().map(|d| d.digest.to_string()).collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config_bytes = serde_json::to_vec(&config).or_die("config json");
    let config = store.put(kiln_oci::media_type::OCI_CONFIG, &config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layer_descs,
    });
    let manifest = serde_json::to_vec(&manifest).or_die("manifest json");
    TestImage {
        digest: kiln_oci::sha256(&manifest),
        manifest,
        media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
        config,
        layers: layer_descs,
    }
}

/// A [`BlobMaker`](kiln_registry_client::BlobMaker) over a store of its own: writes `data`
/// in 64 KiB pieces into the upload and a store sink, keeping the blob once all of it is
/// written (as the solver's layer compressor does). `claim` is the digest it reports instead
/// of the real one (a maker that lies).
pub struct TestMaker {
    pub store: DirStore,
    pub data: Vec<u8>,
    pub claim: Option<Digest>,
    /// Times `make` ran.
    pub runs: AtomicUsize,
}

impl TestMaker {
    pub fn new(data: Vec<u8>) -> std::sync::Arc<TestMaker> {
        std::sync::Arc::new(TestMaker {
            store: DirStore::new(),
            data,
            claim: None,
            runs: AtomicUsize::new(0),
        })
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            "application/octet-stream",
            self.data.len() as u64,
            self.claim
                .clone()
                .unwrap_or_else(|| kiln_oci::sha256(&self.data)),
        )
    }
}

impl kiln_registry_client::BlobMaker for TestMaker {
    fn name(&self) -> String {
        "test blob".to_owned()
    }
    fn make(&self, out: &mut dyn Write) -> std::io::Result<Descriptor> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let mut sink = self.store.begin_blob()?;
        for piece in self.data.chunks(64 * 1024) {
            out.write_all(piece)?;
            sink.write_all(piece)?;
        }
        sink.commit(&kiln_oci::sha256(&self.data))?;
        Ok(self.descriptor())
    }
    fn made(&self) -> std::io::Result<Option<Descriptor>> {
        let desc = self.descriptor();
        Ok(self.store.has_blob(&desc.digest).then_some(desc))
    }
}

/// `n` bytes that do not compress.
pub fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
