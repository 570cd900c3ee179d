//! Lexical path handling for destinations, sources and working directories (Go's `path.Clean`
//! rules, Unix separators only).

/// `path.Clean` of Go: removes `.` and empty elements, resolves `..` lexically; rooted paths
/// stay rooted (`..` above the root is dropped); an empty result is `.` (or `/`).
pub(crate) fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// The absolute destination of COPY/ADD: relative paths join the working directory; a trailing
/// `/` (or `/.`, or `.` alone) is kept as "into this directory".
pub(crate) fn dest_path(cwd: &str, dest: &str) -> String {
    let dest = if dest.is_empty() || dest == "." {
        "./"
    } else {
        dest
    };
    let keep_slash = dest.ends_with('/') || dest.ends_with("/.");
    let joined = if dest.starts_with('/') {
        clean(dest)
    } else {
        clean(&format!("{cwd}/{dest}"))
    };
    if keep_slash && !joined.ends_with('/') {
        format!("{joined}/")
    } else {
        joined
    }
}

/// A COPY source as the copy action names it: cleaned, relative to the source root (`.` for
/// the root itself).
pub(crate) fn source_path(src: &str) -> String {
    let c = clean(&format!("/{src}"));
    match c.strip_prefix('/') {
        Some("") | None => ".".to_owned(),
        Some(rest) => rest.to_owned(),
    }
}

/// A new working directory: absolute paths replace, relative ones join the current one.
pub(crate) fn workdir(current: &str, requested: &str) -> String {
    if requested.starts_with('/') {
        clean(requested)
    } else {
        let base = if current.is_empty() { "/" } else { current };
        clean(&format!("{base}/{requested}"))
    }
}

/// The last path element of a URL's path (`__unnamed__` when there is none), as BuildKit names
/// downloaded files.
pub(crate) fn url_filename(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let base = clean(path);
    let name = base.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || name == "." {
        "__unnamed__".to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        for (i, o) in [
            ("", "."),
            ("/", "/"),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("/a//b/./c/", "/a/b/c"),
            ("a/b/../c", "a/c"),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
    }

    #[test]
    fn destinations() {
        assert_eq!(dest_path("/app", "."), "/app/");
        assert_eq!(dest_path("/app", "x"), "/app/x");
        assert_eq!(dest_path("/app", "x/"), "/app/x/");
        assert_eq!(dest_path("/", "/src/"), "/src/");
        assert_eq!(dest_path("/", "/"), "/");
        assert_eq!(dest_path("/a", "../b/."), "/b/");
    }

    #[test]
    fn sources_workdirs_urls() {
        assert_eq!(source_path("."), ".");
        assert_eq!(source_path("./src/"), "src");
        assert_eq!(source_path("../../etc/passwd"), "etc/passwd");
        assert_eq!(source_path("*.txt"), "*.txt");
        assert_eq!(workdir("/app", "sub/../x"), "/app/x");
        assert_eq!(workdir("", "rel"), "/rel");
        assert_eq!(workdir("/app", "/abs/"), "/abs");
        assert_eq!(
            url_filename("https://example.com/a/b.tar.gz?x=1"),
            "b.tar.gz"
        );
        assert_eq!(url_filename("https://example.com"), "__unnamed__");
        assert_eq!(url_filename("https://example.com/"), "__unnamed__");
    }
}
