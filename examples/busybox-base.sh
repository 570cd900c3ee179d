#!/usr/bin/env bash
# Makes the offline base image every example and test builds on: Debian's busybox-static as a
# root filesystem (busybox, its applet links, /etc/passwd with root, nobody and app, /tmp),
# imported into the kiln store as `busybox:latest`. Nothing is downloaded.
#   usage: examples/busybox-base.sh [KILN_BINARY]   (store: --root from KILN_ROOT)
set -euo pipefail
kiln=${1:-kiln}
busybox=/bin/busybox
if ! "$busybox" --list >/dev/null 2>&1; then
  echo "busybox-base: $busybox missing: install Debian's busybox-static (apt-get install busybox-static)" >&2
  exit 1
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,etc,tmp,root,home/app,var,usr/bin,sbin,usr/sbin}
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
app:x:1000:
nogroup:x:65534:
GROUP
chown 1000:1000 "$rootfs/home/app"
# Fixed times so the base image has the same digest on every machine.
find "$rootfs" -exec touch -h -d @0 {} +
tar --sort=name --numeric-owner -C "$rootfs" -cf - . | SOURCE_DATE_EPOCH=0 "$kiln" import - busybox:latest
