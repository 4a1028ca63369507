from casegen import mkdir, symlink, write

write("links/target.txt", "target\n")
write("links/sub/deep.txt", "deep\n")
symlink("target.txt", "links/relative")
symlink("/etc/passwd", "links/absolute")
symlink("does-not-exist", "links/dangling")
symlink("sub", "links/to-dir")
symlink("relative", "links/chain")
symlink("../target.txt", "links/sub/up")
symlink("../../outside-context", "links/escaping")
