from casegen import mkdir, symlink, write

write("real.txt", "real file\n", 0o640)
write("realdir/inner.txt", "inner\n")
symlink("real.txt", "link-to-file")
symlink("realdir", "link-to-dir")
symlink("link-to-file", "link-to-link")
mkdir("sub")
symlink("../real.txt", "sub/up-link")
