//! COPY/ADD semantics over real directories, one rule per test.

use super::fixture::{Tree, listing};
use crate::context::Matcher;
use crate::ops::copy::{CopyIds, CopyStats, Error, copy};
use kiln_graph::CopyAction;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

fn action(src: &[&str], dest: &str) -> CopyAction {
    CopyAction {
        src_input: 0,
        src: src.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        chown: None,
        chmod: None,
        extract_archive: false,
        exclude: Vec::new(),
        parents: false,
        link: false,
    }
}

/// A rootfs inside an outer directory, so escapes are visible as extra entries of the outer one.
struct Rootfs {
    outer: Tree,
}

impl Rootfs {
    fn new() -> Self {
        let outer = Tree::new().dir("rootfs");
        Rootfs { outer }
    }
    fn path(&self) -> std::path::PathBuf {
        self.outer.join("rootfs")
    }
    fn join(&self, rel: &str) -> std::path::PathBuf {
        self.path().join(rel)
    }
    fn read(&self, rel: &str) -> String {
        fs_err::read_to_string(self.join(rel)).expect("read")
    }
    /// Nothing but `rootfs/` exists beside the rootfs.
    fn assert_contained(&self) {
        let outer: Vec<String> = listing(self.outer.path())
            .into_iter()
            .filter(|p| !p.starts_with("rootfs/"))
            .collect();
        assert!(outer.is_empty(), "written outside the rootfs: {outer:?}");
    }
}

fn run(src: &Tree, root: &Rootfs, a: &CopyAction) -> Result<CopyStats, Error> {
    copy(src.path(), &root.path(), a, None, Some(&Matcher::default()))
}

fn mode(p: &Path) -> u32 {
    fs_err::symlink_metadata(p)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn file_to_a_file_name_creates_parents() {
    let src = Tree::new().file("a.txt", "A").mode("a.txt", 0o640);
    let old = std::fs::FileTimes::new().set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000));
    fs_err::File::options()
        .write(true)
        .open(src.join("a.txt"))
        .expect("open")
        .set_times(old)
        .expect("times");
    let root = Rootfs::new();
    let stats = run(&src, &root, &action(&["a.txt"], "/x/y/b.txt")).expect("copy");
    assert_eq!(root.read("x/y/b.txt"), "A");
    assert_eq!(mode(&root.join("x/y/b.txt")), 0o640);
    assert_eq!(mode(&root.join("x")), 0o755);
    assert_eq!(
        fs_err::metadata(root.join("x/y/b.txt"))
            .expect("stat")
            .mtime(),
        1_000_000
    );
    assert_eq!((stats.files, stats.dirs, stats.bytes), (1, 2, 1));
}

#[test]
fn trailing_slash_copies_into_the_directory() {
    let src = Tree::new().file("a.txt", "A");
    let root = Rootfs::new();
    run(&src, &root, &action(&["a.txt"], "/dir/")).expect("copy");
    assert_eq!(root.read("dir/a.txt"), "A");
    run(&src, &root, &action(&["./a.txt"], "/dir2/.")).expect("copy");
    assert_eq!(root.read("dir2/a.txt"), "A");
}

#[test]
fn existing_directory_without_slash_receives_the_file() {
    let src = Tree::new().file("a.txt", "A");
    let root = Rootfs::new();
    fs_err::create_dir_all(root.join("etc/app")).expect("mkdir");
    run(&src, &root, &action(&["a.txt"], "/etc/app")).expect("copy");
    assert_eq!(root.read("etc/app/a.txt"), "A");
}

#[test]
fn a_directory_copies_its_contents() {
    let src = Tree::new()
        .file("src/main.py", "m")
        .file("src/pkg/mod.py", "p")
        .mode("src/pkg", 0o750);
    let old = std::fs::FileTimes::new().set_modified(UNIX_EPOCH + Duration::from_secs(2_000_000));
    fs_err::File::open(src.join("src/pkg"))
        .expect("open dir")
        .set_times(old)
        .expect("times");
    let root = Rootfs::new();
    run(&src, &root, &action(&["src"], "/app")).expect("copy");
    assert_eq!(
        fs_err::metadata(root.join("app/pkg"))
            .expect("stat")
            .mtime(),
        2_000_000,
        "directory mtime kept although its children were written after it"
    );
    assert_eq!(root.read("app/main.py"), "m");
    assert_eq!(root.read("app/pkg/mod.py"), "p");
    assert!(!root.join("app/src").exists());
    assert_eq!(mode(&root.join("app/pkg")), 0o750);
    // The whole context (`.`) likewise.
    run(&src, &root, &action(&["."], "/all/")).expect("copy");
    assert_eq!(root.read("all/src/pkg/mod.py"), "p");
}

#[test]
fn several_sources_need_a_slash() {
    let src = Tree::new().file("a", "A").file("b", "B");
    let root = Rootfs::new();
    let err = run(&src, &root, &action(&["a", "b"], "/out")).unwrap_err();
    assert!(matches!(err, Error::DestNotDirectory { .. }));
    assert_eq!(
        err.to_string(),
        "When using COPY with more than one source file, the destination must be a directory and end with a /"
    );
    assert!(
        !root.join("out").exists(),
        "nothing written before the error"
    );
    run(&src, &root, &action(&["a", "b"], "/out/")).expect("copy");
    assert_eq!(
        (root.read("out/a"), root.read("out/b")),
        ("A".into(), "B".into())
    );
}

#[test]
fn wildcards_match_per_segment() {
    let src = Tree::new()
        .file("a.txt", "A")
        .file("b.txt", "B")
        .file("c.md", "C")
        .file("sub/d.txt", "D")
        .file("one.cfg", "1");
    let root = Rootfs::new();
    run(&src, &root, &action(&["*.txt"], "/w/")).expect("copy");
    assert_eq!(listing(&root.join("w")), ["a.txt", "b.txt"]);
    let err = run(&src, &root, &action(&["*.txt"], "/w2")).unwrap_err();
    assert!(matches!(err, Error::DestNotDirectory { .. }), "{err}");
    // One match behaves as that single file.
    run(&src, &root, &action(&["*.cfg"], "/etc/app.cfg")).expect("copy");
    assert_eq!(root.read("etc/app.cfg"), "1");
    run(&src, &root, &action(&["s?b/[a-d].txt"], "/x/")).expect("copy");
    assert_eq!(root.read("x/d.txt"), "D");
    // A wildcard matching nothing copies nothing (BuildKit allows it).
    let stats = run(&src, &root, &action(&["*.none"], "/n/")).expect("copy");
    assert_eq!(stats, CopyStats::default());
}

#[test]
fn chown_applies_to_files_and_created_directories() {
    let src = Tree::new().file("d/f", "F");
    let root = Rootfs::new();
    let ids = CopyIds {
        uid: 1234,
        gid: 4321,
    };
    copy(
        src.path(),
        &root.path(),
        &action(&["d"], "/a/b/"),
        Some(ids),
        None,
    )
    .expect("copy");
    for p in ["a", "a/b", "a/b/f"] {
        let m = fs_err::metadata(root.join(p)).expect("stat");
        assert_eq!((m.uid(), m.gid()), (1234, 4321), "{p}");
    }
    // Without --chown a context copy is root-owned; a stage copy keeps the source owner.
    std::os::unix::fs::chown(src.join("d/f"), Some(77), Some(88)).expect("chown");
    run(&src, &root, &action(&["d/f"], "/root-owned")).expect("copy");
    let m = fs_err::metadata(root.join("root-owned")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (0, 0));
    copy(
        src.path(),
        &root.path(),
        &action(&["d/f"], "/kept"),
        None,
        None,
    )
    .expect("copy");
    let m = fs_err::metadata(root.join("kept")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (77, 88));
}

#[test]
fn chmod_sets_modes_and_rejects_garbage() {
    let src = Tree::new().file("d/f", "F").mode("d/f", 0o600);
    let root = Rootfs::new();
    let mut a = action(&["d"], "/out/");
    a.chmod = Some("0751".into());
    run(&src, &root, &a).expect("copy");
    assert_eq!(mode(&root.join("out/f")), 0o751);
    a.chmod = Some("g+r,u+x".into());
    run(&src, &root, &a).expect("symbolic");
    assert_eq!(mode(&root.join("out/f")), 0o740);
    a.chmod = Some("u+q".into());
    assert!(matches!(run(&src, &root, &a), Err(Error::InvalidChmod(_))));
    a.chmod = Some("99".into());
    assert!(matches!(run(&src, &root, &a), Err(Error::InvalidChmod(_))));
}

#[test]
fn parents_keeps_source_directories() {
    let src = Tree::new().file("a/b/c.txt", "C").file("a/x/c.txt", "X");
    let root = Rootfs::new();
    let mut a = action(&["a/*/c.txt"], "/out/");
    a.parents = true;
    run(&src, &root, &a).expect("copy");
    assert_eq!(root.read("out/a/b/c.txt"), "C");
    assert_eq!(root.read("out/a/x/c.txt"), "X");
}

#[test]
fn exclude_patterns_skip_entries() {
    let src = Tree::new()
        .file("app/main.py", "m")
        .file("app/README.md", "r")
        .file("app/cache/x.pyc", "c")
        .file("homer.txt", "h")
        .file("homework.py", "w");
    let root = Rootfs::new();
    let mut a = action(&["app"], "/app/");
    a.exclude = vec!["*.md".into(), "cache".into()];
    run(&src, &root, &a).expect("copy");
    assert_eq!(listing(&root.join("app")), ["main.py"]);
    let mut a = action(&["hom*"], "/h/");
    a.exclude = vec!["*.txt".into()];
    run(&src, &root, &a).expect("copy");
    assert_eq!(listing(&root.join("h")), ["homework.py"]);
}

#[test]
fn dockerignore_applies_to_context_copies() {
    let src = Tree::new()
        .file("app/main.py", "m")
        .file("app/secret.env", "s")
        .file("node_modules/x", "x");
    let root = Rootfs::new();
    let ignore = Matcher::new(&["**/*.env", "node_modules"]).expect("patterns");
    copy(
        src.path(),
        &root.path(),
        &action(&["."], "/c/"),
        Some(CopyIds::ROOT),
        Some(&ignore),
    )
    .expect("copy");
    assert_eq!(listing(&root.join("c")), ["app/", "app/main.py"]);
    let err = copy(
        src.path(),
        &root.path(),
        &action(&["app/secret.env"], "/c/"),
        None,
        Some(&ignore),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to compute cache key: \"/app/secret.env\": not found"
    );
}

#[test]
fn symlinks_inside_are_copied_as_links_and_a_top_level_link_is_followed() {
    let src = Tree::new()
        .file("d/real.txt", "R")
        .symlink("d/rel", "real.txt")
        .symlink("d/etc", "/etc")
        .symlink("top", "d/real.txt");
    let root = Rootfs::new();
    run(&src, &root, &action(&["d"], "/d/")).expect("copy");
    assert_eq!(
        fs_err::read_link(root.join("d/rel")).expect("link"),
        Path::new("real.txt")
    );
    assert_eq!(
        fs_err::read_link(root.join("d/etc")).expect("link"),
        Path::new("/etc")
    );
    run(&src, &root, &action(&["top"], "/t/")).expect("copy");
    let m = fs_err::symlink_metadata(root.join("t/top")).expect("stat");
    assert!(m.is_file(), "top-level link followed");
    assert_eq!(root.read("t/top"), "R");
}

#[test]
fn source_links_never_read_outside_the_source_root() {
    let outside = Tree::new().file("secret", "S");
    let src = Tree::new()
        .symlink("abs", &outside.join("secret").to_string_lossy())
        .symlink("up", "../../../../../../../../etc/passwd");
    let root = Rootfs::new();
    for s in ["abs", "up"] {
        let err = run(&src, &root, &action(&[s], "/x")).unwrap_err();
        assert!(err.to_string().contains("not found"), "{s}: {err}");
    }
    assert!(!root.join("x").exists());
}

#[test]
fn hardlinks_are_preserved_within_one_copy() {
    let src = Tree::new().file("d/a", "same");
    fs_err::hard_link(src.join("d/a"), src.join("d/b")).expect("link");
    let root = Rootfs::new();
    let stats = run(&src, &root, &action(&["d"], "/h/")).expect("copy");
    let a = fs_err::metadata(root.join("h/a")).expect("a");
    let b = fs_err::metadata(root.join("h/b")).expect("b");
    assert_eq!(a.ino(), b.ino());
    assert_eq!((stats.files, stats.hardlinks), (1, 1));
}

#[test]
fn missing_source_is_an_error_naming_it() {
    let src = Tree::new().file("a", "A");
    let root = Rootfs::new();
    let err = run(&src, &root, &action(&["a", "missing.txt"], "/o/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to compute cache key: \"/missing.txt\": not found"
    );
    assert!(!root.join("o").exists(), "nothing written before the error");
}

#[test]
fn hostile_destination_symlinks_stay_inside_the_rootfs() {
    let src = Tree::new().file("a.txt", "A").file("d/f", "F");
    let root = Rootfs::new();
    fs_err::create_dir_all(root.join("etc")).expect("mkdir");
    fs_err::os::unix::fs::symlink("/etc", root.join("app")).expect("link");
    fs_err::os::unix::fs::symlink("../../../../../../..", root.join("up")).expect("link");
    let outer_escape = root.outer.join("victim");
    fs_err::write(&outer_escape, "original").expect("victim");
    fs_err::os::unix::fs::symlink(&outer_escape, root.join("target")).expect("link");
    fs_err::os::unix::fs::symlink("../victim", root.join("rel-target")).expect("link");

    run(&src, &root, &action(&["a.txt"], "/app/x")).expect("through /app");
    assert_eq!(
        root.read("etc/x"),
        "A",
        "absolute link resolved in the rootfs"
    );
    run(&src, &root, &action(&["d"], "/up/tmp/deep/")).expect("through /up");
    assert_eq!(root.read("tmp/deep/f"), "F", ".. clamped at the rootfs");
    run(&src, &root, &action(&["a.txt"], "/target")).expect("over a link");
    run(&src, &root, &action(&["a.txt"], "/rel-target")).expect("over a link");
    assert!(
        fs_err::symlink_metadata(root.join("target"))
            .expect("stat")
            .is_file()
    );
    assert_eq!(
        fs_err::read_to_string(&outer_escape).expect("victim"),
        "original"
    );
    fs_err::remove_file(&outer_escape).expect("cleanup victim");
    root.assert_contained();
    assert!(!Path::new("/etc/x").exists());
}

fn tar_fixture(src: &Tree, flag: Option<&str>, name: &str) {
    let mut cmd = Command::new("tar");
    cmd.arg("-C")
        .arg(src.join("payload"))
        .arg("-cf")
        .arg(src.join(name));
    if let Some(f) = flag {
        cmd.arg(f);
    }
    let status = cmd.arg(".").status().expect("run tar");
    assert!(status.success());
}

#[test]
fn add_extracts_local_archives_by_magic() {
    let src = Tree::new()
        .file("payload/bin/tool", "#!/bin/sh\n")
        .mode("payload/bin/tool", 0o755)
        .file("payload/etc/conf", "c")
        .symlink("payload/lnk", "etc/conf");
    // Names that lie about the format: detection is by content.
    let formats = [
        (None, "plain.bin"),
        (Some("-z"), "gz.data"),
        (Some("-j"), "bz.tar"),
        (Some("-J"), "xz.zip"),
        (Some("--zstd"), "zst.img"),
    ];
    for (flag, name) in formats {
        tar_fixture(&src, flag, name);
    }
    let src = src.file("not-an-archive.tar.gz", "plain text");
    for (_, name) in formats {
        let root = Rootfs::new();
        let mut a = action(&[name], "/opt");
        a.extract_archive = true;
        let stats = run(&src, &root, &a).expect(name);
        assert_eq!(stats.archives, 1, "{name}");
        assert_eq!(root.read("opt/etc/conf"), "c", "{name}");
        assert_eq!(mode(&root.join("opt/bin/tool")), 0o755, "{name}");
        assert_eq!(
            fs_err::read_link(root.join("opt/lnk")).expect("link"),
            Path::new("etc/conf")
        );
    }
    let root = Rootfs::new();
    let mut a = action(&["not-an-archive.tar.gz"], "/opt/");
    a.extract_archive = true;
    let stats = run(&src, &root, &a).expect("copy");
    assert_eq!((stats.archives, stats.files), (0, 1));
    assert_eq!(root.read("opt/not-an-archive.tar.gz"), "plain text");
    // COPY never extracts.
    let root = Rootfs::new();
    run(&src, &root, &action(&["gz.data"], "/opt/")).expect("copy");
    assert!(root.join("opt/gz.data").is_file());
}

#[test]
fn archive_entries_cannot_escape() {
    // Hand-built tar: `../../escaped`, `/abs`, a symlink to /etc then a file through it.
    let mut builder = tar::Builder::new(Vec::new());
    let add_file = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Bypass the builder's own path checks: write the raw name.
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).expect("append");
    };
    add_file(&mut builder, "../../escaped", b"e");
    add_file(&mut builder, "/abs", b"a");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    builder
        .append_link(&mut h, "etc-link", "/etc")
        .expect("link");
    add_file(&mut builder, "etc-link/evil", b"x");
    let bytes = builder.into_inner().expect("tar");
    let src = Tree::new();
    fs_err::write(src.join("evil.tar"), bytes).expect("write");
    let root = Rootfs::new();
    let mut a = action(&["evil.tar"], "/x/");
    a.extract_archive = true;
    run(&src, &root, &a).expect("extract");
    assert_eq!(root.read("x/escaped"), "e");
    assert_eq!(root.read("x/abs"), "a");
    assert_eq!(
        root.read("etc/evil"),
        "x",
        "symlink resolved inside the rootfs"
    );
    assert!(!Path::new("/etc/evil").exists());
    root.assert_contained();
}

#[test]
fn add_keeps_archive_owners_unless_chown() {
    let src = Tree::new().file("payload/f", "F");
    let status = Command::new("tar")
        .arg("-C")
        .arg(src.join("payload"))
        .args(["--owner=1234", "--group=4321", "--numeric-owner", "-czf"])
        .arg(src.join("owned.tgz"))
        .arg("f")
        .status()
        .expect("run tar");
    assert!(status.success());
    let mut a = action(&["owned.tgz"], "/x/");
    a.extract_archive = true;
    let root = Rootfs::new();
    run(&src, &root, &a).expect("extract");
    let m = fs_err::metadata(root.join("x/f")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (1234, 4321));
    let root = Rootfs::new();
    copy(
        src.path(),
        &root.path(),
        &a,
        Some(CopyIds { uid: 7, gid: 8 }),
        Some(&Matcher::default()),
    )
    .expect("extract");
    let m = fs_err::metadata(root.join("x/f")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (7, 8));
}

#[test]
fn existing_files_are_replaced_and_directories_are_not() {
    let src = Tree::new().file("d/name", "new").file("f", "F");
    let root = Rootfs::new();
    fs_err::create_dir_all(root.join("out/name")).expect("mkdir");
    fs_err::write(root.join("out/name/keep"), "k").expect("write");
    fs_err::write(root.join("file"), "old").expect("write");
    run(&src, &root, &action(&["f"], "/file")).expect("replace a file");
    assert_eq!(root.read("file"), "F");
    let err = run(&src, &root, &action(&["d"], "/out/")).unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(root.read("out/name/keep"), "k");
}

#[test]
fn many_files_are_written_in_parallel_correctly() {
    let mut src = Tree::new();
    for i in 0..300 {
        src = src.file(&format!("big/d{}/f{i}", i % 5), &format!("content {i}"));
    }
    let src = src.mode("big/d1/f1", 0o700).symlink("big/d2/link", "f2");
    fs_err::hard_link(src.join("big/d0/f0"), src.join("big/d3/hard")).expect("link");
    let root = Rootfs::new();
    let stats = copy(
        src.path(),
        &root.path(),
        &action(&["big"], "/big/"),
        Some(CopyIds { uid: 5, gid: 6 }),
        None,
    )
    .expect("copy");
    assert_eq!((stats.files, stats.symlinks, stats.hardlinks), (300, 1, 1));
    for i in 0..300 {
        let p = root.join(&format!("big/d{}/f{i}", i % 5));
        assert_eq!(
            fs_err::read_to_string(&p).expect("read"),
            format!("content {i}")
        );
        assert_eq!(fs_err::metadata(&p).expect("stat").uid(), 5);
    }
    assert_eq!(mode(&root.join("big/d1/f1")), 0o700);
    assert_eq!(
        fs_err::metadata(root.join("big/d3/hard"))
            .expect("stat")
            .ino(),
        fs_err::metadata(root.join("big/d0/f0"))
            .expect("stat")
            .ino()
    );
}

/// dockerfile_parents_test.go testCopyRelativeParents: `--parents` keeps the path below the
/// first `./` pivot, else all of it, with wildcards, `**` and several sources.
#[test]
fn parents_pivot_wildcards_and_double_star() {
    let src = Tree::new()
        .file("a/b/c/d/foo", "F")
        .file("a/b/c/d/e/bay", "Y")
        .file("a/b2/c/d/e/bar", "R")
        .file("a/b/c2/d/e/baz", "Z")
        .file("a/b/c2/d/e2/baz", "Z2");
    let root = Rootfs::new();
    let parents = |srcs: &[&str], dest: &str| {
        let mut a = action(srcs, dest);
        a.parents = true;
        run(&src, &root, &a).expect("copy");
    };
    parents(&["a/./b/c"], "/ctx/");
    assert_eq!(root.read("ctx/b/c/d/foo"), "F");
    assert!(!root.join("ctx/a").exists());
    parents(&["a/b/./c/d"], "/middle/");
    assert_eq!(
        listing(&root.join("middle")),
        ["c/", "c/d/", "c/d/e/", "c/d/e/bay", "c/d/foo"]
    );
    parents(&["a/b/c/d"], "/full/");
    assert_eq!(root.read("full/a/b/c/d/foo"), "F");
    parents(&["a/./b/./c"], "/double/");
    assert_eq!(root.read("double/b/c/d/foo"), "F");
    parents(&["a/./*/c"], "/wild/");
    assert_eq!(root.read("wild/b/c/d/foo"), "F");
    assert_eq!(root.read("wild/b2/c/d/e/bar"), "R");
    parents(&["a/b*/./c/**/e"], "/dw/");
    assert_eq!(
        listing(&root.join("dw")),
        ["c/", "c/d/", "c/d/e/", "c/d/e/bar", "c/d/e/bay"]
    );
    parents(&["a/b/c*/./d/**/baz", "a/b*/./c/**/bar"], "/in/");
    assert_eq!(
        listing(&root.join("in")),
        [
            "c/",
            "c/d/",
            "c/d/e/",
            "c/d/e/bar",
            "d/",
            "d/e/",
            "d/e/baz",
            "d/e2/",
            "d/e2/baz"
        ]
    );
    // `**` matches no directory too.
    let mut a = action(&["a/**/foo"], "/z/");
    a.parents = true;
    run(&src, &root, &a).expect("copy");
    assert_eq!(root.read("z/a/b/c/d/foo"), "F");
    run(&src, &root, &action(&["**/bar"], "/flat/")).expect("copy");
    assert_eq!(listing(&root.join("flat")), ["bar"]);
}

/// dockerfile_add_test.go testDockerfileAddArchiveWildcard and exclude_patterns_test.go
/// testExcludedFilesOnCopy: one wildcard matching several directories merges them into a
/// destination without a trailing slash; several files there are still an error.
#[test]
fn one_wildcard_merges_several_directories_into_the_destination() {
    let src = Tree::new()
        .file("dir1/x", "1")
        .file("dir2/y", "2")
        .file("dir2/skip.mp3", "s")
        .file("f1", "a")
        .file("f2", "b");
    let root = Rootfs::new();
    let mut a = action(&["dir*"], "/m");
    a.exclude = vec!["*.mp3".into()];
    run(&src, &root, &a).expect("copy");
    assert_eq!(listing(&root.join("m")), ["x", "y"]);
    let err = run(&src, &root, &action(&["f*"], "/w")).unwrap_err();
    assert!(matches!(err, Error::DestNotDirectory { .. }), "{err}");
    let err = run(&src, &root, &action(&["dir1", "dir2"], "/two")).unwrap_err();
    assert!(matches!(err, Error::DestNotDirectory { .. }), "{err}");
}

/// dockerfile_copy_test.go testCopyChownExistingDir and testCopyChmod: a destination directory
/// the copy creates is 0:0 and 0755 (its content keeps its owners and modes), an existing one
/// is kept, and the parents a copy creates take an octal `--chmod`.
#[test]
fn created_destination_and_parents_owner_and_mode() {
    let src = Tree::new()
        .file("d/sub/f", "F")
        .mode("d/sub", 0o750)
        .mode("d", 0o700)
        .file("foo", "x");
    std::os::unix::fs::chown(src.join("d"), Some(100), Some(200)).expect("chown");
    std::os::unix::fs::chown(src.join("d/sub"), Some(101), Some(201)).expect("chown");
    let root = Rootfs::new();
    // From another stage (no context ignore file): owners are kept.
    let from_stage = |a: &CopyAction| copy(src.path(), &root.path(), a, None, None);
    from_stage(&action(&["d"], "/out")).expect("copy");
    let owner = |p: &str| {
        let m = fs_err::symlink_metadata(root.join(p)).expect("stat");
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(owner("out"), (0, 0, 0o755));
    assert_eq!(owner("out/sub"), (101, 201, 0o750));
    fs_err::create_dir(root.join("existing")).expect("mkdir");
    std::os::unix::fs::chown(root.join("existing"), Some(500), Some(600)).expect("chown");
    from_stage(&action(&["d"], "/existing")).expect("copy");
    assert_eq!(owner("existing").0, 500);
    assert_eq!(owner("existing/sub"), (101, 201, 0o750));

    let mut a = action(&["foo"], "/parent/sub/foo");
    a.chmod = Some("770".into());
    run(&src, &root, &a).expect("copy");
    assert_eq!(mode(&root.join("parent")), 0o770);
    assert_eq!(mode(&root.join("parent/sub")), 0o770);
    assert_eq!(mode(&root.join("parent/sub/foo")), 0o770);
    let mut a = action(&["foo"], "/sym/sub/foo");
    a.chmod = Some("u+x".into());
    run(&src, &root, &a).expect("copy");
    assert_eq!(
        mode(&root.join("sym/sub")),
        0o755,
        "symbolic modes leave parents 0755"
    );
}
