//! `USER` resolution against the image's `/etc/passwd` and `/etc/group`, as Docker does it.

use crate::rootfs::read_file_in_root;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The ids a process runs with, resolved from `USER`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership when `USER` names no group).
    pub additional_gids: Vec<u32>,
    /// Home directory from passwd, `/` when unknown.
    pub home: String,
}

impl ResolvedUser {
    /// uid 0, gid 0, home `/`: what an image without passwd runs as.
    pub fn root() -> Self {
        ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home: "/".to_owned(),
        }
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(GroupEntry {
            name: f.first()?,
            gid: f.get(2)?.parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

fn parse_id(spec: &str, text: &str) -> Result<Option<u32>> {
    match text.parse::<i64>() {
        Ok(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Ok(_) => Err(Error::InvalidUser {
            spec: spec.to_owned(),
            reason: "uids and gids must be in range 0-2147483647",
        }),
        Err(_) => Ok(None),
    }
}

/// Resolves a `USER` value (`""`, `name`, `uid`, `name:group`, `uid:gid`) against the passwd and
/// group files of `rootfs`, which are read without following symlinks out of it.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser> {
    let passwd = read_file_in_root(rootfs, "/etc/passwd")?;
    let group = read_file_in_root(rootfs, "/etc/group")?;
    resolve_user_from(user, passwd.as_deref(), group.as_deref())
}

/// [`resolve_user`] over file contents (`None` = file absent).
pub fn resolve_user_from(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let mut resolved = ResolvedUser::root();
    let uid_num = parse_id(spec, user_part)?;
    let entry = passwd.and_then(|text| {
        passwd_entries(text).find(|e| match uid_num {
            Some(uid) => e.uid == uid,
            None => e.name == user_part,
        })
    });
    let user_name = match (&entry, uid_num) {
        (Some(e), _) => {
            resolved.uid = e.uid;
            resolved.gid = e.gid;
            if !e.home.is_empty() {
                resolved.home = e.home.to_owned();
            }
            Some(e.name.to_owned())
        }
        (None, Some(uid)) => {
            resolved.uid = uid;
            None
        }
        (None, None) => {
            return Err(Error::UserNotFound {
                user: user_part.to_owned(),
            });
        }
    };
    match group_part.filter(|g| !g.is_empty()) {
        Some(g) => {
            let gid_num = parse_id(spec, g)?;
            let found = group.and_then(|text| {
                group_entries(text).find(|e| match gid_num {
                    Some(gid) => e.gid == gid,
                    None => e.name == g,
                })
            });
            resolved.gid = match (found, gid_num) {
                (Some(e), _) => e.gid,
                (None, Some(gid)) => gid,
                (None, None) => {
                    return Err(Error::GroupNotFound {
                        group: g.to_owned(),
                    });
                }
            };
        }
        None => {
            if let (Some(name), Some(text)) = (user_name, group) {
                for e in group_entries(text) {
                    if e.members.contains(&name.as_str())
                        && e.gid != resolved.gid
                        && !resolved.additional_gids.contains(&e.gid)
                    {
                        resolved.additional_gids.push(e.gid);
                    }
                }
            }
        }
    }
    // The primary group is a supplementary group too, first (containerd's CVE-2023-25173 fix,
    // BuildKit's `ensureAdditionalGids`; dockerfile_core_test.go testUserAdditionalGids).
    if !resolved.additional_gids.contains(&resolved.gid) {
        resolved.additional_gids.insert(0, resolved.gid);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:app\n\
        nogroup:x:65534:\n";

    fn r(spec: &str) -> Result<ResolvedUser> {
        resolve_user_from(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_is_root_with_home() {
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        let bare = resolve_user_from("", None, None).unwrap();
        assert_eq!((bare.uid, bare.gid, bare.additional_gids), (0, 0, vec![0]));
        assert_eq!(
            u.additional_gids,
            vec![0],
            "root is in group 0 (CVE-2023-25173)"
        );
    }

    #[test]
    fn name_gets_ids_home_and_supplementary_groups() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.home, "/home/app");
        assert_eq!(u.additional_gids, vec![1000, 10, 50], "primary group first");
    }

    #[test]
    fn uid_known_and_unknown() {
        let u = r("1000").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.len()), (1000, 1000, 3));
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert_eq!(u.additional_gids, vec![0]);
    }

    #[test]
    fn explicit_group_replaces_supplementary_groups() {
        let u = r("app:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(u.additional_gids, vec![50]);
        let u = r("1000:777").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 777, vec![777]));
        let u = r("nobody:wheel").unwrap();
        assert_eq!((u.uid, u.gid), (65534, 10));
    }

    #[test]
    fn docker_error_messages() {
        assert_eq!(
            r("ghost").unwrap_err().to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            r("app:ghosts").unwrap_err().to_string(),
            "unable to find group ghosts: no matching entries in group file"
        );
        assert_eq!(
            resolve_user_from("app", None, None)
                .unwrap_err()
                .to_string(),
            "unable to find user app: no matching entries in passwd file"
        );
        assert!(matches!(r("-1"), Err(Error::InvalidUser { .. })));
        assert!(matches!(r("4294967296"), Err(Error::InvalidUser { .. })));
    }
}
