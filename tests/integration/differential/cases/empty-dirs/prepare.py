from casegen import mkdir, write

mkdir("empty")
mkdir("tree/a/empty-inside")
mkdir("tree/b/c/d")
write("tree/a/file", "f\n")
mkdir("tree/mode700", 0o700)
