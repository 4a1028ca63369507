# The parts of the base rootfs git cannot hold: special modes, empty dirs, symlinks.
from casegen import mkdir, symlink, write

mkdir("rootfs/tmp", 0o1777)
mkdir("rootfs/root", 0o700)
mkdir("rootfs/opt")
mkdir("rootfs/var/lib/data")
mkdir("rootfs/usr/local/bin")
write("rootfs/usr/bin/tool", "#!/bin/sh\necho tool\n", 0o755)
write("rootfs/etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640)
symlink("usr/bin", "rootfs/bin")
symlink("opt", "rootfs/srv")
symlink("/usr/bin/tool", "rootfs/etc/alternatives/editor")
