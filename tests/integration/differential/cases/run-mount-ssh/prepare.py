"""tools/: the host's ssh-add and the libraries ldd names for it, at their own paths, for
`COPY tools/ /` onto the busybox base (which has no ssh-add)."""
import os
import shutil
import subprocess

PROGRAM = "/usr/bin/ssh-add"
ldd = subprocess.run(["ldd", PROGRAM], check=True, capture_output=True, text=True).stdout
paths = [PROGRAM]
for line in ldd.splitlines():
    parts = line.split()
    if "=>" in parts and parts[parts.index("=>") + 1].startswith("/"):
        paths.append(parts[parts.index("=>") + 1])
    elif parts and parts[0].startswith("/"):
        paths.append(parts[0])  # the loader
for path in paths:
    dest = os.path.join("tools", path.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copyfile(os.path.realpath(path), dest)
    os.chmod(dest, 0o755)
