import os

from casegen import mkdir, symlink, write

# Context files owned by users other than the builder's: the client's owners are reset to 0:0
# (BuildKit's resetUIDAndGID), so neither COPY nor a RUN bind mount sees them.
write("owned/by-1000", "a\n")
write("owned/by-2000", "b\n", 0o640)
mkdir("owned/dir", 0o750)
write("owned/dir/inside", "i\n", 0o600)
symlink("by-1000", "owned/link")
for path, uid, gid in (("owned", 1000, 1000), ("owned/by-1000", 1000, 1000), ("owned/by-2000", 2000, 2001),
                       ("owned/dir", 1500, 1600), ("owned/dir/inside", 65534, 65534), ("owned/link", 1000, 50)):
    os.lchown(path, uid, gid)
