from casegen import mkdir, write

write("modes/setuid", "u\n", 0o4755)
write("modes/setgid", "g\n", 0o2755)
write("modes/sticky-file", "t\n", 0o1644)
write("modes/all-bits", "a\n", 0o7777)
write("modes/readonly", "r\n", 0o400)
write("modes/none", "n\n", 0o000)
write("modes/group-write", "w\n", 0o664)
mkdir("modes/sticky-dir", 0o1777)
mkdir("modes/setgid-dir", 0o2775)
mkdir("modes/private-dir", 0o700)
write("modes/private-dir/inside", "i\n", 0o600)
