import io
import tarfile

with tarfile.open("archive.tar", "w") as archive:
    for name, data in (("inner/one.txt", b"one\n"), ("two.txt", b"two\n")):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 1577836800, 0o640
        archive.addfile(info, io.BytesIO(data))
