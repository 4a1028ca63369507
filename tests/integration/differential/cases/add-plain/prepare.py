# An archive inside a directory given to ADD is not extracted; ADD --chown of an archive.
from casegen import TarEntry, make_tar

make_tar("dir/inner.tar", [TarEntry("member", "m\n")])
make_tar("owned.tar.gz", [TarEntry("o/", kind="dir"), TarEntry("o/f", "f\n", uid=77, gid=88)], "gz")
