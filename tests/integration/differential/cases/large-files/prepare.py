# Large and odd-sized files: 8 MiB of pseudo-random bytes, a sparse 32 MiB file, empty files.
from casegen import pseudo_random, write

write("big.bin", pseudo_random(8 * 1024 * 1024 + 17, "large"))
with open("sparse.img", "wb") as sparse:
    sparse.seek(16 * 1024 * 1024)
    sparse.write(b"in the middle")
    sparse.truncate(32 * 1024 * 1024)
write("empty", b"")
write("exactly-512", b"x" * 512)
write("dir/empty-too", b"")
